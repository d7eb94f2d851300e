// Launcher of MLA prefill (prefill.cu): validated params (gpu/cuda/api.cpp), device pointers;
// cu_seqlens are trusted (the staged table checks them on the host).
#pragma once

#include <cuda_runtime_api.h>

#include "gpu/mla.hpp"

namespace sy::gpu::cuda::impl::mla_prefill {

// q_tokens: cu_seqlens_q[num_seqs], known to the caller (the rows of q).
void launch(const MlaPrefillParams& p, std::int64_t q_tokens, cudaStream_t s);

}  // namespace sy::gpu::cuda::impl::mla_prefill
