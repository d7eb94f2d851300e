#include "actors/cluster_api/prompt.hpp"

#include <span>
#include <stdexcept>
#include <string>
#include <variant>

#include "model/chat_format.hpp"

namespace sy::actors::cluster_api {

std::vector<std::int32_t> prompt_token_ids(const model::Tokenizer& tokenizer, GenerateInput& input) {
  if (const auto* text = std::get_if<std::string>(&input.prompt)) {
    if (text->empty()) throw std::invalid_argument("the prompt is empty");
    if (input.chat) {
      const model::ChatMessage message{"user", *text};
      const std::string formatted =
          model::format_chat(std::span(&message, 1), /*add_generation_prompt=*/true, tokenizer.bos_token());
      return tokenizer.encode(formatted, /*add_bos=*/false);  // the format starts with BOS
    }
    return tokenizer.encode(*text, tokenizer.add_bos_by_default());
  }
  if (input.chat) throw std::invalid_argument("chat formats prompt text, not token ids");
  std::vector<std::int32_t> ids = std::get<std::vector<std::int32_t>>(std::move(input.prompt));
  if (ids.empty()) throw std::invalid_argument("the prompt is empty (no token ids)");
  return ids;
}

}  // namespace sy::actors::cluster_api
