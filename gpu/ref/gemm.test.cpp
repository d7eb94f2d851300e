#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

using test::compare;
using test::within;

// A random FP8 weight [n, k] with its block scales, quantized by the reference quantizer.
struct Fp8Weight {
  std::vector<float> original;
  std::vector<fp8_e4m3> q;
  std::vector<float> scales;
  std::vector<float> dequantized;
};

Fp8Weight make_weight(test::TestRng& rng, std::int64_t n, std::int64_t k) {
  Fp8Weight w;
  w.original = rng.normals(static_cast<std::size_t>(n * k), 0.05f);
  // Vary the magnitude per block so that wrong scale indexing shows.
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < k; ++c) w.original[r * k + c] *= 1.0f + static_cast<float>((r / 128) * 3 + c / 128);
  }
  w.q.resize(w.original.size());
  w.scales.resize(static_cast<std::size_t>(quant_blocks(n) * quant_blocks(k)));
  ref::weight_quant({.w = w.original.data(), .q = w.q.data(), .scales = w.scales.data(), .rows = n, .cols = k,
                     .w_stride = k, .q_stride = k});
  w.dequantized.resize(w.original.size());
  ref::weight_dequant({.q = w.q.data(), .scales = w.scales.data(), .w = w.dequantized.data(), .rows = n,
                       .cols = k, .q_stride = k, .w_stride = k});
  return w;
}

// Straightforward double-precision C = A · Bᵀ over a [m, lda] A and a [n, k] B, into [m, n].
std::vector<double> matmul_nt(const std::vector<float>& a, std::int64_t lda, const std::vector<float>& b,
                              std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<double> c(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (std::int64_t x = 0; x < k; ++x) acc += double(a[i * lda + x]) * b[j * k + x];
      c[i * n + j] = acc;
    }
  }
  return c;
}

// The [m, n] block of a [m, ldc] output.
std::vector<float> unpad(const std::vector<float>& c, std::int64_t m, std::int64_t n, std::int64_t ldc) {
  std::vector<float> out;
  for (std::int64_t i = 0; i < m; ++i) out.insert(out.end(), c.begin() + i * ldc, c.begin() + i * ldc + n);
  return out;
}

struct Shape {
  std::int64_t m, n, k;
};
const Shape kShapes[] = {{1, 160, 256}, {3, 576, 384}, {17, 160, 512}, {17, 256, 128}};

TEST(RefGemm, Bf16MatchesDouble) {
  test::TestRng rng(10);
  for (const Shape s : kShapes) {
    const std::int64_t lda = s.k + 3, ldc = s.n + 1;
    const std::vector<float> a = rng.normals(static_cast<std::size_t>(s.m * lda), 1.0f);
    const std::vector<bf16> b = rng.bf16_normals(static_cast<std::size_t>(s.n * s.k), 0.05f);
    std::vector<float> b_f(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) b_f[i] = bf16_to_float(b[i]);
    std::vector<float> c(static_cast<std::size_t>(s.m * ldc));
    ref::bf16_gemm({.a = a.data(), .b = b.data(), .c = c.data(), .m = s.m, .n = s.n, .k = s.k, .lda = lda,
                    .ldb = s.k, .ldc = ldc});
    EXPECT_TRUE(within(compare(unpad(c, s.m, s.n, ldc), matmul_nt(a, lda, b_f, s.m, s.n, s.k)), 1e-5, 1e-5))
        << s.m << "x" << s.n << "x" << s.k;
  }
}

TEST(RefGemm, Fp8DequantMatchesDoubleOfDequantizedWeight) {
  test::TestRng rng(11);
  for (const Shape s : kShapes) {
    const Fp8Weight w = make_weight(rng, s.n, s.k);
    const std::vector<float> a = rng.normals(static_cast<std::size_t>(s.m * s.k), 1.0f);
    std::vector<float> c(static_cast<std::size_t>(s.m * s.n));
    ref::fp8_dequant_gemm({.a = a.data(), .b = w.q.data(), .b_scales = w.scales.data(), .c = c.data(), .m = s.m,
                           .n = s.n, .k = s.k, .lda = s.k, .ldb = s.k, .ldc = s.n});
    EXPECT_TRUE(within(compare(c, matmul_nt(a, s.k, w.dequantized, s.m, s.n, s.k)), 1e-4, 1e-5))
        << s.m << "x" << s.n << "x" << s.k;
  }
}

TEST(RefGemm, Fp8DequantAcceptsRaggedK) {
  // K = 200: the last K block has 72 columns and its own scale.
  test::TestRng rng(12);
  const Fp8Weight w = make_weight(rng, 160, 200);
  const std::vector<float> a = rng.normals(3 * 200, 1.0f);
  std::vector<float> c(3 * 160);
  ref::fp8_dequant_gemm({.a = a.data(), .b = w.q.data(), .b_scales = w.scales.data(), .c = c.data(), .m = 3,
                         .n = 160, .k = 200, .lda = 200, .ldb = 200, .ldc = 160});
  EXPECT_TRUE(within(compare(c, matmul_nt(a, 200, w.dequantized, 3, 160, 200)), 1e-4, 1e-5));
}

