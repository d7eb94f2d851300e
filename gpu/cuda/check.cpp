#include "gpu/cuda/check.hpp"

#include <string>

namespace sy::gpu::cuda {
namespace detail {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw CudaError(std::string(what) + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw CudaError(std::string(kernel) + ": launch failed: " + cudaGetErrorString(status));
  }
}

}  // namespace detail

std::string device_problem() {
  // Asked once per process: the answer does not change while it runs, and without a driver the
  // call is slow (it probes for one).
  static const std::string problem = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(status);
    if (count == 0) return std::string("no CUDA device: cudaGetDeviceCount found 0 devices");
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major != 9) {
      return std::string("CUDA device 0 (") + prop.name + ") is sm_" + std::to_string(prop.major) +
             std::to_string(prop.minor) + "; this build targets sm_90a (Hopper)";
    }
    return std::string();
  }();
  return problem;
}

}  // namespace sy::gpu::cuda
