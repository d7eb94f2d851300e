// The DeepSeek-V3 chat template (tokenizer_config.json "chat_template") written out in C++, so
// the router needs no Jinja engine. Used by the API front end to turn messages into prompt text,
// which is then encoded with add_bos = false (the text already starts with the BOS token).
// Pure functions, no state: safe from any thread.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace sy::model {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant" or "tool"
  std::string content;  // plain text; assistant tool calls are not represented
};

// Renders what the template renders for string contents:
//   BOS, then every system message's content joined with "\n\n" (wherever they appear), then in
//   order: user "<｜User｜>c"; assistant "<｜Assistant｜>c<｜end▁of▁sentence｜>" (or, right after
//   tool output, "<｜tool▁outputs▁end｜>c<｜end▁of▁sentence｜>"); tool output blocks; finally
//   "<｜Assistant｜>" when add_generation_prompt and the last turn is not tool output.
// Throws std::invalid_argument naming the role for any other role (the template would silently
// drop such a message).
std::string format_chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                        std::string_view bos_token);

}  // namespace sy::model
