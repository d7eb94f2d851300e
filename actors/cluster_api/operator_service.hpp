// The operator seam of the cluster API (schemas/cluster.capnp: expertLoad, placement, history,
// balancing, planRebalance and the Admin calls): what rpc_server calls for operators, beside
// GenerationService for clients. The router role implements it over the controller and
// load_stats roles of its node and its own drain; `switchyard serve-api` (one process, no expert
// parallelism) has none, and the server then answers these calls "unavailable". CAF-free.
// Threading: every method from any thread. Synchronous methods answer from snapshots and never
// wait for a step; the long ones (rounds, drains) answer through a callback, called once from
// the service's own thread (or at once from the caller's when refused), which must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "actors/cluster_api/generation_service.hpp"
#include "balance/placement.hpp"

namespace sy::actors::cluster_api {

// A refused operator call: kind as for generation (bad_request: fix the call; overloaded: retry
// later, e.g. a round is running; unavailable: this cluster cannot do it).
struct OperatorError : std::runtime_error {
  OperatorError(ErrorKind k, const std::string& message) : std::runtime_error(message), kind(k) {}
  ErrorKind kind;
};

struct LayerLoadInfo {
  int layer = 0;                       // checkpoint layer
  std::vector<std::uint64_t> tokens;   // [experts]
  double balancedness = 1.0;           // mean/max host load under the served placement
};

struct ExpertLoadInfo {
  double window_s = 0;
  std::uint64_t reports = 0;
  int experts = 0;
  std::vector<LayerLoadInfo> layers;   // MoE layers, ascending
  std::vector<std::pair<std::string, std::uint64_t>> hosts;  // (host, tokens) in placement order
};

// One rebalancing round, planned or run (controller/controller_role.hpp keeps these as history).
struct RoundInfo {
  std::uint64_t epoch = 0;       // the epoch the round installs (or would)
  std::string outcome;           // "completed", "skipped", "failed", "planned"
  std::string detail;            // why (skipped: the gain; failed: the step and the host)
  std::string trigger;           // "interval", "operator", "import", "dry-run"
  std::int64_t moves = 0;        // slots whose expert changes
  std::uint64_t bytes = 0;       // expert weight bytes those moves load
  double balancedness_before = 0;
  double balancedness_after = 0;  // predicted
  double seconds = 0;            // stage to release
  std::uint64_t started_unix_ms = 0;
};

struct MoveInfo {
  int layer = 0;
  int slot = 0;
  std::string host;  // receiving expert host
  int from_expert = 0;
  int to_expert = 0;
};

struct RoundPlan {
  RoundInfo round;
  std::vector<MoveInfo> moves;
  std::vector<int> layers;                // MoE layers, ascending
  std::vector<double> before, after;      // [layers]: balancedness per layer
};

struct PinInfo {
  int layer = 0;
  int slot = 0;
  int expert = 0;
  auto operator<=>(const PinInfo&) const = default;
};

struct BalancingSettings {
  bool paused = false;
  double interval_s = 0;
  double threshold = 0;
  std::string policy;
  std::vector<PinInfo> pins;  // by layer, then slot
  std::uint64_t epoch = 0;
  bool round_running = false;
  double next_round_in_s = 0;  // 0 when paused
};

struct DrainReport {
  std::string node;
  std::int64_t requests_at_start = 0;
  double seconds = 0;
};

template <typename T>
using OperatorResult = std::variant<T, OperatorError>;
template <typename T>
using OperatorCallback = std::function<void(OperatorResult<T>)>;

class OperatorService {
 public:
  virtual ~OperatorService() = default;
  // Read-only: throw OperatorError when refused.
  virtual ExpertLoadInfo expert_load() = 0;
  virtual balance::ExpertPlacement placement() = 0;
  virtual std::vector<RoundInfo> history() = 0;
  virtual BalancingSettings balancing() = 0;
  virtual void plan_rebalance(OperatorCallback<RoundPlan> done) = 0;
  // Mutating (the server checked the admin token).
  virtual void rebalance(OperatorCallback<RoundPlan> done) = 0;
  virtual void import_placement(balance::ExpertPlacement placement, OperatorCallback<RoundPlan> done) = 0;
  virtual BalancingSettings set_paused(bool paused) = 0;
  virtual BalancingSettings set_interval(double seconds) = 0;
  virtual BalancingSettings set_threshold(double threshold) = 0;
  virtual BalancingSettings pin(PinInfo pin) = 0;
  virtual BalancingSettings unpin(int layer, int slot) = 0;
  virtual void drain(std::string node, OperatorCallback<DrainReport> done) = 0;
  virtual void undrain(const std::string& node) = 0;
};

}  // namespace sy::actors::cluster_api
