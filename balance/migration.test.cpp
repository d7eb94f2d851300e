// The migration planner on hand-worked cases: nothing to do, free permutations within a host,
// known move counts, sources and bytes, balancedness before and after, the capped mode (budget,
// units that keep every expert placed, gain order), random plans against the invariants, and the
// errors.
#include "balance/migration.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "balance/eplb.hpp"

namespace sy::balance {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr MigrationOptions kTwoPerHost{.slots_per_host = 2, .bytes_per_expert = 1000};

// The multiset of experts on each host of each layer.
std::vector<std::vector<std::vector<int>>> per_host(const Phy2Log& placement, int slots_per_host) {
  std::vector<std::vector<std::vector<int>>> hosts;
  for (const std::vector<int>& layer : placement) {
    auto& out = hosts.emplace_back();
    for (std::size_t begin = 0; begin < layer.size(); begin += static_cast<std::size_t>(slots_per_host)) {
      const auto first = layer.begin() + static_cast<std::ptrdiff_t>(begin);
      std::vector<int> experts(first, first + slots_per_host);
      std::sort(experts.begin(), experts.end());
      out.push_back(std::move(experts));
    }
  }
  return hosts;
}

// Every expert of every layer has a replica.
bool valid(const Phy2Log& placement, const ExpertLoad& load) {
  for (std::size_t layer = 0; layer < placement.size(); ++layer) {
    for (std::size_t e = 0; e < load[layer].size(); ++e) {
      if (std::find(placement[layer].begin(), placement[layer].end(), static_cast<int>(e)) == placement[layer].end()) {
        return false;
      }
    }
  }
  return true;
}

// The moves turn current into result, slot by slot, and name their sources in current.
void expect_moves_consistent(const MigrationPlan& plan, const Phy2Log& current, int slots_per_host) {
  Phy2Log applied = current;
  for (const ExpertMove& move : plan.moves) {
    const auto layer = static_cast<std::size_t>(move.layer);
    const auto slot = static_cast<std::size_t>(move.slot);
    EXPECT_EQ(applied[layer][slot], move.evicted_expert);
    EXPECT_NE(move.evicted_expert, move.expert);
    EXPECT_EQ(move.host, move.slot / slots_per_host);
    EXPECT_EQ(current[layer][static_cast<std::size_t>(move.source_slot)], move.expert);
    EXPECT_EQ(move.source_host, move.source_slot / slots_per_host);
    applied[layer][slot] = move.expert;
  }
  EXPECT_EQ(applied, plan.result);
}

TEST(Migration, SamePlacementNeedsNoMoves) {
  const Phy2Log placement = {{0, 1, 2, 0}, {2, 2, 1, 0}};
  const ExpertLoad load = {{6, 2, 4}, {1, 1, 1}};
  const MigrationPlan plan = plan_migration(placement, placement, load, kTwoPerHost);
  EXPECT_TRUE(plan.moves.empty());
  EXPECT_EQ(plan.bytes, 0u);
  EXPECT_EQ(plan.result, placement);
  EXPECT_EQ(plan.before.per_layer, plan.after.per_layer);
}

TEST(Migration, PermutationWithinAHostIsFree) {
  const Phy2Log current = {{0, 1, 2, 3}};
  const Phy2Log target = {{1, 0, 3, 2}};
  const MigrationPlan plan = plan_migration(current, target, {{1, 2, 3, 4}}, kTwoPerHost);
  EXPECT_TRUE(plan.moves.empty());
  EXPECT_EQ(plan.result, current);  // the slots keep what they hold
  EXPECT_DOUBLE_EQ(plan.after.mean, plan.before.mean);
}

// Two hosts of two slots, experts 0..2 with loads 6, 2, 4. current: host 0 {0, 1}, host 1 {2, 0}.
// target: host 0 {0, 0}, host 1 {1, 2}.
const Phy2Log kCurrent = {{0, 1, 2, 0}};
const Phy2Log kTarget = {{0, 0, 1, 2}};
const ExpertLoad kLoad = {{6, 2, 4}};

TEST(Migration, LoadsOnlyTheCopiesAHostLacks) {
  const MigrationPlan plan = plan_migration(kCurrent, kTarget, kLoad, kTwoPerHost);
  // Host 0 keeps slot 0 (expert 0) and loads a second 0 into slot 1, copied locally from slot 0.
  // Host 1 keeps slot 2 (expert 2) and loads 1 into slot 3, from slot 1 on host 0.
  ASSERT_EQ(plan.moves.size(), 2u);
  const ExpertMove& first = plan.moves[0];
  EXPECT_EQ(std::vector<int>({first.layer, first.slot, first.host, first.evicted_expert, first.expert,
                              first.source_slot, first.source_host}),
            std::vector<int>({0, 1, 0, 1, 0, 0, 0}));
  const ExpertMove& second = plan.moves[1];
  EXPECT_EQ(std::vector<int>({second.layer, second.slot, second.host, second.evicted_expert, second.expert,
                              second.source_slot, second.source_host}),
            std::vector<int>({0, 3, 1, 0, 1, 1, 0}));
  EXPECT_EQ(plan.bytes, 2000u);
  EXPECT_EQ(plan.result, (Phy2Log{{0, 0, 2, 1}}));
  // Before: expert 0 has two replicas (3 each): host loads 3 + 2 = 5 and 4 + 3 = 7; mean 6.
  // After: 3 + 3 = 6 and 4 + 2 = 6.
  EXPECT_THAT(plan.before.per_layer, ElementsAre(DoubleNear(6.0 / 7.0, 1e-12)));
  EXPECT_THAT(plan.after.per_layer, ElementsAre(DoubleNear(1.0, 1e-12)));
  expect_moves_consistent(plan, kCurrent, 2);
}

TEST(Migration, HostLoadsSplitAnExpertOverItsReplicas) {
  EXPECT_THAT(host_loads(std::vector<int>{0, 1, 2, 0}, std::vector<double>{6, 2, 4}, 2), ElementsAre(5.0, 7.0));
  EXPECT_THAT(host_loads(std::vector<int>{0, 1, 2, 0}, std::vector<double>{6, 2, 4}, 1), ElementsAre(3, 2, 4, 3));
  const Balancedness b = predict_balancedness({{0, 1, 2, 0}, {0, 1, 2, 0}}, {{6, 2, 4}, {0, 0, 0}}, 2);
  EXPECT_THAT(b.per_layer, ElementsAre(DoubleNear(6.0 / 7.0, 1e-12), 1.0));  // no load: balanced
  EXPECT_NEAR(b.mean, (6.0 / 7.0 + 1.0) / 2.0, 1e-12);
}

TEST(Migration, FewestMovesAcrossLayersAndHosts) {
  // Per host, only the multiset difference moves. Layer 0: host 0 {0,1,2} -> {2,3,2} keeps 2
  // and loads 2 and 3; host 1 {3,3,4} -> {0,1,4} keeps 4 and loads 0 and 1. Layer 1: host 0
  // {4,3,2} -> {0,4,3} loads 0; host 1 {1,0,0} -> {2,1,0} loads 2. Six moves in all.
  const Phy2Log current = {{0, 1, 2, 3, 3, 4}, {4, 3, 2, 1, 0, 0}};
  const Phy2Log target = {{2, 3, 2, 0, 1, 4}, {0, 4, 3, 2, 1, 0}};
  const ExpertLoad load = {{1, 1, 1, 1, 1}, {5, 4, 3, 2, 1}};
  const MigrationOptions options{.slots_per_host = 3, .bytes_per_expert = 7};
  const MigrationPlan plan = plan_migration(current, target, load, options);
  EXPECT_EQ(plan.moves.size(), 6u);
  EXPECT_EQ(plan.bytes, 42u);
  EXPECT_EQ(per_host(plan.result, 3), per_host(target, 3));
  expect_moves_consistent(plan, current, 3);
}

TEST(CappedMigration, NeverExceedsTheBudgetAndKeepsEveryExpertPlaced) {
  // The only gaining change is the pair (slot 1: 1 -> 0, slot 3: 0 -> 1): slot 1 alone would
  // leave expert 1 without a replica, slot 3 alone gains nothing.
  const MigrationPlan one = plan_capped_migration(kCurrent, kTarget, kLoad, kTwoPerHost, 1);
  EXPECT_TRUE(one.moves.empty());
  EXPECT_EQ(one.result, kCurrent);
  const MigrationPlan two = plan_capped_migration(kCurrent, kTarget, kLoad, kTwoPerHost, 2);
  ASSERT_EQ(two.moves.size(), 2u);
  EXPECT_EQ(two.result, (Phy2Log{{0, 0, 2, 1}}));
  EXPECT_EQ(two.bytes, 2000u);
  EXPECT_NEAR(two.after.mean, 1.0, 1e-12);
  EXPECT_NEAR(two.before.mean, 6.0 / 7.0, 1e-12);
  expect_moves_consistent(two, kCurrent, 2);
}

TEST(CappedMigration, SwapOfSingleReplicaExpertsIsOneUnit) {
  // Loads 9, 6, 1, 2, one replica each: host 0 {0, 1} carries 15, host 1 {2, 3} carries 3.
  // Swapping 1 and 2 gives 10 and 8. Neither move is valid alone (each evicts a last replica).
  const Phy2Log current = {{0, 1, 2, 3}};
  const Phy2Log target = {{0, 2, 1, 3}};
  const ExpertLoad load = {{9, 6, 1, 2}};
  EXPECT_TRUE(plan_capped_migration(current, target, load, kTwoPerHost, 1).moves.empty());
  const MigrationPlan plan = plan_capped_migration(current, target, load, kTwoPerHost, 10);
  EXPECT_EQ(plan.moves.size(), 2u);
  EXPECT_EQ(plan.result, target);
  EXPECT_THAT(plan.before.per_layer, ElementsAre(DoubleNear(9.0 / 15.0, 1e-12)));
  EXPECT_THAT(plan.after.per_layer, ElementsAre(DoubleNear(9.0 / 10.0, 1e-12)));
  expect_moves_consistent(plan, current, 2);
}

TEST(CappedMigration, TakesTheMostGainFirstAndStopsWithoutGain) {
  // Both layers: host 0 {0, 1}, host 1 {2, 2} -> host 0 {0, 2}, host 1 {1, 2}. Layer 0 (loads
  // 100, 100, 1; balancedness 0.5025) gains 0.249 per move from the swap; layer 1 (5, 4, 4;
  // 0.722) gains at most 0.206 per move. With a budget of 2, only layer 0 moves.
  const Phy2Log current = {{0, 1, 2, 2}, {0, 1, 2, 2}};
  const Phy2Log target = {{0, 2, 1, 2}, {0, 2, 1, 2}};
  const ExpertLoad load = {{100, 100, 1}, {5, 4, 4}};
  const MigrationPlan plan = plan_capped_migration(current, target, load, kTwoPerHost, 2);
  ASSERT_FALSE(plan.moves.empty());
  for (const ExpertMove& move : plan.moves) EXPECT_EQ(move.layer, 0);
  EXPECT_GT(plan.after.per_layer[0], plan.before.per_layer[0]);
  EXPECT_EQ(plan.result[1], current[1]);
  // Unlimited: every move that still gains is taken, and nothing that does not.
  const MigrationPlan all = plan_capped_migration(current, target, load, kTwoPerHost, 100);
  EXPECT_GE(all.after.mean, plan.after.mean);
  EXPECT_TRUE(valid(all.result, load));
}

TEST(CappedMigration, RandomRoundsStayValidWithinBudgetAndNeverLoseBalance) {
  std::mt19937_64 rng(11);
  const EplbShape shape{.num_replicas = 48, .num_groups = 4, .num_nodes = 2, .num_gpus = 8};
  const auto zipf_load = [&](double skew) {
    ExpertLoad load(4, std::vector<double>(32));
    for (auto& row : load) {
      std::vector<int> rank(row.size());
      std::iota(rank.begin(), rank.end(), 1);
      std::shuffle(rank.begin(), rank.end(), rng);
      for (std::size_t e = 0; e < row.size(); ++e) row[e] = 1e4 / std::pow(rank[e], skew);
    }
    return load;
  };
  Phy2Log placement = rebalance_experts(zipf_load(1.0), shape).phy2log;
  std::size_t capped_moves = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const ExpertLoad load = zipf_load(0.5 + 0.05 * round);
    const Phy2Log target = rebalance_experts(load, shape).phy2log;
    const MigrationOptions options{.slots_per_host = 6, .bytes_per_expert = 100};
    const MigrationPlan full = plan_migration(placement, target, load, options);
    EXPECT_EQ(per_host(full.result, 6), per_host(target, 6));
    expect_moves_consistent(full, placement, 6);
    const std::size_t budget = static_cast<std::size_t>(round % 7);
    const MigrationPlan capped = plan_capped_migration(placement, target, load, options, budget);
    EXPECT_LE(capped.moves.size(), budget);
    EXPECT_LE(capped.moves.size(), full.moves.size());
    EXPECT_EQ(capped.bytes, capped.moves.size() * 100);
    EXPECT_TRUE(valid(capped.result, load));
    EXPECT_GE(capped.after.mean, capped.before.mean - 1e-12);
    for (std::size_t layer = 0; layer < load.size(); ++layer) {
      EXPECT_GE(capped.after.per_layer[layer], capped.before.per_layer[layer] - 1e-12);
    }
    expect_moves_consistent(capped, placement, 6);
    capped_moves += capped.moves.size();
    placement = capped.result;
  }
  EXPECT_GT(capped_moves, 20u);  // the rounds did move experts
}

