#include "gpu/dtypes.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace sy::gpu {
namespace {

TEST(Fp8E4m3, RoundTripsEveryFiniteCode) {
  for (int code = 0; code < 256; ++code) {
    const fp8_e4m3 x{static_cast<std::uint8_t>(code)};
    const float value = fp8_to_float(x);
    if (std::isnan(value)) {
      EXPECT_TRUE((code & 0x7F) == 0x7F) << code;
      continue;
    }
    const std::uint8_t back = fp8_from_float(value).bits;
    // +0 and -0 both keep their sign bit.
    EXPECT_EQ(back, code) << "code " << code << " value " << value;
  }
}

TEST(Fp8E4m3, KnownValues) {
  EXPECT_EQ(fp8_to_float({0x7E}), 448.0f);
  EXPECT_EQ(fp8_to_float({0x01}), 1.0f / 512.0f);  // smallest subnormal, 2^-9
  EXPECT_EQ(fp8_to_float({0x08}), 1.0f / 64.0f);   // smallest normal, 2^-6
  EXPECT_EQ(fp8_to_float({0x38}), 1.0f);
  EXPECT_EQ(fp8_to_float({0xB8}), -1.0f);
  EXPECT_TRUE(std::isnan(fp8_to_float({0x7F})));
}

TEST(Fp8E4m3, RoundsToNearestEvenAndSaturates) {
  // Between 1.0 (0x38) and 1.125 (0x39): the midpoint 1.0625 ties to the even code 0x38.
  EXPECT_EQ(fp8_from_float(1.0625f).bits, 0x38);
  EXPECT_EQ(fp8_from_float(1.07f).bits, 0x39);
  // Between 1.125 (0x39) and 1.25 (0x3A): the midpoint ties to 0x3A.
  EXPECT_EQ(fp8_from_float(1.1875f).bits, 0x3A);
  // Subnormal midpoint 1.5 * 2^-9 ties to 2 * 2^-9.
  EXPECT_EQ(fp8_from_float(1.5f / 512.0f).bits, 0x02);
  EXPECT_EQ(fp8_from_float(0.4f / 512.0f).bits, 0x00);
  EXPECT_EQ(fp8_from_float(1000.0f).bits, 0x7E);
  EXPECT_EQ(fp8_from_float(-1000.0f).bits, 0xFE);
  EXPECT_EQ(fp8_from_float(std::nanf("")).bits & 0x7F, 0x7F);
}

TEST(Fp8E4m3, EveryFloatRoundsToANearestCode) {
  // Dense sweep: the chosen code is never farther than its neighbours.
  for (float v = -460.0f; v <= 460.0f; v += 0.013f) {
    const float q = fp8_to_float(fp8_from_float(v));
    const float clamped = std::fmin(std::fmax(v, -448.0f), 448.0f);
    for (int code = 0; code < 256; ++code) {
      const float other = fp8_to_float({static_cast<std::uint8_t>(code)});
      if (std::isnan(other)) continue;
      ASSERT_LE(std::fabs(q - clamped), std::fabs(other - clamped)) << v;
    }
    v += 0.37f;  // keep the sweep short
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(bf16_from_float(1.0f).bits, 0x3F80);
  EXPECT_EQ(bf16_to_float(bf16_from_float(1.0f)), 1.0f);
  // 1 + 2^-8 is the midpoint between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(bf16_from_float(1.0f + 1.0f / 256.0f).bits, 0x3F80);
  EXPECT_EQ(bf16_from_float(1.0f + 3.0f / 256.0f).bits, 0x3F82);
  EXPECT_TRUE(std::isnan(bf16_to_float(bf16_from_float(std::nanf("")))));
  EXPECT_EQ(bf16_to_float(bf16_from_float(-2.5f)), -2.5f);
}

}  // namespace
}  // namespace sy::gpu
