// The split-KV combine pass and the launcher that picks the variant and the split count.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gpu/cuda/check.hpp"
#include "gpu/cuda/mla_decode/kernel.cuh"
#include "gpu/cuda/mla_decode/launch.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

// grid (queries, heads), block 128: merges the split partials by their lse.
__global__ void mla_decode_combine_kernel(MlaDecodeParams p, int splits, const float* partial_out,
                                          const float* partial_lse) {
  const std::int64_t q = blockIdx.x;
  const std::int64_t h = blockIdx.y;
  const std::int64_t lora = p.cache.kv_lora_rank;
  const std::int64_t stride = p.queries * p.heads;  // between splits, in (query, head) slots
  const std::int64_t slot = q * p.heads + h;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, partial_lse[s * stride + slot]);
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) total += expf(partial_lse[s * stride + slot] - m);
  float* out = p.out_latent.data + q * p.out_latent.token_stride + h * p.out_latent.head_stride;
  for (std::int64_t c = threadIdx.x; c < lora; c += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float w = expf(partial_lse[s * stride + slot] - m);
      v = fmaf(w, partial_out[(s * stride + slot) * lora + c], v);
    }
    out[c] = v / total;
  }
  if (threadIdx.x == 0 && p.lse != nullptr) p.lse[slot] = m + logf(total);
}


int choose_splits(const MlaDecodeParams& p, int sm_count) {
  // Enough blocks for two waves; the device does not know the sequence lengths up front, so short
  // sequences just leave some splits empty (they cost one block each).
  const std::int64_t base = p.queries * ((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  const std::int64_t want = (2 * static_cast<std::int64_t>(sm_count) + base - 1) / base;
  return static_cast<int>(std::clamp<std::int64_t>(want, 1, kMaxSplits));
}

void launch_combine(const MlaDecodeParams& p, int splits, const float* partial_out, const float* partial_lse,
                    cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(p.queries), static_cast<unsigned>(p.heads));
  mla_decode_combine_kernel<<<grid, 128, 0, s>>>(p, splits, partial_out, partial_lse);
}

bool uses_tensor_cores(const MlaDecodeParams& p) {
  const char* knob = std::getenv("SY_CUDA_MLA_DECODE");
  if (knob != nullptr && std::strcmp(knob, "simt") == 0) return false;
  // cp.async copies 16-byte chunks of the pages.
  const bool aligned = reinterpret_cast<std::uintptr_t>(p.cache.data) % 16 == 0;
  return p.cache.kv_lora_rank == kV3Lora && p.cache.rope_dim == kV3Rope && p.cache.dtype == KvCacheDtype::bf16 &&
         aligned;
}

void launch(const MlaDecodeParams& p, cudaStream_t s) {
  int device = 0;
  int sm_count = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const int splits = choose_splits(p, sm_count);
  const bool v3 = p.cache.kv_lora_rank == kV3Lora && p.cache.rope_dim == kV3Rope;
  float* partial_out = nullptr;
  float* partial_lse = nullptr;
  if (splits > 1) {
    const std::int64_t slots = splits * p.queries * p.heads;
    // Stream-ordered: the pool hands the same memory back step after step.
    SY_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial_out),
                                  static_cast<std::size_t>(slots * p.cache.kv_lora_rank) * sizeof(float), s));
    SY_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial_lse), static_cast<std::size_t>(slots) * sizeof(float), s));
  }
  if (uses_tensor_cores(p)) {
    launch_v3_mma(p, splits, partial_out, partial_lse, s);
  } else if (v3) {
    launch_v3(p, splits, partial_out, partial_lse, s);
  } else {
    launch_general(p, splits, partial_out, partial_lse, s);
  }
  detail::check_launch("mla_decode");
  if (splits > 1) {
    launch_combine(p, splits, partial_out, partial_lse, s);
    detail::check_launch("mla_decode (combine)");
    SY_CUDA_CHECK(cudaFreeAsync(partial_out, s));
    SY_CUDA_CHECK(cudaFreeAsync(partial_lse, s));
  }
}

}  // namespace sy::gpu::cuda::impl::mla_decode
