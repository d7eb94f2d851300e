#include "actors/controller/controller_role.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>

#include "actors/dispatch/placement_wire.hpp"
#include "actors/messages.hpp"
#include "balance/eplb.hpp"
#include "balance/migration.hpp"
#include "balance/placement_policy.hpp"
#include "model/config.hpp"
#include "monitoring/metrics.hpp"
#include "transport/task_thread.hpp"

namespace sy::actors::controller {
namespace {

namespace tr = sy::transport;
using Clock = std::chrono::steady_clock;
using schemas::PlacementPhase;

constexpr std::size_t max_history = 256;

const char* phase_name(PlacementPhase p) {
  switch (p) {
    case PlacementPhase::STAGE: return "stage";
    case PlacementPhase::COMMIT: return "commit";
    case PlacementPhase::RELEASE: return "release";
    case PlacementPhase::ABORT: return "abort";
  }
  return "?";
}

std::string join(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The controller's metrics (monitoring/metrics.hpp); null pointers: none.
struct ControllerMetrics {
  ControllerMetrics(monitoring::Registry* registry, const std::vector<int>& moe_layers) {
    if (registry == nullptr) return;
    using monitoring::Metric;
    auto& rounds = registry->counter(Metric::eplb_rearrangements);
    for (const char* o : {"completed", "failed", "skipped"}) {
      outcomes[o] = &rounds.Add(monitoring::labels(Metric::eplb_rearrangements, {o}));
    }
    moves = &registry->counter(Metric::eplb_expert_moves).Add({});
    seconds = &registry->histogram(Metric::eplb_rearrangement_seconds)
                   .Add({}, monitoring::Registry::buckets(Metric::eplb_rearrangement_seconds));
    epoch = &registry->gauge(Metric::placement_epoch).Add({});
    epoch->Set(1);
    auto& b = registry->gauge(Metric::eplb_balancedness);
    for (const int l : moe_layers) {
      balancedness.push_back(&b.Add(monitoring::labels(Metric::eplb_balancedness, {std::to_string(l)})));
    }
  }
  std::map<std::string, prometheus::Counter*> outcomes;
  prometheus::Counter* moves = nullptr;
  prometheus::Histogram* seconds = nullptr;
  prometheus::Gauge* epoch = nullptr;
  std::vector<prometheus::Gauge*> balancedness;  // [MoE layer index]
};

class Controller final : public ControllerRole {
 public:
  Controller(node::RoleContext& context, ControllerOptions options);
  ~Controller() override { stop(); }
  std::string name() const override { return "controller"; }
  void stop() override;
  std::vector<RoundRecord> history() const override {
    std::lock_guard lock(history_mutex_);
    return {history_.begin(), history_.end()};
  }
  void post(std::function<void()> task) { worker_.post(std::move(task)); }

  // ---- Worker thread only.
  void on_ack(const received<schemas::PlacementAck>& m);

 private:
  struct Round {
    balance::ExpertPlacement next;
    PlacementPhase phase = PlacementPhase::STAGE;
    std::set<std::string> awaiting;  // nodes whose ack for `phase` is still out
    Clock::time_point started;
    std::uint64_t generation = 0;    // of the step timer
    RoundRecord record;
  };

  void schedule();
  void start_round();
  void send(const std::string& node, const balance::ExpertPlacement& p, PlacementPhase phase);
  // Sends `phase` of the round's placement to `nodes` and waits for their acks.
  void step(PlacementPhase phase, const std::set<std::string>& nodes);
  void advance();
  void fail_round(const std::string& why);
  void finish(RoundRecord record);
  void on_peer_change(const node::PeerChange& change);
  std::set<std::string> hosts() const;
  std::set<std::string> workers() const;
  void log(const std::string& line) const {
    std::fprintf(stderr, "switchyard node %s: controller: %s\n", me_.name.c_str(), line.c_str());
  }

  const config::NodeConfig& me_;
  node::TransportBridge& bridge_;
  node::PeerDirectory& peers_;
  ControllerOptions options_;
  model::ModelConfig config_;
  std::vector<int> moe_layers_;
  balance::PlacementPolicy policy_ = balance::PlacementPolicy::eplb;
  ControllerMetrics metrics_;
  caf::actor actor_;
  std::uint64_t subscription_ = 0;
  std::atomic<bool> stopped_{false};

  // Worker thread only.
  balance::ExpertPlacement current_;
  std::optional<Round> round_;
  std::uint64_t next_generation_ = 1;

  mutable std::mutex history_mutex_;
  std::deque<RoundRecord> history_;  // guarded by history_mutex_

  tr::TaskThread worker_;  // last: stopped first
};

std::vector<int> moe_layers_of(const balance::ExpertPlacement& p) {
  std::vector<int> out;
  for (int l = 0; l < static_cast<int>(p.phy2log.size()); ++l) {
    if (p.is_moe_layer(l)) out.push_back(l);
  }
  return out;
}

Controller::Controller(node::RoleContext& context, ControllerOptions options)
    : me_(context.me),
      bridge_(context.bridge),
      peers_(context.peers),
      options_(std::move(options)),
      config_(model::ModelConfig::from_file(options_.model_dir / "config.json")),
      moe_layers_(moe_layers_of(options_.initial)),
      metrics_(context.metrics, moe_layers_),
      current_(options_.initial) {
  if (options_.stats == nullptr) throw std::invalid_argument("controller role: needs the load_stats role on its node");
  const auto policy = balance::placement_policy_from_name(options_.policy);
  if (!policy) throw std::invalid_argument(fmt::format("controller role: unknown placement policy \"{}\"", options_.policy));
  policy_ = *policy;
  if (options_.initial.slots % static_cast<int>(options_.initial.hosts.size()) != 0) {
    throw std::invalid_argument("controller role: slots do not split evenly over the expert hosts");
  }
  Controller* role = this;
  actor_ = context.system.spawn([role](caf::event_based_actor*) -> caf::behavior {
    return {[role](const received<schemas::PlacementAck>& m) { role->post([role, m] { role->on_ack(m); }); }};
  });
  bridge_.route(schemas::MessageKind::placement_ack, actor_);
  subscription_ = peers_.subscribe(
      [role](const node::PeerChange& change) { role->post([role, change] { role->on_peer_change(change); }); });
  schedule();
  log(fmt::format("a round every {} s ({} policy, threshold {:.3f}), {} expert hosts, {} slots per MoE layer",
                  std::chrono::duration<double>(options_.interval).count(), balance::to_string(policy_),
                  options_.threshold,
                  options_.initial.hosts.size(), options_.initial.slots));
}

void Controller::stop() {
  if (stopped_.exchange(true)) return;
  peers_.unsubscribe(subscription_);
  worker_.stop();
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

void Controller::schedule() {
  worker_.post_after(options_.interval, [this] {
    if (stopped_) return;
    start_round();
    schedule();
  });
}

std::set<std::string> Controller::hosts() const { return {current_.hosts.begin(), current_.hosts.end()}; }

std::set<std::string> Controller::workers() const {
  std::set<std::string> out;
  for (const config::Role r : {config::Role::prefill, config::Role::decode}) {
    for (const std::string& n : peers_.with_role(r)) out.insert(n);
  }
  return out;
}

void Controller::send(const std::string& node, const balance::ExpertPlacement& p, PlacementPhase phase) {
  const auto peer = peers_.find(node);
  if (!peer) return;
  capnp::MallocMessageBuilder message;
  dispatch::set_placement(message.initRoot<schemas::PlacementUpdate>(), p, phase);
  bridge_.send<schemas::PlacementUpdate>(*peer, message);
}

void Controller::start_round() {
  if (round_) return;  // the previous round is still running
  RoundRecord record;
  record.epoch = current_.epoch + 1;
  const load_stats::LoadSnapshot snapshot = options_.stats->snapshot();
  balance::ExpertLoad load;
  double total = 0;
  for (const int l : moe_layers_) {
    std::vector<double> row(static_cast<std::size_t>(current_.experts), 0.0);
    if (l < snapshot.layers && snapshot.experts == current_.experts) {
      for (int e = 0; e < current_.experts; ++e) {
        row[static_cast<std::size_t>(e)] = static_cast<double>(snapshot.tokens[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)]);
        total += row[static_cast<std::size_t>(e)];
      }
    }
    load.push_back(std::move(row));
  }
  if (total == 0) {
    record.outcome = "skipped";
    record.detail = "no expert load in the window yet";
    return finish(record);
  }
  const int hosts_count = static_cast<int>(current_.hosts.size());
  const int groups = config_.n_group > 0 && current_.experts % config_.n_group == 0 ? static_cast<int>(config_.n_group) : 1;
  balance::Phy2Log current_rows, target_rows;
  balance::MigrationPlan plan;
  try {
    const balance::EplbPlacement eplb =
        balance::place_experts(policy_, load, balance::EplbShape{current_.slots, groups, 1, hosts_count});
    for (const int l : moe_layers_) current_rows.push_back(current_.phy2log[static_cast<std::size_t>(l)]);
    target_rows = eplb.phy2log;
    plan = balance::plan_migration(current_rows, target_rows, load,
                                   balance::MigrationOptions{current_.slots / hosts_count, 0});
  } catch (const std::exception& e) {
    record.outcome = "failed";
    record.detail = fmt::format("planning: {}", e.what());
    return finish(record);
  }
  record.moves = static_cast<std::int64_t>(plan.moves.size());
  record.balancedness_before = plan.before.mean;
  record.balancedness_after = plan.after.mean;
  for (std::size_t i = 0; i < metrics_.balancedness.size() && i < plan.before.per_layer.size(); ++i) {
    metrics_.balancedness[i]->Set(plan.before.per_layer[i]);
  }
  const double gain = plan.after.mean - plan.before.mean;
  if (plan.moves.empty() || gain < options_.threshold) {
    record.outcome = "skipped";
    record.detail = fmt::format("predicted gain {:.4f} below the threshold {:.4f} ({} moves)", gain, options_.threshold,
                                plan.moves.size());
    return finish(record);
  }
  Round round;
  round.next = current_;
  round.next.epoch = record.epoch;
  for (std::size_t i = 0; i < moe_layers_.size(); ++i) {
    round.next.phy2log[static_cast<std::size_t>(moe_layers_[i])] = plan.result[i];
  }
  round.started = Clock::now();
  round.record = record;
  round_ = std::move(round);
  log(fmt::format("round for epoch {}: {} moves, balancedness {:.4f} -> {:.4f}; staging", record.epoch,
                  record.moves, record.balancedness_before, record.balancedness_after));
  step(PlacementPhase::STAGE, hosts());
}

void Controller::step(PlacementPhase phase, const std::set<std::string>& nodes) {
  Round& r = *round_;
  r.phase = phase;
  r.awaiting.clear();
  std::set<std::string> missing;
  for (const std::string& n : nodes) {
    if (!peers_.find(n)) {
      missing.insert(n);
      continue;
    }
    r.awaiting.insert(n);
    send(n, r.next, phase);
  }
  if (!missing.empty() && phase == PlacementPhase::STAGE) {
    return fail_round(fmt::format("stage: expert host(s) {} not connected", join(missing)));
  }
  const std::uint64_t generation = ++next_generation_;
  r.generation = generation;
  worker_.post_after(options_.step_timeout, [this, generation] {
    if (!round_ || round_->generation != generation || round_->awaiting.empty()) return;
    fail_round(fmt::format("{}: no answer from {} within {} ms", phase_name(round_->phase), join(round_->awaiting),
                           options_.step_timeout.count()));
  });
  if (r.awaiting.empty()) advance();
}

void Controller::on_ack(const received<schemas::PlacementAck>& m) {
  const auto a = m.reader();
  if (!round_ || a.getEpoch() != round_->next.epoch || a.getPhase() != round_->phase) return;  // stale
  const std::string node = peers_.name_of(m.from);
  if (!a.getOk()) {
    return fail_round(fmt::format("{}: {} refused: {}", phase_name(round_->phase), node, std::string(a.getMessage())));
  }
  round_->awaiting.erase(node);
  if (round_->awaiting.empty()) advance();
}

void Controller::advance() {
  Round& r = *round_;
  switch (r.phase) {
    case PlacementPhase::STAGE: {
      std::set<std::string> all = hosts();
      for (const std::string& w : workers()) all.insert(w);
      log(fmt::format("epoch {} staged on every host; committing", r.next.epoch));
      return step(PlacementPhase::COMMIT, all);
    }
    case PlacementPhase::COMMIT:
      // Every worker routes with the new epoch now: the old one can go.
      current_ = r.next;
      if (metrics_.epoch != nullptr) metrics_.epoch->Set(static_cast<double>(current_.epoch));
      return step(PlacementPhase::RELEASE, hosts());
    case PlacementPhase::RELEASE: {
      RoundRecord record = r.record;
      record.outcome = "completed";
      record.seconds = std::chrono::duration<double>(Clock::now() - r.started).count();
      record.detail = fmt::format("{} moves", record.moves);
      round_.reset();
      log(fmt::format("epoch {} installed in {:.3f} s", record.epoch, record.seconds));
      if (metrics_.moves != nullptr) metrics_.moves->Increment(static_cast<double>(record.moves));
      if (metrics_.seconds != nullptr) metrics_.seconds->Observe(record.seconds);
      return finish(record);
    }
    case PlacementPhase::ABORT: break;
  }
}

void Controller::fail_round(const std::string& why) {
  if (!round_) return;
  Round r = std::move(*round_);
  round_.reset();
  RoundRecord record = r.record;
  record.outcome = "failed";
  record.seconds = std::chrono::duration<double>(Clock::now() - r.started).count();
  if (r.phase == PlacementPhase::STAGE) {
    // Roll back: nobody serves the new epoch yet; hosts forget what they staged.
    for (const std::string& h : hosts()) send(h, r.next, PlacementPhase::ABORT);
    record.detail = why + "; rolled back to epoch " + std::to_string(current_.epoch);
  } else if (r.phase == PlacementPhase::COMMIT) {
    // Some may route with the new epoch already: keep it as current, and keep the old one served
    // too (no release) so nobody's rows are refused.
    current_ = r.next;
    if (metrics_.epoch != nullptr) metrics_.epoch->Set(static_cast<double>(current_.epoch));
    record.detail = why + "; epoch " + std::to_string(current_.epoch) + " committed, older epochs kept";
  } else {
    record.detail = why + "; older epochs kept";
  }
  log("round failed: " + record.detail);
  finish(record);
}

void Controller::finish(RoundRecord record) {
  if (const auto it = metrics_.outcomes.find(record.outcome); it != metrics_.outcomes.end()) it->second->Increment();
  if (record.outcome == "skipped") log("round skipped: " + record.detail);
  std::lock_guard lock(history_mutex_);
  history_.push_back(std::move(record));
  while (history_.size() > max_history) history_.pop_front();
}

void Controller::on_peer_change(const node::PeerChange& change) {
  const std::set<std::string> host_set = hosts();
  if (host_set.count(change.name) == 0) return;
  if (change.up) {
    // A host that (re)joined starts from the start-up placement: bring it to the current one.
    if (current_.epoch > 1) {
      send(change.name, current_, PlacementPhase::COMMIT);
      send(change.name, current_, PlacementPhase::RELEASE);
    }
    return;
  }
  if (round_ && round_->awaiting.count(change.name) != 0) {
    fail_round(fmt::format("{}: expert host {} was lost ({})", phase_name(round_->phase), change.name, change.reason));
  }
}

}  // namespace

std::unique_ptr<ControllerRole> make_controller_role(node::RoleContext& context, ControllerOptions options) {
  return std::make_unique<Controller>(context, std::move(options));
}

}  // namespace sy::actors::controller