TEST(RefGemm, Fp8EqualsDequantizedPathAndApproximatesFp32) {
  test::TestRng rng(13);
  for (const Shape s : kShapes) {
    const Fp8Weight w = make_weight(rng, s.n, s.k);
    const std::int64_t kb = s.k / 128;
    const std::vector<float> a = rng.normals(static_cast<std::size_t>(s.m * s.k), 1.0f);
    std::vector<fp8_e4m3> a_q(a.size());
    std::vector<float> a_s(static_cast<std::size_t>(s.m * kb));
    ref::act_quant({.x = a.data(), .y = a_q.data(), .scales = a_s.data(), .rows = s.m, .cols = s.k, .x_stride = s.k,
                    .y_stride = s.k, .scale_row_stride = kb});
    const std::int64_t ldc = s.n + 5;
    std::vector<float> c(static_cast<std::size_t>(s.m * ldc));
    ref::fp8_gemm({.a = a_q.data(), .a_scales = a_s.data(), .b = w.q.data(), .b_scales = w.scales.data(),
                   .c = c.data(), .m = s.m, .n = s.n, .k = s.k, .lda = s.k, .ldb = s.k, .ldc = ldc,
                   .a_scale_row_stride = kb});
    const std::vector<float> got = unpad(c, s.m, s.n, ldc);
    // Same numbers, different rounding order: the block-scaled sum vs a plain fp32 dot product of
    // the dequantized operands. Only fp32 rounding separates them.
    std::vector<float> a_deq(a.size());
    for (std::int64_t i = 0; i < s.m; ++i) {
      for (std::int64_t x = 0; x < s.k; ++x) a_deq[i * s.k + x] = fp8_to_float(a_q[i * s.k + x]) * a_s[i * kb + x / 128];
    }
    EXPECT_TRUE(within(compare(got, matmul_nt(a_deq, s.k, w.dequantized, s.m, s.n, s.k)), 1e-4, 1e-5))
        << s.m << "x" << s.n << "x" << s.k;
    // Against the unquantized fp32 product: e4m3's 3 mantissa bits on both operands cost a few
    // percent (these inputs show ≈ 0.04 normalized, up to 5% of the largest output elementwise).
    const std::vector<double> exact = matmul_nt(a, s.k, w.original, s.m, s.n, s.k);
    double largest = 0.0;
    for (const double v : exact) largest = std::max(largest, std::fabs(v));
    EXPECT_TRUE(within(compare(got, exact), 0.1 * largest, 0.08)) << s.m << "x" << s.n << "x" << s.k;
  }
}

TEST(RefGemm, Fp8HandComputedBlockScales) {
  // One row, K = 256 (two blocks), N = 130 (two row blocks, the second ragged).
  const std::int64_t n = 130, k = 256;
  std::vector<fp8_e4m3> a(k, fp8_from_float(1.0f));
  a[200] = fp8_from_float(2.0f);
  const std::vector<float> a_s = {0.5f, 4.0f};
  std::vector<fp8_e4m3> b(static_cast<std::size_t>(n * k), fp8_from_float(0.5f));
  const std::vector<float> b_s = {1.0f, 2.0f,  // rows 0..127
                                  3.0f, 8.0f};  // rows 128..129
  std::vector<float> c(n);
  ref::fp8_gemm({.a = a.data(), .a_scales = a_s.data(), .b = b.data(), .b_scales = b_s.data(), .c = c.data(),
                 .m = 1, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n, .a_scale_row_stride = 2});
  // Block 0: 128·0.5 = 64; block 1: (127 + 2)·0.5 = 64.5.
  EXPECT_EQ(c[0], 64.0f * 0.5f * 1.0f + 64.5f * 4.0f * 2.0f);
  EXPECT_EQ(c[129], 64.0f * 0.5f * 3.0f + 64.5f * 4.0f * 8.0f);
}

TEST(RefGemm, Fp8RejectsKNotMultipleOf128) {
  std::vector<fp8_e4m3> a(200), b(200);
  std::vector<float> s(2), c(1);
  EXPECT_THROW(ref::fp8_gemm({.a = a.data(), .a_scales = s.data(), .b = b.data(), .b_scales = s.data(),
                              .c = c.data(), .m = 1, .n = 1, .k = 200, .lda = 200, .ldb = 200, .ldc = 1,
                              .a_scale_row_stride = 2}),
               std::invalid_argument);
  EXPECT_THROW(ref::bf16_gemm({.a = c.data(), .b = nullptr, .c = c.data(), .m = 1, .n = 1, .k = 1, .lda = 1,
                               .ldb = 1, .ldc = 1}),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu
