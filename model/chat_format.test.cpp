// format_chat against the DeepSeek-V3 chat template's output. Every expected string here was
// checked by rendering tokenizer_config.json's chat_template with Jinja2 3.1.6 (trim_blocks and
// lstrip_blocks on, as transformers renders it).
#include "model/chat_format.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace sy::model {
namespace {

constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";

std::string chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) {
  return format_chat(messages, add_generation_prompt, kBos);
}

TEST(ChatFormat, SingleUserTurnWithGenerationPrompt) {
  EXPECT_EQ(chat({{"user", "Hello!"}}), "<｜begin▁of▁sentence｜><｜User｜>Hello!<｜Assistant｜>");
  EXPECT_EQ(chat({{"user", "Hello!"}}, false), "<｜begin▁of▁sentence｜><｜User｜>Hello!");
}

TEST(ChatFormat, SystemThenUser) {
  EXPECT_EQ(chat({{"system", "You are helpful."}, {"user", "Hi"}}),
            "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜>");
}

TEST(ChatFormat, MultiTurn) {
  EXPECT_EQ(chat({{"user", "1+1?"}, {"assistant", "2"}, {"user", "And 2+2?"}}),
            "<｜begin▁of▁sentence｜><｜User｜>1+1?<｜Assistant｜>2<｜end▁of▁sentence｜>"
            "<｜User｜>And 2+2?<｜Assistant｜>");
}

TEST(ChatFormat, SystemMessagesAreJoinedAndHoisted) {
  // The template collects every system message first, wherever it sits.
  EXPECT_EQ(chat({{"system", "A"}, {"user", "q"}, {"system", "B"}}),
            "<｜begin▁of▁sentence｜>A\n\nB<｜User｜>q<｜Assistant｜>");
  EXPECT_EQ(chat({{"system", "A"}, {"system", "B"}}, false), "<｜begin▁of▁sentence｜>A\n\nB");
}

TEST(ChatFormat, ToolOutputs) {
  EXPECT_EQ(chat({{"user", "w?"},
                  {"tool", "sunny"},
                  {"tool", "20C"},
                  {"assistant", "Sunny."},
                  {"user", "again"},
                  {"tool", "rain"}}),
            "<｜begin▁of▁sentence｜><｜User｜>w?"
            "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜>"
            "\n<｜tool▁output▁begin｜>20C<｜tool▁output▁end｜>"
            "<｜tool▁outputs▁end｜>Sunny.<｜end▁of▁sentence｜>"
            "<｜User｜>again"
            // The template never resets is_output_first: later blocks open without outputs_begin.
            "\n<｜tool▁output▁begin｜>rain<｜tool▁output▁end｜>"
            "<｜tool▁outputs▁end｜>");  // and no generation prompt after tool output
}

TEST(ChatFormat, EmptyAndUnknownRoles) {
  EXPECT_EQ(chat({}), "<｜begin▁of▁sentence｜><｜Assistant｜>");
  try {
    chat({{"user", "x"}, {"narrator", "y"}});
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("narrator"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sy::model
