// Parity of the CUDA MLA kernels with gpu/ref through the staged table: cache writes (exact),
// decode at V3 dims (576/512, BF16 cache) and at a small config's dims (160/128, fp32 cache), with
// and without split-KV (few queries split, 264+ blocks do not), MTP's two queries per sequence,
// naive prefill (varlen, causal bottom-right) and the absorbed-form up-projections.
// fp32 in another summation order: normalized error <= 1e-5 on outputs and lse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gpu/cuda/kernels.hpp"
#include "gpu/cuda/test_util.hpp"
#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu::cuda {
namespace {

using gpu::test::compare;
using gpu::test::TestRng;
using gpu::test::within;
using CudaMla = test::CudaTest;

struct DecodeCase {
  std::int64_t lora, rope, heads;
  KvCacheDtype dtype;
  std::vector<float> cache_f32;
  std::vector<bf16> cache_bf16;
  std::vector<std::int32_t> pages, seq_ids, positions;
  std::int64_t max_pages = 0, num_pages = 0, stride = 0, seqs = 0, queries = 0;
  std::vector<float> q_latent, q_pe;

  DecodeCase(std::int64_t lora_, std::int64_t rope_, std::int64_t heads_, KvCacheDtype dtype_,
             const std::vector<std::int64_t>& lengths, bool mtp, std::uint64_t seed)
      : lora(lora_), rope(rope_), heads(heads_), dtype(dtype_) {
    TestRng rng(seed);
    seqs = static_cast<std::int64_t>(lengths.size());
    for (const std::int64_t len : lengths) max_pages = std::max(max_pages, (len + 63) / 64);
    num_pages = seqs * max_pages + 2;
    std::vector<std::int32_t> order(static_cast<std::size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    for (std::size_t i = order.size(); i > 1; --i) {
      std::swap(order[i - 1], order[static_cast<std::size_t>(rng.uniform() * static_cast<double>(i))]);
    }
    stride = max_pages + 1;
    pages.assign(static_cast<std::size_t>(seqs * stride), -1);
    std::size_t next = 0;
    for (std::int64_t s = 0; s < seqs; ++s)
      for (std::int64_t j = 0; j < max_pages; ++j) pages[static_cast<std::size_t>(s * stride + j)] = order[next++];
    const std::size_t entries = static_cast<std::size_t>(num_pages * kMlaPageSize * (lora + rope));
    if (dtype == KvCacheDtype::fp32) cache_f32 = rng.normals(entries, 1.0f);
    else cache_bf16 = rng.bf16_normals(entries, 1.0f);
    for (std::int64_t s = 0; s < seqs; ++s) {
      const auto len = static_cast<std::int32_t>(lengths[static_cast<std::size_t>(s)]);
      if (mtp && len > 1) {
        seq_ids.push_back(static_cast<std::int32_t>(s));
        positions.push_back(len - 2);
      }
      seq_ids.push_back(static_cast<std::int32_t>(s));
      positions.push_back(len - 1);
    }
    queries = static_cast<std::int64_t>(seq_ids.size());
    q_latent = rng.normals(static_cast<std::size_t>(queries * heads * lora), 1.0f);
    q_pe = rng.normals(static_cast<std::size_t>(queries * heads * rope), 1.0f);
  }

  MlaDecodeParams params(float* out, float* lse) const {
    void* data = dtype == KvCacheDtype::fp32 ? static_cast<void*>(const_cast<float*>(cache_f32.data()))
                                             : static_cast<void*>(const_cast<bf16*>(cache_bf16.data()));
    return {.cache = {.data = data, .dtype = dtype, .num_pages = num_pages, .kv_lora_rank = lora, .rope_dim = rope},
            .table = {.pages = pages.data(), .num_seqs = seqs, .max_pages = max_pages, .stride = stride},
            .q_latent = {q_latent.data(), heads * lora, lora},
            .q_pe = {q_pe.data(), heads * rope, rope},
            .out_latent = {out, heads * lora, lora},
            .lse = lse,
            .seq_ids = seq_ids.data(),
            .positions = positions.data(),
            .queries = queries,
            .heads = heads,
            .softmax_scale = 0.1352338f};
  }

  // Tolerances: fp32 throughout (CUDA-core kernels) by default; the tensor-core kernel (V3 dims,
  // BF16 cache) rounds q and p to BF16 as FlashMLA does: normalized error 1e-2.
  void check(double out_abs = 1e-4, double out_norm = 1e-5, double lse_abs = 1e-4, double lse_norm = 1e-6) const {
    std::vector<float> want(static_cast<std::size_t>(queries * heads * lora)), got(want.size());
    std::vector<float> want_lse(static_cast<std::size_t>(queries * heads)), got_lse(want_lse.size());
    ref::mla_decode(params(want.data(), want_lse.data()));
    backend().mla_decode(params(got.data(), got_lse.data()));
    EXPECT_TRUE(within(compare(got, want), out_abs, out_norm)) << "out_latent";
    EXPECT_TRUE(within(compare(got_lse, want_lse), lse_abs, lse_norm)) << "lse";
  }
};

// The tensor-core kernel: BF16 q and p, so BF16-level tolerances.
constexpr double kMmaOutAbs = 5e-2, kMmaOutNorm = 1e-2, kMmaLseAbs = 2e-2, kMmaLseNorm = 1e-2;

TEST_F(CudaMla, DecodeV3DimsBf16CacheSplitTensorCores) {
  DecodeCase(512, 64, 20, KvCacheDtype::bf16, {1, 64, 65, 1000}, false, 21)
      .check(kMmaOutAbs, kMmaOutNorm, kMmaLseAbs, kMmaLseNorm);
}

TEST_F(CudaMla, DecodeV3DimsOneSplitTensorCores) {
  // 33 queries × 128 heads = 264 blocks of 16 heads: enough work that the launcher does not split.
  std::vector<std::int64_t> lengths;
  for (int s = 0; s < 33; ++s) lengths.push_back(1 + s * 7);
  DecodeCase(512, 64, 128, KvCacheDtype::bf16, lengths, true, 22).check(kMmaOutAbs, kMmaOutNorm, kMmaLseAbs, kMmaLseNorm);
}

TEST_F(CudaMla, DecodeV3DimsBf16CacheCudaCores) {
  setenv("SY_CUDA_MLA_DECODE", "simt", 1);  // each ctest entry is its own process
  DecodeCase(512, 64, 20, KvCacheDtype::bf16, {1, 64, 65, 1000}, true, 29).check();
  unsetenv("SY_CUDA_MLA_DECODE");
}

TEST_F(CudaMla, DecodeV3DimsFp32Cache) {
  DecodeCase(512, 64, 16, KvCacheDtype::fp32, {5, 129, 700}, false, 30).check();
}

TEST_F(CudaMla, DecodeSmallConfigDimsFp32CacheMtp) {
  DecodeCase(128, 32, 4, KvCacheDtype::fp32, {2, 63, 64, 300}, true, 23).check();
}

TEST_F(CudaMla, CacheWriteMatchesRefBitForBit) {
  TestRng rng(24);
  const std::int64_t lora = 512, rope = 64, tokens = 5;
  DecodeCase base(lora, rope, 1, KvCacheDtype::bf16, {70, 3}, false, 25);
  const std::vector<float> latent = rng.normals(static_cast<std::size_t>(tokens * 600), 1.0f);
  const std::vector<float> k_pe = rng.normals(static_cast<std::size_t>(tokens * rope), 1.0f);
  const std::vector<std::int32_t> seq_ids = {0, 0, 1, 0, 1};
  const std::vector<std::int32_t> positions = {0, 69, 2, 64, 1};
  std::vector<bf16> want = base.cache_bf16, got = base.cache_bf16;
  MlaCacheWriteParams p{.cache = {.data = want.data(), .dtype = KvCacheDtype::bf16, .num_pages = base.num_pages},
                        .table = {.pages = base.pages.data(), .num_seqs = base.seqs, .max_pages = base.max_pages,
                                  .stride = base.stride},
                        .latent = latent.data(), .k_pe = k_pe.data(), .seq_ids = seq_ids.data(),
                        .positions = positions.data(), .tokens = tokens, .latent_stride = 600, .k_pe_stride = rope};
  ref::mla_cache_write(p);
  p.cache.data = got.data();
  backend().mla_cache_write(p);
  std::int64_t differing = 0;
  for (std::size_t i = 0; i < want.size(); ++i) differing += want[i].bits != got[i].bits ? 1 : 0;
  EXPECT_EQ(differing, 0);
}

TEST_F(CudaMla, DecodeRejectsAnUnmappedPage) {
  DecodeCase c(128, 32, 4, KvCacheDtype::fp32, {10}, false, 26);
  c.pages[0] = static_cast<std::int32_t>(c.num_pages);  // outside the pool
  std::vector<float> out(static_cast<std::size_t>(c.queries * c.heads * c.lora));
  EXPECT_THROW(backend().mla_decode(c.params(out.data(), nullptr)), std::invalid_argument);
}

TEST_F(CudaMla, PrefillMatchesRefVarlen) {
  TestRng rng(27);
  const std::int64_t heads = 4, nope = 128, rope = 64, v_dim = 128;
  const std::vector<std::int32_t> cu_q = {0, 5, 5, 75};
  const std::vector<std::int32_t> cu_kv = {0, 5, 8, 208};
  const std::int64_t q_tokens = 75, kv_tokens = 208;
  const std::vector<float> q = rng.normals(static_cast<std::size_t>(q_tokens * heads * (nope + rope)), 1.0f);
  const std::vector<float> k_nope = rng.normals(static_cast<std::size_t>(kv_tokens * heads * nope), 1.0f);
  const std::vector<float> k_pe = rng.normals(static_cast<std::size_t>(kv_tokens * rope), 1.0f);
  const std::vector<float> v = rng.normals(static_cast<std::size_t>(kv_tokens * heads * v_dim), 1.0f);
  std::vector<float> want(static_cast<std::size_t>(q_tokens * heads * v_dim)), got(want.size());
  MlaPrefillParams p{.q = {q.data(), heads * (nope + rope), nope + rope},
                     .k_nope = {k_nope.data(), heads * nope, nope},
                     .k_pe = k_pe.data(),
                     .k_pe_stride = rope,
                     .v = {v.data(), heads * v_dim, v_dim},
                     .out = {want.data(), heads * v_dim, v_dim},
                     .cu_seqlens_q = cu_q.data(),
                     .cu_seqlens_kv = cu_kv.data(),
                     .num_seqs = 3,
                     .heads = heads,
                     .softmax_scale = 0.1352338f};
  ref::mla_prefill(p);
  p.out.data = got.data();
  backend().mla_prefill(p);
  EXPECT_TRUE(within(compare(got, want), 1e-4, 1e-5));
}

TEST_F(CudaMla, UpProjectionsMatchRef) {
  TestRng rng(28);
  const std::int64_t heads = 4, nope = 64, v_dim = 64, lora = 128, tokens = 3;
  const std::vector<float> kv_b = rng.normals(static_cast<std::size_t>(heads * (nope + v_dim) * lora), 0.1f);
  const MlaUpWeights w{.kv_b = kv_b.data(), .heads = heads, .nope_dim = nope, .v_dim = v_dim, .kv_lora_rank = lora};
  // absorb_q: q_nope read out of a fused [nope ‖ rope] head layout.
  const std::vector<float> q = rng.normals(static_cast<std::size_t>(tokens * heads * (nope + 32)), 1.0f);
  std::vector<float> want(static_cast<std::size_t>(tokens * heads * lora)), got(want.size());
  MlaAbsorbQParams a{.w = w, .q_nope = {q.data(), heads * (nope + 32), nope + 32},
                     .q_latent = {want.data(), heads * lora, lora}, .tokens = tokens};
  ref::mla_absorb_q(a);
  a.q_latent.data = got.data();
  backend().mla_absorb_q(a);
  EXPECT_TRUE(within(compare(got, want), 1e-5, 1e-6)) << "absorb_q";

  const std::vector<float> latent = rng.normals(static_cast<std::size_t>(tokens * heads * lora), 1.0f);
  std::vector<float> want_o(static_cast<std::size_t>(tokens * heads * v_dim)), got_o(want_o.size());
  MlaOutputUpParams o{.w = w, .out_latent = {latent.data(), heads * lora, lora},
                      .out = {want_o.data(), heads * v_dim, v_dim}, .tokens = tokens};
  ref::mla_output_up(o);
  o.out.data = got_o.data();
  backend().mla_output_up(o);
  EXPECT_TRUE(within(compare(got_o, want_o), 1e-5, 1e-6)) << "output_up";

  // kv_up: k_nope and v interleaved in one [tokens, heads, nope + v] buffer (staging keeps them aliased).
  const std::vector<float> c_kv = rng.normals(static_cast<std::size_t>(tokens * lora), 1.0f);
  std::vector<float> want_kv(static_cast<std::size_t>(tokens * heads * (nope + v_dim))), got_kv(want_kv.size());
  auto kv = [&](float* base) {
    return MlaKvUpParams{.w = w, .latent = c_kv.data(), .latent_stride = lora,
                         .k_nope = {base, heads * (nope + v_dim), nope + v_dim},
                         .v = {base + nope, heads * (nope + v_dim), nope + v_dim}, .tokens = tokens};
  };
  ref::mla_kv_up(kv(want_kv.data()));
  backend().mla_kv_up(kv(got_kv.data()));
  EXPECT_TRUE(within(compare(got_kv, want_kv), 1e-5, 1e-6)) << "kv_up";
}

}  // namespace
}  // namespace sy::gpu::cuda
