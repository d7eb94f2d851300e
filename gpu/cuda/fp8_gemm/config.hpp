// The block-scaled FP8 tensor-core GEMM (DeepGEMM's math on mma.sync): a block computes a
// kTileM×kTileN tile of C; each k step is one 128-wide scale block, so the tile's partial sums
// are scaled (a_scale per row × b_scale per 128×128 weight block) and added to fp32 accumulators
// once per step, exactly fp8_gemm's definition. Serves fp8_gemm (dense) and grouped_fp8_gemm.
#pragma once

namespace sy::gpu::cuda::impl::fp8_gemm {

inline constexpr int kTileM = 128;
inline constexpr int kTileN = 128;
inline constexpr int kTileK = 128;  // = the scale block: one scaling per k step
inline constexpr int kThreads = 256;  // 8 warps: 2 along M × 4 along N
inline constexpr int kWarpsM = 2;
inline constexpr int kWarpsN = 4;
inline constexpr int kWarpTileM = kTileM / kWarpsM;  // 64: 4 mma tiles of 16 rows
inline constexpr int kWarpTileN = kTileN / kWarpsN;  // 32: 4 mma tiles of 8 columns
inline constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 32;  // mma.sync.m16n8k32 e4m3
inline constexpr int kStages = 2;                   // cp.async double buffering
inline constexpr int kRowBytes = kTileK + 16;       // padded smem row: conflict-free fragment loads
inline constexpr int kStageBytes = (kTileM + kTileN) * kRowBytes;
inline constexpr int kSmemBytes = kStages * kStageBytes;  // 73,728

}  // namespace sy::gpu::cuda::impl::fp8_gemm
