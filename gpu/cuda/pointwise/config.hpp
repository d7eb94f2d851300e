// Launch shapes of the pointwise kernels (rms_norm, apply_rope, act_quant, swiglu,
// mla_cache_write): one block per row for row reductions, flat grids elsewhere. Memory-bound;
// the numbers only need to fill the machine.
#pragma once

namespace sy::gpu::cuda::impl::pointwise {

inline constexpr int kRowThreads = 256;   // rms_norm, mla_cache_write: threads per row
inline constexpr int kFlatThreads = 256;  // apply_rope, swiglu: threads per block
inline constexpr int kQuantWarps = 8;     // act_quant: one warp per 1×128 tile, 8 tiles a block
inline constexpr int kTileWidth = 128;    // act_quant tile (gpu/quant.hpp kQuantBlock)

}  // namespace sy::gpu::cuda::impl::pointwise
