#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "gpu/cpu/kernels.hpp"
#include "gpu/cpu/runtime.hpp"
#include "gpu/cpu/test_util.hpp"
#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu::cpu {
namespace {

using gpu::test::compare;
using gpu::test::TestRng;
using gpu::test::within;

// A paged cache filled with random entries, sequences of the given lengths on shuffled pages,
// and one query per sequence at its last position (plus, for MTP, one at the position before).
struct MlaCase {
  std::int64_t lora, rope, heads, queries = 0;
  KvCacheDtype dtype;
  std::vector<float> cache_f32;
  std::vector<bf16> cache_bf16;
  std::vector<std::int32_t> pages, seq_ids, positions;
  std::int64_t max_pages = 0, num_pages = 0;
  std::vector<float> q_latent, q_pe;
  std::int64_t q_latent_token_stride = 0, q_latent_head_stride = 0, q_pe_token_stride = 0, q_pe_head_stride = 0;
  std::int64_t out_token_stride = 0, out_head_stride = 0;

  MlaCase(std::int64_t lora_, std::int64_t rope_, std::int64_t heads_, KvCacheDtype dtype_,
          const std::vector<std::int64_t>& lengths, bool mtp, std::uint64_t seed)
      : lora(lora_), rope(rope_), heads(heads_), dtype(dtype_) {
    TestRng rng(seed);
    const std::int64_t dim = lora + rope;
    for (const std::int64_t len : lengths) max_pages = std::max(max_pages, (len + 63) / 64);
    const std::int64_t seqs = static_cast<std::int64_t>(lengths.size());
    num_pages = seqs * max_pages + 3;  // a few pages no sequence uses
    // Physical pages handed out in a shuffled order.
    std::vector<std::int32_t> order(static_cast<std::size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    for (std::size_t i = order.size(); i > 1; --i) {
      std::swap(order[i - 1], order[static_cast<std::size_t>(rng.uniform() * static_cast<double>(i))]);
    }
    const std::int64_t stride = max_pages + 2;
    pages.assign(static_cast<std::size_t>(seqs * stride), -1);
    std::size_t next = 0;
    for (std::int64_t s = 0; s < seqs; ++s)
      for (std::int64_t j = 0; j < max_pages; ++j) pages[s * stride + j] = order[next++];
    const std::size_t entries = static_cast<std::size_t>(num_pages * kMlaPageSize * dim);
    if (dtype == KvCacheDtype::fp32) cache_f32 = rng.normals(entries, 1.0f);
    else cache_bf16 = rng.bf16_normals(entries, 1.0f);
    for (std::int64_t s = 0; s < seqs; ++s) {
      seq_ids.push_back(static_cast<std::int32_t>(s));
      positions.push_back(static_cast<std::int32_t>(lengths[s] - 1));
      if (mtp && lengths[s] > 1) {
        seq_ids.push_back(static_cast<std::int32_t>(s));
        positions.push_back(static_cast<std::int32_t>(lengths[s] - 2));
      }
    }
    queries = static_cast<std::int64_t>(seq_ids.size());
    // Strides larger than the packed layout.
    q_latent_head_stride = lora + 3;
    q_latent_token_stride = heads * q_latent_head_stride + 5;
    q_pe_head_stride = rope + 1;
    q_pe_token_stride = heads * q_pe_head_stride + 2;
    out_head_stride = lora + 7;
    out_token_stride = heads * out_head_stride + 1;
    q_latent = rng.normals(static_cast<std::size_t>(queries * q_latent_token_stride), 1.0f);
    q_pe = rng.normals(static_cast<std::size_t>(queries * q_pe_token_stride), 1.0f);
    table_stride = stride;
  }
  std::int64_t table_stride = 0;

  MlaDecodeParams params(std::vector<float>& out, std::vector<float>& lse) {
    MlaDecodeParams p;
    p.cache = {.data = dtype == KvCacheDtype::fp32 ? static_cast<void*>(cache_f32.data()) : cache_bf16.data(),
               .dtype = dtype, .num_pages = num_pages, .kv_lora_rank = lora, .rope_dim = rope};
    p.table = {.pages = pages.data(), .num_seqs = static_cast<std::int64_t>(pages.size()) / table_stride,
               .max_pages = max_pages, .stride = table_stride};
    p.q_latent = {q_latent.data(), q_latent_token_stride, q_latent_head_stride};
    p.q_pe = {q_pe.data(), q_pe_token_stride, q_pe_head_stride};
    out.assign(static_cast<std::size_t>(queries * out_token_stride), 777.0f);
    lse.assign(static_cast<std::size_t>(queries * heads), 0.0f);
    p.out_latent = {out.data(), out_token_stride, out_head_stride};
    p.lse = lse.data();
    p.seq_ids = seq_ids.data();
    p.positions = positions.data();
    p.queries = queries;
    p.heads = heads;
    p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(lora + rope));
    return p;
  }
};

// The output as [queries, heads, lora], dropping the stride padding (which must stay 777).
std::vector<float> heads_only(const MlaCase& c, const std::vector<float>& out, bool* padding_intact) {
  std::vector<float> v;
  *padding_intact = true;
  for (std::int64_t q = 0; q < c.queries; ++q) {
    for (std::int64_t i = 0; i < c.out_token_stride; ++i) {
      const std::int64_t h = i / c.out_head_stride, d = i % c.out_head_stride;
      const float x = out[q * c.out_token_stride + i];
      if (h < c.heads && d < c.lora) v.push_back(x);
      else if (x != 777.0f) *padding_intact = false;
    }
  }
  return v;
}

// The output is a convex combination of N(0,1) cache entries; errors come from fp32 summation
// order and the polynomial exp (~1 ulp), measured around 1e-7 normalized.
void expect_matches_ref(MlaCase& c) {
  std::vector<float> want, want_lse, got, got_lse;
  ref::mla_decode(c.params(want, want_lse));
  mla_decode(c.params(got, got_lse));
  bool intact = false;
  const std::vector<float> got_heads = heads_only(c, got, &intact);
  EXPECT_TRUE(intact) << "wrote outside the head slices";
  EXPECT_TRUE(within(compare(got_heads, heads_only(c, want, &intact)), 2e-5, 2e-6));
  EXPECT_TRUE(within(compare(got_lse, want_lse), 2e-5, 1e-6)) << "lse";
}

class CpuMla : public test::IsaTest {};

TEST_P(CpuMla, TinyDimsFp32) {
  // Lengths around page and tile edges, and 1100 > the 1024-token split (a merged query).
  MlaCase c(128, 32, 4, KvCacheDtype::fp32, {1, 31, 64, 65, 300, 1100}, true, 31);
  expect_matches_ref(c);
}

TEST_P(CpuMla, TinyDimsBf16) {
  MlaCase c(128, 32, 4, KvCacheDtype::bf16, {2, 33, 129, 1100}, true, 32);
  expect_matches_ref(c);
}

TEST_P(CpuMla, OddDimsAndHeads) {
  // Dims that are no multiple of any vector width and a ragged head group.
  MlaCase f(100, 12, 11, KvCacheDtype::fp32, {5, 70}, false, 33);
  expect_matches_ref(f);
  MlaCase b(100, 12, 11, KvCacheDtype::bf16, {5, 70}, false, 34);
  expect_matches_ref(b);
}

TEST_P(CpuMla, V3Dims16Heads) {
  MlaCase f(512, 64, 16, KvCacheDtype::fp32, {3, 1030}, false, 35);  // 1030: a merged split
  expect_matches_ref(f);
  MlaCase b(512, 64, 16, KvCacheDtype::bf16, {77, 200}, true, 36);
  expect_matches_ref(b);
}

TEST_P(CpuMla, V3Dims128Heads) {
  MlaCase f(512, 64, 128, KvCacheDtype::fp32, {1, 90}, false, 37);
  expect_matches_ref(f);
  MlaCase b(512, 64, 128, KvCacheDtype::bf16, {40, 65}, false, 38);
  expect_matches_ref(b);
}

TEST_P(CpuMla, ResultsDoNotDependOnThreadCount) {
  MlaCase c(128, 32, 12, KvCacheDtype::bf16, {1, 70, 2100}, true, 39);
  std::vector<float> one, one_lse, two, two_lse;
  set_num_threads(1);
  mla_decode(c.params(one, one_lse));
  set_num_threads(2);
  mla_decode(c.params(two, two_lse));
  EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(one_lse.data(), two_lse.data(), one_lse.size() * sizeof(float)));
}

