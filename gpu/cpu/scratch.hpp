// Per-call scratch for the CPU backend's host code: a 64-byte-aligned float buffer carved into
// one slice per pool worker. Internal to gpu/cpu/; never include from the isa_*.cpp files (they
// must not instantiate std:: templates, see isa_impl.hpp).
#pragma once

#include <cstdint>
#include <vector>

namespace sy::gpu::cpu::detail {

class AlignedFloats {
 public:
  AlignedFloats() = default;
  explicit AlignedFloats(std::int64_t count, float fill = 0.0f)
      : storage_(static_cast<std::size_t>(count + 16), fill) {}
  float* data() {
    const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
    return storage_.data() + ((64 - address % 64) % 64) / sizeof(float);
  }

 private:
  std::vector<float> storage_;
};

// Slice of floats per worker: count rounded up to a cache line.
constexpr std::int64_t per_worker(std::int64_t count) { return (count + 15) / 16 * 16; }

}  // namespace sy::gpu::cpu::detail
