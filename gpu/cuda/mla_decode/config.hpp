// MLA decode over the paged latent cache (absorbed form, FlashMLA's MQA view): constants of the
// kernel in kernel.cuh. A block owns one query, kHeadsPerBlock heads and one split of the
// query's visible keys; it walks the split kTileTokens keys at a time with an online softmax and
// writes either the final output or a partial (output, lse) that combine.cu merges.
#pragma once

#include "gpu/mla.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

inline constexpr int kThreads = 256;
inline constexpr int kHeadsPerBlock = 16;  // heads sharing each loaded key tile
inline constexpr int kTileTokens = 32;     // keys per shared-memory tile (fp32, padded rows)
static_assert(kThreads == kTileTokens * 8, "score phase: one thread per (key, head pair)");
static_assert(kThreads % kHeadsPerBlock == 0);
inline constexpr int kColThreads = kThreads / kHeadsPerBlock;  // threads sharing one head's output
// Output columns a thread accumulates: kv_lora_rank <= kColThreads·kMaxColsPerThread.
inline constexpr int kMaxColsPerThread = 32;
inline constexpr long kMaxLoraRank = static_cast<long>(kColThreads) * kMaxColsPerThread;  // 512
inline constexpr int kMaxSplits = 32;

// The instantiated variants (one .cu each): DeepSeek-V3's 512 + 64, and any other dims (read at
// run time) up to kMaxLoraRank.
inline constexpr int kV3Lora = static_cast<int>(kMlaKvLoraRank);
inline constexpr int kV3Rope = static_cast<int>(kMlaRopeDim);

// Dynamic shared memory of one block, in floats: the queries, one key tile (rows padded by one
// float against bank conflicts), the tile's probabilities, per-head rescale/max/sum.
constexpr long smem_floats(long dim) {
  return kHeadsPerBlock * dim + kTileTokens * (dim + 1) + kHeadsPerBlock * kTileTokens + 3 * kHeadsPerBlock;
}

}  // namespace sy::gpu::cuda::impl::mla_decode
