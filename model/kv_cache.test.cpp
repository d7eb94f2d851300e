#include "model/kv_cache.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace sy::model {
namespace {

TEST(PageAllocator, AllocatesFreesAndReuses) {
  PageAllocator a(8);
  EXPECT_EQ(a.capacity(), 8);
  EXPECT_EQ(a.free_count(), 8);
  const auto first = a.allocate(3);
  EXPECT_EQ(first, (std::vector<std::int32_t>{0, 1, 2}));
  const auto second = a.allocate(5);
  EXPECT_EQ(a.free_count(), 0);
  std::set<std::int32_t> all(first.begin(), first.end());
  all.insert(second.begin(), second.end());
  EXPECT_EQ(all.size(), 8u) << "no page handed out twice";
  a.free(first);
  EXPECT_EQ(a.free_count(), 3);
  // Freed pages come back, first page first (deterministic ids).
  EXPECT_EQ(a.allocate(3), first);
}

TEST(PageAllocator, ExhaustionAllocatesNothing) {
  PageAllocator a(4);
  const auto held = a.allocate(3);
  try {
    a.allocate(2);
    FAIL() << "expected KvPoolExhausted";
  } catch (const KvPoolExhausted& e) {
    EXPECT_EQ(e.needed(), 2);
    EXPECT_EQ(e.free(), 1);
    EXPECT_NE(std::string(e.what()).find("exhausted"), std::string::npos) << e.what();
  }
  EXPECT_EQ(a.free_count(), 1);
  EXPECT_EQ(a.allocate(1).size(), 1u);
}

TEST(PageAllocator, RejectsDoubleFree) {
  PageAllocator a(4);
  const auto p = a.allocate(1);
  a.free(p);
  EXPECT_THROW(a.free(p), std::invalid_argument);
  EXPECT_THROW(a.free(std::vector<std::int32_t>{7}), std::invalid_argument);
  EXPECT_THROW(PageAllocator(0), std::invalid_argument);
}

KvCacheOptions small_options() {
  KvCacheOptions o;
  o.num_pages = 6;
  o.num_layers = 3;
  o.kv_lora_rank = 8;
  o.rope_dim = 4;
  o.max_seqs = 3;
  o.max_seq_len = 256;  // 4 pages per sequence
  return o;
}

TEST(KvCache, ReservesPagesPerSequenceAllOrNothing) {
  KvCache cache(small_options());
  const auto a = cache.add_sequence();
  const auto b = cache.add_sequence();
  cache.reserve(a, 1);
  EXPECT_EQ(cache.reserved(a), 64);
  cache.reserve(a, 64);
  EXPECT_EQ(cache.free_pages(), 5);
  cache.reserve(a, 65);
  EXPECT_EQ(cache.reserved(a), 128);
  cache.reserve(b, 192);
  EXPECT_EQ(cache.free_pages(), 1);
  // b wants 2 more pages, 1 is free: refused, b unchanged.
  EXPECT_THROW(cache.reserve(b, 256 + 1), std::invalid_argument) << "beyond max_seq_len";
  EXPECT_THROW(cache.reserve(a, 256), KvPoolExhausted);
  EXPECT_EQ(cache.reserved(a), 128);
  EXPECT_EQ(cache.free_pages(), 1);
  // The block table maps a's logical pages to distinct physical ones; unused entries are -1.
  const gpu::MlaBlockTable t = cache.table();
  EXPECT_EQ(t.max_pages, 4);
  EXPECT_NE(t.pages[a * t.stride + 0], t.pages[a * t.stride + 1]);
  EXPECT_EQ(t.pages[a * t.stride + 2], -1);
  cache.remove_sequence(b);
  EXPECT_EQ(cache.free_pages(), 4);
  EXPECT_EQ(t.pages[b * t.stride + 0], -1);
  cache.reserve(a, 256);
  EXPECT_EQ(cache.free_pages(), 2);
}

TEST(KvCache, SequenceSlotsAreBounded) {
  KvCache cache(small_options());
  const auto a = cache.add_sequence();
  cache.add_sequence();
  cache.add_sequence();
  EXPECT_THROW(cache.add_sequence(), std::runtime_error);
  cache.remove_sequence(a);
  EXPECT_EQ(cache.add_sequence(), a);
  EXPECT_THROW(cache.reserve(7, 1), std::invalid_argument);
}

TEST(KvCache, OnePageIdIndexesEveryLayer) {
  for (const auto dtype : {gpu::KvCacheDtype::fp32, gpu::KvCacheDtype::bf16}) {
    KvCacheOptions o = small_options();
    o.dtype = dtype;
    KvCache cache(o);
    const auto s = cache.add_sequence();
    cache.reserve(s, 70);
    // Write a distinct entry per layer at position 65 (page 1, slot 1) and read it back.
    const std::int64_t dim = o.kv_lora_rank + o.rope_dim;
    const std::int32_t page = cache.table().pages[s * cache.table().stride + 1];
    for (std::int64_t l = 0; l < o.num_layers; ++l) {
      const gpu::MlaKvCache c = cache.layer(l);
      EXPECT_EQ(c.num_pages, 6);
      EXPECT_EQ(c.dtype, dtype);
      const std::int64_t offset = (page * gpu::kMlaPageSize + 1) * dim;
      for (std::int64_t i = 0; i < dim; ++i) {
        const float v = static_cast<float>(l * 100 + i);
        if (dtype == gpu::KvCacheDtype::fp32) {
          static_cast<float*>(c.data)[offset + i] = v;
        } else {
          static_cast<gpu::bf16*>(c.data)[offset + i] = gpu::bf16_from_float(v);
        }
      }
    }
    std::vector<float> row(static_cast<std::size_t>(dim));
    for (std::int64_t l = 0; l < o.num_layers; ++l) {
      cache.read(l, s, 65, 66, row.data());
      EXPECT_EQ(row[0], static_cast<float>(l * 100));
      EXPECT_EQ(row[static_cast<std::size_t>(dim - 1)], static_cast<float>(l * 100 + dim - 1));
    }
    EXPECT_THROW(cache.read(0, s, 100, 129, row.data()), std::invalid_argument) << "past the reserved pages";
    EXPECT_EQ(cache.layer_bytes(), 6 * 64 * dim * (dtype == gpu::KvCacheDtype::fp32 ? 4 : 2));
  }
}

}  // namespace
}  // namespace sy::model
