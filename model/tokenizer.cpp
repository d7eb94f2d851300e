// Byte-level BPE with HF `tokenizers` semantics. The pipeline per encode call:
//   1. validate UTF-8 once (later PCRE2 calls skip their own check);
//   2. split out added tokens, leftmost-longest, in HF's two passes (tokens with normalized=false
//      on the raw text, then normalized=true on the rest; the normalizer is empty, so the text is
//      the same);
//   3. each remaining segment goes through the Split regexes in order, each one splitting every
//      piece the previous one produced (behavior Isolated: matches and the gaps are both pieces);
//   4. BPE on the bytes of each piece: ids start as the 256 byte tokens, then the adjacent pair
//      with the lowest merge rank is merged (leftmost first on ties) until none is mergeable.
// ByteLevel's byte -> alphabet mapping is folded into the tables at load, so encode never builds
// alphabet strings: the initial symbols are byte_id_[byte], and merges are keyed by id pairs.
#include "model/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

namespace sy::model {

TokenizerError::TokenizerError(std::filesystem::path file, const std::string& problem)
    : std::runtime_error(file.string() + ": " + problem), file_(std::move(file)) {}

namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8. Well-formedness follows Unicode Table 3-7; ill-formed input is replaced the way Rust's
// String::from_utf8_lossy (and so HF decode) does it: one U+FFFD per maximal subpart.

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

struct Utf8Step {
  std::size_t len;  // bytes consumed: the sequence, or the maximal subpart when !ok (>= 1)
  bool ok;          // a complete, well-formed sequence
  bool truncated;   // !ok only because the input ended inside a sequence that was valid so far
};

Utf8Step utf8_step(const unsigned char* p, std::size_t avail) {
  const unsigned b0 = p[0];
  if (b0 < 0x80) return {1, true, false};
  std::size_t need;
  unsigned lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    need = 2;
  } else if (b0 == 0xED) {
    need = 2, hi = 0x9F;
  } else if (b0 == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    need = 3;
  } else if (b0 == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    return {1, false, false};
  }
  for (std::size_t k = 1; k <= need; ++k) {
    if (k >= avail) return {k, false, true};
    const unsigned b = p[k];
    if (b < (k == 1 ? lo : 0x80u) || b > (k == 1 ? hi : 0xBFu)) return {k, false, false};
  }
  return {need + 1, true, false};
}

// Offset of the first ill-formed byte, or npos. ASCII runs go 8 bytes at a time.
std::size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const Utf8Step st = utf8_step(p + i, n - i);
    if (!st.ok) return i;
    i += st.len;
  }
  return std::string_view::npos;
}