void expect_error(const Phy2Log& current, const Phy2Log& target, const ExpertLoad& load,
                  const MigrationOptions& options, const std::string& message) {
  try {
    plan_migration(current, target, load, options);
    ADD_FAILURE() << "accepted; expected: " << message;
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr(message));
  }
}

TEST(MigrationAwareTarget, ChangesOnlyWhatTheCountsNeedThenEvensTheHosts) {
  // 3 hosts x 2 slots, 4 experts; expert 0 turned hot: EPLB's counts give it a second replica,
  // taken from expert 3 (which had two).
  const Phy2Log current{{0, 1, 2, 3, 3, 1}};
  const ExpertLoad load{{60, 10, 20, 5}};
  const std::vector<std::vector<int>> counts{{2, 1, 2, 1}};  // sums to 6
  const Phy2Log target = migration_aware_target(current, load, counts, 2, 16);
  std::vector<int> have(4, 0);
  for (const int e : target[0]) ++have[static_cast<std::size_t>(e)];
  EXPECT_EQ(have, counts[0]);
  // Replicas of 0 on different hosts, each paired with a light expert: max host load 30 + 10.
  const std::vector<double> loads = host_loads(target[0], load[0], 2);
  EXPECT_LE(*std::max_element(loads.begin(), loads.end()), 40.0 + 1e-9);
  // Counts already right and hosts even: nothing changes.
  const Phy2Log settled = migration_aware_target(target, load, counts, 2, 16);
  EXPECT_EQ(settled, target);
}

