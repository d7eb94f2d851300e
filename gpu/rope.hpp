// Rotary position encoding with YaRN context extension (spec §1.4.6, §1.5), on interleaved pairs
// (x[2i], x[2i+1]) as the checkpoint stores q_pe and k_pe. The host functions here turn config
// values into the numbers the kernels take (inverse frequencies, cos/sin scale, the attention
// softmax scale); they are shared by every backend. apply_rope is per backend:
// sy::gpu::<backend>::apply_rope(const RopeParams&). Stateless; params borrow the caller's memory.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace sy::gpu {

// rope_scaling of type "yarn". Hugging Face applies it whenever present (the demo only when
// max_seq_len > original_max_position_embeddings); we follow Hugging Face.
struct YarnParams {
  double factor = 40.0;
  std::int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct RopeConfig {
  std::int64_t rope_dim = 64;  // qk_rope_head_dim; REQUIRES: even, > 0
  double theta = 10000.0;      // rope_theta
  std::optional<YarnParams> yarn = std::nullopt;
};

// The pair indices [low, high] between which YaRN blends the original and the divided frequency:
// low = max(floor(cd(beta_fast)), 0), high = min(ceil(cd(beta_slow)), rope_dim - 1) with
// cd(r) = rope_dim·ln(L0 / (2π r)) / (2 ln θ). (10, 23) for DeepSeek-V3.
struct YarnCorrectionRange {
  std::int64_t low = 0;
  std::int64_t high = 0;
};
YarnCorrectionRange yarn_correction_range(const RopeConfig& config);

// Hugging Face's yarn_get_mscale: 0.1·mscale·ln(factor) + 1, or 1 when factor <= 1.
double yarn_get_mscale(double factor, double mscale);

// Inverse frequency of each pair i in [0, rope_dim/2): f_i = θ^(-2i/rope_dim); under YaRN
// f'_i = f_i/factor·ramp_i + f_i·(1 - ramp_i), ramp_i = clamp((i - low)/(high - low), 0, 1)
// (high += 0.001 when low == high). Computed in double and rounded once to fp32; Hugging Face
// keeps fp32 inverse frequencies too. Throws std::invalid_argument on a bad config.
std::vector<float> rope_inv_freq(const RopeConfig& config);

// The factor Hugging Face multiplies cos and sin by: yarn_get_mscale(factor, mscale) /
// yarn_get_mscale(factor, mscale_all_dim); 1 without YaRN, and 1.0 for DeepSeek-V3.
float rope_cos_sin_scale(const RopeConfig& config);

// Attention softmax scale (spec §1.4.6): qk_head_dim^-0.5, times m² with
// m = yarn_get_mscale(factor, mscale_all_dim) when YaRN is present and mscale_all_dim != 0.
// 0.1352338 for DeepSeek-V3 (192^-0.5 · 1.3688879²).
double attention_softmax_scale(std::int64_t qk_head_dim, const std::optional<YarnParams>& yarn);

// Rotates the rope dims of rows × heads vectors in place. For pair i of a vector at position p:
//   angle = fp32(p) · inv_freq[i]   (one fp32 multiply, as Hugging Face's torch.outer in fp32)
//   c = cos(angle)·cos_sin_scale, s = sin(angle)·cos_sin_scale   (cos, sin of that fp32 angle,
//                                                                 rounded to fp32)
//   (x[2i], x[2i+1]) ← (x[2i]·c − x[2i+1]·s, x[2i]·s + x[2i+1]·c)
// i.e. the complex product of the demo's apply_rotary_emb. Hugging Face de-interleaves first and
// rotates halves; its q·k dot products equal these, only the element order differs.
struct RopeParams {
  float* x = nullptr;  // the first rope element of (row 0, head 0); vector (r, h) starts at
                       // x + r·row_stride + h·head_stride and holds rope_dim fp32 values
  const std::int32_t* positions = nullptr;  // [rows] token positions, >= 0
  const float* inv_freq = nullptr;          // [rope_dim/2], from rope_inv_freq()
  std::int64_t rows = 0;
  std::int64_t heads = 1;  // 1 for the shared k_pe
  std::int64_t rope_dim = 0;
  std::int64_t row_stride = 0;   // elements between rows
  std::int64_t head_stride = 0;  // elements between heads within a row (unused when heads == 1)
  float cos_sin_scale = 1.0f;    // from rope_cos_sin_scale()
};

void validate(const RopeParams& p);

}  // namespace sy::gpu
