#include "model/kv_transfer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "schemas/checksum.hpp"

namespace sy::model {

KvLayout kv_layout(const KvCache& cache) {
  return {.layers = cache.num_layers(), .pages = cache.num_pages(), .token_bytes = cache.token_bytes()};
}

std::vector<KvSpan> kv_page_spans(const KvLayout& layout, std::span<const std::int32_t> page_ids, std::int64_t tokens) {
  if (tokens < 0) throw std::invalid_argument(fmt::format("KV spans: {} tokens", tokens));
  const std::int64_t pages = KvCache::pages_for(tokens);
  if (static_cast<std::int64_t>(page_ids.size()) < pages) {
    throw std::invalid_argument(
        fmt::format("KV spans: {} tokens need {} pages, the sequence has {}", tokens, pages, page_ids.size()));
  }
  std::vector<KvSpan> spans;
  spans.reserve(static_cast<std::size_t>(layout.layers * pages));
  for (std::int64_t l = 0; l < layout.layers; ++l) {
    std::int64_t left = tokens;
    for (std::int64_t j = 0; j < pages; ++j) {
      const std::int32_t page = page_ids[static_cast<std::size_t>(j)];
      if (page < 0 || page >= layout.pages) {
        throw std::invalid_argument(fmt::format("KV spans: page id {} is outside [0, {})", page, layout.pages));
      }
      const std::int64_t used = std::min(left, gpu::kMlaPageSize);
      spans.push_back({.layer = l,
                       .page = page,
                       .offset = l * layout.layer_bytes() + page * layout.page_bytes(),
                       .bytes = used * layout.token_bytes});
      left -= used;
    }
  }
  return spans;
}

std::vector<KvSpan> kv_page_spans(const KvCache& cache, SequenceId seq, std::int64_t tokens) {
  return kv_page_spans(kv_layout(cache), cache.pages(seq), tokens);
}

std::uint64_t kv_checksum(const KvCache& cache, SequenceId seq, std::int64_t tokens) {
  if (tokens < 0 || tokens > cache.reserved(seq)) {
    throw std::invalid_argument(
        fmt::format("KV checksum: {} tokens, sequence {} holds {}", tokens, seq, cache.reserved(seq)));
  }
  std::vector<const std::byte*> pools;
  for (std::int64_t l = 0; l < cache.num_layers(); ++l) pools.push_back(cache.arena() + l * cache.layer_bytes());
  const std::vector<std::int32_t> pages = cache.pages(seq);
  return schemas::kv_handoff_checksum(pools, pages, static_cast<std::uint32_t>(gpu::kMlaPageSize),
                                      static_cast<std::uint32_t>(cache.token_bytes()),
                                      static_cast<std::uint32_t>(tokens));
}

void copy_kv_spans(std::span<const std::byte> src_arena, std::span<const KvSpan> src, std::span<std::byte> dst_arena,
                   std::span<const KvSpan> dst) {
  if (src.size() != dst.size()) {
    throw std::invalid_argument(fmt::format("KV copy: {} source spans, {} destination spans", src.size(), dst.size()));
  }
  auto inside = [](const KvSpan& s, std::size_t arena) {
    return s.offset >= 0 && s.bytes >= 0 && static_cast<std::uint64_t>(s.offset + s.bytes) <= arena;
  };
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (src[i].bytes != dst[i].bytes || !inside(src[i], src_arena.size()) || !inside(dst[i], dst_arena.size())) {
      throw std::invalid_argument(
          fmt::format("KV copy: span {} does not fit (source {} bytes at {}, destination {} bytes at {})", i,
                      src[i].bytes, src[i].offset, dst[i].bytes, dst[i].offset));
    }
  }
  for (std::size_t i = 0; i < src.size(); ++i) {
    std::memcpy(dst_arena.data() + dst[i].offset, src_arena.data() + src[i].offset,
                static_cast<std::size_t>(src[i].bytes));
  }
}

void verify_kv_handoff(const KvCache& cache, SequenceId seq, const KvHandoff& h, std::int64_t hidden_size,
                       bool verify_checksum) {
  const std::int64_t p = h.prompt_tokens;
  if (h.layers != cache.num_layers() || h.token_bytes != cache.token_bytes()) {
    throw KvHandoffError(fmt::format(
        "KV hand-off: the prefill cache has {} layers of {}-byte entries, this cache {} layers of {}-byte entries "
        "(model, numerics and MTP settings must match)",
        h.layers, h.token_bytes, cache.num_layers(), cache.token_bytes()));
  }
  if (p < 1 || p > cache.reserved(seq)) {
    throw KvHandoffError(
        fmt::format("KV hand-off: {} prompt tokens do not fit the reservation of {} tokens", p, cache.reserved(seq)));
  }
  if (h.bytes_written != p * h.token_bytes * h.layers) {
    throw KvHandoffError(fmt::format("KV hand-off: {} bytes written, {} prompt tokens in {} layers need {}",
                                     h.bytes_written, p, h.layers, p * h.token_bytes * h.layers));
  }
  if (!h.last_hidden.empty()) {
    if (static_cast<std::int64_t>(h.last_hidden.size()) != hidden_size || h.mtp_length != p - 1) {
      throw KvHandoffError(
          fmt::format("KV hand-off: the MTP continuation needs mtp_length {} and {} hidden values (got {} and {})",
                      p - 1, hidden_size, h.mtp_length, h.last_hidden.size()));
    }
    for (const float v : h.last_hidden) {
      if (!std::isfinite(v)) throw KvHandoffError("KV hand-off: the MTP continuation's hidden state is not finite");
    }
  } else if (h.mtp_length != 0) {
    throw KvHandoffError(fmt::format("KV hand-off: mtp_length {} without the last hidden state", h.mtp_length));
  }
  if (verify_checksum) {
    const std::uint64_t got = kv_checksum(cache, seq, p);
    if (got != h.checksum) {
      throw KvHandoffError(fmt::format(
          "KV hand-off: checksum mismatch over {} prompt tokens x {} layers: the pages hold {:016x}, prefill wrote "
          "{:016x} (a put landed at the wrong address or the bytes changed)",
          p, h.layers, got, h.checksum));
    }
  }
}

}  // namespace sy::model
