// CUDA-core GEMM variant: A fp32, B fp32 (the MLA up-projections).
#include "gpu/cuda/simt_gemm/kernel.cuh"

namespace sy::gpu::cuda::impl::simt_gemm {

void launch_f32(const Args& args, cudaStream_t s) { launch_kernel<float, float, false>(args, s); }

}  // namespace sy::gpu::cuda::impl::simt_gemm
