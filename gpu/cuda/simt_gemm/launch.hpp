// Launchers of the CUDA-core GEMM (one instantiation file per operand-type variant). Element
// (batch b, m, k) of A is a[b·a_batch + m·a_m + k·a_k]; B(b, n, k) likewise; C(b, m, n) at
// c[b·c_batch + m·c_m + n]. All pointers are device memory; callers validate shapes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu::cuda::impl::simt_gemm {

struct Args {
  const void* a = nullptr;
  std::int64_t a_batch = 0, a_m = 0, a_k = 1;
  const void* b = nullptr;
  std::int64_t b_batch = 0, b_n = 0, b_k = 1;
  float* c = nullptr;
  std::int64_t c_batch = 0, c_m = 0;
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  // fp8 weights: b_scales [ceil(n/128), scale_k_blocks] row-major (per batch: none).
  const float* b_scales = nullptr;
  std::int64_t scale_k_blocks = 0;
  // Block-scaled fp8 (fp8_gemm): a_scales (m, kb) at m·a_scale_m + kb·a_scale_k.
  const float* a_scales = nullptr;
  std::int64_t a_scale_m = 0, a_scale_k = 1;
};

void launch_f32(const Args& args, cudaStream_t s);          // A fp32, B fp32
void launch_bf16(const Args& args, cudaStream_t s);         // A fp32, B bf16
void launch_fp8_dequant(const Args& args, cudaStream_t s);  // A fp32, B e4m3 · b_scales per element
void launch_fp8_block(const Args& args, cudaStream_t s);    // A e4m3, B e4m3, per-128-block scaling

}  // namespace sy::gpu::cuda::impl::simt_gemm
