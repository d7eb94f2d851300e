// The CPU backend's inner loops, one table per instruction set (isa_scalar.cpp, isa_avx2.cpp,
// isa_avx512.cpp, all generated from isa_impl.hpp). Internal to gpu/cpu/: gemm.cpp and mla.cpp
// validate, prepare operands, split the work into tasks and call these per task; the tables only
// read their arguments and write the task's own outputs and scratch, so tasks run concurrently.
#pragma once

#include <cstdint>

#include "gpu/cpu/runtime.hpp"

namespace sy::gpu::cpu::detail {

enum class WeightFormat { fp8_e4m3, bf16 };

// C[m, n] = Σ_kb (Σ_{k∈kb} a[m,k]·w[n,k]) · a_scale[m,kb] · b_scale[n/128, kb] over 128-wide K
// blocks (the last may be shorter), with w decoded from FP8 or BF16. Each n is one task's output.
// Both kernels evaluate every output in the one order spelled out in isa_impl.hpp, so row m's
// bits depend only on row m of A and on the weight: not on m, the other rows, the kernel chosen
// or the task split (batch invariance, DESIGN.md "Determinism contract").
struct GemmArgs {
  const void* b = nullptr;  // [n, k] fp8_e4m3 or bf16 weight, row stride ldb
  std::int64_t ldb = 0;
  WeightFormat format = WeightFormat::fp8_e4m3;
  const float* b_scales = nullptr;  // [ceil(n/128), k_blocks] row-major, or nullptr for 1
  std::int64_t m = 0, n = 0, k = 0, k_blocks = 0;
  // a is [m, lda] row-major, zero beyond k up to lda (a multiple of 16); a_scales [m, k_blocks]
  // row-major, or nullptr for 1.
  const float* a = nullptr;
  std::int64_t lda = 0;
  const float* a_scales = nullptr;
  float* c = nullptr;  // [m, n], row stride ldc
  std::int64_t ldc = 0;
};

// Columns of C (n) per gemm task, the largest m the GEMV kernel takes, and rows of A per panel of
// the tiled kernel.
inline constexpr std::int64_t kGemmTaskRows = 64;
inline constexpr std::int64_t kGemvMaxM = 8;
inline constexpr std::int64_t kTilePanel = 64;
inline constexpr std::int64_t kMaxLanes = 16;  // the widest vector (AVX-512)
constexpr std::int64_t round_up(std::int64_t x, std::int64_t to) { return (x + to - 1) / to * to; }
// Scratch floats one task needs (per worker): gemv's 4 decoded rows and lane-wise totals [m][4];
// gemm_tile's 64 decoded rows and lane-wise totals [kTilePanel][64].
constexpr std::int64_t gemv_scratch_floats() { return 4 * 128 + kGemvMaxM * 4 * kMaxLanes + 64; }
constexpr std::int64_t gemm_scratch_floats() { return kGemmTaskRows * 128 + kTilePanel * kGemmTaskRows * kMaxLanes + 64; }

// One MLA decode task: query heads [0, heads) (at most kMlaHeadGroup) of one query against cache
// positions [t_begin, t_end) of its sequence. Writes unnormalized o = Σ exp(s - m)·c, the running
// max m and l = Σ exp(s - m) per head; mla.cpp normalizes or merges split partials.
inline constexpr int kMlaHeadGroup = 8;
struct MlaTaskArgs {
  const void* cache = nullptr;  // float or bf16 pages [num_pages][64][dim]
  bool bf16_cache = false;
  std::int64_t lora = 0, rope = 0;  // dim = lora + rope
  const std::int32_t* pages = nullptr;  // the sequence's block-table row (ids already checked)
  std::int64_t t_begin = 0, t_end = 0;
  int heads = 0;
  const float* q_latent = nullptr;  // head h at q_latent + h·q_latent_head_stride, [lora]
  std::int64_t q_latent_head_stride = 0;
  const float* q_pe = nullptr;  // [rope] per head
  std::int64_t q_pe_head_stride = 0;
  float softmax_scale = 0.0f;
  float* o = nullptr;  // [heads, o_stride], o_stride >= lora
  std::int64_t o_stride = 0;
  float* m = nullptr;  // [heads]
  float* l = nullptr;  // [heads]
  float* scratch = nullptr;  // mla_scratch_floats(lora, rope), 64-byte aligned
};
inline constexpr std::int64_t kMlaTileTokens = 32;
constexpr std::int64_t mla_scratch_floats(std::int64_t lora, std::int64_t rope) {
  const std::int64_t dim_pad = round_up(lora + rope, 16);
  return kMlaHeadGroup * dim_pad + kMlaTileTokens * dim_pad + kMlaHeadGroup * kMlaTileTokens +
         kMlaHeadGroup * round_up(lora, 16) + 64;
}

struct IsaKernels {
  Isa isa;
  // C rows n in [n_begin, n_end) (n_begin a multiple of 4, the range inside one 128-row block
  // or shorter), for m <= kGemvMaxM.
  void (*gemv)(const GemmArgs& g, std::int64_t n_begin, std::int64_t n_end, float* scratch);
  // C rows [n_begin, n_begin + 64) ∩ [0, n) with n_begin a multiple of 64, any m; bitwise what
  // gemv gives for the same rows.
  void (*gemm_tile)(const GemmArgs& g, std::int64_t n_begin, float* scratch);
  void (*mla_task)(const MlaTaskArgs& t);
};

const IsaKernels& scalar_kernels();
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
const IsaKernels& active_kernels();

}  // namespace sy::gpu::cpu::detail
