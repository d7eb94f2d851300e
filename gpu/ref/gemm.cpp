#include <cstdint>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {

void fp8_gemm(const Fp8GemmParams& p) {
  validate(p);
  const std::int64_t k_blocks = p.k / kQuantBlock;
  for (std::int64_t m = 0; m < p.m; ++m) {
    const fp8_e4m3* a = p.a + m * p.lda;
    for (std::int64_t n = 0; n < p.n; ++n) {
      const fp8_e4m3* b = p.b + n * p.ldb;
      const float* b_scales = p.b_scales + (n / kQuantBlock) * k_blocks;
      float acc = 0.0f;
      for (std::int64_t kb = 0; kb < k_blocks; ++kb) {
        // Products of two e4m3 values are exact in fp32; only the sums round.
        float partial = 0.0f;
        for (std::int64_t k = kb * kQuantBlock; k < (kb + 1) * kQuantBlock; ++k) {
          partial += fp8_to_float(a[k]) * fp8_to_float(b[k]);
        }
        const float a_scale = p.a_scales[m * p.a_scale_row_stride + kb * p.a_scale_col_stride];
        acc += partial * a_scale * b_scales[kb];
      }
      p.c[m * p.ldc + n] = acc;
    }
  }
}

void fp8_dequant_gemm(const Fp8DequantGemmParams& p) {
  validate(p);
  const std::int64_t k_blocks = quant_blocks(p.k);
  for (std::int64_t m = 0; m < p.m; ++m) {
    const float* a = p.a + m * p.lda;
    for (std::int64_t n = 0; n < p.n; ++n) {
      const fp8_e4m3* b = p.b + n * p.ldb;
      const float* b_scales = p.b_scales + (n / kQuantBlock) * k_blocks;
      float acc = 0.0f;
      for (std::int64_t k = 0; k < p.k; ++k) {
        const float w = fp8_to_float(b[k]) * b_scales[k / kQuantBlock];  // weight_dequant's value
        acc += a[k] * w;
      }
      p.c[m * p.ldc + n] = acc;
    }
  }
}

void bf16_gemm(const Bf16GemmParams& p) {
  validate(p);
  for (std::int64_t m = 0; m < p.m; ++m) {
    const float* a = p.a + m * p.lda;
    for (std::int64_t n = 0; n < p.n; ++n) {
      const bf16* b = p.b + n * p.ldb;
      float acc = 0.0f;
      for (std::int64_t k = 0; k < p.k; ++k) acc += a[k] * bf16_to_float(b[k]);
      p.c[m * p.ldc + n] = acc;
    }
  }
}

}  // namespace sy::gpu::ref
