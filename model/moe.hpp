// The MoE seam (spec §1.6-1.7): routing, expert execution and the combine of one MoE layer.
// ExpertExecutor is where remote expert hosts plug in: it only runs experts on the token rows it
// is given and returns each (token, rank) slot's expert output. The combine stays on the calling
// side and sums slots in top-k RANK order (DESIGN.md "Determinism contract"), so the result never
// depends on where or in what order experts ran. Executors are used from one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "gpu/backend.hpp"
#include "model/config.hpp"
#include "model/linear.hpp"
#include "model/weights.hpp"

namespace sy::model {

// One MoE layer's routed work for a batch of tokens.
struct ExpertBatch {
  std::int64_t layer = 0;                    // checkpoint layer index (MTP layers included)
  std::int64_t tokens = 0;                   // T
  std::int64_t top_k = 0;                    // K
  std::int64_t hidden = 0;                   // H
  const float* x = nullptr;                  // [T, H] contiguous: the post-attention-norm activations
  const std::int32_t* expert_ids = nullptr;  // [T, K] contiguous: routed experts, rank order
  float* expert_out = nullptr;               // [T, K, H] contiguous: out[t, k] = Expert_{ids[t,k]}(x[t])
};

// Runs routed experts. An implementation may group, reorder or ship rows anywhere, but each
// slot's output must be a function of (layer, expert, x[t]) alone.
class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;
  virtual void run(const ExpertBatch& batch) = 0;
};

// Runs every expert in this process: groups the slots by expert and runs each expert's SwiGLU as
// one GEMM over its rows (gate_proj, up_proj, swiglu, down_proj). Borrows weights and backend.
// Numerics fp8act: each expert output is rounded to BF16 (expert_output_dtype_rounding), the
// combine dtype of DeepEP and of the expert hosts' ExpertCombine, so a slot's output has the same
// bits whether it ran here or on an expert host.
class LocalExpertExecutor final : public ExpertExecutor {
 public:
  LocalExpertExecutor(const ModelWeights& weights, const gpu::Backend& backend, Numerics numerics);
  void run(const ExpertBatch& batch) override;

 private:
  const ModelWeights& weights_;
  const gpu::Backend& backend_;
  Numerics numerics_;
};

// Rounds expert outputs to the combine dtype of `numerics` in place: BF16 (round to nearest even)
// for fp8act, unchanged (fp32) for dequant.
void round_expert_outputs(Numerics numerics, std::span<float> values);

// out[t] = Σ_{k=0..K-1} weights[t,k] · expert_out[t,k], summed in rank order k = 0, 1, ... in
// fp32 (then the caller adds the shared expert). The one place slots are combined.
void combine_in_rank_order(std::int64_t tokens, std::int64_t top_k, std::int64_t hidden, const float* expert_out,
                           const float* weights, float* out);

// The router's settings for a config: scoring, group score by topk_method (noaux_tc → sum of
// the top 2 biased scores, group_limited_greedy → max, greedy → a single group), top-k,
// normalization and scale. bias is left null; the caller points it at the layer's bias.
gpu::MoeRouting moe_routing(const ModelConfig& config);

// One MoE FFN: gate (bf16_gemm) → moe_select → executor → rank-order combine → + shared expert.
// The shared expert runs here, beside attention (DeepSeek's prefill layout), never on expert
// hosts. x: [T, H] contiguous; out: [T, H] contiguous (overwritten).
void moe_forward(const ModelConfig& config, const MoeWeights& weights, std::int64_t layer, const float* x,
                 std::int64_t tokens, float* out, const gpu::Backend& backend, Numerics numerics,
                 ExpertExecutor& executor);

}  // namespace sy::model
