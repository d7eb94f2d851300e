// The MLA decode kernel template (see config.hpp for the block's work). Per block:
//   load q (kHeadsPerBlock heads × [q_latent ‖ q_pe]) into shared memory, fp32;
//   for each tile of kTileTokens keys in this split: gather the keys through the block table into
//   shared memory as fp32 (zeros past the end), score = q·key·softmax_scale (one fp32 dot over
//   the full 576 dims per (head, key)), online softmax per head (running max m, sum l), rescale
//   the output accumulators and add p·c_KV;
//   write out = acc / l and lse = m + ln l, to the output (one split) or the split partials.
// Scores use CUDA-core fp32 FMAs. TODO(perf): tensor cores (wgmma on BF16 tiles, FlashMLA's
// shape) and one block per query for all heads, so each key is read from L2 once, not
// heads/kHeadsPerBlock times.
#pragma once

#include <cmath>
#include <cstdint>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/mla_decode/config.hpp"
#include "gpu/mla.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

// grid (queries, ceil(heads / kHeadsPerBlock), splits), block kThreads, smem_floats(dim)·4 bytes.
// Split partials (splits > 1): partial_out [splits, queries, heads, lora], partial_lse [splits,
// queries, heads]; with one split, out_latent and lse directly.
template <int kLora, int kRope>
__global__ void __launch_bounds__(kThreads) mla_decode_kernel(MlaDecodeParams p, float* partial_out,
                                                             float* partial_lse) {
  extern __shared__ float smem[];
  const int lora = kLora > 0 ? kLora : static_cast<int>(p.cache.kv_lora_rank);
  const int rope = kRope > 0 ? kRope : static_cast<int>(p.cache.rope_dim);
  const int dim = lora + rope;
  const int row = dim + 1;  // padded key row
  float* q_s = smem;                                     // [kHeadsPerBlock][dim]
  float* kv_s = q_s + kHeadsPerBlock * dim;              // [kTileTokens][row]
  float* p_s = kv_s + kTileTokens * row;                 // [kHeadsPerBlock][kTileTokens]
  float* rescale_s = p_s + kHeadsPerBlock * kTileTokens;  // [kHeadsPerBlock]
  float* m_s = rescale_s + kHeadsPerBlock;                // [kHeadsPerBlock]
  float* l_s = m_s + kHeadsPerBlock;                      // [kHeadsPerBlock]

  const int tid = threadIdx.x;
  const std::int64_t q = blockIdx.x;
  const int head0 = blockIdx.y * kHeadsPerBlock;
  const int split = blockIdx.z;
  const int splits = gridDim.z;
  const int heads = static_cast<int>(p.heads);

  // This split's keys [begin, end) of the visible 0..positions[q].
  const std::int64_t visible = static_cast<std::int64_t>(p.positions[q]) + 1;
  const std::int64_t per_split = ((visible + splits - 1) / splits + kTileTokens - 1) / kTileTokens * kTileTokens;
  const std::int64_t begin = split * per_split;
  const std::int64_t end = begin + per_split < visible ? begin + per_split : visible;
  const std::int32_t seq = p.seq_ids[q];
  const std::int32_t* pages = p.table.pages + static_cast<std::int64_t>(seq) * p.table.stride;

  for (int i = tid; i < kHeadsPerBlock * dim; i += kThreads) {
    const int hh = i / dim;
    const int d = i % dim;
    const int h = head0 + hh;
    float v = 0.0f;
    if (h < heads) {
      v = d < lora ? p.q_latent.data[q * p.q_latent.token_stride + h * p.q_latent.head_stride + d]
                   : p.q_pe.data[q * p.q_pe.token_stride + h * p.q_pe.head_stride + (d - lora)];
    }
    q_s[i] = v;
  }

  // Output accumulators: this thread's head and columns.
  const int my_head = tid / kColThreads;
  const int my_col0 = tid % kColThreads;
  float acc[kMaxColsPerThread];
#pragma unroll
  for (int j = 0; j < kMaxColsPerThread; ++j) acc[j] = 0.0f;
  // Softmax state of the score phase's heads (warp w: heads w and w + 8), replicated in its lanes.
  const int lane = tid % 32;
  const int warp = tid / 32;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.0f, 0.0f};

  for (std::int64_t t0 = begin; t0 < end; t0 += kTileTokens) {
    __syncthreads();  // the previous tile's readers are done
    // Gather the tile's keys as fp32.
    if (p.cache.dtype == KvCacheDtype::bf16) {
      const bf16* cache = static_cast<const bf16*>(p.cache.data);
      for (int i = tid; i < kTileTokens * dim; i += kThreads) {
        const int t = i / dim;
        const int d = i % dim;
        const std::int64_t pos = t0 + t;
        float v = 0.0f;
        if (pos < end) {
          const std::int64_t page = pages[pos / kMlaPageSize];
          v = dev::to_float(cache[(page * kMlaPageSize + pos % kMlaPageSize) * dim + d]);
        }
        kv_s[t * row + d] = v;
      }
    } else {
      const float* cache = static_cast<const float*>(p.cache.data);
      for (int i = tid; i < kTileTokens * dim; i += kThreads) {
        const int t = i / dim;
        const int d = i % dim;
        const std::int64_t pos = t0 + t;
        float v = 0.0f;
        if (pos < end) {
          const std::int64_t page = pages[pos / kMlaPageSize];
          v = cache[(page * kMlaPageSize + pos % kMlaPageSize) * dim + d];
        }
        kv_s[t * row + d] = v;
      }
    }
    __syncthreads();

    // Scores: lane = key, warp = head pair (warp, warp + 8); then the online softmax per head.
    {
      const int t = lane;
      const bool valid = t0 + t < end;
      const float* key = kv_s + t * row;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int hh = warp + 8 * k;
        const float* qv = q_s + hh * dim;
        float dot = 0.0f;
        for (int d = 0; d < dim; ++d) dot = fmaf(qv[d], key[d], dot);
        const float score = valid ? dot * p.softmax_scale : -INFINITY;
        const float m_new = fmaxf(m_run[k], dev::warp_max(score));  // finite: key t0 is valid
        const float prob = valid ? expf(score - m_new) : 0.0f;
        const float rescale = expf(m_run[k] - m_new);  // 0 on the first tile (m_run = -inf)
        l_run[k] = l_run[k] * rescale + dev::warp_sum(prob);
        m_run[k] = m_new;
        p_s[hh * kTileTokens + t] = prob;
        if (lane == 0) rescale_s[hh] = rescale;
      }
    }
    __syncthreads();

    // acc = acc·rescale + Σ_t p[t]·c_KV[t]  (V is the latent part of the key).
    {
      const float rescale = rescale_s[my_head];
      const float* prob = p_s + my_head * kTileTokens;
#pragma unroll
      for (int j = 0; j < kMaxColsPerThread; ++j) {
        const int c = my_col0 + j * kColThreads;
        if (c < lora) {
          float a = acc[j] * rescale;
          for (int t = 0; t < kTileTokens; ++t) a = fmaf(prob[t], kv_s[t * row + c], a);
          acc[j] = a;
        }
      }
    }
  }

  if (lane == 0) {
    m_s[warp] = m_run[0];
    m_s[warp + 8] = m_run[1];
    l_s[warp] = l_run[0];
    l_s[warp + 8] = l_run[1];
  }
  __syncthreads();
  const int h = head0 + my_head;
  if (h >= heads) return;
  const bool empty = begin >= end;  // a split past the end of a short sequence
  const float l = l_s[my_head];
  const float inv_l = empty ? 0.0f : 1.0f / l;
  float* out;
  if (splits == 1) {
    out = p.out_latent.data + q * p.out_latent.token_stride + h * p.out_latent.head_stride;
    if (my_col0 == 0 && p.lse != nullptr) p.lse[q * heads + h] = m_s[my_head] + logf(l);
  } else {
    const std::int64_t slot = (static_cast<std::int64_t>(split) * p.queries + q) * heads + h;
    out = partial_out + slot * lora;
    if (my_col0 == 0) partial_lse[slot] = empty ? -INFINITY : m_s[my_head] + logf(l);
  }
#pragma unroll
  for (int j = 0; j < kMaxColsPerThread; ++j) {
    const int c = my_col0 + j * kColThreads;
    if (c < lora) out[c] = acc[j] * inv_l;
  }
}

}  // namespace sy::gpu::cuda::impl::mla_decode
