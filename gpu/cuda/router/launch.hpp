// Launchers of the router kernels (router.cu). Params are validated by gpu/cuda/api.cpp; all
// pointers (the routing bias too) are device memory.
#pragma once

#include <cuda_runtime_api.h>

#include "gpu/moe_gate.hpp"
#include "gpu/sampling.hpp"

namespace sy::gpu::cuda::impl::router {

void launch_moe_select(const MoeSelectParams& p, cudaStream_t s);
void launch_argmax(const ArgmaxParams& p, cudaStream_t s);

}  // namespace sy::gpu::cuda::impl::router
