// Host half of the CPU GEMMs: validation, operand preparation (activations decoded once per
// call to fp32), and the split into tasks of 64 output columns (n). Results do not depend on the
// thread count (the split depends on n only) nor on the batch: GEMV (m <= 8) and the tiled
// kernel share one per-output summation order (isa_impl.hpp), so each row of C is what an m = 1
// call gives.
#include <cstdint>

#include "gpu/cpu/isa_kernels.hpp"
#include "gpu/cpu/kernels.hpp"
#include "gpu/cpu/scratch.hpp"
#include "gpu/cpu/thread_pool.hpp"

namespace sy::gpu::cpu {
namespace {

using detail::AlignedFloats;
using detail::GemmArgs;
using detail::kGemmTaskRows;
using detail::kGemvMaxM;
using detail::round_up;
using detail::WeightFormat;

// Rows of A converted to fp32 per pass, bounding that copy (512 × k floats). Which pass or kernel
// a row lands in does not change its result.
constexpr std::int64_t kRowsPerPass = 512;

// Reads activation (m, k) as fp32 and its block scale; one adapter per GEMM flavour.
struct Fp8Activations {
  const Fp8GemmParams& p;
  float value(std::int64_t m, std::int64_t k) const { return fp8_to_float(p.a[m * p.lda + k]); }
  float scale(std::int64_t m, std::int64_t kb) const {
    return p.a_scales[m * p.a_scale_row_stride + kb * p.a_scale_col_stride];
  }
  static constexpr bool kScaled = true;
};
struct Fp32Activations {
  const float* a;
  std::int64_t lda;
  float value(std::int64_t m, std::int64_t k) const { return a[m * lda + k]; }
  float scale(std::int64_t, std::int64_t) const { return 1.0f; }
  static constexpr bool kScaled = false;
};

template <class Act>
void run_gemm(GemmArgs g, const Act& act, std::int64_t m_total, float* c, std::int64_t ldc) {
  const detail::IsaKernels& kernels = detail::active_kernels();
  ThreadPool& pool = thread_pool();
  const std::int64_t tasks = (g.n + kGemmTaskRows - 1) / kGemmTaskRows;
  g.lda = round_up(g.k, 16);
  g.ldc = ldc;
  for (std::int64_t m0 = 0; m0 < m_total; m0 += kRowsPerPass) {
    g.m = m_total - m0 < kRowsPerPass ? m_total - m0 : kRowsPerPass;
    AlignedFloats a(g.m * g.lda);
    AlignedFloats scales(g.m * g.k_blocks);
    // A as fp32, 16 rows per task.
    pool.run((g.m + 15) / 16, [&](std::int64_t t, int) {
      for (std::int64_t m = t * 16; m < g.m && m < (t + 1) * 16; ++m) {
        for (std::int64_t k = 0; k < g.k; ++k) a.data()[m * g.lda + k] = act.value(m0 + m, k);
        for (std::int64_t kb = 0; kb < g.k_blocks; ++kb) scales.data()[m * g.k_blocks + kb] = act.scale(m0 + m, kb);
      }
    });
    g.a = a.data();
    g.a_scales = Act::kScaled ? scales.data() : nullptr;
    g.c = c + m0 * ldc;
    if (g.m <= kGemvMaxM) {
      const std::int64_t slice = detail::per_worker(detail::gemv_scratch_floats());
      AlignedFloats scratch(slice * pool.size());
      pool.run(tasks, [&](std::int64_t t, int worker) {
        const std::int64_t n0 = t * kGemmTaskRows;
        kernels.gemv(g, n0, n0 + kGemmTaskRows < g.n ? n0 + kGemmTaskRows : g.n, scratch.data() + worker * slice);
      });
    } else {
      const std::int64_t slice = detail::per_worker(detail::gemm_scratch_floats());
      AlignedFloats scratch(slice * pool.size());
      pool.run(tasks, [&](std::int64_t t, int worker) {
        kernels.gemm_tile(g, t * kGemmTaskRows, scratch.data() + worker * slice);
      });
    }
  }
}

}  // namespace

void fp8_gemm(const Fp8GemmParams& p) {
  validate(p);
  if (p.m == 0) return;
  GemmArgs g;
  g.b = p.b;
  g.ldb = p.ldb;
  g.format = WeightFormat::fp8_e4m3;
  g.b_scales = p.b_scales;
  g.n = p.n;
  g.k = p.k;
  g.k_blocks = p.k / kQuantBlock;
  run_gemm(g, Fp8Activations{p}, p.m, p.c, p.ldc);
}

void fp8_dequant_gemm(const Fp8DequantGemmParams& p) {
  validate(p);
  if (p.m == 0) return;
  GemmArgs g;
  g.b = p.b;
  g.ldb = p.ldb;
  g.format = WeightFormat::fp8_e4m3;
  g.b_scales = p.b_scales;
  g.n = p.n;
  g.k = p.k;
  g.k_blocks = quant_blocks(p.k);
  run_gemm(g, Fp32Activations{p.a, p.lda}, p.m, p.c, p.ldc);
}

void bf16_gemm(const Bf16GemmParams& p) {
  validate(p);
  if (p.m == 0) return;
  GemmArgs g;
  g.b = p.b;
  g.ldb = p.ldb;
  g.format = WeightFormat::bf16;
  g.n = p.n;
  g.k = p.k;
  g.k_blocks = quant_blocks(p.k);
  run_gemm(g, Fp32Activations{p.a, p.lda}, p.m, p.c, p.ldc);
}

}  // namespace sy::gpu::cpu
