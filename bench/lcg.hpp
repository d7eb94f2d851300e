// A fixed linear congruential generator for benchmark inputs, so every run and machine sees the
// same data (std distributions are not portable across standard libraries). Bench-only; one
// generator per thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sy::bench {

class Lcg {
 public:
  explicit Lcg(std::uint64_t seed) : state_(seed) {}
  std::uint32_t next() {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint32_t>(state_ >> 33);
  }
  // Uniform in [lo, hi) with 24 bits of resolution.
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 8) / 16777216.0f; }
  template <class T, std::size_t N>
  const T& pick(const T (&items)[N]) {
    return items[next() % N];
  }

 private:
  std::uint64_t state_;
};

}  // namespace sy::bench
