// Mirrors the Jinja template statement by statement; the `ns.*` names below are its namespace
// variables. Quirks are kept on purpose, since the model was trained on exactly this text.
#include "model/chat_format.hpp"

#include <stdexcept>

namespace sy::model {

namespace {
constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr std::string_view kToolOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr std::string_view kToolOutputBegin = "<｜tool▁output▁begin｜>";
constexpr std::string_view kToolOutputEnd = "<｜tool▁output▁end｜>";
}  // namespace

std::string format_chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                        std::string_view bos_token) {
  std::string out(bos_token);
  // First loop: system prompts, wherever they are, joined with a blank line.
  bool first_system = true;  // ns.is_first_sp
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      if (!first_system) out += "\n\n";
      out += m.content;
      first_system = false;
    } else if (m.role != "user" && m.role != "assistant" && m.role != "tool") {
      throw std::invalid_argument("format_chat: unsupported role \"" + m.role +
                                  "\" (expected system, user, assistant or tool)");
    }
  }
  bool is_tool = false;         // ns.is_tool: the previous turn was tool output
  bool is_output_first = true;  // ns.is_output_first: never reset by the template, so only
                                // the first tool block of a conversation opens with
                                // <｜tool▁outputs▁begin｜>
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      is_tool = false;
      out += kUser;
      out += m.content;
    } else if (m.role == "assistant") {
      out += is_tool ? kToolOutputsEnd : kAssistant;
      out += m.content;
      out += kEos;
      is_tool = false;
    } else if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out += kToolOutputsBegin;
        is_output_first = false;
      } else {
        out += '\n';
      }
      out += kToolOutputBegin;
      out += m.content;
      out += kToolOutputEnd;
    }
  }
  if (is_tool) out += kToolOutputsEnd;
  if (add_generation_prompt && !is_tool) out += kAssistant;
  return out;
}

}  // namespace sy::model
