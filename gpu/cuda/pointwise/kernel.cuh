// The pointwise kernels. Each follows its reference in gpu/ref/ operation by operation (same
// operand order, fp32 throughout); results differ from it only where the compiler fuses a
// multiply-add or the reduction order differs (rms_norm's sum of squares).
#pragma once

#include <cmath>
#include <cstdint>

#include "gpu/activation.hpp"
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/pointwise/config.hpp"
#include "gpu/mla.hpp"
#include "gpu/norm.hpp"
#include "gpu/quant.hpp"
#include "gpu/rope.hpp"

namespace sy::gpu::cuda::impl::pointwise {

// grid (rows), block kRowThreads.
__global__ void rms_norm_kernel(RmsNormParams p) {
  __shared__ float scratch[32];
  const float* x = p.x + static_cast<std::int64_t>(blockIdx.x) * p.x_stride;
  float* y = p.y + static_cast<std::int64_t>(blockIdx.x) * p.y_stride;
  float sum_sq = 0.0f;
  for (std::int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) sum_sq += x[i] * x[i];
  sum_sq = dev::block_sum(sum_sq, scratch);
  const float inv_rms = 1.0f / sqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);
  // Each thread rewrites only the elements it read: in place (y == x) is safe.
  for (std::int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) y[i] = dev::to_float(p.weight[i]) * (x[i] * inv_rms);
}

// One thread per (row, head, pair).
__global__ void apply_rope_kernel(RopeParams p) {
  const std::int64_t pairs = p.rope_dim / 2;
  const std::int64_t total = p.rows * p.heads * pairs;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx % pairs;
    const std::int64_t h = (idx / pairs) % p.heads;
    const std::int64_t r = idx / (pairs * p.heads);
    const float angle = __fmul_rn(static_cast<float>(p.positions[r]), p.inv_freq[i]);
    // cos/sin of the fp32 angle in double, rounded once: the reference's numbers.
    const float c = __fmul_rn(static_cast<float>(cos(static_cast<double>(angle))), p.cos_sin_scale);
    const float sn = __fmul_rn(static_cast<float>(sin(static_cast<double>(angle))), p.cos_sin_scale);
    float* x = p.x + r * p.row_stride + h * p.head_stride + 2 * i;
    const float x0 = x[0];
    const float x1 = x[1];
    x[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
    x[1] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
  }
}

// One warp per 1×128 tile: 4 values a lane. grid (ceil(rows·tiles / kQuantWarps)).
__global__ void act_quant_kernel(ActQuantParams p) {
  const std::int64_t tiles = p.cols / kTileWidth;
  const std::int64_t tile = static_cast<std::int64_t>(blockIdx.x) * kQuantWarps + threadIdx.x / 32;
  if (tile >= p.rows * tiles) return;
  const int lane = threadIdx.x % 32;
  const std::int64_t r = tile / tiles;
  const std::int64_t t = tile % tiles;
  const float* x = p.x + r * p.x_stride + t * kTileWidth;
  fp8_e4m3* y = p.y + r * p.y_stride + t * kTileWidth;
  float v[4];
  float amax = kQuantAmaxFloor;
  for (int j = 0; j < 4; ++j) {
    v[j] = x[lane + 32 * j];
    amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = dev::warp_max(amax);
  float s = amax / kFp8E4m3Max;
  if (p.format == ScaleFormat::ue8m0) {
    int e = 0;
    const float m = frexpf(s, &e);
    s = m == 0.5f ? s : ldexpf(1.0f, e);
  }
  for (int j = 0; j < 4; ++j) y[lane + 32 * j] = dev::to_fp8(v[j] / s);
  if (lane == 0) p.scales[r * p.scale_row_stride + t * p.scale_col_stride] = s;
}

__global__ void swiglu_kernel(SwigluParams p) {
  const std::int64_t total = p.rows * p.cols;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = idx / p.cols;
    const std::int64_t i = idx % p.cols;
    const float g = p.gate[r * p.gate_stride + i];
    const float u = p.up[r * p.up_stride + i];
    const float silu = g / (1.0f + expf(-g));
    p.out[r * p.out_stride + i] = silu * u;  // read before write: out may alias gate or up
  }
}

// grid (tokens), block kRowThreads. Trusts seq_ids/positions/pages (checked by the caller).
__global__ void mla_cache_write_kernel(MlaCacheWriteParams p) {
  const std::int64_t t = blockIdx.x;
  const std::int64_t lora = p.cache.kv_lora_rank;
  const std::int64_t dim = lora + p.cache.rope_dim;
  const std::int32_t seq = p.seq_ids[t];
  const std::int32_t pos = p.positions[t];
  const std::int64_t page = p.table.pages[seq * p.table.stride + pos / kMlaPageSize];
  const std::int64_t offset = (page * kMlaPageSize + pos % kMlaPageSize) * dim;
  const float* latent = p.latent + t * p.latent_stride;
  const float* k_pe = p.k_pe + t * p.k_pe_stride;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = i < lora ? latent[i] : k_pe[i - lora];
    if (p.cache.dtype == KvCacheDtype::fp32) {
      static_cast<float*>(p.cache.data)[offset + i] = v;
    } else {
      static_cast<bf16*>(p.cache.data)[offset + i] = dev::to_bf16(v);
    }
  }
}

}  // namespace sy::gpu::cuda::impl::pointwise
