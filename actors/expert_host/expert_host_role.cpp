#include "actors/expert_host/expert_host_role.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "actors/dispatch/placement_wire.hpp"
#include "actors/messages.hpp"
#include "gpu/dtypes.hpp"
#include "gpu/quant.hpp"
#include "model/config.hpp"
#include "model/moe.hpp"
#include "model/safetensors.hpp"
#include "model/weights.hpp"
#include "monitoring/metrics.hpp"
#include "transport/task_thread.hpp"

namespace sy::actors::expert_host {
namespace {

namespace tr = sy::transport;
using Clock = std::chrono::steady_clock;

std::uint64_t now_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count());
}

class ExpertHostRole final : public node::NodeRole {
 public:
  ExpertHostRole(node::RoleContext& context, ExpertHostOptions options);
  ~ExpertHostRole() override { stop(); }
  std::string name() const override { return "expert_host"; }
  void stop() override;
  void post(std::function<void()> task) { worker_.post(std::move(task)); }

  void on_dispatch(const received<schemas::ExpertDispatch>& m);  // worker thread
  void on_placement(const received<schemas::PlacementUpdate>& m);  // worker thread

 private:
  void report();
  void send_report();
  void ack(tr::PeerId to, std::uint64_t epoch, schemas::PlacementPhase phase, bool ok, const std::string& why);
  // Touches the weights of every expert `next` gives this host that `now` does not, so they are
  // resident before the switch. Returns how many experts it read in.
  int stage_weights(const balance::ExpertPlacement& now, const balance::ExpertPlacement& next) const;
  std::string served_epochs() const;
  void answer_error(tr::PeerId to, schemas::ExpertDispatch::Reader d, const std::string& why);
  void log(const std::string& line) const {
    std::fprintf(stderr, "switchyard node %s: expert_host: %s\n", me_.name.c_str(), line.c_str());
  }

  const config::NodeConfig& me_;
  node::TransportBridge& bridge_;
  node::PeerDirectory& peers_;
  ExpertHostOptions options_;
  model::ModelConfig config_;
  model::Checkpoint checkpoint_;
  model::ModelWeights weights_;
  int host_index_ = -1;
  caf::actor actor_;
  std::atomic<bool> stopped_{false};

  // Worker thread only: the placements it serves, by epoch (one, or two during a migration), and
  // the one staged for the next commit.
  std::map<std::uint64_t, balance::ExpertPlacement> epochs_;
  std::map<std::uint64_t, balance::ExpertPlacement> staged_;
  // Worker thread only: token rows per (layer, logical expert) since the last report.
  std::vector<std::uint64_t> counts_;
  // Worker thread only: token rows per physical slot (all layers) since the last report, and
  // switchyard_expert_slot_load_tokens{host, slot} (rows per second over the report period).
  std::vector<std::uint64_t> slot_rows_;
  std::vector<prometheus::Gauge*> slot_load_;  // [slot]; empty without metrics
  std::uint64_t period_start_ms_ = now_ms();

  tr::TaskThread worker_;  // last: stopped first
};

ExpertHostOptions checked(ExpertHostOptions o) {
  if (o.backend == nullptr) throw std::invalid_argument("expert_host role: no kernel backend given");
  return o;
}

