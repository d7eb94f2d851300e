#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

// The logit whose sigmoid is s, so tests can be written in scores.
float logit(double s) { return static_cast<float>(std::log(s / (1.0 - s))); }

struct Selection {
  std::vector<std::int32_t> indices;
  std::vector<float> weights;
};

Selection select(const std::vector<float>& logits, std::int64_t tokens, const MoeRouting& routing) {
  Selection out{std::vector<std::int32_t>(static_cast<std::size_t>(tokens * routing.top_k)),
                std::vector<float>(static_cast<std::size_t>(tokens * routing.top_k))};
  ref::moe_select({.logits = logits.data(), .indices = out.indices.data(), .weights = out.weights.data(),
                   .tokens = tokens, .logits_stride = routing.experts, .routing = routing});
  return out;
}

// Four groups of two: by top-2 sum the best groups are g1 (1.15) and g0 (1.0); by max they are
// g0 (0.9) and g2 (0.85).
const std::vector<double> kGroupScores = {0.9, 0.1, 0.6, 0.55, 0.85, 0.05, 0.3, 0.2};

std::vector<float> logits_of(const std::vector<double>& scores) {
  std::vector<float> l;
  for (const double s : scores) l.push_back(logit(s));
  return l;
}

TEST(RefMoeGate, Top2SumGroupMaskingExcludesAStrongExpertInAWeakGroup) {
  const MoeRouting routing = {.experts = 8, .top_k = 3, .n_group = 4, .topk_group = 2,
                              .group_score = GroupScore::top2_sum, .routed_scaling_factor = 2.5f};
  const Selection s = select(logits_of(kGroupScores), 1, routing);
  // Expert 4 (0.85) is the second-best expert but its group's top-2 sum (0.9) loses.
  EXPECT_EQ(s.indices, (std::vector<std::int32_t>{0, 2, 3}));
  const double sum = 0.9 + 0.6 + 0.55;
  EXPECT_NEAR(s.weights[0], 0.9 / sum * 2.5, 1e-6);
  EXPECT_NEAR(s.weights[1], 0.6 / sum * 2.5, 1e-6);
  EXPECT_NEAR(s.weights[2], 0.55 / sum * 2.5, 1e-6);
}

TEST(RefMoeGate, MaxGroupScoreKeepsOtherGroups) {
  const MoeRouting routing = {.experts = 8, .top_k = 3, .n_group = 4, .topk_group = 2,
                              .group_score = GroupScore::max, .norm_topk_prob = false};
  const Selection s = select(logits_of(kGroupScores), 1, routing);
  EXPECT_EQ(s.indices, (std::vector<std::int32_t>{0, 4, 1}));
  // Without normalization the weights are the scores themselves.
  EXPECT_NEAR(s.weights[0], 0.9, 1e-6);
  EXPECT_NEAR(s.weights[1], 0.85, 1e-6);
  EXPECT_NEAR(s.weights[2], 0.1, 1e-6);
}

TEST(RefMoeGate, BiasChangesSelectionButNotWeights) {
  const std::vector<float> logits = logits_of({0.8, 0.7, 0.6, 0.1});
  MoeRouting routing = {.experts = 4, .top_k = 2};
  const Selection unbiased = select(logits, 1, routing);
  EXPECT_EQ(unbiased.indices, (std::vector<std::int32_t>{0, 1}));
  const std::vector<float> bias = {0.0f, 0.0f, 0.15f, 0.0f};  // s_b = 0.8, 0.7, 0.75, 0.1
  routing.bias = bias.data();
  const Selection biased = select(logits, 1, routing);
  EXPECT_EQ(biased.indices, (std::vector<std::int32_t>{0, 2}));
  // Weights from the unbiased 0.8 and 0.6, not 0.75.
  EXPECT_NEAR(biased.weights[0], 0.8 / 1.4, 1e-6);
  EXPECT_NEAR(biased.weights[1], 0.6 / 1.4, 1e-6);
}

TEST(RefMoeGate, TiesGoToTheLowerIndex) {
  const std::vector<float> logits(8, 0.25f);
  const Selection s = select(logits, 1, {.experts = 8, .top_k = 3, .n_group = 4, .topk_group = 2});
  // All groups tie: groups 0 and 1 win; inside them experts 0..2.
  EXPECT_EQ(s.indices, (std::vector<std::int32_t>{0, 1, 2}));
  for (const float w : s.weights) EXPECT_NEAR(w, 1.0 / 3.0, 1e-6);
}

