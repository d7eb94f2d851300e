// CUDA-core GEMM variant: A fp32, B bf16 (bf16_gemm).
#include "gpu/cuda/simt_gemm/kernel.cuh"

namespace sy::gpu::cuda::impl::simt_gemm {

void launch_bf16(const Args& args, cudaStream_t s) { launch_kernel<float, bf16, false>(args, s); }

}  // namespace sy::gpu::cuda::impl::simt_gemm