// Runs the queries `which` of c (in that order) as one call; returns, per query, its output heads
// [heads, lora] followed by its lse [heads].
std::vector<std::vector<float>> run_queries(MlaCase& c, const std::vector<std::int64_t>& which) {
  std::vector<float> all_out, all_lse;
  MlaDecodeParams p = c.params(all_out, all_lse);
  std::vector<std::int32_t> seq_ids, positions;
  std::vector<float> q_latent, q_pe;
  for (const std::int64_t q : which) {
    seq_ids.push_back(c.seq_ids[static_cast<std::size_t>(q)]);
    positions.push_back(c.positions[static_cast<std::size_t>(q)]);
    const auto lat = c.q_latent.begin() + q * c.q_latent_token_stride;
    q_latent.insert(q_latent.end(), lat, lat + c.q_latent_token_stride);
    const auto pe = c.q_pe.begin() + q * c.q_pe_token_stride;
    q_pe.insert(q_pe.end(), pe, pe + c.q_pe_token_stride);
  }
  const std::int64_t n = static_cast<std::int64_t>(which.size());
  std::vector<float> out(static_cast<std::size_t>(n * c.out_token_stride)), lse(static_cast<std::size_t>(n * c.heads));
  p.seq_ids = seq_ids.data();
  p.positions = positions.data();
  p.q_latent.data = q_latent.data();
  p.q_pe.data = q_pe.data();
  p.out_latent.data = out.data();
  p.lse = lse.data();
  p.queries = n;
  mla_decode(p);
  std::vector<std::vector<float>> per_query;
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<float> v;
    for (std::int64_t h = 0; h < c.heads; ++h) {
      const auto o = out.begin() + i * c.out_token_stride + h * c.out_head_stride;
      v.insert(v.end(), o, o + c.lora);
    }
    v.insert(v.end(), lse.begin() + i * c.heads, lse.begin() + (i + 1) * c.heads);
    per_query.push_back(std::move(v));
  }
  return per_query;
}

