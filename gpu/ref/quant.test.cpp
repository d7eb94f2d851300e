#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

// e4m3 keeps 3 mantissa bits: a normal value rounds within 2^-4 of itself, relative; below 2^-6
// (subnormal) the step is 2^-9, so the absolute error is at most 2^-10. In units of the scale s.
double e4m3_error_bound(double x_over_s) { return std::max(std::fabs(x_over_s) * 0x1.0p-4, 0x1.0p-10); }

TEST(RefActQuant, ScalesAndRoundTripBound) {
  test::TestRng rng(6);
  for (const std::int64_t rows : {1, 3, 17}) {
    const std::int64_t cols = 384;
    const std::int64_t x_stride = cols + 7;
    std::vector<float> x = rng.normals(static_cast<std::size_t>(rows * x_stride), 1.5f);
    x[5] = 0.0f;
    std::vector<fp8_e4m3> y(static_cast<std::size_t>(rows * cols));
    std::vector<float> s(static_cast<std::size_t>(rows * 3));
    ref::act_quant({.x = x.data(), .y = y.data(), .scales = s.data(), .rows = rows, .cols = cols,
                    .x_stride = x_stride, .y_stride = cols, .scale_row_stride = 3});
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t t = 0; t < 3; ++t) {
        float amax = 1e-4f;
        for (std::int64_t i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[r * x_stride + t * 128 + i]));
        const float scale = s[r * 3 + t];
        EXPECT_EQ(scale, amax / 448.0f);
        for (std::int64_t i = 0; i < 128; ++i) {
          const double xv = x[r * x_stride + t * 128 + i];
          const double back = double(fp8_to_float(y[r * cols + t * 128 + i])) * scale;
          ASSERT_FALSE(std::isnan(back));
          // Small slack for the fp32 division x / s.
          ASSERT_LE(std::fabs(back - xv), e4m3_error_bound(xv / scale) * scale * (1 + 1e-5))
              << "row " << r << " col " << t * 128 + i;
        }
      }
    }
  }
}

TEST(RefActQuant, ZeroTileGetsTheAmaxFloor) {
  const std::vector<float> x(128, 0.0f);
  std::vector<fp8_e4m3> y(128, fp8_e4m3{0x55});
  float s = 0.0f;
  ref::act_quant({.x = x.data(), .y = y.data(), .scales = &s, .rows = 1, .cols = 128, .x_stride = 128,
                  .y_stride = 128, .scale_row_stride = 1});
  EXPECT_EQ(s, 1e-4f / 448.0f);
  for (const fp8_e4m3 v : y) EXPECT_EQ(fp8_to_float(v), 0.0f);
}

TEST(RefActQuant, Ue8m0ScalesArePowersOfTwoAtOrAboveAmax) {
  test::TestRng rng(7);
  const std::vector<float> x = rng.normals(4 * 256, 3.0f);
  std::vector<fp8_e4m3> y(x.size());
  std::vector<float> s(8);
  ref::act_quant({.x = x.data(), .y = y.data(), .scales = s.data(), .rows = 4, .cols = 256, .x_stride = 256,
                  .y_stride = 256, .scale_row_stride = 2, .format = ScaleFormat::ue8m0});
  for (std::int64_t r = 0; r < 4; ++r) {
    for (std::int64_t t = 0; t < 2; ++t) {
      float amax = 0.0f;
      for (std::int64_t i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[r * 256 + t * 128 + i]));
      const float scale = s[r * 2 + t];
      int e = 0;
      EXPECT_EQ(std::frexp(scale, &e), 0.5f) << scale;  // a power of two
      EXPECT_GE(scale, amax / 448.0f);
      EXPECT_LT(scale, 2.0f * amax / 448.0f);
    }
  }
}

TEST(RefActQuant, ColumnMajorScaleLayout) {
  test::TestRng rng(8);
  const std::int64_t rows = 3, cols = 256, padded_rows = 4;  // DeepGEMM pads M to a multiple of 4
  const std::vector<float> x = rng.normals(rows * cols, 1.0f);
  std::vector<fp8_e4m3> y_row(x.size()), y_col(x.size());
  std::vector<float> s_row(rows * 2), s_col(padded_rows * 2, -1.0f);
  ref::act_quant({.x = x.data(), .y = y_row.data(), .scales = s_row.data(), .rows = rows, .cols = cols,
                  .x_stride = cols, .y_stride = cols, .scale_row_stride = 2});
  ref::act_quant({.x = x.data(), .y = y_col.data(), .scales = s_col.data(), .rows = rows, .cols = cols,
                  .x_stride = cols, .y_stride = cols, .scale_row_stride = 1, .scale_col_stride = padded_rows});
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t t = 0; t < 2; ++t) EXPECT_EQ(s_col[t * padded_rows + r], s_row[r * 2 + t]);
  }
  EXPECT_EQ(s_col[3], -1.0f);  // padding untouched
}

TEST(RefActQuant, RejectsColsNotMultipleOf128) {
  std::vector<float> x(200);
  std::vector<fp8_e4m3> y(200);
  std::vector<float> s(2);
  try {
    ref::act_quant({.x = x.data(), .y = y.data(), .scales = s.data(), .rows = 1, .cols = 200, .x_stride = 200,
                    .y_stride = 200, .scale_row_stride = 2});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 128"), std::string::npos) << e.what();
  }
}

TEST(RefWeightQuant, RaggedBlocksRoundTrip) {
  // 160 × 200: a ragged last block in both dims (scales [2, 2]).
  test::TestRng rng(9);
  const std::int64_t rows = 160, cols = 200;
  const std::vector<float> w = rng.normals(rows * cols, 0.05f);
  std::vector<fp8_e4m3> q(w.size());
  std::vector<float> scales(4);
  ref::weight_quant({.w = w.data(), .q = q.data(), .scales = scales.data(), .rows = rows, .cols = cols,
                     .w_stride = cols, .q_stride = cols});
  std::vector<float> back(w.size());
  ref::weight_dequant({.q = q.data(), .scales = scales.data(), .w = back.data(), .rows = rows, .cols = cols,
                       .q_stride = cols, .w_stride = cols});
  for (std::int64_t br = 0; br < 2; ++br) {
    for (std::int64_t bc = 0; bc < 2; ++bc) {
      float amax = 1e-4f;
      for (std::int64_t r = br * 128; r < std::min<std::int64_t>(rows, br * 128 + 128); ++r) {
        for (std::int64_t c = bc * 128; c < std::min<std::int64_t>(cols, bc * 128 + 128); ++c) {
          amax = std::max(amax, std::fabs(w[r * cols + c]));
        }
      }
      EXPECT_EQ(scales[br * 2 + bc], amax / 448.0f);
    }
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const float s = scales[(r / 128) * 2 + c / 128];
      EXPECT_EQ(back[r * cols + c], fp8_to_float(q[r * cols + c]) * s);  // dequant is one multiply
      ASSERT_LE(std::fabs(double(back[r * cols + c]) - w[r * cols + c]),
                e4m3_error_bound(w[r * cols + c] / s) * s * (1 + 1e-5));
    }
  }
}

}  // namespace
}  // namespace sy::gpu
