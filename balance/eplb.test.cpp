// EPLB against the reference: the README's published example, known answers of the reference
// eplb.py for both policies and for ties, the building blocks' tie rules, the invariants on
// thousands of random cases, and an error naming the value for every impossible shape.
#include "balance/eplb.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace sy::balance {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Matrix = std::vector<std::vector<int>>;

const std::vector<std::vector<double>> kReadmeWeight = {
    {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
    {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27},
};

// Invariants every EPLB result holds, whatever the loads.
void expect_invariants(const EplbPlacement& placement, std::size_t layers, std::size_t experts,
                       const EplbShape& shape) {
  ASSERT_EQ(placement.phy2log.size(), layers);
  ASSERT_EQ(placement.log2phy.size(), layers);
  ASSERT_EQ(placement.logcnt.size(), layers);
  int max_count = 0;
  for (std::size_t layer = 0; layer < layers; ++layer) {
    const std::vector<int>& phy2log = placement.phy2log[layer];
    const std::vector<int>& logcnt = placement.logcnt[layer];
    ASSERT_EQ(phy2log.size(), static_cast<std::size_t>(shape.num_replicas));
    ASSERT_EQ(logcnt.size(), experts);
    int sum = 0;
    std::vector<int> seen(experts, 0);
    for (const int expert : phy2log) {
      ASSERT_GE(expert, 0);
      ASSERT_LT(static_cast<std::size_t>(expert), experts);
      ++seen[static_cast<std::size_t>(expert)];
    }
    for (std::size_t e = 0; e < experts; ++e) {
      EXPECT_GE(logcnt[e], 1) << "layer " << layer << " expert " << e;
      EXPECT_EQ(logcnt[e], seen[e]) << "layer " << layer << " expert " << e;
      sum += logcnt[e];
      max_count = std::max(max_count, logcnt[e]);
    }
    EXPECT_EQ(sum, shape.num_replicas);
    // log2phy lists exactly the slots of each expert, then -1s.
    ASSERT_EQ(placement.log2phy[layer].size(), experts);
    std::set<int> listed;
    for (std::size_t e = 0; e < experts; ++e) {
      const std::vector<int>& slots = placement.log2phy[layer][e];
      for (std::size_t r = 0; r < slots.size(); ++r) {
        if (static_cast<int>(r) < logcnt[e]) {
          ASSERT_GE(slots[r], 0);
          ASSERT_LT(slots[r], shape.num_replicas);
          EXPECT_EQ(phy2log[static_cast<std::size_t>(slots[r])], static_cast<int>(e));
          EXPECT_TRUE(listed.insert(slots[r]).second) << "slot " << slots[r] << " listed twice";
        } else {
          EXPECT_EQ(slots[r], -1);
        }
      }
    }
    EXPECT_EQ(listed.size(), static_cast<std::size_t>(shape.num_replicas));
    // The hierarchical policy keeps each group's replicas on one node.
    if (eplb_policy_for(shape.num_groups, shape.num_nodes) == EplbPolicy::hierarchical) {
      const std::size_t group_size = experts / static_cast<std::size_t>(shape.num_groups);
      const int slots_per_node = shape.num_replicas / shape.num_nodes;
      std::vector<int> node_of_group(static_cast<std::size_t>(shape.num_groups), -1);
      for (std::size_t slot = 0; slot < phy2log.size(); ++slot) {
        const std::size_t group = static_cast<std::size_t>(phy2log[slot]) / group_size;
        const int node = static_cast<int>(slot) / slots_per_node;
        if (node_of_group[group] < 0) node_of_group[group] = node;
        EXPECT_EQ(node_of_group[group], node) << "layer " << layer << " group " << group << " spans nodes";
      }
    }
  }
  for (const auto& layer : placement.log2phy) {
    for (const auto& slots : layer) EXPECT_EQ(slots.size(), static_cast<std::size_t>(max_count));
  }
}

TEST(Eplb, PublishedReadmeExampleMatchesExactly) {
  const EplbShape shape{.num_replicas = 16, .num_groups = 4, .num_nodes = 2, .num_gpus = 8};
  const EplbPlacement placement = rebalance_experts(kReadmeWeight, shape);
  // Printed in the reference README.
  EXPECT_EQ(placement.phy2log, (Matrix{{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
                                       {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}}));
  // The reference's other two outputs for the same call.
  EXPECT_EQ(placement.logcnt, (Matrix{{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1}, {1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1}}));
  const std::vector<Matrix> log2phy = {
      {{12, -1}, {15, 13}, {11, -1}, {6, -1}, {7, 5}, {0, 2}, {1, -1}, {3, -1}, {4, -1}, {9, -1}, {8, 10}, {14, -1}},
      {{13, -1}, {15, 11}, {8, -1}, {14, -1}, {9, -1}, {10, 12}, {2, 4}, {0, -1}, {6, 3}, {7, -1}, {1, -1}, {5, -1}}};
  EXPECT_EQ(placement.log2phy, log2phy);
  expect_invariants(placement, 2, 12, shape);
}

TEST(Eplb, PolicyIsHierarchicalWhenGroupsSplitOverNodes) {
  EXPECT_EQ(eplb_policy_for(4, 2), EplbPolicy::hierarchical);
  EXPECT_EQ(eplb_policy_for(8, 1), EplbPolicy::hierarchical);
  EXPECT_EQ(eplb_policy_for(3, 2), EplbPolicy::global);
  EXPECT_EQ(eplb_policy_for(1, 4), EplbPolicy::global);
  EXPECT_STREQ(to_string(EplbPolicy::global), "global");
}

TEST(Eplb, GlobalPolicyMatchesReference) {
  // 3 groups over 2 nodes: the reference runs the hierarchical code with one group and one node.
  const EplbShape shape{.num_replicas = 16, .num_groups = 3, .num_nodes = 2, .num_gpus = 8};
  const EplbPlacement placement = rebalance_experts(kReadmeWeight, shape);
  EXPECT_EQ(placement.phy2log, (Matrix{{10, 6, 10, 7, 0, 2, 11, 4, 5, 9, 5, 4, 8, 3, 1, 1},
                                       {1, 10, 2, 4, 5, 11, 5, 0, 6, 7, 6, 3, 8, 8, 9, 7}}));
  EXPECT_EQ(placement.logcnt, (Matrix{{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1}, {1, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1}}));
  EXPECT_EQ(placement.log2phy[0][1], (std::vector<int>{14, 15}));
  EXPECT_EQ(placement.log2phy[1][7], (std::vector<int>{15, 9}));
  const EplbPlacement one_group =
      rebalance_experts(kReadmeWeight, {.num_replicas = 16, .num_groups = 1, .num_nodes = 1, .num_gpus = 8});
  EXPECT_EQ(placement.phy2log, one_group.phy2log);
  EXPECT_EQ(placement.log2phy, one_group.log2phy);
  EXPECT_EQ(placement.logcnt, one_group.logcnt);
  expect_invariants(placement, 2, 12, shape);
}

TEST(Eplb, OneNodeSortsGroupsByLoadAsTheReference) {
  // Hierarchical with one node: the groups are renumbered by descending load (the reference's
  // balanced_packing into one pack), three replicas to GPUs of 6 slots.
  const EplbShape shape{.num_replicas = 18, .num_groups = 4, .num_nodes = 1, .num_gpus = 3};
  const EplbPlacement placement = rebalance_experts({kReadmeWeight[0]}, shape);
  EXPECT_EQ(placement.phy2log, (Matrix{{11, 1, 10, 9, 0, 2, 5, 8, 10, 4, 4, 7, 5, 1, 3, 10, 0, 6}}));
  EXPECT_EQ(placement.logcnt, (Matrix{{2, 2, 1, 1, 2, 2, 1, 1, 1, 1, 3, 1}}));
  EXPECT_EQ(placement.log2phy[0][10], (std::vector<int>{2, 8, 15}));
  EXPECT_EQ(placement.log2phy[0][11], (std::vector<int>{0, -1, -1}));
  expect_invariants(placement, 1, 12, shape);
}

TEST(Eplb, EqualLoadsBreakTiesAsTheReference) {
  const EplbShape shape{.num_replicas = 12, .num_groups = 4, .num_nodes = 2, .num_gpus = 4};
  const EplbPlacement placement = rebalance_experts({{7, 7, 7, 7, 7, 7, 7, 7}}, shape);
  EXPECT_EQ(placement.phy2log, (Matrix{{4, 0, 0, 5, 1, 1, 6, 2, 2, 7, 3, 3}}));
  EXPECT_EQ(placement.logcnt, (Matrix{{2, 2, 2, 2, 1, 1, 1, 1}}));
  EXPECT_EQ(placement.log2phy[0][0], (std::vector<int>{1, 2}));
  EXPECT_EQ(placement.log2phy[0][4], (std::vector<int>{0, -1}));
  expect_invariants(placement, 1, 8, shape);
}

TEST(Eplb, ZeroLoadsBreakTiesAsTheReference) {
  const EplbShape shape{.num_replicas = 8, .num_groups = 2, .num_nodes = 2, .num_gpus = 2};
  const EplbPlacement placement = rebalance_experts({{0, 0, 0, 0, 5, 5}}, shape);
  EXPECT_EQ(placement.phy2log, (Matrix{{0, 1, 2, 0, 5, 4, 4, 3}}));
  EXPECT_EQ(placement.logcnt, (Matrix{{2, 1, 1, 1, 2, 1}}));
  expect_invariants(placement, 1, 6, shape);
}

TEST(Eplb, LoadsAreComparedInFloat32) {
  // 1 and 1 + 1e-12 are one float32 value: a tie, so the first expert gets the extra replica.
  const EplbPlacement placement =
      rebalance_experts({{1.0, 1.0 + 1e-12}}, {.num_replicas = 3, .num_groups = 1, .num_nodes = 1, .num_gpus = 1});
  EXPECT_EQ(placement.logcnt, (Matrix{{2, 1}}));
}

TEST(BalancedPacking, StableDescendingOrderAndLightestLowestPack) {
  // Sorted: item 1 (3), item 2 (3, after 1: stable), item 3 (2), item 0 (1). 1 -> pack 0, 2 ->
  // pack 1, 3 -> pack 0 (3 = 3: lowest index), 0 -> pack 1 (pack 0 is full).
  const std::vector<float> weight = {1, 3, 3, 2};
  const Packing packing = balanced_packing(weight, 2);
  EXPECT_THAT(packing.pack_of_item, ElementsAre(1, 0, 1, 0));
  EXPECT_THAT(packing.rank_in_pack, ElementsAre(1, 0, 0, 1));
}

TEST(BalancedPacking, EqualWeightsFillPacksInTurn) {
  const std::vector<float> weight = {5, 5, 5, 5, 5, 5};
  const Packing packing = balanced_packing(weight, 3);
  EXPECT_THAT(packing.pack_of_item, ElementsAre(0, 1, 2, 0, 1, 2));
  EXPECT_THAT(packing.rank_in_pack, ElementsAre(0, 0, 0, 1, 1, 1));
}

TEST(BalancedPacking, OneItemPerPackIsTheIdentity) {
  const std::vector<float> weight = {1, 9, 4};
  const Packing packing = balanced_packing(weight, 3);
  EXPECT_THAT(packing.pack_of_item, ElementsAre(0, 1, 2));
  EXPECT_THAT(packing.rank_in_pack, ElementsAre(0, 0, 0));
  EXPECT_THROW(balanced_packing(weight, 2), std::invalid_argument);
}

TEST(ReplicateExperts, FirstIndexWinsTheArgmax) {
  const std::vector<float> weight = {4, 4};
  const Replication replication = replicate_experts(weight, 4);
  // Slot 2: 4/1 = 4/1, expert 0. Slot 3: 2 < 4, expert 1.
  EXPECT_THAT(replication.phy2log, ElementsAre(0, 1, 0, 1));
  EXPECT_THAT(replication.rank, ElementsAre(0, 0, 1, 1));
  EXPECT_THAT(replication.logcnt, ElementsAre(2, 2));
}

TEST(ReplicateExperts, HotExpertGetsReplicasUntilItsShareDropsBelowOthers) {
  const std::vector<float> weight = {10, 4, 1};
  const Replication replication = replicate_experts(weight, 6);
  // Expert 0's share 10 > 4, then 5 > 4, then 3.33 < 4: the last slot goes to expert 1.
  EXPECT_THAT(replication.phy2log, ElementsAre(0, 1, 2, 0, 0, 1));
  EXPECT_THAT(replication.rank, ElementsAre(0, 0, 0, 1, 2, 1));
  EXPECT_THAT(replication.logcnt, ElementsAre(3, 2, 1));
}

TEST(Eplb, EveryReplicaCountFromExpertsUpKeepsTheInvariants) {
  const EplbShape base{.num_replicas = 0, .num_groups = 4, .num_nodes = 2, .num_gpus = 4};
  for (int replicas = 12; replicas <= 64; replicas += 4) {
    SCOPED_TRACE("num_replicas " + std::to_string(replicas));
    EplbShape shape = base;
    shape.num_replicas = replicas;
    expect_invariants(rebalance_experts(kReadmeWeight, shape), 2, 12, shape);
    shape.num_groups = 3;  // global
    expect_invariants(rebalance_experts(kReadmeWeight, shape), 2, 12, shape);
  }
}

TEST(Eplb, InvariantsHoldOnThousandsOfRandomCases) {
  std::mt19937_64 rng(20250324);
  const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 3000; ++trial) {
    const int nodes = pick(1, 4);
    const int gpus = nodes * pick(1, 4);
    const int groups = pick(1, 3) == 1 ? nodes * pick(1, 3) + pick(0, 1) : nodes * pick(1, 3);
    const int experts = groups * pick(1, 4);
    const int slots_per_gpu = (experts + gpus - 1) / gpus + pick(0, 2);
    const EplbShape shape{.num_replicas = gpus * slots_per_gpu, .num_groups = groups, .num_nodes = nodes,
                          .num_gpus = gpus};
    std::vector<std::vector<double>> weight(static_cast<std::size_t>(pick(1, 3)));
    const bool integer = trial % 2 == 0;
    for (auto& row : weight) {
      for (int e = 0; e < experts; ++e) {
        row.push_back(integer ? pick(0, 20) : std::exponential_distribution<double>(0.01)(rng));
      }
    }
    SCOPED_TRACE("trial " + std::to_string(trial));
    expect_invariants(rebalance_experts(weight, shape), weight.size(), static_cast<std::size_t>(experts), shape);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(Eplb, LargeCaseKeepsTheInvariants) {
  // The deployment shape of the issue: 58 layers x 256 experts onto 288 slots, 32 GPUs, 4 nodes.
  std::mt19937_64 rng(7);
  std::vector<std::vector<double>> weight(58, std::vector<double>(256));
  for (auto& row : weight) {
    for (std::size_t e = 0; e < row.size(); ++e) row[e] = 1e5 / static_cast<double>(1 + (e * 37 + rng() % 7) % 256);
  }
  const EplbShape shape{.num_replicas = 288, .num_groups = 8, .num_nodes = 4, .num_gpus = 32};
  expect_invariants(rebalance_experts(weight, shape), 58, 256, shape);
}

void expect_error(const std::vector<std::vector<double>>& weight, const EplbShape& shape, const std::string& message) {
  try {
    rebalance_experts(weight, shape);
    ADD_FAILURE() << "accepted; expected: " << message;
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr(message));
  }
}

TEST(Eplb, ImpossibleShapesAreRejectedNamingTheValue) {
  const EplbShape ok{.num_replicas = 16, .num_groups = 4, .num_nodes = 2, .num_gpus = 8};
  auto with = [&](auto change) {
    EplbShape shape = ok;
    change(shape);
    return shape;
  };
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_replicas = 12; s.num_gpus = 8; }),
               "num_replicas (12) is not a multiple of num_gpus (8)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_groups = 5; }),
               "num_groups (5) does not divide the number of experts (12)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_nodes = 3; }),
               "num_nodes (3) does not divide num_gpus (8)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_replicas = 8; }),
               "num_replicas (8) is less than the number of experts (12)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_gpus = 0; }), "num_gpus must be >= 1 (got 0)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_nodes = -1; }), "num_nodes must be >= 1 (got -1)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_groups = 0; }), "num_groups must be >= 1 (got 0)");
  expect_error(kReadmeWeight, with([](EplbShape& s) { s.num_replicas = 0; }), "num_replicas must be >= 1 (got 0)");
  expect_error({}, ok, "weight has no layers");
  expect_error({{}}, ok, "weight has no experts");
  expect_error({kReadmeWeight[0], {1, 2, 3}}, ok, "weight row 1 has 3 experts, row 0 has 12");
  std::vector<std::vector<double>> bad = kReadmeWeight;
  bad[1][3] = -2;
  expect_error(bad, ok, "weight[1][3] is -2");
  bad[1][3] = std::numeric_limits<double>::quiet_NaN();
  expect_error(bad, ok, "weight[1][3] is nan");
  bad[1][3] = 1e300;  // finite in double, infinite in float32
  expect_error(bad, ok, "weight[1][3] is 1e+300");
}

}  // namespace
}  // namespace sy::balance
