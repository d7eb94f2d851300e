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
// start/finish split a call so that work can overlap it (the engine's two micro-batches: one
// half's experts run on the expert hosts while the other half computes attention): start()
// returns once the work is under way, finish() once expert_out is written. The batch's buffers
// must stay valid until finish(). At most a few calls are in flight; each is finished once. The
// defaults run everything in start().
class ExpertExecutor {
 public:
  using Ticket = std::uint64_t;
  virtual ~ExpertExecutor() = default;
  virtual void run(const ExpertBatch& batch) = 0;
  virtual Ticket start(const ExpertBatch& batch) {
    run(batch);
    return 0;
  }
  virtual void finish(Ticket ticket) { (void)ticket; }
  // Gives up a started call that will not be finished (the step failed meanwhile).
  virtual void cancel(Ticket ticket) { (void)ticket; }
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

// One MoE FFN in two halves (the engine's micro-batch overlap): moe_start runs the gate and the
// selection, starts the routed experts, and computes the shared expert while they run;
// moe_finish waits for them, combines in rank order and adds the shared expert. The result is
// moe_forward's, bit for bit. x must stay valid until moe_finish.
struct MoeInFlight {
  std::int64_t tokens = 0;
  std::vector<std::int32_t> ids;       // [T, K]
  std::vector<float> weights;          // [T, K]
  std::vector<float> expert_out;       // [T, K, H]
  std::vector<float> shared;           // [T, H]; empty without a shared expert
  ExpertExecutor::Ticket ticket = 0;
};
void moe_start(const ModelConfig& config, const MoeWeights& weights, std::int64_t layer, const float* x,
               std::int64_t tokens, const gpu::Backend& backend, Numerics numerics, ExpertExecutor& executor,
               MoeInFlight& flight);
void moe_finish(const ModelConfig& config, MoeInFlight& flight, float* out, ExpertExecutor& executor);

// One MoE FFN: gate (bf16_gemm) → moe_select → executor → rank-order combine → + shared expert.
// The shared expert runs here, beside attention (DeepSeek's prefill layout), never on expert
// hosts. x: [T, H] contiguous; out: [T, H] contiguous (overwritten).
void moe_forward(const ModelConfig& config, const MoeWeights& weights, std::int64_t layer, const float* x,
                 std::int64_t tokens, float* out, const gpu::Backend& backend, Numerics numerics,
                 ExpertExecutor& executor);

}  // namespace sy::model
