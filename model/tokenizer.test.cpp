// Tokenizer unit tests. Two kinds: ones on a tiny tokenizer.json written here (BPE order, both
// merge formats, load errors; always run), and ones on the real DeepSeek-V3 files from
// deploy/install-deps.sh ($SY_DATA_DIR or ~/.cache/switchyard, /tokenizer; skipped when absent).
// Expected ids were produced by tests/tokenizer/reference.mjs (the JS reference).
#include "model/tokenizer.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace sy::model {
namespace {

using Ids = std::vector<std::int32_t>;

std::filesystem::path real_tokenizer_dir() {
  if (const char* data = std::getenv("SY_DATA_DIR"); data && *data) {
    return std::filesystem::path(data) / "tokenizer";
  }
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/nonexistent") / ".cache/switchyard/tokenizer";
}

// ---------------------------------------------------------------------------------------------
// A tiny tokenizer: the 256 byte tokens, "aa" (rank 0) and "aaaa" (rank 1), two added tokens,
// and one Split on whitespace runs.

std::string alphabet_char(int byte) {
  const bool printable =
      (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
  int cp = byte;
  if (!printable) {
    cp = 256;
    for (int b = 0; b < byte; ++b) {
      if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) ++cp;
    }
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

class TinyTokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sy_tok_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  nlohmann::json tokenizer_json(bool merges_as_arrays) const {
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[alphabet_char(b)] = b;
    vocab["aa"] = 256;
    vocab["aaaa"] = 257;
    nlohmann::json merges = merges_as_arrays ? nlohmann::json::parse(R"([["a","a"],["aa","aa"]])")
                                             : nlohmann::json::parse(R"(["a a","aa aa"])");
    nlohmann::json j;
    j["added_tokens"] = nlohmann::json::parse(R"([
      {"id": 258, "content": "<s>", "special": true, "normalized": false},
      {"id": 259, "content": "<sep>", "special": false, "normalized": true}])");
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
    j["post_processor"] = nullptr;
    j["decoder"] = {{"type", "ByteLevel"}};
    j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
    return j;
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  void write_all(bool merges_as_arrays = false) const {
    write("tokenizer.json", tokenizer_json(merges_as_arrays).dump());
    write("tokenizer_config.json",
          R"({"add_bos_token": true, "bos_token": "<s>", "eos_token": {"content": "<s>"}})");
  }
  static std::string load_error(const std::filesystem::path& dir) {
    try {
      Tokenizer::load(dir);
    } catch (const TokenizerError& e) {
      return e.what();
    }
    return "(no error)";
  }

  std::filesystem::path dir_;
};

// "a" * n: every (a, a) merges first, leftmost first, then (aa, aa): n/4 "aaaa", then one "aa"
// when n % 4 >= 2, then one "a" when n is odd. Covers both the short (<= 64 bytes) and the long
// (heap) BPE paths, which must agree.
Ids expected_runs_of_a(int n) {
  Ids ids(static_cast<std::size_t>(n / 4), 257);
  if (n % 4 >= 2) ids.push_back(256);
  if (n % 2 == 1) ids.push_back('a');
  return ids;
}

TEST_F(TinyTokenizer, MergeOrderIsRankThenLeftmostOnBothPaths) {
  for (bool arrays : {false, true}) {
    write_all(arrays);
    const Tokenizer tok = Tokenizer::load(dir_);
    EXPECT_EQ(tok.vocab_size(), 260);
    for (int n = 1; n <= 200; ++n) {
      ASSERT_EQ(tok.encode(std::string(static_cast<std::size_t>(n), 'a'), false),
                expected_runs_of_a(n))
          << "n = " << n << (arrays ? " (array merges)" : " (string merges)");
    }
  }
}

TEST_F(TinyTokenizer, AddedTokensSplitBeforeRegexAndBosFromConfig) {
  write_all();
  const Tokenizer tok = Tokenizer::load(dir_);
  EXPECT_EQ(tok.encode("aa<s>a <sep>aaaa"), (Ids{258, 256, 258, 'a', ' ', 259, 257}));
  EXPECT_EQ(tok.encode("<s", false), (Ids{'<', 's'}));
  EXPECT_EQ(tok.pre_tokenize("ab  <s>c"), (std::vector<std::string_view>{"ab", "  ", "<s>", "c"}));
  EXPECT_EQ(tok.decode(Ids{258, 256, 259}, true), "aa<sep>");
}

TEST_F(TinyTokenizer, LoadErrorsNameTheFile) {
  EXPECT_NE(load_error(dir_).find("tokenizer.json"), std::string::npos);
  write("tokenizer.json", "{ not json");
  write("tokenizer_config.json", "{}");
  const std::string bad_json = load_error(dir_);
  EXPECT_NE(bad_json.find("tokenizer.json"), std::string::npos) << bad_json;
  EXPECT_NE(bad_json.find("not valid JSON"), std::string::npos) << bad_json;

  write("tokenizer.json", tokenizer_json(false).dump());
  std::filesystem::remove(dir_ / "tokenizer_config.json");
  EXPECT_NE(load_error(dir_).find("tokenizer_config.json"), std::string::npos);
  write("tokenizer_config.json", R"({"bos_token": "<nope>", "eos_token": "<s>"})");
  const std::string bad_bos = load_error(dir_);
  EXPECT_NE(bad_bos.find("tokenizer_config.json"), std::string::npos) << bad_bos;
  EXPECT_NE(bad_bos.find("<nope>"), std::string::npos) << bad_bos;

  nlohmann::json j = tokenizer_json(false);
  j["model"]["merges"].push_back("a q");  // "aq" is not in the vocab
  write("tokenizer.json", j.dump());
  write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "<s>"})");
  EXPECT_NE(load_error(dir_).find("merge 2"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The real DeepSeek-V3 tokenizer.

class DeepSeekTokenizer : public ::testing::Test {
 protected:
  // Loaded once per process (about 0.3 s); Tokenizer is immutable, so tests can share it.
  static void SetUpTestSuite() {
    const auto dir = real_tokenizer_dir();
    if (std::filesystem::exists(dir / "tokenizer.json")) tok_.emplace(Tokenizer::load(dir));
  }
  static void TearDownTestSuite() { tok_.reset(); }
  void SetUp() override {
    if (!tok_) {
      GTEST_SKIP() << "no tokenizer at " << real_tokenizer_dir() << " (run deploy/install-deps.sh)";
    }
  }
  static const Tokenizer& tok() { return *tok_; }

 private:
  static inline std::optional<Tokenizer> tok_;
};

TEST_F(DeepSeekTokenizer, KnownEncodingsMatchTheReference) {
  EXPECT_EQ(tok().encode("Hello, my dog is cute", false), (Ids{19923, 14, 1026, 6397, 344, 33125}));
  EXPECT_EQ(tok().encode("深度求索是一家人工智能公司。", false),
            (Ids{17180, 1645, 4568, 3003, 14557, 812, 9995, 2086, 320}));
  EXPECT_EQ(tok().encode("12345678901", false), (Ids{6895, 18009, 25744, 2616}));
  EXPECT_EQ(tok().encode("    return x;\n", false), (Ids{361, 1354, 1527, 510}));
  EXPECT_EQ(tok().encode("🧑🏻‍💻", false), (Ids{91825, 242, 68012, 46088, 23903, 122}));
  EXPECT_TRUE(tok().encode("", false).empty());
}

TEST_F(DeepSeekTokenizer, BosFollowsTheConfig) {
  EXPECT_EQ(tok().bos_id(), 0);
  EXPECT_EQ(tok().eos_id(), 1);
  EXPECT_EQ(tok().bos_token(), "<｜begin▁of▁sentence｜>");
  EXPECT_TRUE(tok().add_bos_by_default());
  EXPECT_EQ(tok().encode("Hello"), (Ids{0, 19923}));
  EXPECT_EQ(tok().encode("Hello", true), (Ids{0, 19923}));
  EXPECT_EQ(tok().encode(""), (Ids{0}));
}

TEST_F(DeepSeekTokenizer, SpecialTokensInsideText) {
  EXPECT_EQ(tok().encode("Hi<｜User｜>What is 2+2?<｜Assistant｜>", false),
            (Ids{23166, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804}));
  EXPECT_EQ(tok().token_to_id("<｜User｜>"), 128803);
  EXPECT_EQ(tok().token_to_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok().token_to_id("Hello"), 19923);
  EXPECT_EQ(tok().token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(tok().id_to_token(19923), "Hello");
  EXPECT_EQ(tok().id_to_token(223), "Ġ");  // byte-level alphabet, as stored
  EXPECT_EQ(tok().id_to_token(128803), "<｜User｜>");
  EXPECT_TRUE(tok().is_special(0));
  EXPECT_TRUE(tok().is_special(1));
  EXPECT_FALSE(tok().is_special(128803));  // <｜User｜> is an added but not special token
  EXPECT_FALSE(tok().is_special(19923));
  EXPECT_FALSE(tok().is_special(-1));
  EXPECT_EQ(tok().vocab_size(), 128815);
}

TEST_F(DeepSeekTokenizer, DecodeRoundTripsAndSkipsSpecials) {
  const std::string text =
      "Hi<｜User｜>你好 🧑🏻‍💻\r\n\tx = 12345;<｜end▁of▁sentence｜>";
  EXPECT_EQ(tok().decode(tok().encode(text, false)), text);
  EXPECT_EQ(tok().decode(tok().encode(text, true)), "<｜begin▁of▁sentence｜>" + text);
  // Only "special" added tokens go; <｜User｜> is not special.
  EXPECT_EQ(tok().decode(tok().encode(text, true), true),
            "Hi<｜User｜>你好 🧑🏻‍💻\r\n\tx = 12345;");
}

TEST_F(DeepSeekTokenizer, DecodeOfBadIdNamesIt) {
  for (std::int32_t bad : {tok().vocab_size(), -1, 1 << 30}) {
    try {
      tok().decode(Ids{19923, bad});
      ADD_FAILURE() << "no error for id " << bad;
    } catch (const std::out_of_range& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(tok().id_to_token(tok().vocab_size()), std::out_of_range);
}

TEST_F(DeepSeekTokenizer, InvalidUtf8InputIsRejected) {
  EXPECT_THROW(tok().encode(std::string("ab\xC3(", 4), false), std::invalid_argument);
  EXPECT_THROW(tok().encode(std::string("\xED\xA0\x80", 3), false), std::invalid_argument);
}

// "😀" is F0 9F 98 80 and encodes as [28927 = F0 9F 98, 225 = 80]: the first token ends inside
// the character.
TEST_F(DeepSeekTokenizer, StreamDecoderHoldsBackPartialCharacters) {
  ASSERT_EQ(tok().encode("😀", false), (Ids{28927, 225}));
  EXPECT_EQ(tok().decode(Ids{28927}), "\uFFFD");  // decode alone is lossy
  StreamDecoder stream(tok());
  EXPECT_EQ(stream.push(28927), "");
  EXPECT_EQ(stream.push(225), "😀");
  EXPECT_EQ(stream.flush(), "");

  EXPECT_EQ(stream.push(28927), "");
  EXPECT_EQ(stream.flush(), "\uFFFD");  // an unfinished character at the end
  EXPECT_EQ(stream.push(19923), "Hello");
}

TEST_F(DeepSeekTokenizer, StreamDecoderNeverEmitsPartialUtf8AndMatchesDecode) {
  const std::string text =
      "Family 👨‍👩‍👧‍👦, flags 🇺🇸🇯🇵, skin 👍🏽, 中文 and 日本語 and 한국어 "
      "😀😀😀<｜end▁of▁sentence｜>";
  const Ids ids = tok().encode(text, true);
  StreamDecoder stream(tok(), /*skip_special_tokens=*/true);
  std::string streamed;
  for (std::int32_t id : ids) {
    const std::string piece = stream.push(id);
    // A complete piece decodes the same on its own: no sequence is cut.
    EXPECT_EQ(piece.find("\uFFFD"), std::string::npos) << "id " << id;
    streamed += piece;
  }
  streamed += stream.flush();
  EXPECT_EQ(streamed, tok().decode(ids, true));
  EXPECT_EQ(streamed, text.substr(0, text.size() - std::string("<｜end▁of▁sentence｜>").size()));
  EXPECT_THROW(stream.push(-5), std::out_of_range);
}

TEST_F(DeepSeekTokenizer, ConcurrentEncodesAgree) {
  std::string text;
  for (int i = 0; i < 50; ++i) {
    text += "Paragraph " + std::to_string(i) + ": The quick brown fox 跳过了懒狗 😀 " +
            std::string(static_cast<std::size_t>(i), 'z') + "\n\tcode(x) { return 42; }\n";
  }
  const Ids expected = tok().encode(text);
  std::vector<Ids> results(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        results[static_cast<std::size_t>(t)] = tok().encode(text);
        if (results[static_cast<std::size_t>(t)] != expected) return;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(results[0], expected);
  EXPECT_EQ(results[1], expected);
}

TEST_F(DeepSeekTokenizer, PreTokenizeShowsTheSplits) {
  EXPECT_EQ(tok().pre_tokenize("Hello world 12345 中文ab<｜User｜>x"),
            (std::vector<std::string_view>{"Hello", " world", " ", "123", "45", " ", "中文", "ab",
                                           "<｜User｜>", "x"}));
  // Oniguruma's \s includes U+0085 (NEL), so this is one trailing whitespace run; JavaScript's
  // \s does not, and the JS reference splits it as " ", " ", "\u0085".
  EXPECT_EQ(tok().pre_tokenize("a  \u0085"), (std::vector<std::string_view>{"a", "  \u0085"}));
}

}  // namespace
}  // namespace sy::model
