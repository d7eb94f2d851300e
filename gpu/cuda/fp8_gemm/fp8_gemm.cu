// The one instantiation of the block-scaled FP8 GEMM (dense and grouped share it) and its launcher.
#include "gpu/cuda/check.hpp"
#include "gpu/cuda/fp8_gemm/kernel.cuh"

namespace sy::gpu::cuda::impl::fp8_gemm {

void launch(const Args& args, cudaStream_t s) {
  SY_CUDA_CHECK(cudaFuncSetAttribute(&fp8_gemm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const dim3 grid(static_cast<unsigned>((args.n + kTileN - 1) / kTileN), static_cast<unsigned>((args.m + kTileM - 1) / kTileM));
  fp8_gemm_kernel<<<grid, kThreads, kSmemBytes, s>>>(args);
}

}  // namespace sy::gpu::cuda::impl::fp8_gemm
