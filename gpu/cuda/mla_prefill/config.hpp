// MLA prefill (naive form, varlen, causal bottom-right): a block owns one (query row, head) and
// walks its visible keys kThreads at a time with an online softmax.
#pragma once

namespace sy::gpu::cuda::impl::mla_prefill {

inline constexpr int kThreads = 128;         // keys scored per step; also output columns per pass
inline constexpr int kMaxVPerThread = 4;     // v_dim <= kThreads·kMaxVPerThread (512)
inline constexpr long kMaxQkDim = 1024;      // nope_dim + rope_dim held in shared memory

}  // namespace sy::gpu::cuda::impl::mla_prefill
