#include "model/kv_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace sy::model {
namespace {

constexpr std::size_t kArenaAlignment = 4096;

}  // namespace

KvPoolExhausted::KvPoolExhausted(std::int64_t needed, std::int64_t free, std::int64_t capacity)
    : std::runtime_error(fmt::format("KV cache pool exhausted: need {} more pages, {} of {} free (retry when "
                                     "other requests finish, or start with more --kv-pages)",
                                     needed, free, capacity)),
      needed_(needed),
      free_(free) {}

PageAllocator::PageAllocator(std::int64_t capacity) : capacity_(capacity) {
  if (capacity <= 0 || capacity > INT32_MAX) {
    throw std::invalid_argument(fmt::format("KV cache: page count must be in [1, 2^31) (got {})", capacity));
  }
  free_list_.reserve(static_cast<std::size_t>(capacity));
  // Descending, so the first allocations get ids 0, 1, 2, ...
  for (std::int64_t i = capacity - 1; i >= 0; --i) free_list_.push_back(static_cast<std::int32_t>(i));
  in_use_.assign(static_cast<std::size_t>(capacity), false);
}

std::vector<std::int32_t> PageAllocator::allocate(std::int64_t n) {
  if (n < 0) throw std::invalid_argument(fmt::format("KV cache: cannot allocate {} pages", n));
  if (n > free_count()) throw KvPoolExhausted(n, free_count(), capacity_);
  std::vector<std::int32_t> pages;
  pages.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    pages.push_back(free_list_.back());
    free_list_.pop_back();
    in_use_[static_cast<std::size_t>(pages.back())] = true;
  }
  return pages;
}

void PageAllocator::free(std::span<const std::int32_t> pages) {
  for (const std::int32_t p : pages) {
    if (p < 0 || p >= capacity_ || !in_use_[static_cast<std::size_t>(p)]) {
      throw std::invalid_argument(fmt::format("KV cache: page {} is not allocated", p));
    }
  }
  // Pushed in reverse so the sequence's first page is handed out first again.
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) {
    in_use_[static_cast<std::size_t>(*it)] = false;
    free_list_.push_back(*it);
  }
}

KvCache::KvCache(const KvCacheOptions& options)
    : options_(options), max_pages_per_seq_(pages_for(options.max_seq_len)), allocator_(options.num_pages) {
  if (options.num_layers <= 0 || options.kv_lora_rank <= 0 || options.rope_dim <= 0 || options.max_seqs <= 0 ||
      options.max_seq_len <= 0) {
    throw std::invalid_argument(fmt::format(
        "KV cache: num_layers, kv_lora_rank, rope_dim, max_seqs and max_seq_len must be > 0 (got {}, {}, {}, {}, {})",
        options.num_layers, options.kv_lora_rank, options.rope_dim, options.max_seqs, options.max_seq_len));
  }
  if (options.max_seq_len > INT32_MAX) {
    throw std::invalid_argument("KV cache: max_seq_len must fit the kernels' int32 positions");
  }
  table_.assign(static_cast<std::size_t>(options.max_seqs * max_pages_per_seq_), -1);
  pages_held_.assign(static_cast<std::size_t>(options.max_seqs), 0);
  row_used_.assign(static_cast<std::size_t>(options.max_seqs), false);
  // Zeroed (never-written entries read as 0, not as leftover heap bytes); page-aligned so the
  // arena can be registered for RMA as it is.
  const auto bytes = static_cast<std::size_t>(arena_bytes());
  if (options.arena_provider) {
    std::byte* memory = options.arena_provider(bytes);
    if (memory == nullptr || reinterpret_cast<std::uintptr_t>(memory) % kArenaAlignment != 0) {
      throw std::invalid_argument(fmt::format("KV cache: the arena provider gave {} memory for {} bytes",
                                              memory == nullptr ? "no" : "misaligned", bytes));
    }
    arena_ = std::unique_ptr<std::byte[], ArenaDelete>(memory, ArenaDelete{false});
    return;
  }
  arena_.reset(static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{kArenaAlignment})));
  std::memset(arena_.get(), 0, bytes);
}

void KvCache::ArenaDelete::operator()(std::byte* p) const {
  if (!owned) return;
  ::operator delete[](p, std::align_val_t{kArenaAlignment});
}

std::int64_t KvCache::pages_for(std::int64_t length) { return (length + gpu::kMlaPageSize - 1) / gpu::kMlaPageSize; }

std::int64_t KvCache::live_sequences() const { return std::count(row_used_.begin(), row_used_.end(), true); }

std::int64_t KvCache::token_bytes() const {
  return entry_dim() * (options_.dtype == gpu::KvCacheDtype::fp32 ? 4 : 2);
}

std::int64_t KvCache::layer_bytes() const { return options_.num_pages * page_bytes(); }

