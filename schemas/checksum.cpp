// XXH64 as specified in xxHash's doc/xxhash_spec.md; byte order is fixed (little-endian lanes).
#include "schemas/checksum.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sy::schemas {

namespace {

constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr std::uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr std::uint64_t kP5 = 0x27D4EB2F165667C5ull;

std::uint64_t read64(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t{std::to_integer<std::uint8_t>(p[i])} << (8 * i);
  return v;
}

std::uint32_t read32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{std::to_integer<std::uint8_t>(p[i])} << (8 * i);
  return v;
}

std::uint64_t round(std::uint64_t acc, std::uint64_t lane) {
  acc += lane * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}

std::uint64_t merge(std::uint64_t acc, std::uint64_t lane_acc) {
  acc ^= round(0, lane_acc);
  return acc * kP1 + kP4;
}

void consume_stripe(std::uint64_t (&acc)[4], const std::byte* p) {
  for (int i = 0; i < 4; ++i) acc[i] = round(acc[i], read64(p + 8 * i));
}

}  // namespace

Xxh64::Xxh64(std::uint64_t seed)
    : seed_(seed), acc_{seed + kP1 + kP2, seed + kP2, seed, seed - kP1} {}

void Xxh64::update(std::span<const std::byte> bytes) {
  total_ += bytes.size();
  const std::byte* p = bytes.data();
  std::size_t n = bytes.size();
  if (buffered_ > 0) {
    const std::size_t take = std::min(n, buffer_.size() - buffered_);
    std::memcpy(buffer_.data() + buffered_, p, take);
    buffered_ += take;
    p += take;
    n -= take;
    if (buffered_ < buffer_.size()) return;
    consume_stripe(acc_, buffer_.data());
    buffered_ = 0;
  }
  for (; n >= 32; p += 32, n -= 32) consume_stripe(acc_, p);
  if (n > 0) std::memcpy(buffer_.data(), p, n);
  buffered_ = n;
}

std::uint64_t Xxh64::digest() const {
  std::uint64_t h;
  if (total_ >= 32) {
    h = std::rotl(acc_[0], 1) + std::rotl(acc_[1], 7) + std::rotl(acc_[2], 12) + std::rotl(acc_[3], 18);
    for (const std::uint64_t a : acc_) h = merge(h, a);
  } else {
    h = seed_ + kP5;
  }
  h += total_;
  const std::byte* p = buffer_.data();
  std::size_t n = buffered_;
  for (; n >= 8; p += 8, n -= 8) {
    h ^= round(0, read64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
  }
  if (n >= 4) {
    h ^= std::uint64_t{read32(p)} * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
    n -= 4;
  }
  for (; n > 0; ++p, --n) {
    h ^= std::uint64_t{std::to_integer<std::uint8_t>(*p)} * kP5;
    h = std::rotl(h, 11) * kP1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

std::uint64_t xxh64(std::span<const std::byte> bytes, std::uint64_t seed) {
  Xxh64 state(seed);
  state.update(bytes);
  return state.digest();
}

std::uint64_t kv_handoff_checksum(std::span<const std::byte* const> layer_pools,
                                  std::span<const std::int32_t> page_ids, std::uint32_t page_tokens,
                                  std::uint32_t token_bytes, std::uint32_t prompt_tokens) {
  if (page_tokens == 0) throw std::invalid_argument("kv_handoff_checksum: page_tokens must be >= 1");
  const std::size_t pages = (std::size_t{prompt_tokens} + page_tokens - 1) / page_tokens;
  if (page_ids.size() < pages) {
    throw std::invalid_argument("kv_handoff_checksum: " + std::to_string(page_ids.size()) + " page ids for " +
                                std::to_string(prompt_tokens) + " tokens (" + std::to_string(pages) + " pages)");
  }
  const std::size_t page_bytes = std::size_t{page_tokens} * token_bytes;
  Xxh64 state;
  for (const std::byte* pool : layer_pools) {
    std::uint32_t left = prompt_tokens;
    for (std::size_t j = 0; j < pages; ++j) {
      const std::uint32_t tokens = std::min(left, page_tokens);
      if (page_ids[j] < 0) throw std::invalid_argument("kv_handoff_checksum: negative page id");
      const std::byte* page = pool + static_cast<std::size_t>(page_ids[j]) * page_bytes;
      state.update({page, std::size_t{tokens} * token_bytes});
      left -= tokens;
    }
  }
  return state.digest();
}

}  // namespace sy::schemas
