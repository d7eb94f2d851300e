// The SwiGLU activation of every DeepSeek FFN (spec §1.7): out = silu(gate) ⊙ up, with
// silu(g) = g / (1 + e^-g), in fp32. gate and up are the w1 (gate_proj) and w3 (up_proj) outputs;
// when one fused GEMM produced both, point gate and up into the same rows with a shared stride.
// Each backend provides sy::gpu::<backend>::swiglu(const SwigluParams&). Stateless.
#pragma once

#include <cstdint>

namespace sy::gpu {

struct SwigluParams {
  const float* gate = nullptr;  // [rows, cols], row stride gate_stride
  const float* up = nullptr;    // [rows, cols], row stride up_stride
  float* out = nullptr;         // [rows, cols], row stride out_stride; may alias gate or up
  std::int64_t rows = 0;
  std::int64_t cols = 0;  // the FFN's intermediate size
  std::int64_t gate_stride = 0;
  std::int64_t up_stride = 0;
  std::int64_t out_stride = 0;
};

void validate(const SwigluParams& p);

}  // namespace sy::gpu
