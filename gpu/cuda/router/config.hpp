// Launch shapes of the router kernels (moe_select, argmax): one block per token / logits row.
#pragma once

namespace sy::gpu::cuda::impl::router {

inline constexpr int kSelectThreads = 256;
// The largest n_routed_experts moe_select takes (V3: 256); scores live in shared memory.
inline constexpr long kMaxExperts = 1024;
inline constexpr int kArgmaxThreads = 1024;
// The most expert groups (n_group) moe_select takes (V3: 8).
inline constexpr long kMaxGroups = 64;

}  // namespace sy::gpu::cuda::impl::router