void append_lossy(std::string& out, std::string_view s) {
  if (first_invalid_utf8(s) == std::string_view::npos) {
    out.append(s);
    return;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t i = 0;
  while (i < s.size()) {
    const Utf8Step st = utf8_step(p + i, s.size() - i);
    if (st.ok) {
      out.append(s.substr(i, st.len));
    } else {
      out.append(kReplacement);
    }
    i += st.len;
  }
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes well-formed UTF-8 (JSON strings are) into code points.
std::u32string to_code_points(std::string_view s) {
  std::u32string cps;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t i = 0;
  while (i < s.size()) {
    const Utf8Step st = utf8_step(p + i, s.size() - i);
    if (!st.ok) throw std::invalid_argument("ill-formed UTF-8");
    char32_t cp = st.len == 1 ? p[i] : (p[i] & (0xFF >> (st.len + 1)));
    for (std::size_t k = 1; k < st.len; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
    cps.push_back(cp);
    i += st.len;
  }
  return cps;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's ByteLevel alphabet: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so every byte is one visible character ("Ġ" is the space).

struct ByteAlphabet {
  std::array<char32_t, 256> byte_to_cp{};
  std::array<int, 324> cp_to_byte{};  // -1 where the code point is not in the alphabet
  ByteAlphabet() {
    cp_to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      byte_to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      cp_to_byte[byte_to_cp[b]] = b;
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;  // immutable after construction; thread-safe init
  return alphabet;
}

// The bytes HF's ByteLevel decoder yields for one token string: every character mapped back
// through the alphabet, or, if any character is outside it (as in "<｜User｜>"), the token's own
// UTF-8 bytes unchanged.
std::string byte_level_decode(std::string_view token) {
  const ByteAlphabet& a = byte_alphabet();
  std::string bytes;
  for (char32_t cp : to_code_points(token)) {
    if (cp >= a.cp_to_byte.size() || a.cp_to_byte[cp] < 0) return std::string(token);
    bytes.push_back(static_cast<char>(a.cp_to_byte[cp]));
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Merge table: (left id, right id) -> (rank, merged id), open addressing with linear probing.
// find() returns rank << 32 | merged id, so the smallest value is the best merge, or kNoMerge.

constexpr std::uint64_t kNoMerge = std::numeric_limits<std::uint64_t>::max();

class MergeTable {
 public:
  void reserve(std::size_t count) {
    bits_ = 4;
    while ((std::size_t{1} << bits_) < count * 2) ++bits_;
    slots_.assign(std::size_t{1} << bits_, Slot{kEmpty, kNoMerge});
  }
  // A later merge of the same pair replaces the earlier one (HF collects merges into a map).
  void insert(std::int32_t left, std::int32_t right, std::uint32_t rank, std::int32_t merged) {
    const std::uint64_t key = pack(left, right);
    std::size_t i = slot(key);
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = {key, (std::uint64_t{rank} << 32) | static_cast<std::uint32_t>(merged)};
  }
  std::uint64_t find(std::int32_t left, std::int32_t right) const {
    const std::uint64_t key = pack(left, right);
    for (std::size_t i = slot(key);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == key) return slots_[i].value;
      if (slots_[i].key == kEmpty) return kNoMerge;
    }
  }

 private:
  // Key and value side by side: a lookup touches one cache line (the table is ~4 MB for
  // DeepSeek's 128k merges, so most lookups miss L2).
  struct Slot {
    std::uint64_t key;
    std::uint64_t value;
  };
  static constexpr std::uint64_t kEmpty = std::numeric_limits<std::uint64_t>::max();
  static std::uint64_t pack(std::int32_t l, std::int32_t r) {
    return (std::uint64_t{static_cast<std::uint32_t>(l)} << 32) | static_cast<std::uint32_t>(r);
  }
  std::size_t slot(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> (64 - bits_));
  }
  unsigned bits_ = 4;
  std::vector<Slot> slots_;
};

// ---------------------------------------------------------------------------------------------
// Added-token matcher: a byte trie searched leftmost-longest, which is what HF's Aho-Corasick
// (MatchKind::LeftmostLongest) returns: the earliest start that matches anything, and the longest
// token starting there. A first-byte table skips positions that cannot start a token.

class AddedMatcher {
 public:
  AddedMatcher() : nodes_(1) { first_byte_.fill(false); }

  void add(std::string_view content, std::int32_t id) {
    std::size_t node = 0;
    for (unsigned char c : content) {
      std::int32_t child = -1;
      for (const auto& [byte, to] : nodes_[node].children) {
        if (byte == c) child = to;
      }
      if (child < 0) {
        child = static_cast<std::int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(c, child);
        nodes_.emplace_back();
      }
      node = static_cast<std::size_t>(child);
    }
    nodes_[node].id = id;
    first_byte_[static_cast<unsigned char>(content[0])] = true;
    empty_ = false;
  }

  // Calls on_gap(text) for unmatched stretches (never empty) and on_token(id) for matches.
  template <class Gap, class Token>
  void split(std::string_view text, Gap&& on_gap, Token&& on_token) const {
    if (empty_) {
      if (!text.empty()) on_gap(text);
      return;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t gap_start = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!first_byte_[p[i]]) continue;
      std::int32_t best_id = -1;
      std::size_t best_end = 0;
      std::size_t node = 0;
      for (std::size_t j = i; j < n; ++j) {
        std::int32_t child = -1;
        for (const auto& [byte, to] : nodes_[node].children) {
          if (byte == p[j]) child = to;
        }
        if (child < 0) break;
        node = static_cast<std::size_t>(child);
        if (nodes_[node].id >= 0) best_id = nodes_[node].id, best_end = j + 1;
      }
      if (best_id < 0) continue;
      if (i > gap_start) on_gap(text.substr(gap_start, i - gap_start));
      on_token(best_id);
      gap_start = best_end;
      i = best_end - 1;
    }
    if (gap_start < n) on_gap(text.substr(gap_start));
  }

 private:
  struct Node {
    std::int32_t id = -1;
    std::vector<std::pair<unsigned char, std::int32_t>> children;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
  bool empty_ = true;
};

// ---------------------------------------------------------------------------------------------
// Regexes. tokenizer.json patterns are Oniguruma syntax (HF compiles them with onig). PCRE2 reads
// them the same way except for the escapes whose Unicode meaning differs; \s is the one this
// tokenizer uses: Oniguruma's \s is exactly White_Space (U+0009-000D, U+0085, Zs, Zl, Zp) while
// PCRE2's UCP \s also takes U+180E (and JavaScript's takes U+FEFF but not U+0085). So \s and \S
// are rewritten to that explicit set; escapes that differ and that we do not rewrite are refused.

constexpr std::string_view kOnigSpaceSet = "\\x{09}-\\x{0D}\\x{85}\\p{Z}";

std::string onig_to_pcre2(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's' || e == 'S') {
        if (in_class && e == 'S') throw std::invalid_argument("\\S inside a character class");
        if (in_class) {
          out += kOnigSpaceSet;
        } else {
          out += e == 's' ? "[" : "[^";
          out += kOnigSpaceSet;
          out += "]";
        }
      } else if (std::string_view("wWbBhHvVRXK").find(e) != std::string_view::npos) {
        throw std::invalid_argument(std::string("escape \\") + e +
                                    " means different things in Oniguruma and PCRE2");
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // literal ']'
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const std::size_t close = pattern.find(":]", i + 2);
      if (close == std::string_view::npos) throw std::invalid_argument("unterminated [: class");
      out += pattern.substr(i, close + 2 - i);  // POSIX class, e.g. [:alpha:]
      i = close + 1;
      continue;
    }
    if (in_class && c == '[') throw std::invalid_argument("nested character class");
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};

class Regex {
 public:
  Regex(std::string_view pattern, bool literal) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    const std::uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                              &error, &offset, nullptr));
    if (!code_) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      throw std::invalid_argument("PCRE2 rejects the pattern at offset " + std::to_string(offset) +
                                  ": " + reinterpret_cast<const char*>(message.data()));
    }
    // JIT is several times faster; without it (unsupported platform) pcre2_match interprets.
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);
  }

  // Calls emit(piece) for each match and each gap between matches, in order (behavior
  // Isolated). Empty matches split nothing, as in HF. REQUIRES: `text` is valid UTF-8.
  template <class Emit>
  void split(std::string_view text, pcre2_match_data* md, Emit&& emit) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t prev = 0, pos = 0;
    while (pos < text.size()) {
      int rc = pcre2_match(code_.get(), subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        // The interpreter keeps its backtracking frames on the heap.
        rc = pcre2_match(code_.get(), subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                         md, nullptr);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        std::array<PCRE2_UCHAR, 256> message{};
        pcre2_get_error_message(rc, message.data(), message.size());
        throw std::runtime_error(std::string("Tokenizer: PCRE2 match failed: ") +
                                 reinterpret_cast<const char*>(message.data()));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const std::size_t start = ov[0], end = ov[1];
      if (start == end) {  // step over one character
        if (end >= text.size()) break;
        pos = end + utf8_step(subject + end, text.size() - end).len;
        continue;
      }
      if (start > prev) emit(text.substr(prev, start - prev));
      emit(text.substr(start, end - start));
      prev = pos = end;
    }
    if (prev < text.size()) emit(text.substr(prev));
  }

 private:
  std::unique_ptr<pcre2_code, CodeDeleter> code_;
};

