// Scalar number formats that cross the kernel API: FP8 e4m3 (OCP "e4m3fn": no infinities, max
// finite 448, NaN = 0x7F/0xFF) and BF16. Conversions round to nearest, ties to even, as PyTorch
// does. Used by the checkpoint writer (model/), the reference kernels (gpu/ref/) and every backend.
// Header-only, no state, safe from any thread.
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace sy::gpu {

// One FP8 e4m3 value, stored as its bit pattern.
struct fp8_e4m3 {
  std::uint8_t bits;
};
// One BF16 value, stored as its bit pattern (the top 16 bits of an fp32).
struct bf16 {
  std::uint16_t bits;
};

inline constexpr float kFp8E4m3Max = 448.0f;

// fp32 -> e4m3, round to nearest even. Finite values beyond ±448 saturate to ±448 (the quantizers
// divide by amax/448 first, so they never get there); NaN stays NaN.
constexpr fp8_e4m3 fp8_from_float(float value) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(value);
  const std::uint8_t sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return {static_cast<std::uint8_t>(sign | 0x7Fu)};  // NaN
  // Values whose rounding exceeds 448 (0x43E00000): 464 is the midpoint to the (absent) next step.
  if (u >= 0x43E80000u) return {static_cast<std::uint8_t>(sign | 0x7Eu)};
  std::uint8_t magnitude;
  if (u < 0x3C800000u) {
    // Below 2^-6: subnormal e4m3 (step 2^-9). Adding 2^14, whose float ulp is exactly 2^-9, makes
    // the FPU round at the right bit (to nearest even); the sum's low bits are the subnormal code.
    constexpr std::uint32_t kTwoPow14 = 0x46800000u;
    const float shifted = std::bit_cast<float>(u) + std::bit_cast<float>(kTwoPow14);
    magnitude = static_cast<std::uint8_t>(std::bit_cast<std::uint32_t>(shifted) - kTwoPow14);
  } else {
    // Normal: rebias the exponent (127 -> 7) and round the 23-bit mantissa to 3 bits, ties to even.
    const std::uint32_t odd = (u >> 20) & 1u;
    u += (static_cast<std::uint32_t>(7 - 127) << 23) + 0x7FFFFu + odd;
    magnitude = static_cast<std::uint8_t>(u >> 20);
  }
  return {static_cast<std::uint8_t>(sign | magnitude)};
}

constexpr float fp8_to_float_slow(fp8_e4m3 x) {
  const bool negative = (x.bits & 0x80u) != 0;
  const int exponent = (x.bits >> 3) & 0xF;
  const int mantissa = x.bits & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = static_cast<float>(mantissa) / 512.0f;  // m/8 * 2^-6
  } else {
    const std::uint32_t bits =
        (static_cast<std::uint32_t>(exponent - 7 + 127) << 23) | (static_cast<std::uint32_t>(mantissa) << 20);
    magnitude = std::bit_cast<float>(bits);
  }
  return negative ? -magnitude : magnitude;
}

// All 256 e4m3 values decoded: the hot loops decode through this table.
inline constexpr std::array<float, 256> kFp8E4m3ToFloat = [] {
  std::array<float, 256> table{};
  for (int i = 0; i < 256; ++i) table[i] = fp8_to_float_slow(fp8_e4m3{static_cast<std::uint8_t>(i)});
  return table;
}();

constexpr float fp8_to_float(fp8_e4m3 x) { return kFp8E4m3ToFloat[x.bits]; }

// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN.
constexpr bf16 bf16_from_float(float value) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(value);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return {static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  const std::uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
  return {static_cast<std::uint16_t>((u + rounding) >> 16)};
}

constexpr float bf16_to_float(bf16 x) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(x.bits) << 16);
}

}  // namespace sy::gpu
