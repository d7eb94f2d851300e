// The one instantiation of the router kernels and their launchers.
#include "gpu/cuda/router/kernel.cuh"
#include "gpu/cuda/router/launch.hpp"

namespace sy::gpu::cuda::impl::router {

void launch_moe_select(const MoeSelectParams& p, cudaStream_t s) {
  moe_select_kernel<<<static_cast<unsigned>(p.tokens), kSelectThreads, 0, s>>>(p);
}

void launch_argmax(const ArgmaxParams& p, cudaStream_t s) {
  argmax_kernel<<<static_cast<unsigned>(p.rows), kArgmaxThreads, 0, s>>>(p);
}

}  // namespace sy::gpu::cuda::impl::router
