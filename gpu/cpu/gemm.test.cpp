#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "gpu/cpu/kernels.hpp"
#include "gpu/cpu/runtime.hpp"
#include "gpu/cpu/test_util.hpp"
#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu::cpu {
namespace {

using gpu::test::compare;
using gpu::test::ErrorStats;
using gpu::test::TestRng;
using gpu::test::within;

struct Shape {
  std::int64_t m, n, k;
  bool operator<(const Shape& o) const { return std::tie(m, n, k) < std::tie(o.m, o.n, o.k); }
};

// Every m in {1, 3, 8, 17, 64}, n in {160, 576 (ragged last 128-row block), 1000} and k in
// {128, 384, 2048} appears; the full cross product would make the reference too slow under ASan.
const Shape kFp8Shapes[] = {{1, 160, 128},  {1, 576, 2048}, {1, 1000, 384},  {3, 576, 384},
                            {3, 1000, 128}, {8, 160, 2048}, {8, 1000, 384},  {17, 576, 384},
                            {17, 160, 2048}, {64, 1000, 128}, {64, 576, 128}, {64, 160, 384}};
// bf16 and dequant take any k; m = 16 is the top of lm_head's decode range.
const Shape kAnyKShapes[] = {{1, 160, 7},    {1, 1000, 300}, {3, 576, 129},  {8, 160, 1000},
                             {16, 1000, 256}, {17, 576, 100}, {64, 160, 500}, {64, 1000, 33}};

// Inputs with every stride larger than its row, plus the reference output.
struct Fp8Case {
  std::int64_t lda, ldb, ldc;
  std::vector<fp8_e4m3> a, b;
  std::vector<float> a_scales, b_scales, expected;
  Fp8GemmParams params(std::vector<float>& c) const {
    return {.a = a.data(), .a_scales = a_scales.data(), .b = b.data(), .b_scales = b_scales.data(), .c = c.data(),
            .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc, .a_scale_row_stride = k / 128,
            .a_scale_col_stride = 1};
  }
  std::int64_t m, n, k;
};

// A quantized weight [n, k] in a [n, ldb] buffer with per-block magnitudes that differ, so wrong
// scale indexing shows.
void make_fp8_weight(TestRng& rng, std::int64_t n, std::int64_t k, std::int64_t ldb, std::vector<fp8_e4m3>& q,
                     std::vector<float>& scales) {
  std::vector<float> w = rng.normals(static_cast<std::size_t>(n * ldb), 0.05f);
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < k; ++c) w[r * ldb + c] *= 1.0f + static_cast<float>((r / 128) % 3 + (c / 128) % 4);
  }
  q.assign(w.size(), fp8_e4m3{0});
  scales.assign(static_cast<std::size_t>(quant_blocks(n) * quant_blocks(k)), 0.0f);
  ref::weight_quant({.w = w.data(), .q = q.data(), .scales = scales.data(), .rows = n, .cols = k, .w_stride = ldb,
                     .q_stride = ldb});
}

const Fp8Case& fp8_case(const Shape& s) {
  static std::map<Shape, Fp8Case> cache;
  auto [it, fresh] = cache.try_emplace(s);
  Fp8Case& c = it->second;
  if (!fresh) return c;
  TestRng rng(static_cast<std::uint64_t>(s.m * 1000003 + s.n * 1009 + s.k));
  c.m = s.m;
  c.n = s.n;
  c.k = s.k;
  c.lda = s.k + 16;
  c.ldb = s.k + 32;
  c.ldc = s.n + 5;
  const std::vector<float> x = rng.normals(static_cast<std::size_t>(s.m * c.lda), 1.0f);
  c.a.assign(x.size(), fp8_e4m3{0});
  c.a_scales.assign(static_cast<std::size_t>(s.m * (s.k / 128)), 0.0f);
  ref::act_quant({.x = x.data(), .y = c.a.data(), .scales = c.a_scales.data(), .rows = s.m, .cols = s.k,
                  .x_stride = c.lda, .y_stride = c.lda, .scale_row_stride = s.k / 128});
  make_fp8_weight(rng, s.n, s.k, c.ldb, c.b, c.b_scales);
  c.expected.assign(static_cast<std::size_t>(s.m * c.ldc), 0.0f);
  ref::fp8_gemm(c.params(c.expected));
  return c;
}

