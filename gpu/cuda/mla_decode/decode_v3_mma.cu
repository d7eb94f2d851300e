// MLA decode on tensor cores at DeepSeek-V3 dims (576/512) over a BF16 cache.
#include "gpu/cuda/check.hpp"
#include "gpu/cuda/mla_decode/kernel_mma.cuh"
#include "gpu/cuda/mla_decode/launch.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

void launch_v3_mma(const MlaDecodeParams& p, int splits, float* partial_out, float* partial_lse, cudaStream_t s) {
  auto* kernel = &mma::mla_decode_mma_kernel;
  SY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, mma::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(p.queries), static_cast<unsigned>((p.heads + mma::kHeads - 1) / mma::kHeads),
                  static_cast<unsigned>(splits));
  kernel<<<grid, mma::kThreads, mma::kSmemBytes, s>>>(p, partial_out, partial_lse);
}

}  // namespace sy::gpu::cuda::impl::mla_decode
