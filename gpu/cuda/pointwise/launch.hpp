// Launchers of the pointwise kernels (pointwise.cu). The API (gpu/cuda/api.cpp) validates params
// first; these only launch on the stream. All pointers are device memory.
#pragma once

#include <cuda_runtime_api.h>

#include "gpu/activation.hpp"
#include "gpu/mla.hpp"
#include "gpu/norm.hpp"
#include "gpu/quant.hpp"
#include "gpu/rope.hpp"

namespace sy::gpu::cuda::impl::pointwise {

void launch_rms_norm(const RmsNormParams& p, cudaStream_t s);
void launch_apply_rope(const RopeParams& p, cudaStream_t s);
void launch_act_quant(const ActQuantParams& p, cudaStream_t s);
void launch_swiglu(const SwigluParams& p, cudaStream_t s);
void launch_mla_cache_write(const MlaCacheWriteParams& p, cudaStream_t s);

}  // namespace sy::gpu::cuda::impl::pointwise
