// The rebalancing simulator behind `switchyard simulate-balance`: replays a load trace
// (load_trace.hpp) against several ways of keeping the expert placement up to date and records,
// round by round, how balanced the GPUs are and how many expert slots each way reloads. Pure
// computation on the caller's thread; no CAF.
//
// Round t serves trace[t] with the placement chosen at the end of round t - 1 from the mean load
// of the last `window` rounds (the controller's sliding window). Round 0 is the warm-up: every
// strategy starts from its own policy's placement of trace[0] and moves nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "balance/eplb.hpp"
#include "balance/load_trace.hpp"

namespace sy::balance {

enum class Strategy {
  none,      // the warm-up EPLB placement, never changed
  eplb,      // full EPLB every round (every slot that differs is reloaded)
  // The migration-aware mode, at most max_move_fraction of the slots per round: with EPLB's global
  // policy, towards migration_aware_target (EPLB's replica counts reached from the current
  // placement), all of it when it fits; with the hierarchical policy (groups bound to nodes),
  // plan_capped_migration towards EPLB's own placement.
  capped,
  balanced,  // the "balanced" policy (placement_policy.hpp) every round
};
inline constexpr Strategy kStrategies[] = {Strategy::none, Strategy::eplb, Strategy::capped, Strategy::balanced};
const char* to_string(Strategy strategy);  // "none" | "eplb" | "capped" | "balanced"
std::optional<Strategy> strategy_from_name(std::string_view name);

struct SimulationOptions {
  EplbShape shape;
  int window = 2;                  // rounds of load averaged into the prediction; >= 1
  double max_move_fraction = 0.1;  // capped: moves per round / (layers x slots)
  std::uint64_t bytes_per_expert = 0;
  std::vector<Strategy> strategies{std::begin(kStrategies), std::end(kStrategies)};
};

struct StrategyRun {
  Strategy strategy = Strategy::none;
  // Per round, [rounds]; all measured at GPU granularity on the round's actual load.
  std::vector<double> balancedness;   // mean over layers of mean/max GPU load (1 = perfect)
  std::vector<double> max_over_mean;  // mean over layers of max/mean GPU load
  std::vector<std::size_t> moves;     // expert slots reloaded before the round (0 in round 0)
  double seconds = 0.0;               // placement and planning time over all rounds
  // Over rounds 1.. (round 0 is the warm-up).
  double mean_balancedness() const;
  double min_balancedness() const;
  double mean_max_over_mean() const;
  std::size_t max_moves() const;
};

struct SimulationResult {
  std::size_t slots = 0;  // layers x slots per layer: the denominator of move fractions
  std::vector<StrategyRun> runs;
  const StrategyRun* find(Strategy strategy) const;
};

// Runs every strategy of options over trace. progress, when set, is called after each strategy
// finishes. Throws std::invalid_argument for an empty trace, window < 1, a move fraction outside
// [0, 1], or what rebalance_experts rejects.
SimulationResult simulate(const LoadTrace& trace, const SimulationOptions& options,
                          const std::function<void(const StrategyRun&)>& progress = {});

}  // namespace sy::balance
