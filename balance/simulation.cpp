#include "balance/simulation.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <stdexcept>

#include "balance/migration.hpp"
#include "balance/placement_policy.hpp"

namespace sy::balance {
namespace {

// Mean of trace[first..last] (inclusive), the controller's sliding-window prediction.
ExpertLoad window_mean(const LoadTrace& trace, int first, int last) {
  ExpertLoad mean = trace[static_cast<std::size_t>(last)];
  for (int r = first; r < last; ++r) {
    const ExpertLoad& load = trace[static_cast<std::size_t>(r)];
    for (std::size_t l = 0; l < mean.size(); ++l) {
      for (std::size_t e = 0; e < mean[l].size(); ++e) mean[l][e] += load[l][e];
    }
  }
  const double n = last - first + 1;
  for (auto& row : mean) {
    for (double& v : row) v /= n;
  }
  return mean;
}

double mean_of(const std::vector<double>& values) {
  return values.empty() ? 1.0 : std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

}  // namespace

const char* to_string(Strategy strategy) {
  switch (strategy) {
    case Strategy::none:
      return "none";
    case Strategy::eplb:
      return "eplb";
    case Strategy::capped:
      return "capped";
    case Strategy::balanced:
      return "balanced";
  }
  return "unknown";
}

std::optional<Strategy> strategy_from_name(std::string_view name) {
  for (const Strategy strategy : kStrategies) {
    if (name == to_string(strategy)) return strategy;
  }
  return std::nullopt;
}

double StrategyRun::mean_balancedness() const {
  return balancedness.size() < 2 ? 1.0 : mean_of({balancedness.begin() + 1, balancedness.end()});
}
double StrategyRun::min_balancedness() const {
  return balancedness.size() < 2 ? 1.0 : *std::min_element(balancedness.begin() + 1, balancedness.end());
}
double StrategyRun::mean_max_over_mean() const {
  return max_over_mean.size() < 2 ? 1.0 : mean_of({max_over_mean.begin() + 1, max_over_mean.end()});
}
std::size_t StrategyRun::max_moves() const { return moves.empty() ? 0 : *std::max_element(moves.begin(), moves.end()); }

const StrategyRun* SimulationResult::find(Strategy strategy) const {
  for (const StrategyRun& run : runs) {
    if (run.strategy == strategy) return &run;
  }
  return nullptr;
}

SimulationResult simulate(const LoadTrace& trace, const SimulationOptions& options,
                          const std::function<void(const StrategyRun&)>& progress) {
  if (trace.empty()) throw std::invalid_argument("the trace has no rounds");
  if (options.window < 1) throw std::invalid_argument(fmt::format("window must be >= 1 (got {})", options.window));
  if (!(options.max_move_fraction >= 0.0 && options.max_move_fraction <= 1.0)) {
    throw std::invalid_argument(
        fmt::format("max_move_fraction must be in [0, 1] (got {})", options.max_move_fraction));
  }
  check_eplb_input(trace.front(), options.shape);
  const int slots_per_gpu = options.shape.num_replicas / options.shape.num_gpus;
  const MigrationOptions migration{.slots_per_host = slots_per_gpu, .bytes_per_expert = options.bytes_per_expert};
  SimulationResult result;
  result.slots = trace.front().size() * static_cast<std::size_t>(options.shape.num_replicas);
  const auto cap = static_cast<std::size_t>(options.max_move_fraction * static_cast<double>(result.slots));
  const int rounds = static_cast<int>(trace.size());

  for (const Strategy strategy : options.strategies) {
    StrategyRun run;
    run.strategy = strategy;
    const PlacementPolicy policy = strategy == Strategy::balanced ? PlacementPolicy::balanced : PlacementPolicy::eplb;
    using Clock = std::chrono::steady_clock;
    auto started = Clock::now();
    Phy2Log placement = place_experts(policy, trace.front(), options.shape).phy2log;
    double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    for (int round = 0; round < rounds; ++round) {
      std::size_t moves = 0;
      if (round > 0 && strategy != Strategy::none) {
        started = Clock::now();
        const ExpertLoad predicted = window_mean(trace, std::max(0, round - options.window), round - 1);
        EplbPlacement planned = place_experts(policy, predicted, options.shape);
        const Phy2Log& target = planned.phy2log;
        if (strategy == Strategy::capped) {
          // Without a group-to-node constraint, head for EPLB's replica counts from where the
          // placement is (few moves) instead of EPLB's own packing (most slots change each round).
          const bool global = eplb_policy_for(options.shape.num_groups, options.shape.num_nodes) == EplbPolicy::global;
          const Phy2Log near = global ? migration_aware_target(placement, predicted, planned.logcnt, slots_per_gpu,
                                                               options.shape.num_replicas)
                                      : Phy2Log{};
          // The whole way there when it fits in the cap (the greedy takes only moves that help
          // one at a time, and a swap helps only as a pair), else the most gain per byte.
          MigrationPlan plan = global ? plan_migration(placement, near, predicted, migration) : MigrationPlan{};
          if (!global || plan.moves.size() > cap) {
            plan = plan_capped_migration(placement, global ? near : target, predicted, migration, cap);
          }
          moves = plan.moves.size();
          placement = std::move(plan.result);
        } else {
          moves = plan_migration(placement, target, predicted, migration).moves.size();
          placement = target;
        }
        seconds += std::chrono::duration<double>(Clock::now() - started).count();
      }
      const ExpertLoad& actual = trace[static_cast<std::size_t>(round)];
      run.balancedness.push_back(predict_balancedness(placement, actual, slots_per_gpu).mean);
      run.max_over_mean.push_back(mean_of(max_over_mean_gpu_load(placement, actual, options.shape.num_gpus)));
      run.moves.push_back(moves);
    }
    run.seconds = seconds;
    if (progress) progress(run);
    result.runs.push_back(std::move(run));
  }
  return result;
}

}  // namespace sy::balance
