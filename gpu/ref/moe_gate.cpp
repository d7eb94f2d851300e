#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {
namespace {

// The k largest of values[0, n), largest first; equal values in ascending index order.
std::vector<std::int64_t> top_indices(const float* values, std::int64_t n, std::int64_t k) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [values](std::int64_t a, std::int64_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  order.resize(static_cast<std::size_t>(k));
  return order;
}

void select_token(const float* logits, const MoeRouting& r, std::int32_t* indices, float* weights) {
  const std::int64_t e_count = r.experts;
  // Original scores s.
  std::vector<float> s(static_cast<std::size_t>(e_count));
  if (r.scoring == ScoringFunc::sigmoid) {
    for (std::int64_t e = 0; e < e_count; ++e) s[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  } else {
    const float max_logit = *std::max_element(logits, logits + e_count);
    float sum = 0.0f;
    for (std::int64_t e = 0; e < e_count; ++e) {
      s[e] = std::exp(logits[e] - max_logit);
      sum += s[e];
    }
    for (float& v : s) v /= sum;
  }
  // Selection scores s_b.
  std::vector<float> sb = s;
  if (r.bias != nullptr) {
    for (std::int64_t e = 0; e < e_count; ++e) sb[e] += r.bias[e];
  }
  // Group limit: experts outside the topk_group best groups drop to -inf.
  if (r.n_group > 1) {
    const std::int64_t group_size = e_count / r.n_group;
    std::vector<float> group_scores(static_cast<std::size_t>(r.n_group));
    for (std::int64_t g = 0; g < r.n_group; ++g) {
      const float* group = sb.data() + g * group_size;
      if (r.group_score == GroupScore::top2_sum) {
        const std::vector<std::int64_t> top2 = top_indices(group, group_size, 2);
        group_scores[g] = group[top2[0]] + group[top2[1]];
      } else {
        group_scores[g] = *std::max_element(group, group + group_size);
      }
    }
    std::vector<bool> kept(static_cast<std::size_t>(r.n_group), false);
    for (const std::int64_t g : top_indices(group_scores.data(), r.n_group, r.topk_group)) kept[g] = true;
    for (std::int64_t e = 0; e < e_count; ++e) {
      if (!kept[e / group_size]) sb[e] = -std::numeric_limits<float>::infinity();
    }
  }
  const std::vector<std::int64_t> chosen = top_indices(sb.data(), e_count, r.top_k);
  // Weights come from the unbiased scores: the bias only steers the choice.
  float sum = 0.0f;
  for (std::int64_t j = 0; j < r.top_k; ++j) {
    indices[j] = static_cast<std::int32_t>(chosen[j]);
    weights[j] = s[chosen[j]];
    sum += weights[j];
  }
  if (r.norm_topk_prob && r.top_k > 1) {
    for (std::int64_t j = 0; j < r.top_k; ++j) weights[j] /= sum + 1e-20f;
  }
  for (std::int64_t j = 0; j < r.top_k; ++j) weights[j] *= r.routed_scaling_factor;
}

}  // namespace

void moe_select(const MoeSelectParams& p) {
  validate(p);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    select_token(p.logits + t * p.logits_stride, p.routing, p.indices + t * p.routing.top_k,
                 p.weights + t * p.routing.top_k);
  }
}

void moe_gate(const MoeGateParams& p) {
  validate(p);
  if (p.tokens == 0) return;
  bf16_gemm({.a = p.x,
             .b = p.weight,
             .c = p.logits,
             .m = p.tokens,
             .n = p.routing.experts,
             .k = p.hidden,
             .lda = p.x_stride,
             .ldb = p.hidden,
             .ldc = p.routing.experts});
  moe_select({.logits = p.logits,
              .indices = p.indices,
              .weights = p.weights,
              .tokens = p.tokens,
              .logits_stride = p.routing.experts,
              .routing = p.routing});
}

}  // namespace sy::gpu::ref
