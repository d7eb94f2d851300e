#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {

void apply_rope(const RopeParams& p) {
  validate(p);
  const std::int64_t pairs = p.rope_dim / 2;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    if (p.positions[r] < 0) {
      throw std::invalid_argument("apply_rope: positions[" + std::to_string(r) + "] is negative");
    }
    const float position = static_cast<float>(p.positions[r]);
    for (std::int64_t i = 0; i < pairs; ++i) {
      const float angle = position * p.inv_freq[i];  // one fp32 rounding, as Hugging Face
      // cos/sin of the fp32 angle, evaluated in double and rounded once.
      const float c = static_cast<float>(std::cos(static_cast<double>(angle))) * p.cos_sin_scale;
      const float s = static_cast<float>(std::sin(static_cast<double>(angle))) * p.cos_sin_scale;
      for (std::int64_t h = 0; h < p.heads; ++h) {
        float* x = p.x + r * p.row_stride + h * p.head_stride + 2 * i;
        const float x0 = x[0];
        const float x1 = x[1];
        x[0] = x0 * c - x1 * s;
        x[1] = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace sy::gpu::ref
