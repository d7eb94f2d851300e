// Launcher of the block-scaled FP8 tensor-core GEMM (fp8_gemm.cu). Device pointers; the API
// (gpu/cuda/api.cpp) has checked shapes and the 16-byte row alignment cp.async needs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu::cuda::impl::fp8_gemm {

// C[m, n] = Σ_kb (Σ_{k∈kb} A[m,k]·B_e[n,k]) · a_scale(m, kb) · b_scale_e(n/128, kb), with e the
// row's expert (expert_ids[m], constant per 128-row tile; -1 leaves the tile's rows untouched) or
// 0 when expert_ids is null.
struct Args {
  const fp8_e4m3* a = nullptr;
  std::int64_t lda = 0;  // bytes = elements; REQUIRES: multiple of 16
  const float* a_scales = nullptr;
  std::int64_t a_scale_m = 0, a_scale_k = 1;
  const fp8_e4m3* b = nullptr;
  std::int64_t ldb = 0;             // REQUIRES: multiple of 16
  std::int64_t b_expert_stride = 0;  // elements between experts' weights
  const float* b_scales = nullptr;  // per expert [ceil(n/128), k/128] row-major
  std::int64_t b_scale_expert_stride = 0;
  const std::int32_t* expert_ids = nullptr;
  float* c = nullptr;
  std::int64_t ldc = 0;
  std::int64_t m = 0, n = 0, k = 0;  // REQUIRES: k a multiple of 128
};

void launch(const Args& args, cudaStream_t s);

}  // namespace sy::gpu::cuda::impl::fp8_gemm
