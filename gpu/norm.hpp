// RMSNorm (spec §1.3): y = w ⊙ x / sqrt(mean(x²) + eps), computed in fp32 with a BF16 weight, as
// DeepSeek's fp32 fix does. The layer forward uses it for attn_norm, ffn_norm, q_norm, kv_norm and
// the final norm. Each backend provides sy::gpu::<backend>::rms_norm(const RmsNormParams&).
// Params borrow the caller's memory; calls keep no state, so calls on disjoint outputs may run
// concurrently.
#pragma once

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu {

struct RmsNormParams {
  const float* x = nullptr;      // [rows, dim], row stride x_stride elements
  const bf16* weight = nullptr;  // [dim]
  float* y = nullptr;            // [rows, dim], row stride y_stride; may be x (in place)
  std::int64_t rows = 0;
  std::int64_t dim = 0;
  std::int64_t x_stride = 0;  // REQUIRES: >= dim
  std::int64_t y_stride = 0;  // REQUIRES: >= dim
  float eps = 1e-6f;          // rms_norm_eps; DeepSeek-V3 uses 1e-6
};

// Throws std::invalid_argument naming the first bad field. Every backend calls it first.
void validate(const RmsNormParams& p);

}  // namespace sy::gpu
