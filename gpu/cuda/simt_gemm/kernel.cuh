// The CUDA-core GEMM template. Each thread owns a 4×4 block of C; tiles of A and B (kTileK deep)
// pass through shared memory. Modes:
//   plain (kBlockScaled = false): c = Σ_k A(m,k)·B(n,k), B decoded (and, for fp8, multiplied by its
//     128×128 block scale) as the reference does, k ascending;
//   block-scaled: per 128-wide k block, partial = Σ A·B (e4m3 decoded), then
//     acc += partial·a_scale·b_scale, in block order (fp8_gemm's definition).
#pragma once

#include <cstdint>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/simt_gemm/config.hpp"
#include "gpu/cuda/simt_gemm/launch.hpp"

namespace sy::gpu::cuda::impl::simt_gemm {

template <class TA, class TB, bool kBlockScaled>
__global__ void __launch_bounds__(kThreads) simt_gemm_kernel(Args args) {
  __shared__ float a_s[kTileK][kTileM + 1];
  __shared__ float b_s[kTileK][kTileN + 1];
  const std::int64_t batch = blockIdx.z;
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
  const TA* a = static_cast<const TA*>(args.a) + batch * args.a_batch;
  const TB* b = static_cast<const TB*>(args.b) + batch * args.b_batch;
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  float acc[kPerThread][kPerThread] = {};
  float part[kPerThread][kPerThread] = {};

  for (std::int64_t k0 = 0; k0 < args.k; k0 += kTileK) {
    for (int i = threadIdx.x; i < kTileK * kTileM; i += kThreads) {
      const int kk = i % kTileK;
      const int mm = i / kTileK;
      const std::int64_t m = m0 + mm;
      const std::int64_t k = k0 + kk;
      a_s[kk][mm] = (m < args.m && k < args.k) ? dev::to_float(a[m * args.a_m + k * args.a_k]) : 0.0f;
    }
    for (int i = threadIdx.x; i < kTileK * kTileN; i += kThreads) {
      const int kk = i % kTileK;
      const int nn = i / kTileK;
      const std::int64_t n = n0 + nn;
      const std::int64_t k = k0 + kk;
      float v = 0.0f;
      if (n < args.n && k < args.k) {
        v = dev::to_float(b[n * args.b_n + k * args.b_k]);
        if (!kBlockScaled && args.b_scales != nullptr) {
          v = __fmul_rn(v, args.b_scales[(n / 128) * args.scale_k_blocks + k / 128]);
        }
      }
      b_s[kk][nn] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float av[kPerThread];
      float bv[kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) av[i] = a_s[kk][ty * kPerThread + i];
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) bv[j] = b_s[kk][tx * kPerThread + j];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i)
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) {
          if (kBlockScaled) part[i][j] = fmaf(av[i], bv[j], part[i][j]);
          else acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
    }
    __syncthreads();
    if (kBlockScaled && (k0 + kTileK) % 128 == 0) {
      const std::int64_t kb = k0 / 128;
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const std::int64_t m = m0 + ty * kPerThread + i;
        const float sa = m < args.m ? args.a_scales[m * args.a_scale_m + kb * args.a_scale_k] : 0.0f;
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) {
          const std::int64_t n = n0 + tx * kPerThread + j;
          const float sb = n < args.n ? args.b_scales[(n / 128) * args.scale_k_blocks + kb] : 0.0f;
          acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(__fmul_rn(part[i][j], sa), sb));
          part[i][j] = 0.0f;
        }
      }
    }
  }
  float* c = args.c + batch * args.c_batch;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const std::int64_t m = m0 + ty * kPerThread + i;
    if (m >= args.m) continue;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const std::int64_t n = n0 + tx * kPerThread + j;
      if (n < args.n) c[m * args.c_m + n] = acc[i][j];
    }
  }
}

template <class TA, class TB, bool kBlockScaled>
void launch_kernel(const Args& args, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((args.n + kTileN - 1) / kTileN), static_cast<unsigned>((args.m + kTileM - 1) / kTileM),
                  static_cast<unsigned>(args.batch));
  simt_gemm_kernel<TA, TB, kBlockScaled><<<grid, kThreads, 0, s>>>(args);
}

}  // namespace sy::gpu::cuda::impl::simt_gemm