// One match-data block per thread, shared by all Tokenizers: the ovector only needs the whole
// match, so its size does not depend on the pattern.
pcre2_match_data* thread_match_data() {
  struct Holder {
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    ~Holder() { pcre2_match_data_free(md); }
  };
  thread_local Holder holder;
  if (!holder.md) throw std::bad_alloc();
  return holder.md;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

// Pieces up to this many bytes use the quadratic in-place BPE (no allocation; most words are
// under 16 bytes); longer ones the heap-based O(n log n) one, so one huge word cannot stall.
// (16..128 measured the same.) TODO(perf): encode is bound by merge-table lookups that miss L2
// (~3 per byte on CJK text); a per-thread word cache as HF keeps would help repetitive text.
constexpr std::size_t kLinearBpeMax = 64;

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  // Per id: the token string as in tokenizer.json, and the bytes it decodes to.
  std::string text_arena;
  std::vector<std::uint32_t> text_offset;  // vocab_size + 1 entries
  std::string bytes_arena;
  std::vector<std::uint32_t> bytes_offset;
  std::vector<std::uint8_t> special;  // per id

  StringMap text_to_id;   // added tokens override the BPE vocabulary, as in HF
  StringMap bytes_to_id;  // BPE vocabulary by decoded bytes; only filled for ignore_merges
  std::array<std::int32_t, 256> byte_id{};
  MergeTable merges;
  bool ignore_merges = false;

  AddedMatcher raw_added;         // added tokens with normalized = false
  AddedMatcher normalized_added;  // normalized = true (matched after the empty normalizer)
  std::vector<Regex> splits;

  std::int32_t bos = -1, eos = -1;
  bool add_bos = false;

  std::int32_t size() const { return static_cast<std::int32_t>(special.size()); }
  std::string_view text(std::int32_t id) const {
    return std::string_view(text_arena)
        .substr(text_offset[id], text_offset[id + 1] - text_offset[id]);
  }
  std::string_view bytes(std::int32_t id) const {
    return std::string_view(bytes_arena)
        .substr(bytes_offset[id], bytes_offset[id + 1] - bytes_offset[id]);
  }

  // Added tokens first (two passes), then calls on_piece for each regex piece of what is left.
  template <class Piece, class Token>
  void pre_tokenize(std::string_view text, Piece&& on_piece, Token&& on_token) const {
    pcre2_match_data* md = thread_match_data();
    auto on_segment = [&](std::string_view segment) { split_level(0, segment, md, on_piece); };
    raw_added.split(
        text, [&](std::string_view gap) { normalized_added.split(gap, on_segment, on_token); },
        on_token);
  }

  template <class Piece>
  void split_level(std::size_t level, std::string_view piece, pcre2_match_data* md,
                   Piece& on_piece) const {
    if (level == splits.size()) {
      on_piece(piece);
      return;
    }
    splits[level].split(piece, md,
                        [&](std::string_view sub) { split_level(level + 1, sub, md, on_piece); });
  }

  void bpe(std::string_view piece, std::vector<std::int32_t>& out) const;
  void bpe_long(std::string_view piece, std::vector<std::int32_t>& out) const;
};

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<std::int32_t>& out) const {
  const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
  const std::size_t n = piece.size();
  if (n == 1) {
    out.push_back(byte_id[p[0]]);
    return;
  }
  if (ignore_merges) {
    if (auto it = bytes_to_id.find(piece); it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (n > kLinearBpeMax) {
    bpe_long(piece, out);
    return;
  }
  // ids[0..len) are the current symbols; best[i] is the merge of (ids[i], ids[i+1]).
  std::array<std::int32_t, kLinearBpeMax> ids;
  std::array<std::uint64_t, kLinearBpeMax> best;
  std::size_t len = n;
  for (std::size_t i = 0; i < n; ++i) ids[i] = byte_id[p[i]];
  for (std::size_t i = 0; i + 1 < len; ++i) best[i] = merges.find(ids[i], ids[i + 1]);
  while (len > 1) {
    std::uint64_t top = kNoMerge;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < len; ++i) {
      if (best[i] < top) top = best[i], at = i;  // strict: the leftmost of equal pairs wins
    }
    if (top == kNoMerge) break;
    ids[at] = static_cast<std::int32_t>(top & 0xFFFFFFFFu);
    std::memmove(&ids[at + 1], &ids[at + 2], (len - at - 2) * sizeof(ids[0]));
    std::memmove(&best[at], &best[at + 1], (len - at - 2) * sizeof(best[0]));
    --len;
    if (at > 0) best[at - 1] = merges.find(ids[at - 1], ids[at]);
    if (at + 1 < len) best[at] = merges.find(ids[at], ids[at + 1]);
  }
  out.insert(out.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(len));
}

// The same merge order as bpe() (lowest rank, then leftmost), with a linked list of symbols and
// a min-heap of candidate merges keyed by (rank, position of the left symbol). Entries go stale
// when their left symbol or its right neighbour changes; each merge bumps the generation of the
// two symbols whose pairs it changes, so a popped entry is checked without a table lookup.
void Tokenizer::Impl::bpe_long(std::string_view piece, std::vector<std::int32_t>& out) const {
  struct Candidate {
    std::uint64_t key;  // rank << 32 | left position: the heap order
    std::uint32_t generation;
    std::int32_t merged;
    bool operator>(const Candidate& o) const { return key > o.key; }
  };
  struct Scratch {
    std::vector<std::int32_t> ids;  // -1 once merged into its left neighbour
    std::vector<std::uint32_t> prev, next, generation;
    std::vector<Candidate> heap;
  };
  thread_local Scratch s;
  const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
  const auto n = static_cast<std::uint32_t>(piece.size());
  constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
  s.ids.resize(n);
  s.prev.resize(n);
  s.next.resize(n);
  s.generation.assign(n, 0);
  s.heap.clear();
  const auto push = [&](std::uint32_t left) {
    const std::uint64_t m = merges.find(s.ids[left], s.ids[s.next[left]]);
    if (m == kNoMerge) return;
    s.heap.push_back({(m & ~std::uint64_t{0xFFFFFFFFu}) | left, s.generation[left],
                      static_cast<std::int32_t>(m & 0xFFFFFFFFu)});
    std::push_heap(s.heap.begin(), s.heap.end(), std::greater<>());
  };
  for (std::uint32_t i = 0; i < n; ++i) {
    s.ids[i] = byte_id[p[i]];
    s.prev[i] = i == 0 ? kNone : i - 1;
    s.next[i] = i + 1 == n ? kNone : i + 1;
  }
  for (std::uint32_t i = 0; i + 1 < n; ++i) push(i);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), std::greater<>());
    const Candidate c = s.heap.back();
    s.heap.pop_back();
    const auto left = static_cast<std::uint32_t>(c.key & 0xFFFFFFFFu);
    if (c.generation != s.generation[left] || s.ids[left] < 0) continue;  // stale
    const std::uint32_t right = s.next[left];
    s.ids[left] = c.merged;
    s.ids[right] = -1;
    s.next[left] = s.next[right];
    ++s.generation[left];
    if (s.next[left] != kNone) s.prev[s.next[left]] = left;
    if (s.prev[left] != kNone) {
      ++s.generation[s.prev[left]];
      push(s.prev[left]);
    }
    if (s.next[left] != kNone) push(left);
  }
  for (std::uint32_t i = 0; i != kNone; i = s.next[i]) out.push_back(s.ids[i]);
}

