#include "actors/dispatch/remote_experts.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "actors/dispatch/placement_wire.hpp"
#include "gpu/dtypes.hpp"
#include "gpu/quant.hpp"
#include "monitoring/metrics.hpp"

namespace sy::actors::dispatch {
namespace {

using Clock = std::chrono::steady_clock;

std::string join(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

RemoteExpertExecutor::RemoteExpertExecutor(node::TransportBridge& bridge, node::PeerDirectory& peers,
                                           balance::ExpertPlacement placement, RemoteExpertOptions options)
    : bridge_(bridge),
      peers_(peers),
      options_(std::move(options)),
      placement_(std::make_shared<const balance::ExpertPlacement>(std::move(placement))) {
  if (options_.backend == nullptr) throw std::invalid_argument("remote expert executor: no kernel backend given");
  if (options_.metrics != nullptr) {
    using monitoring::Metric;
    dispatch_seconds_ = &options_.metrics->histogram(Metric::moe_dispatch_seconds)
                             .Add({}, monitoring::Registry::buckets(Metric::moe_dispatch_seconds));
    combine_seconds_ = &options_.metrics->histogram(Metric::moe_combine_seconds)
                            .Add({}, monitoring::Registry::buckets(Metric::moe_combine_seconds));
  }
}

std::uint64_t RemoteExpertExecutor::epoch() const {
  std::lock_guard lock(mutex_);
  return placement_->epoch;
}

void RemoteExpertExecutor::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  answered_.notify_all();
}

void RemoteExpertExecutor::install(balance::ExpertPlacement placement) {
  std::lock_guard lock(mutex_);
  placement_ = std::make_shared<const balance::ExpertPlacement>(std::move(placement));
}

void RemoteExpertExecutor::send_ack(transport::PeerId to, std::uint64_t epoch, schemas::PlacementPhase phase) {
  capnp::MallocMessageBuilder message;
  auto a = message.initRoot<schemas::PlacementAck>();
  a.setEpoch(epoch);
  a.setPhase(phase);
  a.setOk(true);
  bridge_.send<schemas::PlacementAck>(to, message);
}

void RemoteExpertExecutor::on_placement(const received<schemas::PlacementUpdate>& m) {
  const auto u = m.reader();
  if (u.getPhase() == schemas::PlacementPhase::COMMIT) {
    balance::ExpertPlacement next = placement_of(u);
    std::lock_guard lock(mutex_);
    placement_ = std::make_shared<const balance::ExpertPlacement>(std::move(next));
    if (!in_flight_.empty() && in_flight_.begin()->first < u.getEpoch()) {
      held_acks_.emplace_back(u.getEpoch(), m.from);  // call_ended sends it
      return;
    }
  }
  send_ack(m.from, u.getEpoch(), u.getPhase());
}

void RemoteExpertExecutor::call_ended(std::uint64_t epoch) {
  std::vector<std::pair<std::uint64_t, transport::PeerId>> ready;
  {
    std::lock_guard lock(mutex_);
    if (const auto it = in_flight_.find(epoch); it != in_flight_.end() && --it->second == 0) in_flight_.erase(it);
    std::erase_if(held_acks_, [&](const auto& held) {
      if (!in_flight_.empty() && in_flight_.begin()->first < held.first) return false;
      ready.push_back(held);
      return true;
    });
  }
  for (const auto& [committed, to] : ready) send_ack(to, committed, schemas::PlacementPhase::COMMIT);
}

void RemoteExpertExecutor::on_peer_change(const node::PeerChange& change) {
  std::lock_guard lock(mutex_);
  if (change.up) {
    lost_.erase(change.name);
    return;
  }
  lost_.insert(change.name);
  for (auto& [id, p] : pending_) {
    if (p.host == change.name && !p.done) {
      p.done = true;
      p.error = fmt::format("expert host {} was lost ({})", change.name, change.reason);
    }
  }
  answered_.notify_all();
}

void RemoteExpertExecutor::on_combine(const received<schemas::ExpertCombine>& m) {
  const auto c = m.reader();
  std::lock_guard lock(mutex_);
  const auto it = pending_.find(c.getBatchId());
  if (it == pending_.end() || it->second.done) return;  // late (the call gave up or re-sent)
  Pending& p = it->second;
  p.done = true;
  if (c.getError().size() > 0) {
    p.error = c.getError();
  } else if (c.getRows() != p.rows.size()) {
    p.error = fmt::format("expert host {} answered {} rows, {} were sent", p.host, c.getRows(), p.rows.size());
  } else {
    const auto bytes = c.getOutputs();
    p.outputs.assign(reinterpret_cast<const std::byte*>(bytes.begin()), reinterpret_cast<const std::byte*>(bytes.end()));
    p.dtype = c.getDtype();
  }
  answered_.notify_all();
}

void RemoteExpertExecutor::run(const model::ExpertBatch& b) { finish(start(b)); }

void RemoteExpertExecutor::cancel(Ticket ticket) {
  const auto it = calls_.find(ticket);
  if (it == calls_.end()) return;
  const std::uint64_t epoch = it->second.placement->epoch;
  {
    std::lock_guard lock(mutex_);
    for (const std::uint64_t id : it->second.batches) pending_.erase(id);
  }
  calls_.erase(it);
  call_ended(epoch);
}

model::ExpertExecutor::Ticket RemoteExpertExecutor::start(const model::ExpertBatch& b) {
  const Clock::time_point began = Clock::now();
  Call call;
  call.batch = b;
  call.deadline = Clock::now() + options_.timeout;
  {
    std::lock_guard lock(mutex_);
    if (closed_) throw std::runtime_error("the node is stopping");
    call.placement = placement_;
    call.excluded = lost_;
  }
  call.layer = static_cast<int>(b.layer);
  if (!call.placement->is_moe_layer(call.layer)) {
    throw std::runtime_error(
        fmt::format("layer {} has no routed experts in placement epoch {}", call.layer, call.placement->epoch));
  }
  if (options_.numerics == model::Numerics::fp8act) {
    const std::int64_t blocks = b.hidden / gpu::kQuantBlock;
    call.xq.resize(static_cast<std::size_t>(b.tokens * b.hidden));
    call.scales.resize(static_cast<std::size_t>(b.tokens * blocks));
    model::quantize_activations(*options_.backend, b.x, b.tokens, b.hidden, b.hidden, call.xq.data(),
                                call.scales.data());
  }
  std::vector<Row> rows;
  rows.reserve(static_cast<std::size_t>(b.tokens * b.top_k));
  for (std::int64_t s = 0; s < b.tokens * b.top_k; ++s) rows.push_back(Row{s / b.top_k, s, b.expert_ids[s], -1});
  const Ticket ticket = next_ticket_++;
  Call& stored = calls_.emplace(ticket, std::move(call)).first->second;
  {
    std::lock_guard lock(mutex_);
    ++in_flight_[stored.placement->epoch];  // until finish() or cancel(): call_ended
  }
  try {
    send_round(stored, std::move(rows));
  } catch (...) {
    cancel(ticket);
    throw;
  }
  if (dispatch_seconds_ != nullptr) dispatch_seconds_->Observe(std::chrono::duration<double>(Clock::now() - began).count());
  return ticket;
}

void RemoteExpertExecutor::send_round(Call& call, std::vector<Row> todo) {
  const model::ExpertBatch& b = call.batch;
  const balance::ExpertPlacement& placement = *call.placement;
  const int layer = call.layer;
  const bool fp8 = options_.numerics == model::Numerics::fp8act;
  const std::int64_t h = b.hidden;
  const std::int64_t blocks = h / gpu::kQuantBlock;
  call.batches.clear();
  while (!todo.empty()) {
    // Route every row to a replica on a host not excluded, spread by token.
    std::map<std::string, std::map<int, std::vector<Row>>> by_host;
    for (Row& r : todo) {
      std::vector<int> live;
      for (const int slot : placement.replicas(layer, r.expert)) {
        const std::string& host = placement.hosts[static_cast<std::size_t>(placement.host_of_slot[static_cast<std::size_t>(slot)])];
        if (call.excluded.count(host) == 0) live.push_back(slot);
      }
      if (live.empty()) {
        throw std::runtime_error(fmt::format("layer {}: expert {} has no replica on a live expert host (lost or "
                                             "refused: {})",
                                             layer, r.expert, call.excluded.empty() ? "none" : join(call.excluded)));
      }
      r.slot = live[static_cast<std::size_t>(r.token) % live.size()];
      const std::string& host = placement.hosts[static_cast<std::size_t>(placement.host_of_slot[static_cast<std::size_t>(r.slot)])];
      by_host[host][r.slot].push_back(r);
    }
    todo.clear();
    for (auto& [host, slots] : by_host) {
      const auto peer = peers_.find(host);
      std::vector<Row> rows;
      for (auto& [slot, rs] : slots) rows.insert(rows.end(), rs.begin(), rs.end());
      if (!peer) {  // gone since the last look: route its rows again without it
        call.excluded.insert(host);
        todo.insert(todo.end(), rows.begin(), rows.end());
        continue;
      }
      capnp::MallocMessageBuilder message;
      auto d = message.initRoot<schemas::ExpertDispatch>();
      std::uint64_t id = 0;
      {
        std::lock_guard lock(mutex_);
        id = next_batch_++;
        pending_[id] = Pending{host, rows, false, {}, {}, schemas::OutputDtype::BF16};
      }
      call.batches.push_back(id);
      d.setBatchId(id);
      d.setLayer(static_cast<std::uint16_t>(layer));
      d.setEpoch(placement.epoch);
      d.setHidden(static_cast<std::uint32_t>(h));
      auto slot_ids = d.initSlots(static_cast<unsigned>(slots.size()));
      auto slot_rows = d.initSlotRows(static_cast<unsigned>(slots.size()));
      unsigned i = 0;
      for (const auto& [slot, rs] : slots) {
        slot_ids.set(i, static_cast<std::uint32_t>(slot));
        slot_rows.set(i, static_cast<std::uint32_t>(rs.size()));
        ++i;
      }
      const auto n = static_cast<std::int64_t>(rows.size());
      if (fp8) {
        d.setDtype(schemas::ActivationDtype::FP8E4M3);
        auto act = d.initActivations(static_cast<unsigned>(n * h));
        auto sc = d.initScales(static_cast<unsigned>(n * blocks * 4));
        for (std::int64_t r = 0; r < n; ++r) {
          const std::int64_t t = rows[static_cast<std::size_t>(r)].token;
          std::memcpy(act.begin() + r * h, call.xq.data() + t * h, static_cast<std::size_t>(h));
          std::memcpy(sc.begin() + r * blocks * 4, call.scales.data() + t * blocks, static_cast<std::size_t>(blocks * 4));
        }
      } else {
        d.setDtype(schemas::ActivationDtype::FP32);
        auto act = d.initActivations(static_cast<unsigned>(n * h * 4));
        for (std::int64_t r = 0; r < n; ++r) {
          const std::int64_t t = rows[static_cast<std::size_t>(r)].token;
          std::memcpy(act.begin() + r * h * 4, b.x + t * h, static_cast<std::size_t>(h * 4));
        }
      }
      bridge_.send<schemas::ExpertDispatch>(*peer, message);
    }
  }
}

void RemoteExpertExecutor::finish(Ticket ticket) {
  const auto it = calls_.find(ticket);
  if (it == calls_.end()) throw std::logic_error(fmt::format("remote experts: no call {} in flight", ticket));
  Call& call = it->second;
  const model::ExpertBatch& b = call.batch;
  const int layer = call.layer;
  const std::int64_t h = b.hidden;
  const Clock::time_point began = Clock::now();
  try {
    for (;;) {
      std::vector<Row> retry;
      {
        // Wait for every answer of this round, then take the outputs and re-route what failed.
        std::unique_lock lock(mutex_);
        const bool all = answered_.wait_until(lock, call.deadline, [&] {
          if (closed_) return true;
          for (const std::uint64_t id : call.batches) {
            if (!pending_.at(id).done) return false;
          }
          return true;
        });
        if (closed_) throw std::runtime_error("the node is stopping");
        if (!all) {
          std::set<std::string> silent;
          for (const std::uint64_t id : call.batches) {
            if (!pending_.at(id).done) silent.insert(pending_.at(id).host);
          }
          throw std::runtime_error(fmt::format("layer {}: expert host(s) {} did not answer within {} ms", layer,
                                               join(silent), options_.timeout.count()));
        }
        for (const std::uint64_t id : call.batches) {
          Pending& p = pending_.at(id);
          if (!p.error.empty()) {
            std::fprintf(stderr, "switchyard node %s: layer %d: %s; re-sending %zu rows to other replicas\n",
                         options_.node_name.c_str(), layer, p.error.c_str(), p.rows.size());
            call.excluded.insert(p.host);
            retry.insert(retry.end(), p.rows.begin(), p.rows.end());
            continue;
          }
          const bool bf16 = p.dtype == schemas::OutputDtype::BF16;
          const std::size_t width = bf16 ? 2 : 4;
          if (p.outputs.size() != p.rows.size() * static_cast<std::size_t>(h) * width) {
            throw std::runtime_error(fmt::format("layer {}: expert host {} sent {} output bytes for {} rows of {}",
                                                 layer, p.host, p.outputs.size(), p.rows.size(), h));
          }
          for (std::size_t r = 0; r < p.rows.size(); ++r) {
            float* out = b.expert_out + p.rows[r].out * h;
            const std::byte* src = p.outputs.data() + r * static_cast<std::size_t>(h) * width;
            if (bf16) {
              for (std::int64_t d = 0; d < h; ++d) {
                gpu::bf16 v;
                std::memcpy(&v, src + d * 2, 2);
                out[d] = gpu::bf16_to_float(v);
              }
            } else {
              std::memcpy(out, src, static_cast<std::size_t>(h) * 4);
            }
          }
        }
        for (const std::uint64_t id : call.batches) pending_.erase(id);
        call.batches.clear();
      }
      if (retry.empty()) break;
      if (Clock::now() >= call.deadline) {
        throw std::runtime_error(fmt::format("layer {}: {} rows still unserved after {} ms", layer, retry.size(),
                                             options_.timeout.count()));
      }
      send_round(call, std::move(retry));
    }
  } catch (...) {
    cancel(ticket);
    throw;
  }
  const std::uint64_t epoch = call.placement->epoch;
  calls_.erase(ticket);
  call_ended(epoch);
  if (combine_seconds_ != nullptr) combine_seconds_->Observe(std::chrono::duration<double>(Clock::now() - began).count());
}

std::unique_ptr<RemoteExpertExecutor> make_remote_experts(node::RoleContext& context,
                                                          const std::optional<balance::ExpertPlacement>& placement,
                                                          const gpu::Backend* backend, model::Numerics numerics) {
  if (!placement) return nullptr;
  return std::make_unique<RemoteExpertExecutor>(
      context.bridge, context.peers, *placement,
      RemoteExpertOptions{backend, numerics, std::chrono::milliseconds(4000), context.me.name, context.metrics});
}

}  // namespace sy::actors::dispatch
