// The placement policies: names, the balanced policies' placements on thousands of random cases
// (valid, every replica of an expert on its own GPU, home replica or every replica on the
// group's node), and the figure the issue asks for: on Zipf(1.0) at 58 layers x 256 experts ->
// 288 slots, 32 GPUs, 4 nodes, 8 groups, max/mean GPU load at least 15% closer to 1 than EPLB's.
#include "balance/placement_policy.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "balance/load_trace.hpp"

namespace sy::balance {
namespace {

double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }

// What every balanced placement holds. strict: every replica on its group's node, else at least
// one. distinct: no GPU holds two replicas of one expert.
void expect_valid(const EplbPlacement& placement, std::size_t experts, const EplbShape& shape, bool strict,
                  bool distinct) {
  ASSERT_FALSE(placement.phy2log.empty());
  const int slots_per_gpu = shape.num_replicas / shape.num_gpus;
  const bool hierarchical = eplb_policy_for(shape.num_groups, shape.num_nodes) == EplbPolicy::hierarchical;
  const int slots_per_node = shape.num_replicas / shape.num_nodes;
  const std::size_t group_size = experts / static_cast<std::size_t>(shape.num_groups);
  int max_count = 0;
  for (const auto& counts : placement.logcnt) max_count = std::max(max_count, *std::max_element(counts.begin(), counts.end()));
  for (std::size_t layer = 0; layer < placement.phy2log.size(); ++layer) {
    const std::vector<int>& phy2log = placement.phy2log[layer];
    const std::vector<int>& logcnt = placement.logcnt[layer];
    ASSERT_EQ(phy2log.size(), static_cast<std::size_t>(shape.num_replicas));
    ASSERT_EQ(logcnt.size(), experts);
    EXPECT_EQ(std::accumulate(logcnt.begin(), logcnt.end(), 0), shape.num_replicas);
    std::vector<int> seen(experts, 0);
    std::set<std::pair<int, int>> expert_on_gpu;
    for (std::size_t slot = 0; slot < phy2log.size(); ++slot) {
      ASSERT_GE(phy2log[slot], 0);
      ASSERT_LT(static_cast<std::size_t>(phy2log[slot]), experts);
      ++seen[static_cast<std::size_t>(phy2log[slot])];
      const int gpu = static_cast<int>(slot) / slots_per_gpu;
      const bool fresh = expert_on_gpu.insert({phy2log[slot], gpu}).second;
      if (distinct) {
        EXPECT_TRUE(fresh) << "layer " << layer << ": two replicas of " << phy2log[slot] << " on GPU " << gpu;
      }
    }
    std::vector<int> node_of_group(static_cast<std::size_t>(shape.num_groups), -1);
    for (std::size_t e = 0; e < experts; ++e) {
      EXPECT_GE(logcnt[e], 1);
      EXPECT_EQ(logcnt[e], seen[e]) << "layer " << layer << " expert " << e;
      const std::vector<int>& slots = placement.log2phy[layer][e];
      ASSERT_EQ(slots.size(), static_cast<std::size_t>(max_count));
      for (std::size_t r = 0; r < slots.size(); ++r) {
        if (static_cast<int>(r) >= logcnt[e]) {
          EXPECT_EQ(slots[r], -1);
          continue;
        }
        ASSERT_GE(slots[r], 0);
        EXPECT_EQ(phy2log[static_cast<std::size_t>(slots[r])], static_cast<int>(e));
        if (!hierarchical || (!strict && r > 0)) continue;
        // The home replica (rank 0), or under strict every replica, on the group's node.
        int& node = node_of_group[e / group_size];
        if (node < 0) node = slots[r] / slots_per_node;
        EXPECT_EQ(node, slots[r] / slots_per_node) << "layer " << layer << " expert " << e << " off its group's node";
      }
    }
    // Groups per node as EPLB: groups / nodes each.
    if (hierarchical) {
      std::vector<int> groups_on(static_cast<std::size_t>(shape.num_nodes), 0);
      for (const int node : node_of_group) ++groups_on[static_cast<std::size_t>(node)];
      for (const int n : groups_on) EXPECT_EQ(n, shape.num_groups / shape.num_nodes);
    }
  }
}

TEST(PlacementPolicy, NamesRoundTrip) {
  for (const PlacementPolicy policy : kPlacementPolicies) EXPECT_EQ(placement_policy_from_name(to_string(policy)), policy);
  EXPECT_EQ(placement_policy_from_name("balanced"), PlacementPolicy::balanced);
  EXPECT_EQ(placement_policy_from_name("EPLB"), std::nullopt);
}

TEST(PlacementPolicy, EplbPolicyIsTheReference) {
  const std::vector<std::vector<double>> weight = {{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86}};
  const EplbShape shape{.num_replicas = 16, .num_groups = 4, .num_nodes = 2, .num_gpus = 8};
  EXPECT_EQ(place_experts(PlacementPolicy::eplb, weight, shape).phy2log, rebalance_experts(weight, shape).phy2log);
}

TEST(PlacementPolicy, BalancedRejectsWhatEplbRejects) {
  const EplbShape shape{.num_replicas = 12, .num_groups = 4, .num_nodes = 2, .num_gpus = 8};
  EXPECT_THROW(place_experts(PlacementPolicy::balanced, {{1, 2, 3, 4}}, shape), std::invalid_argument);
  EXPECT_THROW(place_experts(PlacementPolicy::balanced_strict, {{1, -2}}, {1, 1, 1, 1}), std::invalid_argument);
}

TEST(PlacementPolicy, HotExpertSpreadsOverGpusAndNodes) {
  // 8 experts, expert 0 takes most of the load: its replicas go to distinct GPUs, including GPUs
  // of the other node (only its first replica has to stay on its group's node).
  const std::vector<std::vector<double>> weight = {{100, 1, 1, 1, 1, 1, 1, 1}};
  const EplbShape shape{.num_replicas = 16, .num_groups = 2, .num_nodes = 2, .num_gpus = 8};
  const EplbPlacement placement = place_experts(PlacementPolicy::balanced, weight, shape);
  expect_valid(placement, 8, shape, false, true);
  EXPECT_EQ(placement.logcnt[0][0], 8);  // one per GPU: the cap
  const EplbPlacement eplb = rebalance_experts(weight, shape);
  EXPECT_LT(mean(max_over_mean_gpu_load(placement.phy2log, weight, 8)),
            mean(max_over_mean_gpu_load(eplb.phy2log, weight, 8)));
  const EplbPlacement strict = place_experts(PlacementPolicy::balanced_strict, weight, shape);
  expect_valid(strict, 8, shape, true, true);
}

TEST(PlacementPolicy, BalancedPlacementsAreValidOnThousandsOfRandomCases) {
  std::mt19937_64 rng(20250601);
  const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 2000; ++trial) {
    const int nodes = pick(1, 4);
    const int gpus = nodes * pick(1, 4);
    const int groups = pick(1, 3) == 1 ? nodes * pick(1, 3) + pick(0, 1) : nodes * pick(1, 3);
    const int experts = groups * pick(1, 4);
    const int slots_per_gpu = (experts + gpus - 1) / gpus + pick(0, 2);
    const EplbShape shape{.num_replicas = gpus * slots_per_gpu, .num_groups = groups, .num_nodes = nodes,
                          .num_gpus = gpus};
    std::vector<std::vector<double>> weight(static_cast<std::size_t>(pick(1, 3)));
    for (auto& row : weight) {
      for (int e = 0; e < experts; ++e) {
        row.push_back(trial % 2 == 0 ? pick(0, 20) : std::exponential_distribution<double>(0.01)(rng));
      }
    }
    SCOPED_TRACE(::testing::Message() << "trial " << trial << ": " << experts << " experts, " << shape.num_replicas
                                      << " slots, " << groups << " groups, " << nodes << " nodes, " << gpus << " GPUs");
    const bool hierarchical = eplb_policy_for(groups, nodes) == EplbPolicy::hierarchical;
    const int cluster_nodes = hierarchical ? nodes : 1;
    // Distinct GPUs are promised where a GPU has at most half as many slots as a node has
    // experts (placement_policy.hpp).
    const bool distinct = 2 * slots_per_gpu <= experts / cluster_nodes;
    const bool distinct_strict = distinct;
    expect_valid(place_experts(PlacementPolicy::balanced, weight, shape), static_cast<std::size_t>(experts), shape,
                 false, distinct);
    expect_valid(place_experts(PlacementPolicy::balanced_strict, weight, shape), static_cast<std::size_t>(experts),
                 shape, true, distinct_strict);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(PlacementPolicy, BalancedBeatsEplbOnZipfAtDeepSeekScale) {
  const ExpertLoad weight = zipf_load(58, 256, 1.0, /*seed=*/1);
  const EplbShape shape{.num_replicas = 288, .num_groups = 8, .num_nodes = 4, .num_gpus = 32};
  const double eplb = mean(max_over_mean_gpu_load(rebalance_experts(weight, shape).phy2log, weight, 32));
  const EplbPlacement balanced = place_experts(PlacementPolicy::balanced, weight, shape);
  expect_valid(balanced, 256, shape, false, true);
  const double ours = mean(max_over_mean_gpu_load(balanced.phy2log, weight, 32));
  const EplbPlacement strict = place_experts(PlacementPolicy::balanced_strict, weight, shape);
  expect_valid(strict, 256, shape, true, true);
  const double ours_strict = mean(max_over_mean_gpu_load(strict.phy2log, weight, 32));
  std::cout << "Zipf(1.0) 58x256 -> 288 slots, 32 GPUs, 4 nodes: max/mean GPU load eplb " << eplb << ", balanced "
            << ours << ", balanced-strict " << ours_strict << "\n";
  EXPECT_GT(eplb, 1.3);  // the issue's ~1.39
  EXPECT_LE(ours - 1.0, 0.85 * (eplb - 1.0));
  EXPECT_LE(ours_strict, eplb);
}

}  // namespace
}  // namespace sy::balance
