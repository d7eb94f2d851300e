// Parity of the CUDA GEMMs with gpu/ref: bf16_gemm, fp8_dequant_gemm, fp8_gemm on both paths
// (tensor-core mma for aligned rows, CUDA-core fallback otherwise; ragged N = 576 as
// kv_a_proj_with_mqa), and the grouped FP8 expert GEMM (device entry point) against ref::fp8_gemm
// per expert segment. fp32 accumulation in another order: normalized error <= 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
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
using test::DeviceVector;
using CudaGemm = test::CudaTest;

struct QuantWeight {
  std::vector<fp8_e4m3> q;
  std::vector<float> scales;
};

QuantWeight quantize_weight(TestRng& rng, std::int64_t n, std::int64_t k) {
  const std::vector<float> w = rng.normals(static_cast<std::size_t>(n * k), 0.05f);
  QuantWeight out{std::vector<fp8_e4m3>(w.size()),
                  std::vector<float>(static_cast<std::size_t>(quant_blocks(n) * quant_blocks(k)))};
  ref::weight_quant({.w = w.data(), .q = out.q.data(), .scales = out.scales.data(), .rows = n, .cols = k,
                     .w_stride = k, .q_stride = k});
  return out;
}

TEST_F(CudaGemm, Bf16MatchesRef) {
  TestRng rng(11);
  for (const auto [m, n, k] : {std::array<std::int64_t, 3>{1, 256, 7168}, {37, 129, 300}}) {
    const std::vector<float> a = rng.normals(static_cast<std::size_t>(m * k), 1.0f);
    const std::vector<bf16> b = rng.bf16_normals(static_cast<std::size_t>(n * k), 0.05f);
    std::vector<float> want(static_cast<std::size_t>(m * n)), got(want.size());
    Bf16GemmParams p{.a = a.data(), .b = b.data(), .c = want.data(), .m = m, .n = n, .k = k, .lda = k, .ldb = k,
                     .ldc = n};
    ref::bf16_gemm(p);
    p.c = got.data();
    backend().bf16_gemm(p);
    EXPECT_TRUE(within(compare(got, want), 1e-4, 1e-5)) << m << "x" << n << "x" << k;
  }
}

TEST_F(CudaGemm, Fp8DequantMatchesRefWithRaggedK) {
  TestRng rng(12);
  const std::int64_t m = 5, n = 160, k = 200;
  const QuantWeight w = quantize_weight(rng, n, k);
  const std::vector<float> a = rng.normals(static_cast<std::size_t>(m * k), 1.0f);
  std::vector<float> want(static_cast<std::size_t>(m * n)), got(want.size());
  Fp8DequantGemmParams p{.a = a.data(), .b = w.q.data(), .b_scales = w.scales.data(), .c = want.data(), .m = m,
                         .n = n, .k = k, .lda = k, .ldb = k, .ldc = n};
  ref::fp8_dequant_gemm(p);
  p.c = got.data();
  backend().fp8_dequant_gemm(p);
  EXPECT_TRUE(within(compare(got, want), 1e-4, 1e-5));
}

// fp8_gemm on (m, n, k) with A rows at stride lda (alignment picks the path).
// col_major_scales: act_quant writes DeepGEMM's M-major scale layout (what cuBLASLt takes).
void check_fp8_gemm(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t lda, Fp8GemmPath path,
                    bool col_major_scales = false) {
  TestRng rng(static_cast<std::uint64_t>(m * 1000003 + n * 101 + k + lda));
  const QuantWeight w = quantize_weight(rng, n, k);
  const std::vector<float> x = rng.normals(static_cast<std::size_t>(m * k), 1.0f);
  std::vector<fp8_e4m3> a(static_cast<std::size_t>(m * lda));
  std::vector<float> a_scales(static_cast<std::size_t>(m * (k / 128)));
  const std::int64_t scale_row = col_major_scales ? 1 : k / 128;
  const std::int64_t scale_col = col_major_scales ? m : 1;
  ref::act_quant({.x = x.data(), .y = a.data(), .scales = a_scales.data(), .rows = m, .cols = k, .x_stride = k,
                  .y_stride = lda, .scale_row_stride = scale_row, .scale_col_stride = scale_col});
  std::vector<float> want(static_cast<std::size_t>(m * n)), got(want.size());
  Fp8GemmParams p{.a = a.data(), .a_scales = a_scales.data(), .b = w.q.data(), .b_scales = w.scales.data(),
                  .c = want.data(), .m = m, .n = n, .k = k, .lda = lda, .ldb = k, .ldc = n,
                  .a_scale_row_stride = scale_row, .a_scale_col_stride = scale_col};
  ref::fp8_gemm(p);
  // The path is decided by the device copy's alignment, which staging keeps at 16 bytes for
  // 16-byte strides (cudaMallocAsync returns 256-byte aligned memory).
  const auto* aligned = reinterpret_cast<const fp8_e4m3*>(256);
  const auto* aligned_f = reinterpret_cast<const float*>(256);
  EXPECT_EQ(fp8_gemm_path({.a = aligned, .a_scales = aligned_f, .b = aligned, .b_scales = aligned_f,
                           .c = reinterpret_cast<float*>(256), .m = m, .n = n, .k = k, .lda = lda, .ldb = k, .ldc = n,
                           .a_scale_row_stride = scale_row, .a_scale_col_stride = scale_col}),
            path);
  p.c = got.data();
  backend().fp8_gemm(p);
  EXPECT_TRUE(within(compare(got, want), 1e-3, 1e-5)) << m << "x" << n << "x" << k << " lda " << lda;
}