TEST(MigrationAwareTarget, MatchesEplbBalanceWithFewMovesOnRandomLoads) {
  std::mt19937 rng(5);
  std::gamma_distribution<double> skew(0.7, 1.0);
  const EplbShape shape{.num_replicas = 48, .num_groups = 1, .num_nodes = 1, .num_gpus = 24};
  for (int trial = 0; trial < 20; ++trial) {
    ExpertLoad before(3, std::vector<double>(40)), after(3, std::vector<double>(40));
    for (std::size_t l = 0; l < 3; ++l) {
      for (std::size_t e = 0; e < 40; ++e) {
        before[l][e] = skew(rng);
        after[l][e] = before[l][e] * (0.8 + 0.4 * std::uniform_real_distribution<double>()(rng));
      }
    }
    const Phy2Log current = rebalance_experts(before, shape).phy2log;
    const EplbPlacement eplb = rebalance_experts(after, shape);
    const Phy2Log near = migration_aware_target(current, after, eplb.logcnt, 2, 48);
    const double b_eplb = predict_balancedness(eplb.phy2log, after, 2).mean;
    const double b_near = predict_balancedness(near, after, 2).mean;
    EXPECT_GE(b_near, 0.97 * b_eplb) << "trial " << trial;
    const std::size_t moves_near = plan_migration(current, near, after, kTwoPerHost).moves.size();
    const std::size_t moves_eplb = plan_migration(current, eplb.phy2log, after, kTwoPerHost).moves.size();
    EXPECT_LE(moves_near, moves_eplb) << "trial " << trial;
  }
}

