// XXH64, the checksum of the KV hand-off (kv.capnp KvHandOff.checksum), and the hand-off's byte
// order written as code. XXH64 is Yann Collet's 64-bit xxHash (the reference: github.com/Cyan4973/
// xxHash, XXH64 in xxhash.h, spec doc/xxhash_spec.md): fast (≈10 GB/s), byte-order fixed
// (little-endian reads), and known values are easy to check against any implementation.
// Used by prefill (writer) and decode (verifier). Stateless functions; an Xxh64 object is owned by
// one thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace sy::schemas {

// Streaming XXH64: update() any number of times with consecutive pieces, then digest(); the result
// equals xxh64() over the concatenation. digest() does not change the state.
class Xxh64 {
 public:
  explicit Xxh64(std::uint64_t seed = 0);
  void update(std::span<const std::byte> bytes);
  std::uint64_t digest() const;

 private:
  std::uint64_t seed_;
  std::uint64_t acc_[4];
  std::uint64_t total_ = 0;           // bytes consumed so far
  std::array<std::byte, 32> buffer_{};  // a partial 32-byte stripe
  std::size_t buffered_ = 0;          // bytes in buffer_
};

std::uint64_t xxh64(std::span<const std::byte> bytes, std::uint64_t seed = 0);

// The KvHandOff checksum over caches in host memory: layer_pools[l] is page 0 of layer l's pool
// (main layers, then MTP layers), whose page p holds page_tokens entries of token_bytes bytes at
// layer_pools[l] + p * page_tokens * token_bytes. Hashes positions [0, prompt_tokens) of every
// layer, layer by layer, each page's used run in page_ids order (seed 0). REQUIRES: page_ids holds
// at least ceil(prompt_tokens / page_tokens) ids, each inside every pool; page_tokens >= 1.
std::uint64_t kv_handoff_checksum(std::span<const std::byte* const> layer_pools,
                                  std::span<const std::int32_t> page_ids, std::uint32_t page_tokens,
                                  std::uint32_t token_bytes, std::uint32_t prompt_tokens);

}  // namespace sy::schemas
