// The one instantiation of MLA prefill (dims read at run time) and its launcher.
#include "gpu/cuda/mla_prefill/kernel.cuh"
#include "gpu/cuda/mla_prefill/launch.hpp"

namespace sy::gpu::cuda::impl::mla_prefill {

void launch(const MlaPrefillParams& p, std::int64_t q_tokens, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(q_tokens), static_cast<unsigned>(p.heads));
  mla_prefill_kernel<<<grid, kThreads, 0, s>>>(p);
}

}  // namespace sy::gpu::cuda::impl::mla_prefill
