#include <cmath>
#include <cstdint>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {

void swiglu(const SwigluParams& p) {
  validate(p);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const float* gate = p.gate + r * p.gate_stride;
    const float* up = p.up + r * p.up_stride;
    float* out = p.out + r * p.out_stride;
    for (std::int64_t i = 0; i < p.cols; ++i) {
      const float g = gate[i];
      // For g << 0, exp(-g) overflows to inf and silu is -0, its limit.
      const float silu = g / (1.0f + std::exp(-g));
      out[i] = silu * up[i];
    }
  }
}

}  // namespace sy::gpu::ref