// ---------------------------------------------------------------------------------------------
// Loading.

namespace {

json read_json(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw TokenizerError(file, "cannot open (missing or unreadable)");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::exception& e) {
    throw TokenizerError(file, std::string("not valid JSON: ") + e.what());
  }
}

// `value` as a string, or the "content" of an {"__type": "AddedToken", ...} object; "" if null.
std::string token_content(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return {};
}

bool is_null_or(const json& obj, const char* key, const json& expected) {
  return !obj.contains(key) || obj[key].is_null() || obj[key] == expected;
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& dir) {
  const std::filesystem::path tok_file = dir / "tokenizer.json";
  const std::filesystem::path cfg_file = dir / "tokenizer_config.json";
  const json tok = read_json(tok_file);
  const json cfg = read_json(cfg_file);
  auto impl = std::make_shared<Impl>();
  const auto fail = [&](const std::string& problem) -> TokenizerError {
    return TokenizerError(tok_file, problem);
  };

  try {
    if (!tok.is_object()) throw fail("top level is not an object");

    // normalizer: none, or a Sequence with nothing in it.
    if (const json& norm = tok.value("normalizer", json()); !norm.is_null()) {
      if (!(norm.value("type", "") == "Sequence" &&
            norm.value("normalizers", json::array()).empty())) {
        throw fail("unsupported normalizer " + norm.dump() + " (only none or an empty Sequence)");
      }
    }

    // pre_tokenizer: Split regexes (Isolated, not inverted) then ByteLevel without its own regex.
    const json& pre = tok.at("pre_tokenizer");
    std::vector<json> steps;
    if (pre.value("type", "") == "Sequence") {
      for (const json& step : pre.at("pretokenizers")) steps.push_back(step);
    } else {
      steps.push_back(pre);
    }
    if (steps.empty() || steps.back().value("type", "") != "ByteLevel") {
      throw fail("pre_tokenizer must end with ByteLevel");
    }
    const json& byte_level = steps.back();
    if (byte_level.value("add_prefix_space", false) || byte_level.value("use_regex", true)) {
      throw fail("unsupported ByteLevel pre_tokenizer (need add_prefix_space and use_regex false)");
    }
    for (std::size_t i = 0; i + 1 < steps.size(); ++i) {
      const json& step = steps[i];
      if (step.value("type", "") != "Split" || step.value("behavior", "") != "Isolated" ||
          step.value("invert", false)) {
        throw fail("unsupported pre_tokenizer step " + step.dump() +
                   " (only Split, behavior Isolated, invert false)");
      }
      const json& pattern = step.at("pattern");
      try {
        if (pattern.contains("Regex")) {
          impl->splits.emplace_back(onig_to_pcre2(pattern["Regex"].get<std::string>()), false);
        } else {
          impl->splits.emplace_back(pattern.at("String").get<std::string>(), true);
        }
      } catch (const std::invalid_argument& e) {
        throw fail("pre_tokenizer pattern " + pattern.dump() + ": " + e.what());
      }
    }

    // post_processor: ByteLevel adds nothing; BOS comes from tokenizer_config below.
    if (const json& post = tok.value("post_processor", json());
        !post.is_null() && post.value("type", "") != "ByteLevel") {
      throw fail("unsupported post_processor type " + post.value("type", std::string("?")));
    }
    if (tok.at("decoder").value("type", "") != "ByteLevel") {
      throw fail("unsupported decoder (only ByteLevel)");
    }

    // model: plain byte-level BPE.
    const json& model = tok.at("model");
    if (model.value("type", "") != "BPE") throw fail("model.type is not BPE");
    if (!is_null_or(model, "dropout", json(0.0)) || model.value("byte_fallback", false) ||
        !is_null_or(model, "continuing_subword_prefix", json("")) ||
        !is_null_or(model, "end_of_word_suffix", json(""))) {
      throw fail("unsupported BPE options (dropout, byte_fallback or subword affixes)");
    }
    impl->ignore_merges = model.value("ignore_merges", false);

    // Ids: the BPE vocabulary, then added tokens (which may reuse a vocabulary id).
    StringMap vocab;
    std::vector<std::string> text_of;
    const auto set_text = [&](std::int32_t id, const std::string& text) {
      if (id < 0) throw fail("negative id " + std::to_string(id));
      if (static_cast<std::size_t>(id) >= text_of.size())
        text_of.resize(static_cast<std::size_t>(id) + 1);
      text_of[static_cast<std::size_t>(id)] = text;
    };
    for (const auto& [text, id_json] : model.at("vocab").items()) {
      const auto id = id_json.get<std::int32_t>();
      if (!vocab.emplace(text, id).second) throw fail("duplicate vocab entry " + text);
      set_text(id, text);
    }
    std::vector<bool> is_added;
    std::vector<std::uint8_t> special;
    for (const json& added : tok.at("added_tokens")) {
      const auto id = added.at("id").get<std::int32_t>();
      const auto content = added.at("content").get<std::string>();
      if (content.empty()) throw fail("added token " + std::to_string(id) + " is empty");
      if (added.value("lstrip", false) || added.value("rstrip", false) ||
          added.value("single_word", false)) {
        throw fail("added token " + content + ": lstrip/rstrip/single_word are not supported");
      }
      set_text(id, content);
      if (special.size() < text_of.size()) special.resize(text_of.size(), 0);
      special[static_cast<std::size_t>(id)] = added.value("special", false) ? 1 : 0;
      (added.value("normalized", false) ? impl->normalized_added : impl->raw_added)
          .add(content, id);
      impl->text_to_id[content] = id;
    }
    special.resize(text_of.size(), 0);
    impl->special = std::move(special);
    for (const auto& [text, id] : vocab) impl->text_to_id.emplace(text, id);  // added win

    // Per-id text and decoded bytes. Every id in [0, size) must exist.
    impl->text_offset.push_back(0);
    impl->bytes_offset.push_back(0);
    for (std::size_t id = 0; id < text_of.size(); ++id) {
      if (text_of[id].empty()) throw fail("no token has id " + std::to_string(id));
      impl->text_arena += text_of[id];
      impl->bytes_arena += byte_level_decode(text_of[id]);
      if (impl->bytes_arena.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw fail("vocabulary too large");
      }
      impl->text_offset.push_back(static_cast<std::uint32_t>(impl->text_arena.size()));
      impl->bytes_offset.push_back(static_cast<std::uint32_t>(impl->bytes_arena.size()));
    }
    if (impl->ignore_merges) {
      for (const auto& [text, id] : vocab) impl->bytes_to_id.emplace(impl->bytes(id), id);
    }

    // The 256 byte symbols BPE starts from.
    const ByteAlphabet& alphabet = byte_alphabet();
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      append_utf8(ch, alphabet.byte_to_cp[b]);
      const auto it = vocab.find(ch);
      if (it == vocab.end()) throw fail("vocab lacks the byte token for byte " + std::to_string(b));
      impl->byte_id[b] = it->second;
    }

    // Merges: "a b" strings, or [a, b] pairs (tokenizers >= 0.20). Rank = position.
    const json& merges = model.at("merges");
    impl->merges.reserve(merges.size());
    std::uint32_t rank = 0;
    for (const json& merge : merges) {
      std::string left, right;
      if (merge.is_string()) {
        const auto& s = merge.get_ref<const std::string&>();
        const std::size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          throw fail("merge " + std::to_string(rank) + " \"" + s + "\" is not \"a b\"");
        }
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        throw fail("merge " + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
      }
      const auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
      if (l == vocab.end() || r == vocab.end() || m == vocab.end()) {
        throw fail("merge " + std::to_string(rank) + " (" + left + " " + right +
                   ") uses a token missing from the vocab");
      }
      impl->merges.insert(l->second, r->second, rank++, m->second);
    }
  } catch (const json::exception& e) {
    throw fail(std::string("unexpected structure: ") + e.what());
  }

  // tokenizer_config.json: BOS/EOS and whether BOS is added (transformers' LlamaTokenizerFast
  // puts it in its post-processor when add_bos_token is true).
  try {
    const auto lookup = [&](const char* key) -> std::int32_t {
      const std::string content = token_content(cfg.value(key, json()));
      if (content.empty()) throw TokenizerError(cfg_file, std::string("no ") + key);
      const auto it = impl->text_to_id.find(content);
      if (it == impl->text_to_id.end()) {
        throw TokenizerError(cfg_file, std::string(key) + " \"" + content + "\" is not a token");
      }
      return it->second;
    };
    impl->bos = lookup("bos_token");
    impl->eos = lookup("eos_token");
    impl->add_bos = cfg.value("add_bos_token", false);
    if (cfg.value("add_eos_token", false)) {
      throw TokenizerError(cfg_file, "add_eos_token = true is not supported");
    }
  } catch (const json::exception& e) {
    throw TokenizerError(cfg_file, std::string("unexpected structure: ") + e.what());
  }
  return Tokenizer(std::move(impl));
}

