#include <cmath>
#include <cstdint>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {

void rms_norm(const RmsNormParams& p) {
  validate(p);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.x_stride;
    float* y = p.y + r * p.y_stride;
    float sum_sq = 0.0f;
    for (std::int64_t i = 0; i < p.dim; ++i) sum_sq += x[i] * x[i];
    const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(p.dim) + p.eps);
    // x·rsqrt first, then the weight: the order of DeepSeek's fp32 RMSNorm.
    for (std::int64_t i = 0; i < p.dim; ++i) y[i] = bf16_to_float(p.weight[i]) * (x[i] * inv_rms);
  }
}

}  // namespace sy::gpu::ref