// The [m, n] block of a [m, ldc] output.
std::vector<float> unpad(const std::vector<float>& c, std::int64_t m, std::int64_t n, std::int64_t ldc) {
  std::vector<float> out;
  for (std::int64_t i = 0; i < m; ++i) out.insert(out.end(), c.begin() + i * ldc, c.begin() + i * ldc + n);
  return out;
}

// Output padding (columns n..ldc) must stay untouched.
bool padding_intact(const std::vector<float>& c, std::int64_t m, std::int64_t n, std::int64_t ldc, float sentinel) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = n; j < ldc; ++j)
      if (c[i * ldc + j] != sentinel) return false;
  return true;
}

constexpr float kSentinel = 12345.0f;

// max-abs tolerance relative to the output's scale: 4e-6 · max|expected| (sums of up to 2048
// terms round at a few fp32 ulps of their largest partial sums).
double abs_tol(const std::vector<float>& expected) {
  double top = 0.0;
  for (const float x : expected) top = std::max(top, static_cast<double>(std::fabs(x)));
  return 4e-6 * top;
}

// Tolerances: the products are exact in fp32 (fp8 × fp8) or identical to ref's (bf16, dequant);
// only the summation order differs (vector lanes, 128-blocks), so errors stay near fp32 rounding
// of sums of up to 2048 terms: normalized 1e-6 leaves a 10× margin over what we measure.
class CpuGemm : public test::IsaTest {};

TEST_P(CpuGemm, Fp8MatchesRef) {
  for (const Shape& s : kFp8Shapes) {
    const Fp8Case& c = fp8_case(s);
    std::vector<float> out(c.expected.size(), kSentinel);
    fp8_gemm(c.params(out));
    const std::vector<float> want = unpad(c.expected, s.m, s.n, c.ldc);
    EXPECT_TRUE(within(compare(unpad(out, s.m, s.n, c.ldc), want), abs_tol(want), 1e-6))
        << s.m << "x" << s.n << "x" << s.k;
    EXPECT_TRUE(padding_intact(out, s.m, s.n, c.ldc, kSentinel));
  }
}

TEST_P(CpuGemm, Fp8ColumnMajorActivationScales) {
  // DeepGEMM's layout: scale (m, kb) at m + kb·m_padded.
  for (const Shape& s : {Shape{3, 576, 384}, Shape{17, 160, 384}}) {
    const Fp8Case& c = fp8_case(s);
    const std::int64_t m_padded = (s.m + 3) / 4 * 4;
    std::vector<float> col_major(static_cast<std::size_t>(m_padded * (s.k / 128)), -1.0f);
    for (std::int64_t m = 0; m < s.m; ++m)
      for (std::int64_t kb = 0; kb < s.k / 128; ++kb) col_major[m + kb * m_padded] = c.a_scales[m * (s.k / 128) + kb];
    std::vector<float> out(c.expected.size(), kSentinel);
    Fp8GemmParams p = c.params(out);
    p.a_scales = col_major.data();
    p.a_scale_row_stride = 1;
    p.a_scale_col_stride = m_padded;
    fp8_gemm(p);
    const std::vector<float> want = unpad(c.expected, s.m, s.n, c.ldc);
    EXPECT_TRUE(within(compare(unpad(out, s.m, s.n, c.ldc), want), abs_tol(want), 1e-6));
  }
}

TEST_P(CpuGemm, Fp8DequantMatchesRef) {
  TestRng rng(21);
  for (const Shape& s : kAnyKShapes) {
    const std::int64_t lda = s.k + 3, ldb = s.k + 9, ldc = s.n + 2;
    const std::vector<float> a = rng.normals(static_cast<std::size_t>(s.m * lda), 1.0f);
    std::vector<fp8_e4m3> b;
    std::vector<float> b_scales;
    make_fp8_weight(rng, s.n, s.k, ldb, b, b_scales);
    std::vector<float> expected(static_cast<std::size_t>(s.m * ldc), kSentinel);
    std::vector<float> out(expected.size(), kSentinel);
    Fp8DequantGemmParams p{.a = a.data(), .b = b.data(), .b_scales = b_scales.data(), .c = expected.data(),
                           .m = s.m, .n = s.n, .k = s.k, .lda = lda, .ldb = ldb, .ldc = ldc};
    ref::fp8_dequant_gemm(p);
    p.c = out.data();
    fp8_dequant_gemm(p);
    const std::vector<float> want = unpad(expected, s.m, s.n, ldc);
    EXPECT_TRUE(within(compare(unpad(out, s.m, s.n, ldc), want), abs_tol(want), 1e-6))
        << s.m << "x" << s.n << "x" << s.k;
    EXPECT_TRUE(padding_intact(out, s.m, s.n, ldc, kSentinel));
  }
}

