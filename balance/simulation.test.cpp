// The load traces (deterministic, shaped as asked, each kind changing as it says) and the
// simulator on a small cluster: the warm-up round, move counts, the capped mode's budget, and
// the ordering the simulator exists to show (no rebalancing decays, EPLB every round and the
// balanced policy stay up, balanced never below EPLB).
#include "balance/simulation.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>

namespace sy::balance {
namespace {

TraceOptions trace_options(TraceKind kind, int layers, int experts, int rounds, int rounds_per_day = 144,
                           std::uint64_t seed = 1) {
  TraceOptions options;
  options.kind = kind;
  options.layers = layers;
  options.experts = experts;
  options.rounds = rounds;
  options.rounds_per_day = rounds_per_day;
  options.seed = seed;
  return options;
}

TEST(LoadTrace, ZipfLoadSumsToTheTokensInEveryLayer) {
  const ExpertLoad load = zipf_load(3, 16, 1.0, 5, 1000.0);
  ASSERT_EQ(load.size(), 3u);
  for (const auto& row : load) {
    ASSERT_EQ(row.size(), 16u);
    EXPECT_NEAR(std::accumulate(row.begin(), row.end(), 0.0), 1000.0, 1e-9);
    // ranks 1 and 16 of Zipf(1): a ratio of 16.
    EXPECT_NEAR(*std::max_element(row.begin(), row.end()) / *std::min_element(row.begin(), row.end()), 16.0, 1e-9);
  }
  EXPECT_NE(load[0], load[1]);  // each layer its own order
  EXPECT_EQ(zipf_load(3, 16, 1.0, 5, 1000.0), load);
}

TEST(LoadTrace, KindsAreDeterministicAndChangeOverTime) {
  for (const TraceKind kind : kTraceKinds) {
    SCOPED_TRACE(to_string(kind));
    EXPECT_EQ(trace_kind_from_name(to_string(kind)), kind);
    const TraceOptions options = trace_options(kind, 2, 16, 30, 20, 3);
    const LoadTrace trace = make_trace(options);
    ASSERT_EQ(trace.size(), 30u);
    ASSERT_EQ(trace[0].size(), 2u);
    ASSERT_EQ(trace[0][0].size(), 16u);
    EXPECT_EQ(make_trace(options), trace);
    EXPECT_NE(trace[0], trace[29]);
    for (const auto& round : trace) {
      for (const auto& row : round) {
        for (const double v : row) EXPECT_TRUE(std::isfinite(v) && v >= 0.0);
      }
    }
  }
  EXPECT_EQ(trace_kind_from_name("day_night"), std::nullopt);
  EXPECT_THROW(make_trace(trace_options(TraceKind::drift, 1, 8, 0)), std::invalid_argument);
}

TEST(LoadTrace, DayNightTokensFollowTheCycle) {
  const LoadTrace trace =
      make_trace(trace_options(TraceKind::day_night, 1, 8, 21, 20));
  const auto tokens = [&](int round) {
    const auto& row = trace[static_cast<std::size_t>(round)][0];
    return std::accumulate(row.begin(), row.end(), 0.0);
  };
  EXPECT_NEAR(tokens(0), 1e6, 1.0);
  EXPECT_NEAR(tokens(10), 0.3e6, 1.0);
  EXPECT_NEAR(tokens(20), 1e6, 1.0);
}

TEST(Simulation, StrategiesOnASmallDriftingCluster) {
  const LoadTrace trace = make_trace(trace_options(TraceKind::drift, 4, 32, 24, 144, 9));
  SimulationOptions options;
  options.shape = {.num_replicas = 40, .num_groups = 4, .num_nodes = 2, .num_gpus = 8};
  const SimulationResult result = simulate(trace, options);
  ASSERT_EQ(result.runs.size(), 4u);
  EXPECT_EQ(result.slots, 160u);
  for (const StrategyRun& run : result.runs) {
    SCOPED_TRACE(to_string(run.strategy));
    ASSERT_EQ(run.balancedness.size(), 24u);
    ASSERT_EQ(run.moves.size(), 24u);
    EXPECT_EQ(run.moves[0], 0u);
    for (const double b : run.balancedness) EXPECT_TRUE(b > 0.0 && b <= 1.0);
  }
  const StrategyRun& none = *result.find(Strategy::none);
  const StrategyRun& eplb = *result.find(Strategy::eplb);
  const StrategyRun& capped = *result.find(Strategy::capped);
  const StrategyRun& balanced = *result.find(Strategy::balanced);
  EXPECT_EQ(none.max_moves(), 0u);
  EXPECT_LE(capped.max_moves(), 16u);  // 10% of 160 slots
  EXPECT_GT(eplb.mean_balancedness(), none.mean_balancedness());
  EXPECT_GE(capped.mean_balancedness(), none.mean_balancedness());
  EXPECT_GE(balanced.mean_balancedness(), eplb.mean_balancedness());
  EXPECT_EQ(none.balancedness[0], eplb.balancedness[0]);  // the same warm-up placement
}

TEST(Simulation, RejectsBadOptions) {
  const LoadTrace trace = make_trace(trace_options(TraceKind::drift, 1, 8, 2));
  SimulationOptions options;
  options.shape = {.num_replicas = 8, .num_groups = 1, .num_nodes = 1, .num_gpus = 2};
  options.window = 0;
  EXPECT_THROW(simulate(trace, options), std::invalid_argument);
  options.window = 1;
  options.max_move_fraction = 1.5;
  EXPECT_THROW(simulate(trace, options), std::invalid_argument);
  options.max_move_fraction = 0.1;
  EXPECT_THROW(simulate({}, options), std::invalid_argument);
  options.shape.num_gpus = 3;
  EXPECT_THROW(simulate(trace, options), std::invalid_argument);
  EXPECT_EQ(strategy_from_name("capped"), Strategy::capped);
  EXPECT_EQ(strategy_from_name("full"), std::nullopt);
}

}  // namespace
}  // namespace sy::balance