// ---------------------------------------------------------------------------------------------

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  return encode(text, impl_->add_bos);
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  encode_into(text, add_bos, ids);
  return ids;
}

void Tokenizer::encode_into(std::string_view text, bool add_bos,
                            std::vector<std::int32_t>& out) const {
  if (const std::size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    throw std::invalid_argument("Tokenizer::encode: text is not valid UTF-8 (byte offset " +
                                std::to_string(bad) + ")");
  }
  if (add_bos) out.push_back(impl_->bos);
  const Impl& impl = *impl_;
  impl.pre_tokenize(
      text, [&](std::string_view piece) { impl.bpe(piece, out); },
      [&](std::int32_t id) { out.push_back(id); });
}

std::vector<std::string_view> Tokenizer::pre_tokenize(std::string_view text) const {
  if (const std::size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    throw std::invalid_argument("Tokenizer::pre_tokenize: text is not valid UTF-8 (byte offset " +
                                std::to_string(bad) + ")");
  }
  std::vector<std::string_view> pieces;
  // Added tokens are reported by id; recover their span from the running offset.
  std::size_t offset = 0;
  impl_->pre_tokenize(
      text,
      [&](std::string_view piece) {
        pieces.push_back(piece);
        offset = static_cast<std::size_t>(piece.data() + piece.size() - text.data());
      },
      [&](std::int32_t id) {
        const std::size_t len = impl_->text(id).size();
        pieces.push_back(text.substr(offset, len));
        offset += len;
      });
  return pieces;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (std::int32_t id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    bytes.append(token_bytes(id));
  }
  if (first_invalid_utf8(bytes) == std::string_view::npos) return bytes;
  std::string text;
  append_lossy(text, bytes);
  return text;
}

