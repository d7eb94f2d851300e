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

// The tensor-core variant (kernel_mma.cuh, decode_v3_mma.cu): V3 dims with a BF16 cache, the
// production case. A block owns one query, kHeadsPerBlock heads and one split; each tile is one
// 64-token page, copied whole into shared memory. 8 warps: for scores each warp takes 8 of the
// page's keys (mma.sync m16n8k16 BF16 over all 576 dims), for the output each warp takes 64 of
// the 512 latent columns. q and p are rounded to BF16 for the tensor cores (as FlashMLA does).
namespace sy::gpu::cuda::impl::mla_decode::mma {

inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;
inline constexpr int kHeads = 16;        // one m16 tile of query heads
inline constexpr int kTile = 64;         // keys per tile = one cache page
inline constexpr int kDim = 576;         // head_dim_k
inline constexpr int kLora = 512;        // head_dim_v
inline constexpr int kRowPad = 8;        // bf16 padding per smem row: 584·2 bytes = 73·16, conflict-free
inline constexpr int kRow = kDim + kRowPad;
inline constexpr int kPRow = kTile + 8;  // P rows (bf16)
static_assert(kTile == kWarps * 8, "score phase: one n8 tile of keys per warp");
static_assert(kLora % (kWarps * 8) == 0, "output phase: whole n8 tiles of columns per warp");
inline constexpr int kColsPerWarp = kLora / kWarps;  // 64
inline constexpr int kSmemBytes =
    (kHeads * kRow + kTile * kRow + kHeads * kPRow) * 2 + 2 * kWarps * kHeads * 4;  // 96,768

}  // namespace sy::gpu::cuda::impl::mla_decode::mma