ExpertHostRole::ExpertHostRole(node::RoleContext& context, ExpertHostOptions options)
    : me_(context.me),
      bridge_(context.bridge),
      peers_(context.peers),
      options_(checked(std::move(options))),
      config_(model::ModelConfig::from_file(options_.model_dir / "config.json")),
      checkpoint_(model::Checkpoint::open(options_.model_dir)),
      weights_(model::bind_weights(checkpoint_, config_)) {
  const auto& hosts = options_.placement.hosts;
  const auto it = std::find(hosts.begin(), hosts.end(), me_.name);
  if (it == hosts.end()) throw std::invalid_argument(fmt::format("expert_host role: {} is not in the placement", me_.name));
  host_index_ = static_cast<int>(it - hosts.begin());
  if (options_.placement.experts != config_.n_routed_experts) {
    throw std::invalid_argument(fmt::format("expert_host role: the placement has {} experts, the model {}",
                                            options_.placement.experts, config_.n_routed_experts));
  }
  counts_.assign(weights_.layers.size() * static_cast<std::size_t>(config_.n_routed_experts), 0);
  slot_rows_.assign(static_cast<std::size_t>(options_.placement.slots), 0);
  if (context.metrics != nullptr) {
    using monitoring::Metric;
    auto& family = context.metrics->gauge(Metric::expert_slot_load);
    for (int slot = 0; slot < options_.placement.slots; ++slot) {
      slot_load_.push_back(options_.placement.host_of_slot[static_cast<std::size_t>(slot)] == host_index_
                               ? &family.Add(monitoring::labels(Metric::expert_slot_load, {me_.name, std::to_string(slot)}))
                               : nullptr);
    }
  }
  ExpertHostRole* role = this;
  actor_ = context.system.spawn([role](caf::event_based_actor*) -> caf::behavior {
    return {
        [role](const received<schemas::ExpertDispatch>& m) { role->post([role, m] { role->on_dispatch(m); }); },
        [role](const received<schemas::PlacementUpdate>& m) { role->post([role, m] { role->on_placement(m); }); },
    };
  });
  bridge_.route(schemas::MessageKind::expert_dispatch, actor_);
  bridge_.route(schemas::MessageKind::placement_update, actor_);
  epochs_.emplace(options_.placement.epoch, options_.placement);
  worker_.post_after(options_.report_interval, [role] { role->report(); });
  int held = 0;
  for (int slot = 0; slot < options_.placement.slots; ++slot) {
    held += options_.placement.host_of_slot[static_cast<std::size_t>(slot)] == host_index_;
  }
  log(fmt::format("{} of {} slots per MoE layer (placement epoch {})", held, options_.placement.slots,
                  options_.placement.epoch));
}