TEST_P(CpuGemm, Bf16MatchesRef) {
  TestRng rng(22);
  for (const Shape& s : kAnyKShapes) {
    const std::int64_t lda = s.k + 3, ldb = s.k + 9, ldc = s.n + 2;
    const std::vector<float> a = rng.normals(static_cast<std::size_t>(s.m * lda), 1.0f);
    const std::vector<bf16> b = rng.bf16_normals(static_cast<std::size_t>(s.n * ldb), 0.05f);
    std::vector<float> expected(static_cast<std::size_t>(s.m * ldc), kSentinel);
    std::vector<float> out(expected.size(), kSentinel);
    Bf16GemmParams p{.a = a.data(), .b = b.data(), .c = expected.data(), .m = s.m, .n = s.n, .k = s.k,
                     .lda = lda, .ldb = ldb, .ldc = ldc};
    ref::bf16_gemm(p);
    p.c = out.data();
    bf16_gemm(p);
    const std::vector<float> want = unpad(expected, s.m, s.n, ldc);
    EXPECT_TRUE(within(compare(unpad(out, s.m, s.n, ldc), want), abs_tol(want), 1e-6))
        << s.m << "x" << s.n << "x" << s.k;
    EXPECT_TRUE(padding_intact(out, s.m, s.n, ldc, kSentinel));
  }
}

TEST_P(CpuGemm, ResultsDoNotDependOnThreadCount) {
  TestRng rng(23);
  // Shapes from kFp8Shapes, whose reference results are cached.
  for (const Shape& s : {Shape{1, 1000, 384}, Shape{8, 1000, 384}, Shape{17, 576, 384}, Shape{64, 576, 128}}) {
    const Fp8Case& c = fp8_case(s);
    std::vector<float> one(c.expected.size()), two(c.expected.size());
    set_num_threads(1);
    fp8_gemm(c.params(one));
    set_num_threads(2);
    fp8_gemm(c.params(two));
    EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float))) << s.m << "x" << s.n;

    const std::vector<float> a = rng.normals(static_cast<std::size_t>(s.m * s.k), 1.0f);
    const std::vector<bf16> b = rng.bf16_normals(static_cast<std::size_t>(s.n * s.k), 0.05f);
    std::vector<float> b1(static_cast<std::size_t>(s.m * s.n)), b2(b1.size());
    Bf16GemmParams p{.a = a.data(), .b = b.data(), .c = b1.data(), .m = s.m, .n = s.n, .k = s.k, .lda = s.k,
                     .ldb = s.k, .ldc = s.n};
    set_num_threads(1);
    bf16_gemm(p);
    p.c = b2.data();
    set_num_threads(2);
    bf16_gemm(p);
    EXPECT_EQ(0, std::memcmp(b1.data(), b2.data(), b1.size() * sizeof(float))) << s.m << "x" << s.n;
  }
}

// Batch invariance (DESIGN.md, "Determinism contract"): row m of C from an m = 1 call must equal,
// bit for bit, the same row computed inside any batch. Batches of M rows start at varying
// offsets, with M on both sides of the GEMV/tiled switch (8 | 9), of the vector widths, the
// tiled kernel's 64-row panels and the 512-row passes (520: a tiled pass, then a GEMV one).
// n = 200 crosses a 128-row weight-scale block and ends in a ragged task.
constexpr std::int64_t kBatchSizes[] = {2, 7, 8, 9, 17, 64, 512, 520};
constexpr std::int64_t kMaxBatch = 520;

// run(first, rows, c) computes C rows [first, first + rows) into c [rows, ldc].
template <class Run>
void expect_batch_invariant(std::int64_t n, std::int64_t ldc, const Run& run) {
  std::vector<float> single(static_cast<std::size_t>(kMaxBatch * ldc), kSentinel);
  for (std::int64_t m = 0; m < kMaxBatch; ++m) run(m, 1, single.data() + m * ldc);
  for (const std::int64_t rows : kBatchSizes) {
    const std::int64_t first = rows * 37 % (kMaxBatch - rows + 1);
    std::vector<float> batch(static_cast<std::size_t>(rows * ldc), kSentinel);
    run(first, rows, batch.data());
    std::int64_t differing = 0, first_differing = -1;
    for (std::int64_t i = 0; i < rows; ++i) {
      if (std::memcmp(batch.data() + i * ldc, single.data() + (first + i) * ldc, n * sizeof(float)) != 0) {
        if (differing++ == 0) first_differing = first + i;
      }
    }
    EXPECT_EQ(differing, 0) << "batch of " << rows << " rows from " << first << ": first differing row "
                            << first_differing;
  }
}

