// The tensor-core MLA decode kernel (config.hpp, namespace mma): V3 dims, BF16 cache. Per block
// and per 64-key page of its split:
//   cp.async the page (64 × 576 BF16) into shared memory, zero rows past the split's end;
//   S = Q·Kᵀ: warp w computes the 16 heads × keys [8w, 8w+8) with mma.sync.m16n8k16 (BF16 in,
//   fp32 out) over 36 k-steps; scale, mask, row max and row sum across warps through shared
//   memory (online softmax: running max m, sum l per head, replicated in every warp);
//   P (BF16) to shared memory; O = O·rescale + P·V: warp w owns latent columns [64w, 64w+64)
//   (8 n-tiles × 4 k-steps of 16 keys), V being the first 512 columns of the same page.
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): A a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..),
// a3 (g+8, 2t+8..); B b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g); C c0,c1 (g, 2t..2t+1), c2,c3
// (g+8, 2t..); g = lane/4, t = lane%4; the lower half of a .b32 holds the lower index.
// TODO(perf): double-buffer the page (cp.async stages), ldmatrix, 64 heads per block (one read
// of each page for 4× the heads), wgmma.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/mla_decode/config.hpp"
#include "gpu/mla.hpp"

namespace sy::gpu::cuda::impl::mla_decode::mma {

__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ unsigned load32(const std::uint16_t* p) { return *reinterpret_cast<const unsigned*>(p); }
__device__ __forceinline__ unsigned pack(std::uint16_t lo, std::uint16_t hi) {
  return static_cast<unsigned>(lo) | (static_cast<unsigned>(hi) << 16);
}
__device__ __forceinline__ std::uint16_t bf16_bits(float x) { return dev::to_bf16(x).bits; }

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}

// grid (queries, ceil(heads/kHeads), splits), block kThreads, kSmemBytes dynamic shared memory.
// Outputs as mla_decode_kernel: direct with one split, else partial_out/partial_lse.
__global__ void __launch_bounds__(kThreads) mla_decode_mma_kernel(MlaDecodeParams p, float* partial_out,
                                                                   float* partial_lse) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  std::uint16_t* q_s = reinterpret_cast<std::uint16_t*>(smem_raw);  // [kHeads][kRow] bf16 bits
  std::uint16_t* kv_s = q_s + kHeads * kRow;                         // [kTile][kRow]
  std::uint16_t* p_s = kv_s + kTile * kRow;                          // [kHeads][kPRow]
  float* max_s = reinterpret_cast<float*>(p_s + kHeads * kPRow);     // [kWarps][kHeads]
  float* sum_s = max_s + kWarps * kHeads;                            // [kWarps][kHeads]

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const std::int64_t q = blockIdx.x;
  const int head0 = blockIdx.y * kHeads;
  const int heads = static_cast<int>(p.heads);
  const int split = blockIdx.z;
  const int splits = gridDim.z;

  const std::int64_t visible = static_cast<std::int64_t>(p.positions[q]) + 1;
  const std::int64_t per_split = ((visible + splits - 1) / splits + kTile - 1) / kTile * kTile;
  const std::int64_t begin = split * per_split;
  const std::int64_t end = begin + per_split < visible ? begin + per_split : visible;
  const std::int32_t* pages = p.table.pages + static_cast<std::int64_t>(p.seq_ids[q]) * p.table.stride;
  const std::uint16_t* cache = reinterpret_cast<const std::uint16_t*>(p.cache.data);

  // q = [q_latent ‖ q_pe] of 16 heads, rounded to BF16.
  for (int i = tid; i < kHeads * kDim; i += kThreads) {
    const int hh = i / kDim;
    const int d = i % kDim;
    const int h = head0 + hh;
    float v = 0.0f;
    if (h < heads) {
      v = d < kLora ? p.q_latent.data[q * p.q_latent.token_stride + h * p.q_latent.head_stride + d]
                    : p.q_pe.data[q * p.q_pe.token_stride + h * p.q_pe.head_stride + (d - kLora)];
    }
    q_s[hh * kRow + d] = bf16_bits(v);
  }

  float o[kColsPerWarp / 8][4] = {};
  float m_run[2] = {-INFINITY, -INFINITY};  // rows g and g + 8
  float l_run[2] = {0.0f, 0.0f};

  for (std::int64_t t0 = begin; t0 < end; t0 += kTile) {
    __syncthreads();  // the previous page's readers are done
    {
      const std::int64_t page = pages[t0 / kMlaPageSize];  // t0 is page-aligned (splits are)
      const std::uint16_t* src = cache + page * kMlaPageSize * kDim;
      constexpr int kChunks = kDim * 2 / 16;  // 72 per key
      for (int i = tid; i < kTile * kChunks; i += kThreads) {
        const int key = i / kChunks;
        const int c = i % kChunks;
        cp_async_16(kv_s + key * kRow + c * 8, src + key * kDim + c * 8, t0 + key < end);
      }
      asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
    }
    __syncthreads();

    // S[16 heads, keys 8w..8w+7].
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int k0 = 0; k0 < kDim; k0 += 16) {
      const unsigned a[4] = {load32(q_s + g * kRow + k0 + 2 * t), load32(q_s + (g + 8) * kRow + k0 + 2 * t),
                             load32(q_s + g * kRow + k0 + 8 + 2 * t), load32(q_s + (g + 8) * kRow + k0 + 8 + 2 * t)};
      const std::uint16_t* key = kv_s + (warp * 8 + g) * kRow + k0;
      const unsigned b[2] = {load32(key + 2 * t), load32(key + 8 + 2 * t)};
      mma_bf16(s, a, b);
    }
    // Scale and mask: s[0], s[1] are row g, keys 8w + 2t, +1; s[2], s[3] row g + 8.
    for (int j = 0; j < 4; ++j) {
      const std::int64_t pos = t0 + warp * 8 + 2 * t + (j & 1);
      s[j] = pos < end ? s[j] * p.softmax_scale : -INFINITY;
    }
    float row_max[2] = {fmaxf(s[0], s[1]), fmaxf(s[2], s[3])};
    for (int r = 0; r < 2; ++r) {
      row_max[r] = fmaxf(row_max[r], __shfl_xor_sync(0xffffffffu, row_max[r], 1));
      row_max[r] = fmaxf(row_max[r], __shfl_xor_sync(0xffffffffu, row_max[r], 2));
    }
    if (t == 0) {
      max_s[warp * kHeads + g] = row_max[0];
      max_s[warp * kHeads + g + 8] = row_max[1];
    }
    __syncthreads();
    float m_new[2];
    float rescale[2];
    for (int r = 0; r < 2; ++r) {
      float m = m_run[r];
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, max_s[w * kHeads + g + 8 * r]);
      m_new[r] = m;  // finite: key t0 is valid
      rescale[r] = expf(m_run[r] - m);
    }
    float prob[4];
    for (int j = 0; j < 4; ++j) prob[j] = expf(s[j] - m_new[j / 2]);  // -inf → 0
    float row_sum[2] = {prob[0] + prob[1], prob[2] + prob[3]};
    for (int r = 0; r < 2; ++r) {
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    }
    if (t == 0) {
      sum_s[warp * kHeads + g] = row_sum[0];
      sum_s[warp * kHeads + g + 8] = row_sum[1];
    }
    *reinterpret_cast<unsigned*>(p_s + g * kPRow + warp * 8 + 2 * t) = pack(bf16_bits(prob[0]), bf16_bits(prob[1]));
    *reinterpret_cast<unsigned*>(p_s + (g + 8) * kPRow + warp * 8 + 2 * t) = pack(bf16_bits(prob[2]), bf16_bits(prob[3]));
    __syncthreads();
    for (int r = 0; r < 2; ++r) {
      float total = 0.0f;
      for (int w = 0; w < kWarps; ++w) total += sum_s[w * kHeads + g + 8 * r];
      l_run[r] = l_run[r] * rescale[r] + total;
      m_run[r] = m_new[r];
    }

    // O[16 heads, columns 64w..64w+63] = O·rescale + P·V.
