#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

using test::compare;
using test::within;

TEST(RefRmsNorm, HandComputed) {
  // rms([3, 4]) = sqrt(12.5); y = w · x / rms.
  const std::vector<float> x = {3.0f, 4.0f};
  const std::vector<bf16> w = {bf16_from_float(1.0f), bf16_from_float(2.0f)};
  std::vector<float> y(2);
  ref::rms_norm({.x = x.data(), .weight = w.data(), .y = y.data(), .rows = 1, .dim = 2, .x_stride = 2,
                 .y_stride = 2, .eps = 0.0f});
  EXPECT_NEAR(y[0], 3.0 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(y[1], 2.0 * 4.0 / std::sqrt(12.5), 1e-6);
}

TEST(RefRmsNorm, MatchesDoubleOnStridedRaggedRows) {
  test::TestRng rng(1);
  for (const std::int64_t dim : {7, 512, 1536}) {
    const std::int64_t rows = 17;
    const std::int64_t x_stride = dim + 5;
    const std::int64_t y_stride = dim + 3;
    const std::vector<float> x = rng.normals(static_cast<std::size_t>(rows * x_stride), 2.0f);
    const std::vector<bf16> w = rng.bf16_normals(static_cast<std::size_t>(dim), 1.0f);
    std::vector<float> y(static_cast<std::size_t>(rows * y_stride), -7.0f);
    ref::rms_norm({.x = x.data(), .weight = w.data(), .y = y.data(), .rows = rows, .dim = dim,
                   .x_stride = x_stride, .y_stride = y_stride, .eps = 1e-6f});
    std::vector<float> got;
    std::vector<double> want;
    for (std::int64_t r = 0; r < rows; ++r) {
      double sum_sq = 0.0;
      for (std::int64_t i = 0; i < dim; ++i) sum_sq += double(x[r * x_stride + i]) * x[r * x_stride + i];
      const double inv_rms = 1.0 / std::sqrt(sum_sq / double(dim) + 1e-6);
      for (std::int64_t i = 0; i < dim; ++i) {
        want.push_back(double(bf16_to_float(w[i])) * x[r * x_stride + i] * inv_rms);
        got.push_back(y[r * y_stride + i]);
      }
      // Padding between rows is untouched.
      for (std::int64_t i = dim; i < y_stride; ++i) EXPECT_EQ(y[r * y_stride + i], -7.0f);
    }
    EXPECT_TRUE(within(compare(got, want), 1e-5, 1e-6)) << "dim " << dim;
  }
}

TEST(RefRmsNorm, InPlaceEqualsOutOfPlace) {
  test::TestRng rng(2);
  const std::vector<float> x = rng.normals(3 * 64, 1.0f);
  const std::vector<bf16> w = rng.bf16_normals(64, 1.0f);
  std::vector<float> y(x.size());
  std::vector<float> in_place = x;
  ref::rms_norm({.x = x.data(), .weight = w.data(), .y = y.data(), .rows = 3, .dim = 64, .x_stride = 64,
                 .y_stride = 64});
  ref::rms_norm({.x = in_place.data(), .weight = w.data(), .y = in_place.data(), .rows = 3, .dim = 64,
                 .x_stride = 64, .y_stride = 64});
  EXPECT_EQ(in_place, y);
}

TEST(RefRmsNorm, RejectsBadShapes) {
  std::vector<float> x(4);
  std::vector<bf16> w(4);
  EXPECT_THROW(ref::rms_norm({.x = x.data(), .weight = w.data(), .y = x.data(), .rows = 1, .dim = 4,
                              .x_stride = 3, .y_stride = 4}),
               std::invalid_argument);
  EXPECT_THROW(ref::rms_norm({.x = x.data(), .weight = nullptr, .y = x.data(), .rows = 1, .dim = 4,
                              .x_stride = 4, .y_stride = 4}),
               std::invalid_argument);
  // Zero rows is an empty batch, not an error.
  EXPECT_NO_THROW(ref::rms_norm({.rows = 0, .dim = 4}));
}

}  // namespace
}  // namespace sy::gpu
