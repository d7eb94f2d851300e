#include "model/moe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <span>
#include <vector>

#include "gpu/dtypes.hpp"

namespace sy::model {

LocalExpertExecutor::LocalExpertExecutor(const ModelWeights& weights, const gpu::Backend& backend, Numerics numerics)
    : weights_(weights), backend_(backend), numerics_(numerics) {}

void LocalExpertExecutor::run(const ExpertBatch& b) {
  const auto& layer = weights_.layers.at(static_cast<std::size_t>(b.layer));
  if (!layer.moe) throw std::invalid_argument(fmt::format("layer {} has no routed experts", b.layer));
  const auto& experts = layer.moe->experts;
  const std::int64_t slots = b.tokens * b.top_k;
  // Slots grouped by expert (a counting sort keeps each group in slot order).
  std::vector<std::int64_t> count(experts.size() + 1, 0);
  for (std::int64_t s = 0; s < slots; ++s) {
    const std::int32_t e = b.expert_ids[s];
    if (e < 0 || static_cast<std::size_t>(e) >= experts.size()) {
      throw std::invalid_argument(fmt::format("layer {}: routed expert id {} is out of range", b.layer, e));
    }
    ++count[static_cast<std::size_t>(e) + 1];
  }
  for (std::size_t e = 1; e < count.size(); ++e) count[e] += count[e - 1];
  std::vector<std::int64_t> order(static_cast<std::size_t>(slots));
  std::vector<std::int64_t> next(count.begin(), count.end() - 1);
  for (std::int64_t s = 0; s < slots; ++s)
    order[static_cast<std::size_t>(next[static_cast<std::size_t>(b.expert_ids[s])]++)] = s;

  std::vector<float> rows;
  std::vector<float> y;
  for (std::size_t e = 0; e < experts.size(); ++e) {
    const std::int64_t begin = count[e];
    const std::int64_t n = count[e + 1] - begin;
    if (n == 0) continue;
    rows.resize(static_cast<std::size_t>(n * b.hidden));
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t token = order[static_cast<std::size_t>(begin + i)] / b.top_k;
      std::copy_n(b.x + token * b.hidden, b.hidden, rows.data() + i * b.hidden);
    }
    y.resize(static_cast<std::size_t>(n * b.hidden));
    swiglu_ffn(backend_, numerics_, experts[e], rows.data(), n, b.hidden, y.data());
    round_expert_outputs(numerics_, y);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t slot = order[static_cast<std::size_t>(begin + i)];
      std::copy_n(y.data() + i * b.hidden, b.hidden, b.expert_out + slot * b.hidden);
    }
  }
}

void round_expert_outputs(Numerics numerics, std::span<float> values) {
  if (numerics != Numerics::fp8act) return;
  for (float& v : values) v = gpu::bf16_to_float(gpu::bf16_from_float(v));
}

void combine_in_rank_order(std::int64_t tokens, std::int64_t top_k, std::int64_t hidden, const float* expert_out,
                           const float* weights, float* out) {
  for (std::int64_t t = 0; t < tokens; ++t) {
    float* o = out + t * hidden;
    std::fill(o, o + hidden, 0.0f);
    for (std::int64_t k = 0; k < top_k; ++k) {
      const float w = weights[t * top_k + k];
      const float* y = expert_out + (t * top_k + k) * hidden;
      for (std::int64_t d = 0; d < hidden; ++d) o[d] += w * y[d];
    }
  }
}

gpu::MoeRouting moe_routing(const ModelConfig& config) {
  gpu::MoeRouting r;
  r.experts = config.n_routed_experts;
  r.top_k = config.num_experts_per_tok;
  r.scoring = config.scoring_func == "softmax" ? gpu::ScoringFunc::softmax : gpu::ScoringFunc::sigmoid;
  r.norm_topk_prob = config.norm_topk_prob;
  r.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
  if (config.topk_method == "greedy") {
    r.n_group = 1;  // plain top-k over all experts
    r.topk_group = 1;
    r.group_score = gpu::GroupScore::max;
  } else {
    r.n_group = config.n_group;
    r.topk_group = config.topk_group;
    r.group_score = config.topk_method == "noaux_tc" ? gpu::GroupScore::top2_sum : gpu::GroupScore::max;
  }
  return r;
}

void moe_start(const ModelConfig& config, const MoeWeights& weights, std::int64_t layer, const float* x,
               std::int64_t tokens, const gpu::Backend& backend, Numerics numerics, ExpertExecutor& executor,
               MoeInFlight& flight) {
  const std::int64_t hidden = config.hidden_size;
  const std::int64_t experts = config.n_routed_experts;
  const std::int64_t top_k = config.num_experts_per_tok;
  flight.tokens = tokens;
  if (tokens == 0) return;
  std::vector<float> logits(static_cast<std::size_t>(tokens * experts));
  backend.bf16_gemm({.a = x,
                     .b = weights.gate.data(),
                     .c = logits.data(),
                     .m = tokens,
                     .n = experts,
                     .k = hidden,
                     .lda = hidden,
                     .ldb = hidden,
                     .ldc = experts});
  gpu::MoeRouting routing = moe_routing(config);
  routing.bias = weights.e_score_correction_bias.empty() ? nullptr : weights.e_score_correction_bias.data();
  flight.ids.resize(static_cast<std::size_t>(tokens * top_k));
  flight.weights.resize(static_cast<std::size_t>(tokens * top_k));
  backend.moe_select({.logits = logits.data(),
                      .indices = flight.ids.data(),
                      .weights = flight.weights.data(),
                      .tokens = tokens,
                      .logits_stride = experts,
                      .routing = routing});
  flight.expert_out.resize(static_cast<std::size_t>(tokens * top_k * hidden));
  flight.ticket = executor.start({.layer = layer,
                                  .tokens = tokens,
                                  .top_k = top_k,
                                  .hidden = hidden,
                                  .x = x,
                                  .expert_ids = flight.ids.data(),
                                  .expert_out = flight.expert_out.data()});
  // The shared expert runs here, beside attention, while the routed experts are under way.
  flight.shared.clear();
  if (weights.shared) {
    flight.shared.resize(static_cast<std::size_t>(tokens * hidden));
    swiglu_ffn(backend, numerics, *weights.shared, x, tokens, hidden, flight.shared.data());
  }
}

void moe_finish(const ModelConfig& config, MoeInFlight& flight, float* out, ExpertExecutor& executor) {
  if (flight.tokens == 0) return;
  executor.finish(flight.ticket);
  combine_in_rank_order(flight.tokens, config.num_experts_per_tok, config.hidden_size, flight.expert_out.data(),
                        flight.weights.data(), out);
  for (std::size_t i = 0; i < flight.shared.size(); ++i) out[i] += flight.shared[i];
}

void moe_forward(const ModelConfig& config, const MoeWeights& weights, std::int64_t layer, const float* x,
                 std::int64_t tokens, float* out, const gpu::Backend& backend, Numerics numerics,
                 ExpertExecutor& executor) {
  MoeInFlight flight;
  moe_start(config, weights, layer, x, tokens, backend, numerics, executor, flight);
  moe_finish(config, flight, out, executor);
}

}  // namespace sy::model
