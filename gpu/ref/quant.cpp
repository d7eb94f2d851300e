#include <algorithm>
#include <cmath>
#include <cstdint>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {
namespace {

// 2^ceil(log2 s) for s > 0, exactly: frexp gives s = m·2^e with m in [0.5, 1).
float round_up_to_power_of_two(float s) {
  int e = 0;
  const float m = std::frexp(s, &e);
  return m == 0.5f ? s : std::ldexp(1.0f, e);
}

}  // namespace

void act_quant(const ActQuantParams& p) {
  validate(p);
  const std::int64_t tiles = p.cols / kQuantBlock;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.x_stride;
    fp8_e4m3* y = p.y + r * p.y_stride;
    for (std::int64_t t = 0; t < tiles; ++t) {
      const std::int64_t begin = t * kQuantBlock;
      float amax = kQuantAmaxFloor;
      for (std::int64_t i = begin; i < begin + kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
      float s = amax / kFp8E4m3Max;
      if (p.format == ScaleFormat::ue8m0) s = round_up_to_power_of_two(s);
      // Divide (not multiply by 448/amax) as kernel.py does: the two round differently.
      for (std::int64_t i = begin; i < begin + kQuantBlock; ++i) y[i] = fp8_from_float(x[i] / s);
      p.scales[r * p.scale_row_stride + t * p.scale_col_stride] = s;
    }
  }
}

void weight_quant(const WeightQuantParams& p) {
  validate(p);
  const std::int64_t block_rows = quant_blocks(p.rows);
  const std::int64_t block_cols = quant_blocks(p.cols);
  for (std::int64_t br = 0; br < block_rows; ++br) {
    const std::int64_t r0 = br * kQuantBlock;
    const std::int64_t r1 = std::min(r0 + kQuantBlock, p.rows);
    for (std::int64_t bc = 0; bc < block_cols; ++bc) {
      const std::int64_t c0 = bc * kQuantBlock;
      const std::int64_t c1 = std::min(c0 + kQuantBlock, p.cols);
      float amax = kQuantAmaxFloor;
      for (std::int64_t r = r0; r < r1; ++r) {
        for (std::int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(p.w[r * p.w_stride + c]));
      }
      const float s = amax / kFp8E4m3Max;
      for (std::int64_t r = r0; r < r1; ++r) {
        for (std::int64_t c = c0; c < c1; ++c) p.q[r * p.q_stride + c] = fp8_from_float(p.w[r * p.w_stride + c] / s);
      }
      p.scales[br * block_cols + bc] = s;
    }
  }
}

void weight_dequant(const WeightDequantParams& p) {
  validate(p);
  const std::int64_t block_cols = quant_blocks(p.cols);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    for (std::int64_t c = 0; c < p.cols; ++c) {
      const float s = p.scales[(r / kQuantBlock) * block_cols + c / kQuantBlock];
      p.w[r * p.w_stride + c] = fp8_to_float(p.q[r * p.q_stride + c]) * s;
    }
  }
}

}  // namespace sy::gpu::ref