#pragma unroll
    for (int j = 0; j < kColsPerWarp / 8; ++j) {
      o[j][0] *= rescale[0];
      o[j][1] *= rescale[0];
      o[j][2] *= rescale[1];
      o[j][3] *= rescale[1];
    }
#pragma unroll
    for (int k0 = 0; k0 < kTile; k0 += 16) {
      const unsigned a[4] = {load32(p_s + g * kPRow + k0 + 2 * t), load32(p_s + (g + 8) * kPRow + k0 + 2 * t),
                             load32(p_s + g * kPRow + k0 + 8 + 2 * t), load32(p_s + (g + 8) * kPRow + k0 + 8 + 2 * t)};
#pragma unroll
      for (int j = 0; j < kColsPerWarp / 8; ++j) {
        const int col = warp * kColsPerWarp + j * 8 + g;
        const std::uint16_t* v = kv_s + (k0 + 2 * t) * kRow + col;
        const unsigned b[2] = {pack(v[0], v[kRow]), pack(v[8 * kRow], v[9 * kRow])};
        mma_bf16(o[j], a, b);
      }
    }
  }

  const bool empty = begin >= end;
  for (int r = 0; r < 2; ++r) {
    const int h = head0 + g + 8 * r;
    if (h >= heads) continue;
    const float inv_l = empty ? 0.0f : 1.0f / l_run[r];
    float* out;
    if (splits == 1) {
      out = p.out_latent.data + q * p.out_latent.token_stride + h * p.out_latent.head_stride;
      if (warp == 0 && t == 0 && p.lse != nullptr) p.lse[q * heads + h] = m_run[r] + logf(l_run[r]);
    } else {
      const std::int64_t slot = (static_cast<std::int64_t>(split) * p.queries + q) * heads + h;
      out = partial_out + slot * kLora;
      if (warp == 0 && t == 0) partial_lse[slot] = empty ? -INFINITY : m_run[r] + logf(l_run[r]);
    }
#pragma unroll
    for (int j = 0; j < kColsPerWarp / 8; ++j) {
      const int col = warp * kColsPerWarp + j * 8 + 2 * t;
      out[col] = o[j][2 * r] * inv_l;
      out[col + 1] = o[j][2 * r + 1] * inv_l;
    }
  }
}

}  // namespace sy::gpu::cuda::impl::mla_decode::mma
