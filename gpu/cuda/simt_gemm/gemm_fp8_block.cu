// CUDA-core GEMM variant: A and B e4m3, per-128-block scaling (fp8_gemm's fallback).
#include "gpu/cuda/simt_gemm/kernel.cuh"

namespace sy::gpu::cuda::impl::simt_gemm {

void launch_fp8_block(const Args& args, cudaStream_t s) { launch_kernel<fp8_e4m3, fp8_e4m3, true>(args, s); }

}  // namespace sy::gpu::cuda::impl::simt_gemm
