// MLA decode at any other dims (smaller configs), read at run time; kv_lora_rank <= kMaxLoraRank.
#include "gpu/cuda/check.hpp"
#include "gpu/cuda/mla_decode/kernel.cuh"
#include "gpu/cuda/mla_decode/launch.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

void launch_general(const MlaDecodeParams& p, int splits, float* partial_out, float* partial_lse, cudaStream_t s) {
  auto* kernel = &mla_decode_kernel<0, 0>;
  const int smem = static_cast<int>(smem_floats(p.cache.kv_lora_rank + p.cache.rope_dim) * sizeof(float));
  SY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(static_cast<unsigned>(p.queries), static_cast<unsigned>((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock),
                  static_cast<unsigned>(splits));
  kernel<<<grid, kThreads, smem, s>>>(p, partial_out, partial_lse);
}

}  // namespace sy::gpu::cuda::impl::mla_decode
