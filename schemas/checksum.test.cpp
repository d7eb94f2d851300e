// XXH64 against values from the reference implementation (libxxhash 0.8.1), streaming against
// one-shot, and the KV hand-off order.
#include "schemas/checksum.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string_view>
#include <vector>

namespace sy::schemas {
namespace {

std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 31 + 7) & 0xff);
  return out;
}

TEST(Xxh64, MatchesTheReferenceImplementation) {
  EXPECT_EQ(xxh64(bytes_of("")), 0xef46db3751d8e999ull);
  EXPECT_EQ(xxh64(bytes_of("a")), 0xd24ec4f1a98c6e5bull);
  EXPECT_EQ(xxh64(bytes_of("abc")), 0x44bc2cf5ad770999ull);
  EXPECT_EQ(xxh64(bytes_of("Nobody inspects the spammish repetition")), 0xfbcea83c8a378bf1ull);
  EXPECT_EQ(xxh64(bytes_of("0123456789abcdef0123456789abcdef0123456789abcdef01234567")), 0x08e38db4b6a63cfdull);
  EXPECT_EQ(xxh64(bytes_of(""), 1), 0xd5afba1336a3be4bull);
  EXPECT_EQ(xxh64(bytes_of("abc"), 1), 0xbea9ca8199328908ull);
  EXPECT_EQ(xxh64(bytes_of("Nobody inspects the spammish repetition"), 1), 0x43f425448d954db6ull);
  const auto p = pattern(1000);
  EXPECT_EQ(xxh64(p), 0x99594f4828043d35ull);
  EXPECT_EQ(xxh64(std::span(p).first(37)), 0x5d71d9fc4b676d9full);
}

TEST(Xxh64, StreamingEqualsOneShotForEverySplit) {
  const auto p = pattern(200);
  const std::uint64_t whole = xxh64(p);
  for (std::size_t a = 0; a <= p.size(); a += 7) {
    for (std::size_t b = a; b <= p.size(); b += 13) {
      Xxh64 state;
      state.update(std::span(p).subspan(0, a));
      state.update(std::span(p).subspan(a, b - a));
      state.update(std::span(p).subspan(b));
      ASSERT_EQ(state.digest(), whole) << "split at " << a << ", " << b;
    }
  }
  Xxh64 bytewise;
  for (const std::byte b : p) bytewise.update({&b, 1});
  EXPECT_EQ(bytewise.digest(), whole);
  EXPECT_EQ(bytewise.digest(), whole) << "digest() must not change the state";
}

TEST(KvHandoffChecksum, HashesUsedEntriesLayerByLayerInPageOrder) {
  // 2 layers, 4-page pools of 3-token pages, 5-byte entries; prompt 7 tokens in pages {2, 0, 3}.
  constexpr std::uint32_t page_tokens = 3, token_bytes = 5, prompt = 7;
  const std::vector<std::int32_t> page_ids = {2, 0, 3};
  std::vector<std::vector<std::byte>> pools(2, std::vector<std::byte>(4 * page_tokens * token_bytes));
  for (std::size_t l = 0; l < pools.size(); ++l) {
    for (std::size_t i = 0; i < pools[l].size(); ++i) pools[l][i] = static_cast<std::byte>(l * 100 + i);
  }
  std::vector<std::byte> expected;
  for (const auto& pool : pools) {
    for (std::uint32_t q = 0; q < prompt; ++q) {
      const std::size_t at = (static_cast<std::size_t>(page_ids[q / page_tokens]) * page_tokens + q % page_tokens) * token_bytes;
      expected.insert(expected.end(), pool.begin() + static_cast<std::ptrdiff_t>(at),
                      pool.begin() + static_cast<std::ptrdiff_t>(at + token_bytes));
    }
  }
  const std::byte* bases[] = {pools[0].data(), pools[1].data()};
  EXPECT_EQ(kv_handoff_checksum(bases, page_ids, page_tokens, token_bytes, prompt), xxh64(expected));
  // Bytes past the prompt (the tail of page 3) are not covered.
  pools[0][(3 * page_tokens + 2) * token_bytes] ^= std::byte{1};
  EXPECT_EQ(kv_handoff_checksum(bases, page_ids, page_tokens, token_bytes, prompt), xxh64(expected));
  // A byte inside the prompt is.
  pools[1][(0 * page_tokens + 1) * token_bytes] ^= std::byte{1};
  EXPECT_NE(kv_handoff_checksum(bases, page_ids, page_tokens, token_bytes, prompt), xxh64(expected));
  EXPECT_THROW(kv_handoff_checksum(bases, std::span(page_ids).first(2), page_tokens, token_bytes, prompt),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::schemas