void ExpertHostRole::stop() {
  if (stopped_.exchange(true)) return;
  worker_.stop();
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

void ExpertHostRole::answer_error(tr::PeerId to, schemas::ExpertDispatch::Reader d, const std::string& why) {
  capnp::MallocMessageBuilder message;
  auto c = message.initRoot<schemas::ExpertCombine>();
  c.setBatchId(d.getBatchId());
  c.setLayer(d.getLayer());
  c.setEpoch(d.getEpoch());
  c.setRows(0);
  c.setError(fmt::format("expert host {}: {}", me_.name, why).substr(0, schemas::limits::max_message_bytes));
  bridge_.send<schemas::ExpertCombine>(to, message);
}

void ExpertHostRole::on_dispatch(const received<schemas::ExpertDispatch>& m) {
  const auto d = m.reader();
  const auto served = epochs_.find(d.getEpoch());
  if (served == epochs_.end()) {
    return answer_error(m.from, d, fmt::format("placement epoch {} is not served here (serving {})", d.getEpoch(),
                                               served_epochs()));
  }
  const balance::ExpertPlacement& p = served->second;
  const int layer = d.getLayer();
  if (!p.is_moe_layer(layer) || static_cast<std::size_t>(layer) >= weights_.layers.size() ||
      !weights_.layers[static_cast<std::size_t>(layer)].moe) {
    return answer_error(m.from, d, fmt::format("layer {} has no routed experts", layer));
  }
  const std::int64_t h = d.getHidden();
  if (h != config_.hidden_size) return answer_error(m.from, d, fmt::format("hidden {} is not the model's {}", h, config_.hidden_size));
  const bool fp8 = d.getDtype() == schemas::ActivationDtype::FP8E4M3;
  if (fp8 != (options_.numerics == model::Numerics::fp8act)) {
    return answer_error(m.from, d, fmt::format("activations in {}, but this host runs numerics {}",
                                               fp8 ? "fp8e4m3" : "fp32", model::numerics_name(options_.numerics)));
  }
  const auto slots = d.getSlots();
  const auto slot_rows = d.getSlotRows();
  for (unsigned i = 0; i < slots.size(); ++i) {
    if (slots[i] >= static_cast<std::uint32_t>(p.slots) || p.host_of_slot[slots[i]] != host_index_) {
      return answer_error(m.from, d, fmt::format("slot {} of layer {} is not held here in epoch {}", slots[i], layer, p.epoch));
    }
  }
  const auto& experts = weights_.layers[static_cast<std::size_t>(layer)].moe->experts;
  const std::int64_t blocks = h / gpu::kQuantBlock;
  const auto act = d.getActivations();
  const auto sc = d.getScales();
  std::int64_t total = 0;
  for (const std::uint32_t n : slot_rows) total += n;
  const bool bf16_out = options_.numerics == model::Numerics::fp8act;
  capnp::MallocMessageBuilder message;
  auto c = message.initRoot<schemas::ExpertCombine>();
  c.setBatchId(d.getBatchId());
  c.setLayer(d.getLayer());
  c.setEpoch(d.getEpoch());
  c.setRows(static_cast<std::uint32_t>(total));
  c.setDtype(bf16_out ? schemas::OutputDtype::BF16 : schemas::OutputDtype::FP32);
  auto out = c.initOutputs(static_cast<unsigned>(total * h * (bf16_out ? 2 : 4)));
  std::vector<float> y;
  std::vector<gpu::fp8_e4m3> xq;
  std::vector<float> x, scales;
  std::int64_t row = 0;
  for (unsigned i = 0; i < slots.size(); ++i) {
    const int expert = p.phy2log[static_cast<std::size_t>(layer)][slots[i]];
    const model::SwiGluWeights& w = experts.at(static_cast<std::size_t>(expert));
    const std::int64_t n = slot_rows[i];
    y.resize(static_cast<std::size_t>(n * h));
    if (fp8) {
      if (!model::swiglu_takes_fp8_input(options_.numerics, w)) {
        return answer_error(m.from, d, fmt::format("expert {} of layer {} has no FP8 gate/up weights", expert, layer));
      }
      xq.resize(static_cast<std::size_t>(n * h));
      scales.resize(static_cast<std::size_t>(n * blocks));
      std::memcpy(xq.data(), act.begin() + row * h, static_cast<std::size_t>(n * h));
      std::memcpy(scales.data(), sc.begin() + row * blocks * 4, static_cast<std::size_t>(n * blocks * 4));
      model::swiglu_ffn_fp8_input(*options_.backend, w, xq.data(), scales.data(), n, y.data());
    } else {
      x.resize(static_cast<std::size_t>(n * h));
      std::memcpy(x.data(), act.begin() + row * h * 4, static_cast<std::size_t>(n * h * 4));
      model::swiglu_ffn(*options_.backend, options_.numerics, w, x.data(), n, h, y.data());
    }
    model::round_expert_outputs(options_.numerics, y);
    if (bf16_out) {
      for (std::int64_t v = 0; v < n * h; ++v) {
        const gpu::bf16 b = gpu::bf16_from_float(y[static_cast<std::size_t>(v)]);
        std::memcpy(out.begin() + (row * h + v) * 2, &b, 2);
      }
    } else {
      std::memcpy(out.begin() + row * h * 4, y.data(), static_cast<std::size_t>(n * h * 4));
    }
    counts_[static_cast<std::size_t>(layer * config_.n_routed_experts + expert)] += static_cast<std::uint64_t>(n);
    slot_rows_[slots[i]] += static_cast<std::uint64_t>(n);
    row += n;
  }
  bridge_.send<schemas::ExpertCombine>(m.from, message);
}

std::string ExpertHostRole::served_epochs() const {
  std::string out;
  for (const auto& [epoch, p] : epochs_) out += (out.empty() ? "" : ", ") + std::to_string(epoch);
  return out;
}

void ExpertHostRole::ack(tr::PeerId to, std::uint64_t epoch, schemas::PlacementPhase phase, bool ok,
                         const std::string& why) {
  capnp::MallocMessageBuilder message;
  auto a = message.initRoot<schemas::PlacementAck>();
  a.setEpoch(epoch);
  a.setPhase(phase);
  a.setOk(ok);
  a.setMessage(fmt::format("expert host {}: {}", me_.name, why).substr(0, schemas::limits::max_message_bytes));
  bridge_.send<schemas::PlacementAck>(to, message);
}

int ExpertHostRole::stage_weights(const balance::ExpertPlacement& now, const balance::ExpertPlacement& next) const {
  int staged = 0;
  volatile std::uint8_t sink = 0;
  for (std::size_t l = 0; l < next.phy2log.size() && l < weights_.layers.size(); ++l) {
    if (next.phy2log[l].empty() || !weights_.layers[l].moe) continue;
    const auto& experts = weights_.layers[l].moe->experts;
    for (int s = 0; s < next.slots; ++s) {
      if (next.host_of_slot[static_cast<std::size_t>(s)] != host_index_) continue;
      const int e = next.phy2log[l][static_cast<std::size_t>(s)];
      // Already served here (in any of this host's slots): its weights are resident.
      bool had = false;
      if (l < now.phy2log.size() && !now.phy2log[l].empty()) {
        for (int t = 0; t < now.slots && !had; ++t) {
          had = now.host_of_slot[static_cast<std::size_t>(t)] == host_index_ &&
                now.phy2log[l][static_cast<std::size_t>(t)] == e;
        }
      }
      if (had) continue;
      for (const model::LinearWeight* w : {&experts[static_cast<std::size_t>(e)].gate_proj,
                                           &experts[static_cast<std::size_t>(e)].up_proj,
                                           &experts[static_cast<std::size_t>(e)].down_proj}) {
        const auto* bytes = static_cast<const std::uint8_t*>(w->data);
        const std::size_t n = static_cast<std::size_t>(w->out * w->in) * (w->dtype == model::DType::BF16 ? 2 : 1);
        for (std::size_t i = 0; i < n; i += 4096) sink = static_cast<std::uint8_t>(sink + bytes[i]);
      }
      ++staged;
    }
  }
  return staged;
}

void ExpertHostRole::on_placement(const received<schemas::PlacementUpdate>& m) {
  const auto u = m.reader();
  const std::uint64_t epoch = u.getEpoch();
  const schemas::PlacementPhase phase = u.getPhase();
  balance::ExpertPlacement next = dispatch::placement_of(u);
  if (next.hosts != options_.placement.hosts || next.experts != options_.placement.experts) {
    return ack(m.from, epoch, phase, false, "the placement names other hosts or another expert count");
  }
  switch (phase) {
    case schemas::PlacementPhase::STAGE: {
      const int staged = stage_weights(epochs_.rbegin()->second, next);
      staged_[epoch] = std::move(next);
      log(fmt::format("staged epoch {}: {} expert(s) read in", epoch, staged));
      const tr::PeerId to = m.from;
      if (options_.stage_delay.count() > 0) {
        worker_.post_after(options_.stage_delay, [this, to, epoch] {
          if (staged_.count(epoch) != 0) ack(to, epoch, schemas::PlacementPhase::STAGE, true, "staged");
        });
      } else {
        ack(to, epoch, phase, true, "staged");
      }
      return;
    }
    case schemas::PlacementPhase::COMMIT:
      staged_.erase(epoch);
      epochs_[epoch] = std::move(next);
      log(fmt::format("serving epoch {} (epochs {})", epoch, served_epochs()));
      return ack(m.from, epoch, phase, true, "committed");
    case schemas::PlacementPhase::RELEASE:
      for (auto it = epochs_.begin(); it != epochs_.end() && it->first < epoch;) it = epochs_.erase(it);
      if (epochs_.count(epoch) == 0) epochs_[epoch] = std::move(next);
      return ack(m.from, epoch, phase, true, "released older epochs");
    case schemas::PlacementPhase::ABORT:
      staged_.erase(epoch);
      log(fmt::format("aborted epoch {}", epoch));
      return ack(m.from, epoch, phase, true, "aborted");
  }
  ack(m.from, epoch, phase, false, "unknown phase");
}

void ExpertHostRole::send_report() {
  const std::uint64_t end = now_ms();
  if (!slot_load_.empty()) {
    const double seconds = std::max(1e-3, static_cast<double>(end - period_start_ms_) / 1000.0);
    for (std::size_t slot = 0; slot < slot_load_.size(); ++slot) {
      if (slot_load_[slot] != nullptr) slot_load_[slot]->Set(static_cast<double>(slot_rows_[slot]) / seconds);
    }
  }
  const auto layers = static_cast<std::uint16_t>(weights_.layers.size());
  int sent = 0;
  for (const std::string& stats : peers_.with_role(config::Role::load_stats)) {
    const auto peer = peers_.find(stats);
    if (!peer) continue;
    capnp::MallocMessageBuilder message;
    auto r = message.initRoot<schemas::ExpertLoadReport>();
    r.setHost(me_.name);
    r.setPeriodStartMs(period_start_ms_);
    r.setPeriodEndMs(end);
    r.setLayers(layers);
    r.setExperts(static_cast<std::uint32_t>(config_.n_routed_experts));
    auto tokens = r.initTokens(static_cast<unsigned>(counts_.size()));
    for (unsigned i = 0; i < counts_.size(); ++i) tokens.set(i, counts_[i]);
    bridge_.send<schemas::ExpertLoadReport>(*peer, message);
    ++sent;
  }
  if (sent == 0) return;  // nobody to tell yet: keep counting into the same period
  std::fill(counts_.begin(), counts_.end(), 0);
  std::fill(slot_rows_.begin(), slot_rows_.end(), 0);
  period_start_ms_ = end;
}

void ExpertHostRole::report() {
  send_report();
  worker_.post_after(options_.report_interval, [this] { report(); });
}

}  // namespace

std::unique_ptr<node::NodeRole> make_expert_host_role(node::RoleContext& context, ExpertHostOptions options) {
  return std::make_unique<ExpertHostRole>(context, std::move(options));
}

}  // namespace sy::actors::expert_host
