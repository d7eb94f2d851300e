#include "apps/switchyard/backends.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <stdexcept>

#include "gpu/ref/kernels.hpp"
#ifdef SY_HAVE_GPU_CPU
#include "gpu/cpu/kernels.hpp"
#endif
#ifdef SY_HAVE_GPU_CUDA
#include "gpu/cuda/kernels.hpp"
#endif

namespace sy::apps {
namespace {

struct Entry {
  std::string_view name;
  const gpu::Backend& (*get)();
};

constexpr Entry kBackends[] = {
#ifdef SY_HAVE_GPU_CUDA
    // Opt-in, so never the default: its table stages host memory through the device on every
    // call (weights included) until the engine keeps tensors on the GPU (gpu/cuda/README.md).
    // Without a usable device, choosing it throws "cuda backend unavailable: no CUDA device: ...".
    {"cuda", &gpu::cuda::backend},
#endif
    {"ref", &gpu::ref::backend},
#ifdef SY_HAVE_GPU_CPU
    {"cpu", &gpu::cpu::backend},
#endif
};

}  // namespace

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const Entry& e : kBackends) names.emplace_back(e.name);
  return names;
}

const gpu::Backend& find_backend(std::string_view name) {
  for (const Entry& e : kBackends) {
    if (e.name == name) return e.get();
  }
  throw std::invalid_argument(
      fmt::format("unknown backend \"{}\" (this build has: {})", name, fmt::join(backend_names(), ", ")));
}

}  // namespace sy::apps