TEST_P(CpuGemm, Fp8RowsDoNotDependOnTheBatch) {
  TestRng rng(24);
  const std::int64_t n = 200, k = 384, lda = k + 16, ldb = k, ldc = n + 3;
  const std::vector<float> x = rng.normals(static_cast<std::size_t>(kMaxBatch * lda), 1.0f);
  std::vector<fp8_e4m3> a(x.size(), fp8_e4m3{0});
  std::vector<float> a_scales(static_cast<std::size_t>(kMaxBatch * (k / 128)));
  ref::act_quant({.x = x.data(), .y = a.data(), .scales = a_scales.data(), .rows = kMaxBatch, .cols = k,
                  .x_stride = lda, .y_stride = lda, .scale_row_stride = k / 128});
  std::vector<fp8_e4m3> b;
  std::vector<float> b_scales;
  make_fp8_weight(rng, n, k, ldb, b, b_scales);
  expect_batch_invariant(n, ldc, [&](std::int64_t first, std::int64_t rows, float* c) {
    fp8_gemm({.a = a.data() + first * lda, .a_scales = a_scales.data() + first * (k / 128), .b = b.data(),
              .b_scales = b_scales.data(), .c = c, .m = rows, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
              .a_scale_row_stride = k / 128, .a_scale_col_stride = 1});
  });
}

TEST_P(CpuGemm, Fp8DequantRowsDoNotDependOnTheBatch) {
  TestRng rng(25);
  const std::int64_t n = 200, k = 300, lda = k + 3, ldb = k + 9, ldc = n;  // ragged last k block
  const std::vector<float> a = rng.normals(static_cast<std::size_t>(kMaxBatch * lda), 1.0f);
  std::vector<fp8_e4m3> b;
  std::vector<float> b_scales;
  make_fp8_weight(rng, n, k, ldb, b, b_scales);
  expect_batch_invariant(n, ldc, [&](std::int64_t first, std::int64_t rows, float* c) {
    fp8_dequant_gemm({.a = a.data() + first * lda, .b = b.data(), .b_scales = b_scales.data(), .c = c, .m = rows,
                      .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc});
  });
}

TEST_P(CpuGemm, Bf16RowsDoNotDependOnTheBatch) {
  TestRng rng(26);
  const std::int64_t n = 200, k = 300, lda = k, ldb = k + 1, ldc = n + 1;
  const std::vector<float> a = rng.normals(static_cast<std::size_t>(kMaxBatch * lda), 1.0f);
  const std::vector<bf16> b = rng.bf16_normals(static_cast<std::size_t>(n * ldb), 0.05f);
  expect_batch_invariant(n, ldc, [&](std::int64_t first, std::int64_t rows, float* c) {
    bf16_gemm({.a = a.data() + first * lda, .b = b.data(), .c = c, .m = rows, .n = n, .k = k, .lda = lda, .ldb = ldb,
               .ldc = ldc});
  });
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuGemm, ::testing::ValuesIn(test::kAllIsas), test::isa_param_name);

TEST(CpuGemmApi, ValidatesAndAcceptsEmptyM) {
  EXPECT_THROW(fp8_gemm({.m = 1, .n = 1, .k = 100}), std::invalid_argument);  // k not a multiple of 128
  EXPECT_THROW(bf16_gemm({.m = 1, .n = 1, .k = 1}), std::invalid_argument);   // null pointers
  EXPECT_NO_THROW(fp8_dequant_gemm({.m = 0, .n = 4, .k = 5}));
}

TEST(CpuBackend, TableIsComplete) {
  const Backend& b = backend();
  EXPECT_EQ(b.name, "cpu");
  EXPECT_TRUE(b.rms_norm && b.apply_rope && b.act_quant && b.fp8_gemm && b.fp8_dequant_gemm && b.bf16_gemm &&
              b.swiglu && b.moe_select && b.argmax && b.sample && b.mla_cache_write && b.mla_decode &&
              b.mla_prefill && b.mla_absorb_q && b.mla_output_up && b.mla_kv_up);
  static_assert(kBackendKernelCount == 16, "list the new kernel above");
}

}  // namespace
}  // namespace sy::gpu::cpu