// Batch invariance (DESIGN.md, "Determinism contract"): a query's output and lse are bitwise the
// same alone or among any other queries, whatever their sequences, lengths (split or not) and
// order; both queries of an MTP pair included.
void expect_batch_invariant(MlaCase& c) {
  std::vector<std::vector<float>> alone;
  for (std::int64_t q = 0; q < c.queries; ++q) alone.push_back(run_queries(c, {q})[0]);
  std::vector<std::vector<std::int64_t>> sets;
  std::vector<std::int64_t> all(static_cast<std::size_t>(c.queries));
  std::iota(all.begin(), all.end(), 0);
  sets.push_back(all);
  sets.emplace_back(all.rbegin(), all.rend());
  std::vector<std::int64_t> odd, even_twice;
  for (std::int64_t q = 0; q < c.queries; ++q) (q % 2 == 1 ? odd : even_twice).push_back(q);
  sets.push_back(odd);
  even_twice.insert(even_twice.end(), even_twice.begin(), even_twice.end());  // repeated queries
  sets.push_back(even_twice);
  for (const auto& set : sets) {
    const auto got = run_queries(c, set);
    for (std::size_t i = 0; i < set.size(); ++i) {
      const auto& want = alone[static_cast<std::size_t>(set[i])];
      ASSERT_EQ(got[i].size(), want.size());
      EXPECT_EQ(0, std::memcmp(got[i].data(), want.data(), want.size() * sizeof(float)))
          << "query " << set[i] << " (position " << c.positions[static_cast<std::size_t>(set[i])]
          << ") in a call of " << set.size();
    }
  }
}

TEST_P(CpuMla, QueriesDoNotDependOnTheBatch) {
  // Lengths around tiles, pages and the 1024-token split (2100: three chunks); 12 heads give a
  // ragged head group.
  MlaCase f(128, 32, 12, KvCacheDtype::fp32, {1, 31, 65, 1024, 1025, 2100}, true, 41);
  expect_batch_invariant(f);
  MlaCase b(128, 32, 12, KvCacheDtype::bf16, {2, 64, 300, 1100}, true, 42);
  expect_batch_invariant(b);
  MlaCase odd(100, 12, 5, KvCacheDtype::bf16, {5, 70, 1030}, true, 43);
  expect_batch_invariant(odd);
  MlaCase v3(512, 64, 16, KvCacheDtype::bf16, {3, 200}, true, 44);  // splits: covered above
  expect_batch_invariant(v3);
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuMla, ::testing::ValuesIn(test::kAllIsas), test::isa_param_name);

TEST(CpuMlaApi, RejectsBadTableData) {
  MlaCase c(128, 32, 4, KvCacheDtype::fp32, {10}, false, 40);
  std::vector<float> out, lse;
  MlaDecodeParams p = c.params(out, lse);
  c.pages[0] = static_cast<std::int32_t>(c.num_pages);
  EXPECT_THROW(mla_decode(p), std::invalid_argument);
  c.pages[0] = 0;
  c.positions[0] = static_cast<std::int32_t>(c.max_pages * kMlaPageSize);
  EXPECT_THROW(mla_decode(p), std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu::cpu
