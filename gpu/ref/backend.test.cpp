#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {
namespace {

TEST(RefBackend, EveryKernelIsFilledIn) {
  const Backend& b = backend();
  EXPECT_EQ(b.name, "ref");
  // The table is a name followed by kBackendKernelCount function pointers (count-checked in
  // gpu/backend.hpp); none may be missing.
  std::array<void (*)(), kBackendKernelCount> entries{};
  std::memcpy(entries.data(), reinterpret_cast<const char*>(&b) + sizeof(std::string_view), sizeof(entries));
  for (std::size_t i = 0; i < entries.size(); ++i) EXPECT_NE(entries[i], nullptr) << "kernel #" << i;
}

}  // namespace
}  // namespace sy::gpu::ref
