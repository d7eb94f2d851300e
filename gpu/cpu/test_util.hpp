// Test support for the CPU backend's tests: run a test once per instruction-set path (skipping
// paths this CPU lacks) and pin the thread count, restoring the process defaults afterwards.
// Test-only; tests in one binary run sequentially, which the overrides require.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "gpu/cpu/runtime.hpp"

namespace sy::gpu::cpu::test {

inline const Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512};

inline std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) {
  return std::string(isa_name(info.param));
}

// Forces the ISA under test for the test's duration.
class IsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << "this CPU lacks " << isa_name(GetParam());
    set_isa(GetParam());
  }
  void TearDown() override {
    set_isa(best_isa());
    set_num_threads(2);
  }
};

}  // namespace sy::gpu::cpu::test
