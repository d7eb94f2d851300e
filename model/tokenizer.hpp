// The byte-level BPE tokenizer of DeepSeek-V3, loaded from a Hugging Face tokenizer.json and
// tokenizer_config.json, with the encode semantics of HF `tokenizers` (Rust, Oniguruma regexes):
// added tokens are split out first, then the Split regexes, ByteLevel and BPE by merge rank.
// Used by the router (prompts -> ids) and the decode loop (ids -> text through StreamDecoder).
// Thread-safety: a loaded Tokenizer is immutable and cheap to copy (shared tables); encode and
// decode may run concurrently from any thread. A StreamDecoder is one stream's state: one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sy::model {

// Thrown by Tokenizer::load: names the file and what is wrong with it.
class TokenizerError : public std::runtime_error {
 public:
  TokenizerError(std::filesystem::path file, const std::string& problem);
  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
};

class Tokenizer {
 public:
  // Reads dir/tokenizer.json and dir/tokenizer_config.json. Only the pipeline shapes DeepSeek-V3
  // uses are accepted (empty normalizer, Split*/ByteLevel pre-tokenizers, BPE, ByteLevel
  // decoder); anything else is a TokenizerError rather than a silently different encoding.
  static Tokenizer load(const std::filesystem::path& dir);

  // Text -> ids. Added tokens (special or not) found anywhere in `text` become their ids, as in
  // HF, so user text containing "<｜User｜>" encodes to the control token; callers that need
  // otherwise must escape. With add_bos the BOS id is prepended (what transformers'
  // LlamaTokenizerFast does); the one-argument form uses tokenizer_config's add_bos_token.
  // Text from format_chat already starts with the BOS text: encode it with add_bos = false.
  // Throws std::invalid_argument when `text` is not valid UTF-8 (naming the byte offset).
  std::vector<std::int32_t> encode(std::string_view text) const;
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const;
  // Appends to `out`, so a caller can reuse one buffer across requests.
  void encode_into(std::string_view text, bool add_bos, std::vector<std::int32_t>& out) const;

  // Ids -> text, as HF decode with the ByteLevel decoder: bytes that are not valid UTF-8 (a
  // sequence cut at either end) become U+FFFD. Throws std::out_of_range naming a bad id.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;

  // The pieces BPE sees (added tokens whole, then the Split regexes), in order. For tests and as
  // the benchmark's baseline; encode does not build this vector.
  std::vector<std::string_view> pre_tokenize(std::string_view text) const;

  std::int32_t bos_id() const;
  std::int32_t eos_id() const;
  std::string_view bos_token() const;  // its text, e.g. "<｜begin▁of▁sentence｜>"
  std::string_view eos_token() const;
  bool add_bos_by_default() const;
  // Number of ids, added tokens included; ids are exactly [0, vocab_size()).
  std::int32_t vocab_size() const;
  // Token strings are as stored in tokenizer.json: byte-level alphabet ("Ġthe") for the BPE
  // vocabulary, plain text for added tokens. Added tokens take precedence, as in HF.
  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  std::string_view id_to_token(std::int32_t id) const;  // std::out_of_range when out of range
  // The raw bytes one id decodes to; may be part of a UTF-8 sequence. std::out_of_range.
  std::string_view token_bytes(std::int32_t id) const;
  bool is_special(std::int32_t id) const;  // an added token marked "special"; false out of range

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Incremental detokenization for streaming responses: push() returns the text completed by one
// more id. Bytes of a token that ends inside a UTF-8 sequence are held back until the sequence
// completes, so no partial character is ever emitted; the concatenation of every push() and the
// final flush() equals Tokenizer::decode of all the ids. Borrows the Tokenizer (must outlive it).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {}

  std::string push(std::int32_t id);  // std::out_of_range for a bad id (state unchanged)
  // As push, but an id past the tokenizer's vocabulary yields no text instead of throwing: a
  // model's embedding may have more rows than the tokenizer has tokens (padding), and a sampled
  // padding id still streams as an id. Negative ids still throw.
  std::string push_model_token(std::int32_t id);
  // Emits what is held back (an unfinished sequence becomes U+FFFD) and resets the state.
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: a valid but unfinished UTF-8 sequence
};

}  // namespace sy::model
