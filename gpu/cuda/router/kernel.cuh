// The router kernels. moe_select: the block scores its token's experts in parallel, then one
// thread runs the reference's group limit and top-k (k·experts comparisons; V3: 8·256) exactly as
// gpu/ref/moe_gate.cpp does, so the chosen experts match the reference whenever the scores do.
// argmax: a block-wide (value, index) reduction, NaN skipped, ties to the lowest index.
#pragma once

#include <cmath>
#include <cstdint>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/router/config.hpp"
#include "gpu/moe_gate.hpp"
#include "gpu/sampling.hpp"

namespace sy::gpu::cuda::impl::router {

// Index of the best not-yet-taken value in v[0, n): largest first, ties to the lower index.
__device__ inline int best_untaken(const float* v, const bool* taken, int n) {
  int best = -1;
  for (int e = 0; e < n; ++e) {
    if (taken[e]) continue;
    if (best < 0 || v[e] > v[best]) best = e;
  }
  return best;
}

__global__ void moe_select_kernel(MoeSelectParams p) {
  __shared__ float s[kMaxExperts];
  __shared__ float sb[kMaxExperts];
  __shared__ bool taken[kMaxExperts];
  __shared__ float scratch[32];
  const MoeRouting& r = p.routing;
  const int experts = static_cast<int>(r.experts);
  const float* logits = p.logits + static_cast<std::int64_t>(blockIdx.x) * p.logits_stride;
  if (r.scoring == ScoringFunc::sigmoid) {
    for (int e = threadIdx.x; e < experts; e += blockDim.x) s[e] = 1.0f / (1.0f + expf(-logits[e]));
  } else {
    float m = -INFINITY;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) m = fmaxf(m, logits[e]);
    m = dev::block_max(m, scratch);
    float sum = 0.0f;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
      s[e] = expf(logits[e] - m);
      sum += s[e];
    }
    sum = dev::block_sum(sum, scratch);
    for (int e = threadIdx.x; e < experts; e += blockDim.x) s[e] /= sum;
  }
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    sb[e] = r.bias != nullptr ? s[e] + r.bias[e] : s[e];
    taken[e] = false;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;

  if (r.n_group > 1) {
    const int groups = static_cast<int>(r.n_group);
    const int group_size = experts / groups;
    float group_score[kMaxGroups];  // n_group <= kMaxGroups (validated); V3 has 8
    bool group_kept[kMaxGroups];
    for (int g = 0; g < groups; ++g) {
      const float* v = sb + g * group_size;
      if (r.group_score == GroupScore::top2_sum) {
        int a = 0;
        for (int e = 1; e < group_size; ++e)
          if (v[e] > v[a]) a = e;
        int b = -1;
        for (int e = 0; e < group_size; ++e)
          if (e != a && (b < 0 || v[e] > v[b])) b = e;
        group_score[g] = v[a] + v[b];
      } else {
        float m = v[0];
        for (int e = 1; e < group_size; ++e) m = fmaxf(m, v[e]);
        group_score[g] = m;
      }
      group_kept[g] = false;
    }
    for (int j = 0; j < r.topk_group; ++j) {
      int best = -1;
      for (int g = 0; g < groups; ++g) {
        if (group_kept[g]) continue;
        if (best < 0 || group_score[g] > group_score[best]) best = g;
      }
      group_kept[best] = true;
    }
    for (int e = 0; e < experts; ++e) {
      if (!group_kept[e / group_size]) sb[e] = -INFINITY;
    }
  }
  std::int32_t* indices = p.indices + static_cast<std::int64_t>(blockIdx.x) * r.top_k;
  float* weights = p.weights + static_cast<std::int64_t>(blockIdx.x) * r.top_k;
  float sum = 0.0f;
  for (int j = 0; j < r.top_k; ++j) {
    const int e = best_untaken(sb, taken, experts);
    taken[e] = true;
    indices[j] = e;
    weights[j] = s[e];
    sum += s[e];
  }
  if (r.norm_topk_prob && r.top_k > 1) {
    for (int j = 0; j < r.top_k; ++j) weights[j] /= sum + 1e-20f;
  }
  for (int j = 0; j < r.top_k; ++j) weights[j] *= r.routed_scaling_factor;
}

// (value, index) with index -1 = nothing yet; a beats b when larger, or equal with a lower index.
__device__ __forceinline__ bool beats(float va, int ia, float vb, int ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return va > vb || (va == vb && ia < ib);
}

__global__ void argmax_kernel(ArgmaxParams p) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  const float* logits = p.logits + static_cast<std::int64_t>(blockIdx.x) * p.logits_stride;
  float v = 0.0f;
  int idx = -1;
  for (std::int64_t i = threadIdx.x; i < p.vocab; i += blockDim.x) {
    const float x = logits[i];
    if (isnan(x)) continue;
    if (beats(x, static_cast<int>(i), v, idx)) {
      v = x;
      idx = static_cast<int>(i);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (beats(ov, oi, v, idx)) {
      v = ov;
      idx = oi;
    }
  }
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) {
    best_v[warp] = v;
    best_i[warp] = idx;
  }
  __syncthreads();
  if (warp != 0) return;
  const int warps = static_cast<int>(blockDim.x) / 32;
  v = lane < warps ? best_v[lane] : 0.0f;
  idx = lane < warps ? best_i[lane] : -1;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (beats(ov, oi, v, idx)) {
      v = ov;
      idx = oi;
    }
  }
  if (lane == 0) p.tokens[blockIdx.x] = idx < 0 ? 0 : idx;
}

}  // namespace sy::gpu::cuda::impl::router
