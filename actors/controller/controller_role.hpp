// The controller role (DESIGN.md "Placement, epochs, migration"): live expert rebalancing. Every
// interval it takes the load_stats snapshot (co-located on its node), runs EPLB (or the configured
// placement policy, balance/placement_policy.hpp) on the tokens per
// (layer, logical expert) of the window, plans the fewest moves from the placement being served
// (balance/migration: a slot that keeps its expert is not touched), and skips the round when the
// predicted gain in mean balancedness is below the threshold. Otherwise it runs the protocol with
// a new epoch N+1:
//   stage   every expert host reads in the experts it is to receive, still serving epoch N;
//   commit  hosts serve N+1 beside N, workers route with N+1 from their next layer call;
//   release once every worker acknowledged, hosts drop N.
// A stage that fails or times out (a host refuses or dies) aborts the round: hosts forget N+1,
// nothing else changed, serving never paused, and the next round starts from N. A host that
// (re)joins is sent the current placement at once. Requests in flight never fail or change
// output: expert math does not depend on where it runs, and hosts answer every epoch they serve.
// Operators (the cluster API's Admin calls) run rounds now, dry-run them, import a placement,
// pause/resume, change the interval and threshold, and pin experts to slots (applied to every
// planned placement by balance::apply_pins).
// Metrics: rounds by outcome, moves, placement epoch, balancedness per layer, round seconds.
// Threading: a thin CAF actor posts acks to the role's own thread, which owns the round state.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/cluster_api/operator_service.hpp"
#include "actors/load_stats/load_stats_role.hpp"
#include "actors/node/node_role.hpp"
#include "balance/placement.hpp"

namespace sy::actors::controller {

struct ControllerOptions {
  std::filesystem::path model_dir;          // config.json: groups for EPLB
  balance::ExpertPlacement initial;         // epoch 1, as every node computed it
  load_stats::LoadStatsRole* stats = nullptr;  // co-located; REQUIRES non-null, outlives the role
  std::chrono::milliseconds interval{600000};
  double threshold = 0.01;
  std::chrono::milliseconds step_timeout{10000};
  std::string policy = "eplb";  // balance::placement_policy_from_name
  // > 0: at most this fraction of all MoE slots move per round, heading for the policy's replica
  // counts from the served placement (balance::migration_aware_target); 0: no cap.
  double max_move_fraction = 0.0;
};

// One round as the history keeps it (and as the cluster API shows it).
using RoundRecord = cluster_api::RoundInfo;

// The operator's side (schemas/cluster.capnp, served through the router role): every method from
// any thread. Settings and pins take effect at once (the next automatic round is rescheduled);
// rounds run on the role's thread and answer through the callback when they end.
class ControllerRole : public node::NodeRole {
 public:
  // Rounds so far, oldest first (bounded).
  virtual std::vector<RoundRecord> history() const = 0;
  virtual balance::ExpertPlacement placement() const = 0;
  virtual cluster_api::BalancingSettings settings() const = 0;
  // The round the controller would run now, not run ("planned"); or why there is none.
  virtual void plan(cluster_api::OperatorCallback<cluster_api::RoundPlan> done) = 0;
  // A round now (trigger "operator"), or toward an imported placement (trigger "import").
  virtual void run_round(std::optional<balance::ExpertPlacement> target,
                         cluster_api::OperatorCallback<cluster_api::RoundPlan> done) = 0;
  virtual cluster_api::BalancingSettings set_paused(bool paused) = 0;
  virtual cluster_api::BalancingSettings set_interval(double seconds) = 0;    // 1..86400
  virtual cluster_api::BalancingSettings set_threshold(double threshold) = 0;  // 0..1
  virtual cluster_api::BalancingSettings pin(cluster_api::PinInfo pin) = 0;
  virtual cluster_api::BalancingSettings unpin(int layer, int slot) = 0;
};

std::unique_ptr<ControllerRole> make_controller_role(node::RoleContext& context, ControllerOptions options);

}  // namespace sy::actors::controller