std::int32_t Tokenizer::bos_id() const { return impl_->bos; }
std::int32_t Tokenizer::eos_id() const { return impl_->eos; }
std::string_view Tokenizer::bos_token() const { return impl_->text(impl_->bos); }
std::string_view Tokenizer::eos_token() const { return impl_->text(impl_->eos); }
bool Tokenizer::add_bos_by_default() const { return impl_->add_bos; }
std::int32_t Tokenizer::vocab_size() const { return impl_->size(); }

std::optional<std::int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->text_to_id.find(token);
  if (it == impl_->text_to_id.end()) return std::nullopt;
  return it->second;
}

namespace {
void check_id(std::int32_t id, std::int32_t size) {
  if (id < 0 || id >= size) {
    throw std::out_of_range("token id " + std::to_string(id) + " is out of range [0, " +
                            std::to_string(size) + ")");
  }
}
}  // namespace

std::string_view Tokenizer::id_to_token(std::int32_t id) const {
  check_id(id, impl_->size());
  return impl_->text(id);
}

std::string_view Tokenizer::token_bytes(std::int32_t id) const {
  check_id(id, impl_->size());
  return impl_->bytes(id);
}

bool Tokenizer::is_special(std::int32_t id) const {
  return id >= 0 && id < impl_->size() && impl_->special[static_cast<std::size_t>(id)] != 0;
}

// ---------------------------------------------------------------------------------------------

std::string StreamDecoder::push_model_token(std::int32_t id) {
  if (id >= tokenizer_->vocab_size()) return {};
  return push(id);
}

std::string StreamDecoder::push(std::int32_t id) {
  const std::string_view bytes = tokenizer_->token_bytes(id);  // throws before any change
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_.append(bytes);
  // Hold back a trailing sequence that is well-formed so far but unfinished. It starts at a lead
  // byte within the last 3 bytes; everything before it is final (a lead byte cannot continue an
  // earlier sequence), so the lossy conversion of the prefix matches decode()'s.
  const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
  std::size_t keep_from = pending_.size();
  for (std::size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const std::size_t at = pending_.size() - back;
    if ((p[at] & 0xC0) != 0x80) {  // not a continuation byte: the candidate start
      const Utf8Step st = utf8_step(p + at, back);
      if (st.truncated) keep_from = at;
      break;
    }
  }
  std::string out;
  append_lossy(out, std::string_view(pending_).substr(0, keep_from));
  pending_.erase(0, keep_from);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  append_lossy(out, pending_);
  pending_.clear();
  return out;
}

}  // namespace sy::model
