// Test support for kernel tests (this folder's and, later, every backend's against the reference):
// explicit error measures per output (max-abs, normalized L2 error, NaN count) and a portable
// seeded generator for inputs. Test-only; not thread-safe (each test owns its TestRng).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <span>
#include <sstream>
#include <vector>

#include "gpu/dtypes.hpp"
#include "gpu/sampling.hpp"

namespace sy::gpu::test {

struct ErrorStats {
  double max_abs = 0.0;     // max |actual - expected|
  double normalized = 0.0;  // ||actual - expected||₂ / ||expected||₂ (0 when both are 0)
  std::int64_t nans = 0;    // NaNs in actual where expected is not NaN
  std::int64_t count = 0;
};

template <class A, class E>
ErrorStats compare(std::span<const A> actual, std::span<const E> expected) {
  ErrorStats stats;
  stats.count = static_cast<std::int64_t>(actual.size());
  if (actual.size() != expected.size()) {
    stats.nans = -1;  // marks a size mismatch; within() reports it
    return stats;
  }
  double err_sq = 0.0;
  double ref_sq = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = static_cast<double>(actual[i]);
    const double e = static_cast<double>(expected[i]);
    if (std::isnan(a) && !std::isnan(e)) {
      ++stats.nans;
      continue;
    }
    const double diff = std::fabs(a - e);
    stats.max_abs = std::max(stats.max_abs, diff);
    err_sq += diff * diff;
    ref_sq += e * e;
  }
  stats.normalized = err_sq == 0.0 ? 0.0 : std::sqrt(err_sq / ref_sq);
  return stats;
}

template <class A, class E>
ErrorStats compare(const std::vector<A>& actual, const std::vector<E>& expected) {
  return compare(std::span<const A>(actual), std::span<const E>(expected));
}

// Passes when there are no NaNs, max_abs <= max_abs_tol and normalized <= normalized_tol.
inline ::testing::AssertionResult within(const ErrorStats& s, double max_abs_tol, double normalized_tol) {
  std::ostringstream what;
  what << "max_abs " << s.max_abs << " (tol " << max_abs_tol << "), normalized " << s.normalized << " (tol "
       << normalized_tol << "), NaNs " << s.nans << " of " << s.count;
  // SY_TEST_PRINT_ERRORS=1 prints every measure, to see the margin a tolerance leaves.
  if (std::getenv("SY_TEST_PRINT_ERRORS") != nullptr) std::cerr << "  [errors] " << what.str() << "\n";
  if (s.nans != 0 || !(s.max_abs <= max_abs_tol) || !(s.normalized <= normalized_tol)) {
    return ::testing::AssertionFailure() << what.str();
  }
  return ::testing::AssertionSuccess() << what.str();
}

// Portable inputs: splitmix64 draws, so every platform sees the same tensors.
class TestRng {
 public:
  explicit TestRng(std::uint64_t seed) : seed_(seed) {}
  double uniform() { return sampling_uniform(seed_, counter_++); }  // [0, 1)
  float uniform(float lo, float hi) { return lo + static_cast<float>(uniform()) * (hi - lo); }
  // Approximately normal (Irwin-Hall of 4 uniforms, variance matched): enough for test data.
  float normal(float stddev) {
    double sum = 0.0;
    for (int i = 0; i < 4; ++i) sum += uniform();
    return static_cast<float>((sum - 2.0) * std::sqrt(3.0)) * stddev;
  }
  std::vector<float> normals(std::size_t n, float stddev) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(stddev);
    return v;
  }
  std::vector<bf16> bf16_normals(std::size_t n, float stddev) {
    std::vector<bf16> v(n);
    for (bf16& x : v) x = bf16_from_float(normal(stddev));
    return v;
  }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

}  // namespace sy::gpu::test
