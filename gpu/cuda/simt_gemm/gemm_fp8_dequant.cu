// CUDA-core GEMM variant: A fp32, B e4m3 times its block scale (fp8_dequant_gemm).
#include "gpu/cuda/simt_gemm/kernel.cuh"

namespace sy::gpu::cuda::impl::simt_gemm {

void launch_fp8_dequant(const Args& args, cudaStream_t s) { launch_kernel<float, fp8_e4m3, false>(args, s); }

}  // namespace sy::gpu::cuda::impl::simt_gemm
