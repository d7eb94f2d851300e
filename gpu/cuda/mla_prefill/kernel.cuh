// The MLA prefill kernel: per (query row, head), score = [q_nope ‖ q_pe]·[k_nope ‖ k_pe]·scale
// (one thread per key, fp32), online softmax over steps of kThreads keys, out = Σ p·v.
// TODO(perf): tensor cores (FlashAttention-style tiles over query rows); this is the correct,
// CUDA-core version: prefill at V3 size wants FlashMLA's/FA3's kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/mla_prefill/config.hpp"
#include "gpu/mla.hpp"

namespace sy::gpu::cuda::impl::mla_prefill {

// grid (q_tokens, heads), block kThreads.
__global__ void __launch_bounds__(kThreads) mla_prefill_kernel(MlaPrefillParams p) {
  __shared__ float q_s[kMaxQkDim];
  __shared__ float p_s[kThreads];
  __shared__ float scratch[32];
  const std::int64_t row = blockIdx.x;
  const std::int64_t h = blockIdx.y;
  const int tid = threadIdx.x;
  // The sequence owning this query row: the last s with cu_seqlens_q[s] <= row.
  std::int64_t lo = 0;
  std::int64_t hi = p.num_seqs - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens_q[mid] <= row) lo = mid; else hi = mid - 1;
  }
  // Empty sequences share their start with the next one; skip to the one that owns the row.
  while (lo + 1 < p.num_seqs && p.cu_seqlens_q[lo + 1] <= row) ++lo;
  const std::int64_t s = lo;
  const std::int64_t q0 = p.cu_seqlens_q[s];
  const std::int64_t len_q = p.cu_seqlens_q[s + 1] - q0;
  const std::int64_t kv0 = p.cu_seqlens_kv[s];
  const std::int64_t len_kv = p.cu_seqlens_kv[s + 1] - kv0;
  const std::int64_t visible = (row - q0) + (len_kv - len_q) + 1;

  const int qk_dim = static_cast<int>(p.nope_dim + p.rope_dim);
  const float* q = p.q.data + row * p.q.token_stride + h * p.q.head_stride;
  for (int i = tid; i < qk_dim; i += kThreads) q_s[i] = q[i];
  __syncthreads();

  float m_run = -INFINITY;
  float l_run = 0.0f;
  float acc[kMaxVPerThread];
#pragma unroll
  for (int j = 0; j < kMaxVPerThread; ++j) acc[j] = 0.0f;

  for (std::int64_t t0 = 0; t0 < visible; t0 += kThreads) {
    const std::int64_t t = t0 + tid;
    const bool valid = t < visible;
    float score = -INFINITY;
    if (valid) {
      const float* k_nope = p.k_nope.data + (kv0 + t) * p.k_nope.token_stride + h * p.k_nope.head_stride;
      const float* k_pe = p.k_pe + (kv0 + t) * p.k_pe_stride;
      float dot = 0.0f;
      for (std::int64_t d = 0; d < p.nope_dim; ++d) dot = fmaf(q_s[d], k_nope[d], dot);
      for (std::int64_t d = 0; d < p.rope_dim; ++d) dot = fmaf(q_s[p.nope_dim + d], k_pe[d], dot);
      score = dot * p.softmax_scale;
    }
    const float m_new = fmaxf(m_run, dev::block_max(score, scratch));  // finite: key t0 is visible
    const float prob = valid ? expf(score - m_new) : 0.0f;
    const float rescale = expf(m_run - m_new);
    l_run = l_run * rescale + dev::block_sum(prob, scratch);
    m_run = m_new;
    p_s[tid] = prob;
    __syncthreads();
    const std::int64_t steps = visible - t0 < kThreads ? visible - t0 : kThreads;
#pragma unroll
    for (int j = 0; j < kMaxVPerThread; ++j) {
      const std::int64_t d = tid + static_cast<std::int64_t>(j) * kThreads;
      if (d < p.v_dim) {
        float a = acc[j] * rescale;
        for (std::int64_t u = 0; u < steps; ++u) {
          a = fmaf(p_s[u], p.v.data[(kv0 + t0 + u) * p.v.token_stride + h * p.v.head_stride + d], a);
        }
        acc[j] = a;
      }
    }
    __syncthreads();  // p_s is rewritten next step
  }
  float* out = p.out.data + row * p.out.token_stride + h * p.out.head_stride;
  const float inv_l = 1.0f / l_run;
#pragma unroll
  for (int j = 0; j < kMaxVPerThread; ++j) {
    const std::int64_t d = tid + static_cast<std::int64_t>(j) * kThreads;
    if (d < p.v_dim) out[d] = acc[j] * inv_l;
  }
}

}  // namespace sy::gpu::cuda::impl::mla_prefill
