// The paged latent KV cache of one engine: a fixed pool of 64-token pages per layer (every main
// layer and every MTP layer), a page allocator over it, and per-sequence page tables laid out as
// the MLA kernels' block table (gpu/mla.hpp). One page id indexes every layer's pool, so a
// sequence reserves pages once for all layers. Owned by the Engine; not thread-safe (the engine's
// step loop is its only user). The pools are host memory: the ref and cpu backends read them.
// All layers' pools live in one page-aligned arena (layer l at l * layer_bytes()), so a decode
// worker registers one memory region for RMA and a KV hand-off is a per-page copy
// (model/kv_transfer.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/dtypes.hpp"
#include "gpu/mla.hpp"

namespace sy::model {

// A sequence: its block-table row (the engine's sequence ids are these rows).
using SequenceId = std::int32_t;

// The pool has too few free pages for a request. Retryable: the caller refuses admission (or
// waits for other sequences to finish); nothing was allocated.
class KvPoolExhausted : public std::runtime_error {
 public:
  KvPoolExhausted(std::int64_t needed, std::int64_t free, std::int64_t capacity);
  std::int64_t needed() const { return needed_; }
  std::int64_t free() const { return free_; }

 private:
  std::int64_t needed_;
  std::int64_t free_;
};

// Hands out page ids [0, capacity) from a free list. Freed pages are reused last-freed first, so a
// given sequence of calls always yields the same ids (deterministic runs, reproducible tests).
class PageAllocator {
 public:
  explicit PageAllocator(std::int64_t capacity);

  // n pages, or KvPoolExhausted (allocating none) when fewer than n are free.
  std::vector<std::int32_t> allocate(std::int64_t n);
  // REQUIRES: each id was allocated and not yet freed (std::invalid_argument otherwise).
  void free(std::span<const std::int32_t> pages);

  std::int64_t capacity() const { return capacity_; }
  std::int64_t free_count() const { return static_cast<std::int64_t>(free_list_.size()); }

 private:
  std::int64_t capacity_;
  std::vector<std::int32_t> free_list_;  // back() is handed out next
  std::vector<bool> in_use_;
};

struct KvCacheOptions {
  std::int64_t num_pages = 256;   // pages per layer pool (each 64 tokens)
  std::int64_t num_layers = 0;    // main layers + MTP layers
  std::int64_t kv_lora_rank = 0;  // latent width (512 at V3)
  std::int64_t rope_dim = 0;      // k_pe width (64 at V3)
  gpu::KvCacheDtype dtype = gpu::KvCacheDtype::fp32;
  std::int64_t max_seqs = 16;       // block-table rows: sequences alive at once
  std::int64_t max_seq_len = 4096;  // tokens per sequence; sets the block-table width
  // Where the arena comes from. Null: the cache allocates (and frees) it. Otherwise called once
  // with the arena's size; it returns zero-filled memory of at least that many bytes, 4096-byte
  // aligned, that outlives the cache (a decode worker passes memory its transport allocated, the
  // fastest target for peers' RMA puts).
  std::function<std::byte*(std::size_t bytes)> arena_provider;
};

class KvCache {
 public:
  explicit KvCache(const KvCacheOptions& options);

  // A free block-table row for a new sequence (no pages yet), or std::runtime_error when all
  // max_seqs rows are taken (retryable, like KvPoolExhausted).
  std::int32_t add_sequence();
  // Returns the sequence's pages to the pool and frees its row.
  void remove_sequence(std::int32_t seq);
  // Ensures pages for positions [0, length). All or nothing: KvPoolExhausted leaves the sequence
  // as it was; std::invalid_argument when length exceeds max_seq_len.
  void reserve(std::int32_t seq, std::int64_t length);
  // Tokens the sequence's pages can hold (a multiple of 64).
  std::int64_t reserved(std::int32_t seq) const;
  // Pages needed to hold `length` tokens.
  static std::int64_t pages_for(std::int64_t length);

  std::int64_t free_pages() const { return allocator_.free_count(); }
  std::int64_t num_pages() const { return allocator_.capacity(); }
  std::int64_t num_layers() const { return options_.num_layers; }
  std::int64_t max_seq_len() const { return options_.max_seq_len; }
  std::int64_t live_sequences() const;
  const KvCacheOptions& options() const { return options_; }
  // Bytes of one layer's pool.
  std::int64_t layer_bytes() const;
  // Bytes of one token's entry in one layer: (kv_lora_rank + rope_dim) * sizeof(dtype).
  std::int64_t token_bytes() const;
  // Bytes of one page of one layer (kMlaPageSize entries).
  std::int64_t page_bytes() const { return gpu::kMlaPageSize * token_bytes(); }

  // The arena holding every layer's pool: layer l's page p starts at page_offset(l, p). Host
  // memory, 4096-byte aligned, arena_bytes() long, alive as long as the cache. The mutable view
  // exists for external writers (a KV hand-off's RMA puts or copies into reserved pages) and for
  // registering the arena with a transport; the engine's steps are its only other writers.
  const std::byte* arena() const { return arena_.get(); }
  std::byte* arena() { return arena_.get(); }
  std::int64_t arena_bytes() const { return options_.num_layers * layer_bytes(); }
  // Bytes from arena() to the first entry of page `page` in layer `layer`.
  std::int64_t page_offset(std::int64_t layer, std::int32_t page) const;
  // The sequence's page ids in logical order (position q lives in pages[q / kMlaPageSize]).
  std::vector<std::int32_t> pages(std::int32_t seq) const;

  // The kernel views: layer `layer`'s pool and the shared block table (unused entries are -1,
  // which the ref backend rejects, so reading an unreserved position is an error, not garbage).
  gpu::MlaKvCache layer(std::int64_t layer);
  gpu::MlaBlockTable table() const;

  // Copies cache entries [begin, end) of a sequence in one layer into out ([end-begin, 576] fp32,
  // latent then k_pe). Host pools only: the naive (prefill) attention up-projects the cached
  // latents of earlier chunks with this. TODO(cuda): a gather kernel in the Backend.
  void read(std::int64_t layer, std::int32_t seq, std::int64_t begin, std::int64_t end, float* out) const;

 private:
  void check_seq(std::int32_t seq) const;
  std::int64_t entry_dim() const { return options_.kv_lora_rank + options_.rope_dim; }

  KvCacheOptions options_;
  std::int64_t max_pages_per_seq_;
  PageAllocator allocator_;
  std::vector<std::int32_t> table_;       // [max_seqs, max_pages_per_seq], -1 = none
  std::vector<std::int64_t> pages_held_;  // per row
  std::vector<bool> row_used_;
  struct ArenaDelete {
    ArenaDelete() noexcept : owned(true) {}
    explicit ArenaDelete(bool owns) noexcept : owned(owns) {}
    bool owned;  // false: the arena came from arena_provider
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte[], ArenaDelete> arena_;  // [num_layers, num_pages, 64, entry] of dtype
};

}  // namespace sy::model