TEST(RefMoeGate, SoftmaxScoring) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.0f};
  const Selection s = select(logits, 1, {.experts = 4, .top_k = 2, .scoring = ScoringFunc::softmax,
                                         .group_score = GroupScore::max, .norm_topk_prob = false});
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1.0;
  EXPECT_EQ(s.indices, (std::vector<std::int32_t>{1, 2}));
  EXPECT_NEAR(s.weights[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(s.weights[1], std::exp(2.0) / z, 1e-6);
}

// An independent, straightforward noaux_tc router in double, written from spec §1.6.
Selection router_double(const std::vector<float>& logits, std::int64_t tokens, const std::vector<float>& bias) {
  const int experts = 256, groups = 8, kept_groups = 4, top_k = 8;
  Selection out;
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::vector<double> s(experts), sb(experts);
    for (int e = 0; e < experts; ++e) {
      s[e] = 1.0 / (1.0 + std::exp(-double(logits[t * experts + e])));
      sb[e] = s[e] + bias[e];
    }
    std::vector<std::pair<double, int>> group_rank;
    for (int g = 0; g < groups; ++g) {
      std::vector<double> members(sb.begin() + g * 32, sb.begin() + (g + 1) * 32);
      std::sort(members.rbegin(), members.rend());
      group_rank.push_back({-(members[0] + members[1]), g});
    }
    std::sort(group_rank.begin(), group_rank.end());
    std::vector<std::pair<double, int>> candidates;
    for (int i = 0; i < kept_groups; ++i) {
      for (int e = group_rank[i].second * 32; e < (group_rank[i].second + 1) * 32; ++e) candidates.push_back({-sb[e], e});
    }
    std::sort(candidates.begin(), candidates.end());
    double sum = 0.0;
    for (int j = 0; j < top_k; ++j) sum += s[candidates[j].second];
    for (int j = 0; j < top_k; ++j) {
      out.indices.push_back(candidates[j].second);
      out.weights.push_back(static_cast<float>(s[candidates[j].second] / sum * 2.5));
    }
  }
  return out;
}

TEST(RefMoeGate, V3ShapeMatchesIndependentDoubleRouter) {
  test::TestRng rng(14);
  const std::int64_t tokens = 17, hidden = 256;
  const std::vector<float> x = rng.normals(static_cast<std::size_t>(tokens * hidden), 1.0f);
  const std::vector<bf16> w = rng.bf16_normals(static_cast<std::size_t>(256 * hidden), 0.1f);
  const std::vector<float> bias = rng.normals(256, 0.05f);
  const MoeRouting routing = {.experts = 256, .top_k = 8, .n_group = 8, .topk_group = 4,
                              .routed_scaling_factor = 2.5f, .bias = bias.data()};
  std::vector<float> logits(static_cast<std::size_t>(tokens * 256));
  Selection got{std::vector<std::int32_t>(tokens * 8), std::vector<float>(tokens * 8)};
  ref::moe_gate({.x = x.data(), .weight = w.data(), .logits = logits.data(), .indices = got.indices.data(),
                 .weights = got.weights.data(), .tokens = tokens, .hidden = hidden, .x_stride = hidden,
                 .routing = routing});
  // The logits are x · Wᵀ.
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t e = 0; e < 256; e += 51) {
      double acc = 0.0;
      for (std::int64_t i = 0; i < hidden; ++i) acc += double(x[t * hidden + i]) * bf16_to_float(w[e * hidden + i]);
      EXPECT_NEAR(logits[t * 256 + e], acc, 1e-4);
    }
  }
  const Selection want = router_double(logits, tokens, bias);
  EXPECT_EQ(got.indices, want.indices);
  EXPECT_TRUE(test::within(test::compare(got.weights, want.weights), 1e-6, 1e-6));
  for (std::int64_t t = 0; t < tokens; ++t) {
    const float total = std::accumulate(got.weights.begin() + t * 8, got.weights.begin() + (t + 1) * 8, 0.0f);
    EXPECT_NEAR(total, 2.5f, 1e-5);
  }
}

TEST(RefMoeGate, RejectsInconsistentRouting) {
  const std::vector<float> logits(8);
  EXPECT_THROW(select(logits, 1, {.experts = 8, .top_k = 5, .n_group = 4, .topk_group = 2}), std::invalid_argument);
  EXPECT_THROW(select(logits, 1, {.experts = 8, .top_k = 2, .n_group = 3, .topk_group = 1}), std::invalid_argument);
  EXPECT_THROW(select(logits, 1, {.experts = 8, .top_k = 2, .n_group = 2, .topk_group = 3}), std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu
