#include "actors/controller/controller_role.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <functional>
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
namespace api = sy::actors::cluster_api;
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
    std::lock_guard lock(mutex_);
    return {history_.begin(), history_.end()};
  }
  balance::ExpertPlacement placement() const override {
    std::lock_guard lock(mutex_);
    return served_;
  }
  api::BalancingSettings settings() const override {
    std::lock_guard lock(mutex_);
    return settings_locked();
  }
  void plan(api::OperatorCallback<api::RoundPlan> done) override;
  void run_round(std::optional<balance::ExpertPlacement> target, api::OperatorCallback<api::RoundPlan> done) override;
  api::BalancingSettings set_paused(bool paused) override;
  api::BalancingSettings set_interval(double seconds) override;
  api::BalancingSettings set_threshold(double threshold) override;
  api::BalancingSettings pin(api::PinInfo pin) override;
  api::BalancingSettings unpin(int layer, int slot) override;

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
    api::RoundPlan plan;
    api::OperatorCallback<api::RoundPlan> done;  // may be empty (automatic rounds)
  };
  // A plan, or the record of why there is none (skipped, failed) in plan.round.
  struct Planned {
    api::RoundPlan plan;
    std::optional<balance::ExpertPlacement> next;  // empty: nothing to run
  };

  void schedule();
  // Plans from the window's load toward the policy's placement with the pins applied, or toward
  // `target` as given.
  Planned make_plan(const std::string& trigger, const std::optional<balance::ExpertPlacement>& target) const;
  // `force`: run whatever the threshold (operator rounds).
  void start_round(const std::string& trigger, std::optional<balance::ExpertPlacement> target, bool force,
                   api::OperatorCallback<api::RoundPlan> done);
  void send(const std::string& node, const balance::ExpertPlacement& p, PlacementPhase phase);
  // Sends `phase` of the round's placement to `nodes` and waits for their acks.
  void step(PlacementPhase phase, const std::set<std::string>& nodes);
  void advance();
  void fail_round(const std::string& why);
  void finish(api::RoundPlan plan, const api::OperatorCallback<api::RoundPlan>& done);
  void set_served(const balance::ExpertPlacement& p);
  void on_peer_change(const node::PeerChange& change);
  std::set<std::string> hosts() const;
  std::set<std::string> workers() const;
  api::BalancingSettings settings_locked() const;
  void check_layer(int layer) const;
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
  std::uint64_t bytes_per_expert_ = 0;
  ControllerMetrics metrics_;
  caf::actor actor_;
  std::uint64_t subscription_ = 0;
  std::atomic<bool> stopped_{false};

  // Worker thread only.
  balance::ExpertPlacement current_;  // what rounds start from (served_ is its copy for readers)
  std::optional<Round> round_;
  std::uint64_t next_generation_ = 1;

  // Settings, pins and what readers see; written by operator calls and the worker thread.
  mutable std::mutex mutex_;
  bool paused_ = false;                       // GUARDED_BY(mutex_)
  std::chrono::milliseconds interval_;        // GUARDED_BY(mutex_)
  double threshold_ = 0;                      // GUARDED_BY(mutex_)
  std::map<std::pair<int, int>, int> pins_;   // (layer, slot) -> expert; GUARDED_BY(mutex_)
  std::uint64_t schedule_generation_ = 0;     // GUARDED_BY(mutex_)
  Clock::time_point next_round_{};            // GUARDED_BY(mutex_)
  bool round_running_ = false;                // GUARDED_BY(mutex_)
  balance::ExpertPlacement served_;           // GUARDED_BY(mutex_)
  std::deque<RoundRecord> history_;           // GUARDED_BY(mutex_)

  tr::TaskThread worker_;  // last: stopped first
};

// Bytes of one routed expert's weights as the checkpoint stores them: three FP8 projections and
// their 128x128-block fp32 scales (spec/deepseek-v3.md "FP8").
std::uint64_t expert_weight_bytes(const model::ModelConfig& c) {
  const auto blocks = [](std::int64_t n) { return static_cast<std::uint64_t>((n + 127) / 128); };
  const auto h = static_cast<std::uint64_t>(c.hidden_size);
  const auto i = static_cast<std::uint64_t>(c.moe_intermediate_size);
  return 3 * (h * i + blocks(c.hidden_size) * blocks(c.moe_intermediate_size) * 4);
}

std::uint64_t unix_ms_now() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

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
      bytes_per_expert_(expert_weight_bytes(config_)),
      metrics_(context.metrics, moe_layers_),
      current_(options_.initial),
      interval_(options_.interval),
      threshold_(options_.threshold),
      served_(options_.initial) {
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
  log(fmt::format("a round every {} s ({} policy, threshold {:.3f}{}), {} expert hosts, {} slots per MoE layer",
                  std::chrono::duration<double>(options_.interval).count(), balance::to_string(policy_),
                  options_.threshold,
                  options_.max_move_fraction > 0 ? fmt::format(", at most {:g}% of slots per round", 100 * options_.max_move_fraction) : "",
                  options_.initial.hosts.size(), options_.initial.slots));
}

void Controller::stop() {
  if (stopped_.exchange(true)) return;
  peers_.unsubscribe(subscription_);
  worker_.stop();
  // A round cut short by the shutdown still answers its operator.
  if (round_ && round_->done) round_->done(api::OperatorError(api::ErrorKind::unavailable, "the controller stopped"));
  round_.reset();
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

// (Re)arms the automatic round: one timer per generation, so a new interval replaces the old timer.
void Controller::schedule() {
  std::chrono::milliseconds interval;
  std::uint64_t generation;
  {
    std::lock_guard lock(mutex_);
    interval = interval_;
    generation = ++schedule_generation_;
    next_round_ = Clock::now() + interval;
  }
  worker_.post_after(interval, [this, generation] {
    if (stopped_) return;
    bool paused;
    {
      std::lock_guard lock(mutex_);
      if (generation != schedule_generation_) return;
      paused = paused_;
    }
    if (!paused) start_round("interval", std::nullopt, false, {});
    schedule();
  });
}

api::BalancingSettings Controller::settings_locked() const {
  api::BalancingSettings s;
  s.paused = paused_;
  s.interval_s = std::chrono::duration<double>(interval_).count();
  s.threshold = threshold_;
  s.policy = balance::to_string(policy_);
  for (const auto& [key, expert] : pins_) s.pins.push_back(api::PinInfo{key.first, key.second, expert});
  s.epoch = served_.epoch;
  s.round_running = round_running_;
  s.next_round_in_s = paused_ ? 0.0 : std::max(0.0, std::chrono::duration<double>(next_round_ - Clock::now()).count());
  return s;
}

api::BalancingSettings Controller::set_paused(bool paused) {
  std::lock_guard lock(mutex_);
  if (paused_ != paused) log(paused ? "automatic rounds paused" : "automatic rounds resumed");
  paused_ = paused;
  return settings_locked();
}

api::BalancingSettings Controller::set_interval(double seconds) {
  if (!(seconds >= 1.0 && seconds <= 86400.0)) {
    throw api::OperatorError(api::ErrorKind::bad_request,
                             fmt::format("interval {} s is outside [1, 86400]", seconds));
  }
  {
    std::lock_guard lock(mutex_);
    interval_ = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
    ++schedule_generation_;  // the pending timer is void; schedule() below arms the new one
    next_round_ = Clock::now() + interval_;
  }
  log(fmt::format("interval set to {} s", seconds));
  worker_.post([this] { schedule(); });
  return settings();
}

api::BalancingSettings Controller::set_threshold(double threshold) {
  if (!(threshold >= 0.0 && threshold <= 1.0)) {
    throw api::OperatorError(api::ErrorKind::bad_request, fmt::format("threshold {} is outside [0, 1]", threshold));
  }
  std::lock_guard lock(mutex_);
  threshold_ = threshold;
  log(fmt::format("threshold set to {}", threshold));
  return settings_locked();
}

void Controller::check_layer(int layer) const {
  if (std::find(moe_layers_.begin(), moe_layers_.end(), layer) == moe_layers_.end()) {
    std::string layers;
    for (const int l : moe_layers_) layers += (layers.empty() ? "" : ", ") + std::to_string(l);
    throw api::OperatorError(api::ErrorKind::bad_request,
                             fmt::format("layer {} is not a MoE layer (MoE layers: {})", layer, layers));
  }
}

api::BalancingSettings Controller::pin(api::PinInfo pin) {
  check_layer(pin.layer);
  std::lock_guard lock(mutex_);
  if (pin.slot < 0 || pin.slot >= served_.slots) {
    throw api::OperatorError(api::ErrorKind::bad_request,
                             fmt::format("slot {} is outside [0, {})", pin.slot, served_.slots));
  }
  if (pin.expert < 0 || pin.expert >= served_.experts) {
    throw api::OperatorError(api::ErrorKind::bad_request,
                             fmt::format("expert {} is outside [0, {})", pin.expert, served_.experts));
  }
  // The layer's pins must be satisfiable together: try them on the served placement.
  std::vector<balance::SlotPin> layer_pins;
  for (const auto& [key, expert] : pins_) {
    if (key.first == pin.layer && key.second != pin.slot) layer_pins.push_back({key.second, expert});
  }
  layer_pins.push_back({pin.slot, pin.expert});
  std::vector<int> row = served_.phy2log[static_cast<std::size_t>(pin.layer)];
  try {
    balance::apply_pins(row, layer_pins, served_.slots / static_cast<int>(served_.hosts.size()));
  } catch (const std::invalid_argument& e) {
    throw api::OperatorError(api::ErrorKind::bad_request, fmt::format("layer {}: {}", pin.layer, e.what()));
  }
  pins_[{pin.layer, pin.slot}] = pin.expert;
  log(fmt::format("pinned layer {} slot {} to expert {} (from the next round)", pin.layer, pin.slot, pin.expert));
  return settings_locked();
}

api::BalancingSettings Controller::unpin(int layer, int slot) {
  std::lock_guard lock(mutex_);
  if (pins_.erase({layer, slot}) == 0) {
    throw api::OperatorError(api::ErrorKind::bad_request, fmt::format("layer {} slot {} has no pin", layer, slot));
  }
  log(fmt::format("unpinned layer {} slot {}", layer, slot));
  return settings_locked();
}

void Controller::plan(api::OperatorCallback<api::RoundPlan> done) {
  if (!worker_.post([this, done] {
        Planned p = make_plan("dry-run", std::nullopt);
        if (p.next) p.plan.round.outcome = "planned";
        done(std::move(p.plan));
      })) {
    done(api::OperatorError(api::ErrorKind::unavailable, "the controller is stopping"));
  }
}

void Controller::run_round(std::optional<balance::ExpertPlacement> target, api::OperatorCallback<api::RoundPlan> done) {
  if (target) {
    const balance::ExpertPlacement served = placement();
    const std::string problem = balance::incompatibility(served, *target);
    if (!problem.empty()) {
      return done(api::OperatorError(api::ErrorKind::bad_request, "cannot import this placement: " + problem));
    }
  }
  auto shared_target = std::make_shared<std::optional<balance::ExpertPlacement>>(std::move(target));
  if (!worker_.post([this, shared_target, done] {
        const std::string trigger = shared_target->has_value() ? "import" : "operator";
        start_round(trigger, std::move(*shared_target), true, done);
      })) {
    done(api::OperatorError(api::ErrorKind::unavailable, "the controller is stopping"));
  }
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

Controller::Planned Controller::make_plan(const std::string& trigger,
                                          const std::optional<balance::ExpertPlacement>& target) const {
  Planned out;
  api::RoundInfo& record = out.plan.round;
  record.epoch = current_.epoch + 1;
  record.trigger = trigger;
  record.started_unix_ms = unix_ms_now();
  out.plan.layers = moe_layers_;
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
  if (total == 0 && !target) {
    record.outcome = "skipped";
    record.detail = "no expert load in the window yet";
    return out;
  }
  const int hosts_count = static_cast<int>(current_.hosts.size());
  const int slots_per_host = current_.slots / hosts_count;
  const int groups = config_.n_group > 0 && current_.experts % config_.n_group == 0 ? static_cast<int>(config_.n_group) : 1;
  balance::Phy2Log current_rows, next_rows;
  for (const int l : moe_layers_) current_rows.push_back(current_.phy2log[static_cast<std::size_t>(l)]);
  try {
    if (target) {
      for (const int l : moe_layers_) next_rows.push_back(target->phy2log[static_cast<std::size_t>(l)]);
    } else {
      const balance::EplbPlacement eplb =
          balance::place_experts(policy_, load, balance::EplbShape{current_.slots, groups, 1, hosts_count});
      // The fewest moves to the policy's placement, or with a cap the migration-aware mode (its
      // replica counts reached from here, the moves with the most gain first), then the
      // operator's pins on top. One node: no group-to-node constraint to keep.
      const balance::MigrationOptions migration{slots_per_host, bytes_per_expert_};
      if (options_.max_move_fraction > 0) {
        const auto cap = static_cast<std::size_t>(options_.max_move_fraction *
                                                  static_cast<double>(current_rows.size() * static_cast<std::size_t>(current_.slots)));
        const balance::Phy2Log near =
            balance::migration_aware_target(current_rows, load, eplb.logcnt, slots_per_host, current_.slots);
        balance::MigrationPlan capped = balance::plan_migration(current_rows, near, load, migration);
        if (capped.moves.size() > cap) capped = balance::plan_capped_migration(current_rows, near, load, migration, cap);
        next_rows = std::move(capped.result);
      } else {
        next_rows = balance::plan_migration(current_rows, eplb.phy2log, load, migration).result;
      }
      std::map<int, std::vector<balance::SlotPin>> pins;
      {
        std::lock_guard lock(mutex_);
        for (const auto& [key, expert] : pins_) pins[key.first].push_back({key.second, expert});
      }
      for (std::size_t i = 0; i < moe_layers_.size(); ++i) {
        if (const auto it = pins.find(moe_layers_[i]); it != pins.end()) {
          try {
            balance::apply_pins(next_rows[i], it->second, slots_per_host);
          } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(fmt::format("pins of layer {}: {}", moe_layers_[i], e.what()));
          }
        }
      }
    }
    const balance::Balancedness before = balance::predict_balancedness(current_rows, load, slots_per_host);
    const balance::Balancedness after = balance::predict_balancedness(next_rows, load, slots_per_host);
    out.plan.before = before.per_layer;
    out.plan.after = after.per_layer;
    record.balancedness_before = before.mean;
    record.balancedness_after = after.mean;
  } catch (const std::exception& e) {
    record.outcome = "failed";
    record.detail = fmt::format("planning: {}", e.what());
    return out;
  }
  // Every slot whose expert changes is loaded (the hosts diff the placements the same way).
  for (std::size_t i = 0; i < moe_layers_.size(); ++i) {
    for (int s = 0; s < current_.slots; ++s) {
      const int from = current_rows[i][static_cast<std::size_t>(s)];
      const int to = next_rows[i][static_cast<std::size_t>(s)];
      if (from == to) continue;
      out.plan.moves.push_back(api::MoveInfo{moe_layers_[i], s,
                                             current_.hosts[static_cast<std::size_t>(current_.host_of_slot[static_cast<std::size_t>(s)])],
                                             from, to});
    }
  }
  record.moves = static_cast<std::int64_t>(out.plan.moves.size());
  record.bytes = static_cast<std::uint64_t>(record.moves) * bytes_per_expert_;
  balance::ExpertPlacement next = current_;
  next.epoch = record.epoch;
  for (std::size_t i = 0; i < moe_layers_.size(); ++i) next.phy2log[static_cast<std::size_t>(moe_layers_[i])] = next_rows[i];
  record.detail = fmt::format("{} moves ({:.1f} MiB), balancedness {:.4f} -> {:.4f}", record.moves,
                              static_cast<double>(record.bytes) / (1024.0 * 1024.0), record.balancedness_before,
                              record.balancedness_after);
  out.next = std::move(next);
  return out;
}

void Controller::start_round(const std::string& trigger, std::optional<balance::ExpertPlacement> target, bool force,
                             api::OperatorCallback<api::RoundPlan> done) {
  if (round_) {
    // The previous round is still running: an automatic round just waits for the next interval.
    if (done) {
      done(api::OperatorError(api::ErrorKind::overloaded,
                              fmt::format("the round for epoch {} is still running; retry when it ends",
                                          round_->next.epoch)));
    }
    return;
  }
  Planned p = make_plan(trigger, target);
  api::RoundInfo& record = p.plan.round;
  for (std::size_t i = 0; i < metrics_.balancedness.size() && i < p.plan.before.size(); ++i) {
    metrics_.balancedness[i]->Set(p.plan.before[i]);
  }
  if (!p.next) return finish(std::move(p.plan), done);
  double threshold;
  {
    std::lock_guard lock(mutex_);
    threshold = threshold_;
  }
  const double gain = record.balancedness_after - record.balancedness_before;
  if (record.moves == 0 || (!force && gain < threshold)) {
    record.outcome = "skipped";
    record.detail = record.moves == 0 ? "the placement already is the planned one (0 moves)"
                                      : fmt::format("predicted gain {:.4f} below the threshold {:.4f} ({} moves)", gain,
                                                    threshold, record.moves);
    return finish(std::move(p.plan), done);
  }
  Round round;
  round.next = std::move(*p.next);
  round.started = Clock::now();
  round.plan = std::move(p.plan);
  round.done = std::move(done);
  round_ = std::move(round);
  {
    std::lock_guard lock(mutex_);
    round_running_ = true;
  }
  log(fmt::format("round for epoch {} ({}): {}; staging", record.epoch, trigger, round_->plan.round.detail));
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

void Controller::set_served(const balance::ExpertPlacement& p) {
  current_ = p;
  if (metrics_.epoch != nullptr) metrics_.epoch->Set(static_cast<double>(current_.epoch));
  std::lock_guard lock(mutex_);
  served_ = p;
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
      set_served(r.next);
      return step(PlacementPhase::RELEASE, hosts());
    case PlacementPhase::RELEASE: {
      Round done = std::move(*round_);
      round_.reset();
      api::RoundInfo& record = done.plan.round;
      record.outcome = "completed";
      record.seconds = std::chrono::duration<double>(Clock::now() - done.started).count();
      log(fmt::format("epoch {} installed in {:.3f} s", record.epoch, record.seconds));
      if (metrics_.moves != nullptr) metrics_.moves->Increment(static_cast<double>(record.moves));
      if (metrics_.seconds != nullptr) metrics_.seconds->Observe(record.seconds);
      return finish(std::move(done.plan), done.done);
    }
    case PlacementPhase::ABORT: break;
  }
}

void Controller::fail_round(const std::string& why) {
  if (!round_) return;
  Round r = std::move(*round_);
  round_.reset();
  api::RoundInfo& record = r.plan.round;
  record.outcome = "failed";
  record.seconds = std::chrono::duration<double>(Clock::now() - r.started).count();
  if (r.phase == PlacementPhase::STAGE) {
    // Roll back: nobody serves the new epoch yet; hosts forget what they staged.
    for (const std::string& h : hosts()) send(h, r.next, PlacementPhase::ABORT);
    record.detail = why + "; rolled back to epoch " + std::to_string(current_.epoch);
  } else if (r.phase == PlacementPhase::COMMIT) {
    // Some may route with the new epoch already: keep it as current, and keep the old one served
    // too (no release) so nobody's rows are refused.
    set_served(r.next);
    record.detail = why + "; epoch " + std::to_string(current_.epoch) + " committed, older epochs kept";
  } else {
    record.detail = why + "; older epochs kept";
  }
  log("round failed: " + record.detail);
  finish(std::move(r.plan), r.done);
}

void Controller::finish(api::RoundPlan plan, const api::OperatorCallback<api::RoundPlan>& done) {
  const api::RoundInfo& record = plan.round;
  if (const auto it = metrics_.outcomes.find(record.outcome); it != metrics_.outcomes.end()) it->second->Increment();
  if (record.outcome == "skipped") log("round skipped: " + record.detail);
  {
    std::lock_guard lock(mutex_);
    round_running_ = false;
    history_.push_back(record);
    while (history_.size() > max_history) history_.pop_front();
  }
  if (done) done(std::move(plan));
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