std::int64_t KvCache::page_offset(std::int64_t layer, std::int32_t page) const {
  if (layer < 0 || layer >= options_.num_layers || page < 0 || page >= options_.num_pages) {
    throw std::invalid_argument(fmt::format("KV cache: page {} of layer {} is outside [0, {}) x [0, {})", page, layer,
                                            options_.num_pages, options_.num_layers));
  }
  return layer * layer_bytes() + page * page_bytes();
}

std::vector<std::int32_t> KvCache::pages(std::int32_t seq) const {
  check_seq(seq);
  const auto first = table_.begin() + seq * max_pages_per_seq_;
  return {first, first + pages_held_[static_cast<std::size_t>(seq)]};
}

void KvCache::check_seq(std::int32_t seq) const {
  if (seq < 0 || seq >= options_.max_seqs || !row_used_[static_cast<std::size_t>(seq)]) {
    throw std::invalid_argument(fmt::format("KV cache: sequence {} does not exist", seq));
  }
}

std::int32_t KvCache::add_sequence() {
  const auto it = std::find(row_used_.begin(), row_used_.end(), false);
  if (it == row_used_.end()) {
    throw std::runtime_error(fmt::format(
        "KV cache: all {} sequence slots are in use (retry when other requests finish)", options_.max_seqs));
  }
  *it = true;
  return static_cast<std::int32_t>(it - row_used_.begin());
}

void KvCache::remove_sequence(std::int32_t seq) {
  check_seq(seq);
  const auto s = static_cast<std::size_t>(seq);
  std::int32_t* row = table_.data() + seq * max_pages_per_seq_;
  allocator_.free(std::span<const std::int32_t>(row, static_cast<std::size_t>(pages_held_[s])));
  std::fill(row, row + max_pages_per_seq_, -1);
  pages_held_[s] = 0;
  row_used_[s] = false;
}

void KvCache::reserve(std::int32_t seq, std::int64_t length) {
  check_seq(seq);
  if (length > options_.max_seq_len) {
    throw std::invalid_argument(fmt::format("KV cache: {} tokens exceed max_seq_len {}", length, options_.max_seq_len));
  }
  const auto s = static_cast<std::size_t>(seq);
  const std::int64_t need = pages_for(length) - pages_held_[s];
  if (need <= 0) return;
  const std::vector<std::int32_t> pages = allocator_.allocate(need);  // throws before any change
  std::copy(pages.begin(), pages.end(), table_.begin() + seq * max_pages_per_seq_ + pages_held_[s]);
  pages_held_[s] += need;
}

std::int64_t KvCache::reserved(std::int32_t seq) const {
  check_seq(seq);
  return pages_held_[static_cast<std::size_t>(seq)] * gpu::kMlaPageSize;
}

gpu::MlaKvCache KvCache::layer(std::int64_t layer) {
  if (layer < 0 || layer >= options_.num_layers) {
    throw std::invalid_argument(fmt::format("KV cache: layer {} outside [0, {})", layer, options_.num_layers));
  }
  gpu::MlaKvCache c;
  c.data = arena_.get() + layer * layer_bytes();
  c.dtype = options_.dtype;
  c.num_pages = options_.num_pages;
  c.kv_lora_rank = options_.kv_lora_rank;
  c.rope_dim = options_.rope_dim;
  return c;
}

gpu::MlaBlockTable KvCache::table() const {
  return {.pages = table_.data(),
          .num_seqs = options_.max_seqs,
          .max_pages = max_pages_per_seq_,
          .stride = max_pages_per_seq_};
}

void KvCache::read(std::int64_t layer, std::int32_t seq, std::int64_t begin, std::int64_t end, float* out) const {
  check_seq(seq);
  if (layer < 0 || layer >= options_.num_layers || begin < 0 || end < begin ||
      end > pages_held_[static_cast<std::size_t>(seq)] * gpu::kMlaPageSize) {
    throw std::invalid_argument(fmt::format(
        "KV cache: read of layer {} positions [{}, {}) of sequence {} is out of range", layer, begin, end, seq));
  }
  const std::int64_t dim = entry_dim();
  const std::byte* pool = arena_.get() + layer * layer_bytes();
  for (std::int64_t p = begin; p < end; ++p) {
    const std::int32_t page = table_[static_cast<std::size_t>(seq * max_pages_per_seq_ + p / gpu::kMlaPageSize)];
    const std::byte* entry = pool + (page * gpu::kMlaPageSize + p % gpu::kMlaPageSize) * token_bytes();
    float* dst = out + (p - begin) * dim;
    if (options_.dtype == gpu::KvCacheDtype::fp32) {
      std::memcpy(dst, entry, static_cast<std::size_t>(dim) * sizeof(float));
    } else {
      const auto* src = reinterpret_cast<const gpu::bf16*>(entry);
      for (std::int64_t i = 0; i < dim; ++i) dst[i] = gpu::bf16_to_float(src[i]);
    }
  }
}

}  // namespace sy::model
