// The three linear-layer GEMMs, all "NT": C[M,N] = A[M,K] · B[N,K]ᵀ with B a weight in its
// checkpoint layout [out, in]. fp8_gemm is the production path (DeepGEMM semantics, spec §2.4);
// fp8_dequant_gemm is the reference numeric mode (dequantize the weight, multiply in fp32, as the
// demo's default gemm_impl="bf16" but without its BF16 rounding); bf16_gemm serves the BF16
// weights (gate, lm_head, eh_proj). Each backend provides sy::gpu::<backend>::{fp8_gemm,
// fp8_dequant_gemm, bf16_gemm}. Stateless; params borrow the caller's memory; C must not alias A/B.
#pragma once

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu {

// C[m,n] = Σ_kb (Σ_{k∈kb} a[m,k]·b[n,k]) · a_scales[m,kb] · b_scales[n/128, kb], kb over 128-wide
// K blocks. Each block's partial sum is an fp32 accumulation, then scaled ((partial·a_s)·b_s)
// and added to an fp32 accumulator, in kb order.
struct Fp8GemmParams {
  const fp8_e4m3* a = nullptr;      // [M, K] activations (act_quant output), row stride lda
  const float* a_scales = nullptr;  // [M, K/128]: (m, kb) at m·a_scale_row_stride + kb·a_scale_col_stride
  const fp8_e4m3* b = nullptr;      // [N, K] weight, row stride ldb; row 0 starts a 128-row block
  const float* b_scales = nullptr;  // [ceil(N/128), K/128] row-major, contiguous (weight_scale_inv)
  float* c = nullptr;               // [M, N] fp32, row stride ldc
  std::int64_t m = 0;
  std::int64_t n = 0;  // any N >= 1; a ragged last block uses its scale row (e.g. N = 576)
  std::int64_t k = 0;  // REQUIRES: a multiple of 128
  std::int64_t lda = 0;
  std::int64_t ldb = 0;
  std::int64_t ldc = 0;
  std::int64_t a_scale_row_stride = 0;  // K/128 for act_quant's default row-major layout
  std::int64_t a_scale_col_stride = 1;
};

// C[m,n] = Σ_k a[m,k] · (fp32(b[n,k]) · b_scales[n/128, k/128]), fp32 accumulation in k order.
struct Fp8DequantGemmParams {
  const float* a = nullptr;         // [M, K] fp32, row stride lda
  const fp8_e4m3* b = nullptr;      // [N, K] weight, row stride ldb; row 0 starts a 128-row block
  const float* b_scales = nullptr;  // [ceil(N/128), ceil(K/128)] row-major, contiguous
  float* c = nullptr;               // [M, N] fp32, row stride ldc
  std::int64_t m = 0;
  std::int64_t n = 0;
  std::int64_t k = 0;  // any K >= 1
  std::int64_t lda = 0;
  std::int64_t ldb = 0;
  std::int64_t ldc = 0;
};

// C[m,n] = Σ_k a[m,k] · fp32(b[n,k]), fp32 accumulation in k order.
struct Bf16GemmParams {
  const float* a = nullptr;  // [M, K] fp32, row stride lda
  const bf16* b = nullptr;   // [N, K] weight, row stride ldb
  float* c = nullptr;        // [M, N] fp32, row stride ldc
  std::int64_t m = 0;
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t lda = 0;
  std::int64_t ldb = 0;
  std::int64_t ldc = 0;
};

void validate(const Fp8GemmParams& p);
void validate(const Fp8DequantGemmParams& p);
void validate(const Bf16GemmParams& p);

}  // namespace sy::gpu
