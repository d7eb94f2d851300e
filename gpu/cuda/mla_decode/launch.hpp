// Launcher of MLA decode (decode_*.cu; combine.cu): validated params (gpu/cuda/api.cpp), device
// pointers. Picks the split count, allocates the split partials stream-ordered on `s` and runs
// the combine pass when it split.
#pragma once

#include <cuda_runtime_api.h>

#include "gpu/mla.hpp"

namespace sy::gpu::cuda::impl::mla_decode {

// The split count the launcher uses for this call (exposed for benchmarks and tests).
int choose_splits(const MlaDecodeParams& p, int sm_count);

void launch(const MlaDecodeParams& p, cudaStream_t s);

// One launch per variant (decode_v3.cu, decode_general.cu).
void launch_v3(const MlaDecodeParams& p, int splits, float* partial_out, float* partial_lse, cudaStream_t s);
void launch_general(const MlaDecodeParams& p, int splits, float* partial_out, float* partial_lse, cudaStream_t s);
// Tensor cores (decode_v3_mma.cu): V3 dims and a BF16 cache; q and p rounded to BF16.
void launch_v3_mma(const MlaDecodeParams& p, int splits, float* partial_out, float* partial_lse, cudaStream_t s);

// Which kernel launch() runs for p: the tensor-core one for V3 dims over a 16-byte aligned BF16
// cache unless the environment sets SY_CUDA_MLA_DECODE=simt (a debugging knob), the CUDA-core
// ones otherwise.
bool uses_tensor_cores(const MlaDecodeParams& p);

void launch_combine(const MlaDecodeParams& p, int splits, const float* partial_out, const float* partial_lse,
                    cudaStream_t s);

}  // namespace sy::gpu::cuda::impl::mla_decode
