// The MoE router (spec §1.6): gate logits → scores → group-limited top-k experts and their
// weights, as DeepSeek-V3's noaux_tc gate and the older group_limited_greedy one. Selection is split
// from the logits so a GEMM backend can produce the logits (bf16_gemm with the gate weight) and any
// backend can select: moe_select(logits) and the convenience moe_gate(x) = select(x · Wᵀ). Each
// backend provides sy::gpu::<backend>::{moe_select, moe_gate}. Stateless; params borrow memory.
#pragma once

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu {

enum class ScoringFunc {
  sigmoid,  // s = 1 / (1 + e^-logit) per expert (DeepSeek-V3)
  softmax,  // s = softmax(logits) over all experts, fp32 (older configs)
};

enum class GroupScore {
  top2_sum,  // sum of the two largest biased scores in the group (noaux_tc; V3)
  max,       // the largest score in the group (group_limited_greedy)
};

// How one token's experts are chosen. Per token, in fp32:
//   s   = scoring(logits)                       (the "original" scores)
//   s_b = s + bias                              (bias only when present)
//   with n_group > 1: group score per group of experts/n_group consecutive experts; keep the
//   topk_group best groups, set s_b of every expert in the other groups to -inf
//   idx = the top_k experts by s_b, in descending s_b
//   w   = s[idx]                                (unbiased: the bias only chooses)
//   if norm_topk_prob and top_k > 1: w /= (Σ w + 1e-20)      (Hugging Face)
//   w  *= routed_scaling_factor
// Ties (equal groups scores or s_b) go to the lower index, so a selection is deterministic.
struct MoeRouting {
  std::int64_t experts = 0;  // n_routed_experts
  std::int64_t top_k = 0;    // num_experts_per_tok; REQUIRES: <= topk_group · experts/n_group
  std::int64_t n_group = 1;  // REQUIRES: divides experts
  std::int64_t topk_group = 1;
  ScoringFunc scoring = ScoringFunc::sigmoid;
  GroupScore group_score = GroupScore::top2_sum;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  const float* bias = nullptr;  // [experts] e_score_correction_bias, or nullptr when absent
};

struct MoeSelectParams {
  const float* logits = nullptr;  // [tokens, experts], row stride logits_stride
  std::int32_t* indices = nullptr;  // [tokens, top_k] contiguous: chosen experts
  float* weights = nullptr;         // [tokens, top_k] contiguous: their routing weights
  std::int64_t tokens = 0;
  std::int64_t logits_stride = 0;
  MoeRouting routing{};
};

// logits = x · Wᵀ in fp32 (Hugging Face; the demo rounds them to BF16), then moe_select.
struct MoeGateParams {
  const float* x = nullptr;       // [tokens, hidden], row stride x_stride
  const bf16* weight = nullptr;   // [experts, hidden] gate weight, contiguous
  float* logits = nullptr;        // [tokens, experts] contiguous workspace; holds the logits after
  std::int32_t* indices = nullptr;  // [tokens, top_k] contiguous
  float* weights = nullptr;         // [tokens, top_k] contiguous
  std::int64_t tokens = 0;
  std::int64_t hidden = 0;
  std::int64_t x_stride = 0;
  MoeRouting routing{};
};

void validate(const MoeRouting& r);
void validate(const MoeSelectParams& p);
void validate(const MoeGateParams& p);

}  // namespace sy::gpu
