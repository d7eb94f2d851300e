// The one instantiation of the pointwise kernels (no variants) and their launchers.
#include <algorithm>

#include "gpu/cuda/pointwise/kernel.cuh"
#include "gpu/cuda/pointwise/launch.hpp"

namespace sy::gpu::cuda::impl::pointwise {
namespace {

unsigned flat_blocks(std::int64_t total) {
  // Grid-stride loops: cap the grid, the loop covers the rest.
  return static_cast<unsigned>(std::clamp<std::int64_t>((total + kFlatThreads - 1) / kFlatThreads, 1, 65536));
}

}  // namespace

void launch_rms_norm(const RmsNormParams& p, cudaStream_t s) {
  rms_norm_kernel<<<static_cast<unsigned>(p.rows), kRowThreads, 0, s>>>(p);
}

void launch_apply_rope(const RopeParams& p, cudaStream_t s) {
  apply_rope_kernel<<<flat_blocks(p.rows * p.heads * (p.rope_dim / 2)), kFlatThreads, 0, s>>>(p);
}

void launch_act_quant(const ActQuantParams& p, cudaStream_t s) {
  const std::int64_t tiles = p.rows * (p.cols / kTileWidth);
  act_quant_kernel<<<static_cast<unsigned>((tiles + kQuantWarps - 1) / kQuantWarps), kQuantWarps * 32, 0, s>>>(p);
}

void launch_swiglu(const SwigluParams& p, cudaStream_t s) {
  swiglu_kernel<<<flat_blocks(p.rows * p.cols), kFlatThreads, 0, s>>>(p);
}

void launch_mla_cache_write(const MlaCacheWriteParams& p, cudaStream_t s) {
  mla_cache_write_kernel<<<static_cast<unsigned>(p.tokens), kRowThreads, 0, s>>>(p);
}

}  // namespace sy::gpu::cuda::impl::pointwise
