// Internal to gpu/cuda/: turning CUDA runtime errors into exceptions, and the launch-error check
// every entry point runs after its launches. Host code only; includes the CUDA runtime API header
// (so it stays out of gpu/cuda/kernels.hpp). Stateless.
#pragma once

#include <cuda_runtime_api.h>

#include "gpu/cuda/kernels.hpp"

namespace sy::gpu::cuda::detail {

// Throws CudaError("<what>: <cudaGetErrorString>") unless status is cudaSuccess.
void check(cudaError_t status, const char* what);

// After a launch: a bad configuration shows here (cudaGetLastError), not at the next sync.
void check_launch(const char* kernel);

inline cudaStream_t raw(Stream s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace sy::gpu::cuda::detail

#define SY_CUDA_CHECK(call) ::sy::gpu::cuda::detail::check((call), #call)