TEST_F(CudaGemm, Fp8MmaPathMatchesRef) {
  check_fp8_gemm(1, 2048, 7168, 7168, Fp8GemmPath::mma);
  check_fp8_gemm(200, 576, 7168, 7168, Fp8GemmPath::mma);  // ragged N: the last block's scale row
  check_fp8_gemm(130, 384, 256, 272, Fp8GemmPath::mma);    // padded rows
}

TEST_F(CudaGemm, Fp8SimtPathMatchesRef) { check_fp8_gemm(3, 160, 256, 264, Fp8GemmPath::simt); }

// cuBLASLt's block scaling (or, where it offers no algorithm, the mma kernel: same tolerance).
TEST_F(CudaGemm, Fp8CublasLtPathMatchesRef) {
  check_fp8_gemm(256, 2048, 7168, 7168, Fp8GemmPath::cublaslt, true);
  check_fp8_gemm(4, 4096, 512, 512, Fp8GemmPath::cublaslt, true);
}

TEST_F(CudaGemm, GroupedFp8MatchesRefPerExpert) {
  TestRng rng(13);
  const std::int64_t experts = 4, n = 256, k = 512;
  const std::vector<std::int64_t> rows_per_expert = {3, 0, 130, 128};  // padded to 128 each
  std::vector<fp8_e4m3> b;
  std::vector<float> b_scales;
  for (std::int64_t e = 0; e < experts; ++e) {
    const QuantWeight w = quantize_weight(rng, n, k);
    b.insert(b.end(), w.q.begin(), w.q.end());
    b_scales.insert(b_scales.end(), w.scales.begin(), w.scales.end());
  }
  std::int64_t m = 128;  // a trailing tile of padding (expert id -1): left untouched
  for (const std::int64_t r : rows_per_expert) m += (r + 127) / 128 * 128;
  std::vector<std::int32_t> expert_ids(static_cast<std::size_t>(m), -1);
  const std::vector<float> x = rng.normals(static_cast<std::size_t>(m * k), 1.0f);
  std::vector<fp8_e4m3> a(static_cast<std::size_t>(m * k));
  std::vector<float> a_scales(static_cast<std::size_t>(m * (k / 128)));
  ref::act_quant({.x = x.data(), .y = a.data(), .scales = a_scales.data(), .rows = m, .cols = k, .x_stride = k,
                  .y_stride = k, .scale_row_stride = k / 128});
  std::vector<float> want(static_cast<std::size_t>(m * n), -7.0f);
  std::int64_t row = 0;
  for (std::int64_t e = 0; e < experts; ++e) {
    const std::int64_t r = rows_per_expert[static_cast<std::size_t>(e)];
    const std::int64_t padded = (r + 127) / 128 * 128;
    // Every row of an expert's 128-row tiles carries its id (padding rows too: the tile's first
    // row decides); the reference computes the padding rows as well.
    for (std::int64_t i = 0; i < padded; ++i) expert_ids[static_cast<std::size_t>(row + i)] = static_cast<std::int32_t>(e);
    if (r > 0) {
      ref::fp8_gemm({.a = a.data() + row * k, .a_scales = a_scales.data() + row * (k / 128),
                     .b = b.data() + e * n * k, .b_scales = b_scales.data() + e * (n / 128) * (k / 128),
                     .c = want.data() + row * n, .m = padded, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                     .a_scale_row_stride = k / 128});
    }
    row += padded;
  }
  DeviceVector<fp8_e4m3> d_a(a), d_b(b);
  DeviceVector<float> d_as(a_scales), d_bs(b_scales), d_c(std::vector<float>(want.size(), -7.0f));
  DeviceVector<std::int32_t> d_ids(expert_ids);
  grouped_fp8_gemm({.a = d_a.get(), .a_scales = d_as.get(), .expert_ids = d_ids.get(), .b = d_b.get(),
                    .b_scales = d_bs.get(), .c = d_c.get(), .m = m, .n = n, .k = k, .experts = experts},
                   nullptr);
  EXPECT_TRUE(within(compare(d_c.download(), want), 1e-3, 1e-5));
}

}  // namespace
}  // namespace sy::gpu::cuda
