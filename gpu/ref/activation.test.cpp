#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

TEST(RefSwiglu, MatchesDoubleOnFusedGateUpLayout) {
  // One [rows, 2·cols] buffer holding [gate ‖ up] per row, as a fused w1/w3 GEMM writes it.
  test::TestRng rng(3);
  const std::int64_t rows = 3;
  const std::int64_t cols = 160;
  const std::vector<float> fused = rng.normals(static_cast<std::size_t>(rows * 2 * cols), 3.0f);
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  ref::swiglu({.gate = fused.data(), .up = fused.data() + cols, .out = out.data(), .rows = rows, .cols = cols,
               .gate_stride = 2 * cols, .up_stride = 2 * cols, .out_stride = cols});
  std::vector<double> want;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t i = 0; i < cols; ++i) {
      const double g = fused[r * 2 * cols + i];
      const double u = fused[r * 2 * cols + cols + i];
      want.push_back(g / (1.0 + std::exp(-g)) * u);
    }
  }
  EXPECT_TRUE(test::within(test::compare(out, want), 1e-5, 1e-6));
}

TEST(RefSwiglu, HandValuesAndExtremes) {
  const std::vector<float> gate = {0.0f, 1.0f, -200.0f, 200.0f};
  const std::vector<float> up = {5.0f, 2.0f, 3.0f, 0.5f};
  std::vector<float> out(4);
  ref::swiglu({.gate = gate.data(), .up = up.data(), .out = out.data(), .rows = 1, .cols = 4, .gate_stride = 4,
               .up_stride = 4, .out_stride = 4});
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(out[2], 0.0f);  // silu(-200) underflows to -0, never NaN
  EXPECT_FALSE(std::isnan(out[2]));
  EXPECT_NEAR(out[3], 100.0f, 1e-4);
}

}  // namespace
}  // namespace sy::gpu
