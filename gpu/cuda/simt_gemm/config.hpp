// The CUDA-core GEMM of simt_gemm/: C = A·Bᵀ over arbitrary strides and a batch, fp32
// accumulation in k order (the reference's order). It serves the fp32 MLA up-projections
// (batched over heads), bf16_gemm, fp8_dequant_gemm, and fp8_gemm's fallback for rows the
// tensor-core kernel cannot load. Tile shape below.
#pragma once

namespace sy::gpu::cuda::impl::simt_gemm {

inline constexpr int kTileM = 64;
inline constexpr int kTileN = 64;
inline constexpr int kTileK = 16;
inline constexpr int kThreads = 256;  // 16×16 threads, 4×4 outputs each
inline constexpr int kPerThread = 4;
static_assert(kTileM == 16 * kPerThread && kTileN == 16 * kPerThread);

}  // namespace sy::gpu::cuda::impl::simt_gemm
