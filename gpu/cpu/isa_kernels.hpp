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
struct GemmArgs {
  const void* b = nullptr;  // [n, k] fp8_e4m3 or bf16 weight, row stride ldb
  std::int64_t ldb = 0;
  WeightFormat format = WeightFormat::fp8_e4m3;
  const float* b_scales = nullptr;  // [ceil(n/128), k_blocks] row-major, or nullptr for 1
  std::int64_t m = 0, n = 0, k = 0, k_blocks = 0;
  // gemv (m <= kGemvMaxM): a is [m, lda] row-major, zero beyond k up to a multiple of 16;
  //   a_scales [m, k_blocks] row-major.
  // tile: a is Aᵀ [k, lda] with lda = m rounded up to 16 (zero columns beyond m);
  //   a_scales [k_blocks, lda].
  // a_scales may be nullptr for 1.
  const float* a = nullptr;
  std::int64_t lda = 0;
  const float* a_scales = nullptr;
  float* c = nullptr;  // [m, n], row stride ldc
  std::int64_t ldc = 0;
};

// Rows of C per gemm task, and the largest m the GEMV kernel takes.
inline constexpr std::int64_t kGemmTaskRows = 64;
inline constexpr std::int64_t kGemvMaxM = 8;
constexpr std::int64_t round_up(std::int64_t x, std::int64_t to) { return (x + to - 1) / to * to; }
// Scratch floats one gemm task needs (per worker), for lda as in GemmArgs.
constexpr std::int64_t gemm_scratch_floats(std::int64_t lda) {
  return kGemmTaskRows * 128 + kGemmTaskRows * lda + kGemvMaxM * 4 * 16 + 64;
}

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
  // C rows [n_begin, n_begin + 64) ∩ [0, n) with n_begin a multiple of 64, any m.
  void (*gemm_tile)(const GemmArgs& g, std::int64_t n_begin, float* scratch);
  void (*mla_task)(const MlaTaskArgs& t);
};

const IsaKernels& scalar_kernels();
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
const IsaKernels& active_kernels();

}  // namespace sy::gpu::cpu::detail
