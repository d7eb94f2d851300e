// MLA decode at DeepSeek-V3 dims: kv_lora_rank 512, rope 64 (head_dim_k 576, head_dim_v 512).
#include "gpu/cuda/check.hpp"
#include "gpu/cuda/mla_decode/kernel.cuh"
#include "gpu/cuda/mla_decode/launch.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

void launch_v3(const MlaDecodeParams& p, int splits, float* partial_out, float* partial_lse, cudaStream_t s) {
  auto* kernel = &mla_decode_kernel<kV3Lora, kV3Rope>;
  const int smem = static_cast<int>(smem_floats(kV3Lora + kV3Rope) * sizeof(float));
  SY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(static_cast<unsigned>(p.queries), static_cast<unsigned>((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock),
                  static_cast<unsigned>(splits));
  kernel<<<grid, kThreads, smem, s>>>(p, partial_out, partial_lse);
}

}  // namespace sy::gpu::cuda::impl::mla_decode