TEST(MigrationAwareTarget, RejectsCountsThatDoNotFit) {
  const Phy2Log current{{0, 1, 2, 3}};
  const ExpertLoad load{{1, 1, 1, 1}};
  EXPECT_THROW(migration_aware_target(current, load, {{2, 1, 1, 1}}, 2, 4), std::invalid_argument);  // 5 slots
  EXPECT_THROW(migration_aware_target(current, load, {{2, 2, 0, 0}}, 2, 4), std::invalid_argument);  // no replica
  EXPECT_THROW(migration_aware_target(current, load, {{1, 1, 1, 1}}, 3, 4), std::invalid_argument);  // 3 ∤ 4
}

TEST(Migration, BadInputsAreRejectedNamingTheProblem) {
  expect_error(kCurrent, kTarget, kLoad, {.slots_per_host = 0, .bytes_per_expert = 1}, "slots_per_host must be >= 1");
  expect_error(kCurrent, kTarget, kLoad, {.slots_per_host = 3, .bytes_per_expert = 1},
               "slots_per_host (3) does not divide the 4 slots of current");
  expect_error(kCurrent, {{0, 1}}, kLoad, kTwoPerHost, "current has 4 slots per layer but target has 2");
  expect_error(kCurrent, kTarget, {{6, 2, 4}, {1, 1, 1}}, kTwoPerHost, "current has 1 layers but the load has 2");
  expect_error({{0, 1, 2, 5}}, kTarget, kLoad, kTwoPerHost, "current[0][3] is expert 5, outside [0, 3)");
  expect_error(kCurrent, {{0, 0, 2, 2}}, kLoad, kTwoPerHost, "target layer 0 has no replica of expert 1");
  expect_error(kCurrent, kTarget, {{6, -1, 4}}, kTwoPerHost, "load[0][1] is -1");
}

}  // namespace
}  // namespace sy::balance
