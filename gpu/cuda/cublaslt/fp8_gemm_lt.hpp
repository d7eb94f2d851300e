// fp8_gemm through cuBLASLt's block scaling (CUDA 12.9+): CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
// for the activations' 1×128 scales and ..._BLK128x128_32F for the weight's 128×128 scales,
// DeepSeek's exact scaling. Used by gpu/cuda/api.cpp when the call's layout is one cuBLASLt
// takes (below) and its heuristic offers an algorithm; else fp8_gemm/'s kernel runs. Host code.
#pragma once

#include <cuda_runtime_api.h>

#include "gpu/gemm.hpp"

namespace sy::gpu::cuda::impl::cublaslt {

// The layouts cuBLASLt's block scaling documents (cuBLAS docs §3.1.4.5.1): activation scales
// M-major (a_scale_row_stride 1, a_scale_col_stride m: DeepGEMM's layout) with m a multiple of 4;
// weight scales K-major with a row stride that is a multiple of 4 (k/128 ≡ 0 mod 4); 16-byte
// aligned rows and scale arrays.
bool eligible(const Fp8GemmParams& p);

// Runs the GEMM; false (nothing enqueued) when cuBLASLt offers no algorithm for it.
// REQUIRES: eligible(p), p validated, device pointers.
bool run(const Fp8GemmParams& p, cudaStream_t s);

}  // namespace sy::gpu::cuda::impl::cublaslt
