#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

RopeConfig v3_rope() { return {.rope_dim = 64, .theta = 10000.0, .yarn = YarnParams{.mscale_all_dim = 1.0}}; }

TEST(RefRope, V3CorrectionRangeIsTenToTwentyThree) {
  const YarnCorrectionRange range = yarn_correction_range(v3_rope());
  EXPECT_EQ(range.low, 10);
  EXPECT_EQ(range.high, 23);
}

TEST(RefRope, V3FrequenciesKeepLowIndicesAndDivideHighOnes) {
  const std::vector<float> f = rope_inv_freq(v3_rope());
  ASSERT_EQ(f.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    const double base = std::pow(10000.0, -2.0 * i / 64.0);
    if (i <= 10) {
      EXPECT_FLOAT_EQ(f[i], static_cast<float>(base)) << i;
    } else if (i >= 23) {
      EXPECT_FLOAT_EQ(f[i], static_cast<float>(base / 40.0)) << i;
    } else {
      const double ramp = (i - 10) / 13.0;  // linear blend in between
      EXPECT_FLOAT_EQ(f[i], static_cast<float>(base / 40.0 * ramp + base * (1.0 - ramp))) << i;
    }
  }
  // Without YaRN: plain θ^(-2i/d).
  const std::vector<float> plain = rope_inv_freq({.rope_dim = 64, .theta = 10000.0});
  for (int i = 0; i < 32; ++i) EXPECT_FLOAT_EQ(plain[i], static_cast<float>(std::pow(10000.0, -2.0 * i / 64.0)));
}

TEST(RefRope, SoftmaxAndCosSinScales) {
  // Spec §1.4.6: 192^-0.5 · (0.1·ln 40 + 1)² = 0.1352338 for V3.
  EXPECT_NEAR(attention_softmax_scale(192, v3_rope().yarn), 0.1352338, 5e-8);
  EXPECT_NEAR(yarn_get_mscale(40.0, 1.0), 1.3688879, 5e-8);
  EXPECT_DOUBLE_EQ(attention_softmax_scale(192, std::nullopt), 1.0 / std::sqrt(192.0));
  // mscale_all_dim 0 (Hugging Face's default): no m² factor.
  EXPECT_DOUBLE_EQ(attention_softmax_scale(192, YarnParams{}), 1.0 / std::sqrt(192.0));
  EXPECT_FLOAT_EQ(rope_cos_sin_scale(v3_rope()), 1.0f);
  const RopeConfig lite = {.rope_dim = 64, .yarn = YarnParams{.mscale = 1.0, .mscale_all_dim = 0.707}};
  EXPECT_FLOAT_EQ(rope_cos_sin_scale(lite),
                  static_cast<float>((0.1 * std::log(40.0) + 1.0) / (0.1 * 0.707 * std::log(40.0) + 1.0)));
  EXPECT_FLOAT_EQ(rope_cos_sin_scale({.rope_dim = 64}), 1.0f);
}

TEST(RefRope, RotatesOnlyRopeDimsOfEveryHead) {
  // Rows of [heads × (nope 8 ‖ rope 64)]; rope applies to the last 64 of each head.
  const std::int64_t rows = 3, heads = 4, nope = 8, rope = 64, head_dim = nope + rope;
  const std::int64_t row_stride = heads * head_dim + 2;
  test::TestRng rng(4);
  std::vector<float> x = rng.normals(static_cast<std::size_t>(rows * row_stride), 1.0f);
  const std::vector<float> before = x;
  const std::vector<std::int32_t> positions = {0, 17, 163839};
  const std::vector<float> inv_freq = rope_inv_freq(v3_rope());
  ref::apply_rope({.x = x.data() + nope, .positions = positions.data(), .inv_freq = inv_freq.data(), .rows = rows,
                   .heads = heads, .rope_dim = rope, .row_stride = row_stride, .head_stride = head_dim,
                   .cos_sin_scale = 1.0f});
  std::vector<float> got;
  std::vector<double> want;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::int64_t base = r * row_stride + h * head_dim;
      for (std::int64_t i = 0; i < nope; ++i) EXPECT_EQ(x[base + i], before[base + i]);
      for (std::int64_t i = 0; i < rope / 2; ++i) {
        // The fp32 angle, as the spec'd kernel forms it, then exact rotation in double.
        const double angle = static_cast<float>(positions[r]) * inv_freq[i];
        const double x0 = before[base + nope + 2 * i], x1 = before[base + nope + 2 * i + 1];
        want.push_back(x0 * std::cos(angle) - x1 * std::sin(angle));
        want.push_back(x0 * std::sin(angle) + x1 * std::cos(angle));
        got.push_back(x[base + nope + 2 * i]);
        got.push_back(x[base + nope + 2 * i + 1]);
      }
    }
    for (std::int64_t i = heads * head_dim; i < row_stride; ++i) EXPECT_EQ(x[r * row_stride + i], before[r * row_stride + i]);
  }
  EXPECT_TRUE(test::within(test::compare(got, want), 2e-6, 1e-6));
}

TEST(RefRope, DotProductDependsOnlyOnRelativePosition) {
  test::TestRng rng(5);
  const std::vector<float> q0 = rng.normals(64, 1.0f), k0 = rng.normals(64, 1.0f);
  const std::vector<float> inv_freq = rope_inv_freq(v3_rope());
  const auto rotated_dot = [&](std::int32_t pq, std::int32_t pk) {
    std::vector<float> q = q0, k = k0;
    ref::apply_rope({.x = q.data(), .positions = &pq, .inv_freq = inv_freq.data(), .rows = 1, .rope_dim = 64});
    ref::apply_rope({.x = k.data(), .positions = &pk, .inv_freq = inv_freq.data(), .rows = 1, .rope_dim = 64});
    double d = 0.0;
    for (int i = 0; i < 64; ++i) d += double(q[i]) * k[i];
    return d;
  };
  const double at_origin = rotated_dot(7, 0);
  EXPECT_NEAR(rotated_dot(107, 100), at_origin, 1e-4);
  EXPECT_NEAR(rotated_dot(1007, 1000), at_origin, 1e-3);  // fp32 angles lose digits as positions grow
}

TEST(RefRope, RejectsBadConfigs) {
  EXPECT_THROW(rope_inv_freq({.rope_dim = 63}), std::invalid_argument);
  EXPECT_THROW(rope_inv_freq({.rope_dim = 64, .theta = 0.5}), std::invalid_argument);
  EXPECT_THROW(attention_softmax_scale(0, std::nullopt), std::invalid_argument);
  std::vector<float> x(64);
  const std::int32_t negative = -1;
  const std::vector<float> inv_freq = rope_inv_freq({.rope_dim = 64});
  EXPECT_THROW(ref::apply_rope({.x = x.data(), .positions = &negative, .inv_freq = inv_freq.data(), .rows = 1,
                                .rope_dim = 64}),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu
