#include "actors/dispatch/remote_experts.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "gpu/dtypes.hpp"
#include "gpu/quant.hpp"

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

void RemoteExpertExecutor::run(const model::ExpertBatch& b) {
  const Clock::time_point deadline = Clock::now() + options_.timeout;
  std::shared_ptr<const balance::ExpertPlacement> placement;
  std::set<std::string> excluded;
  {
    std::lock_guard lock(mutex_);
    if (closed_) throw std::runtime_error("the node is stopping");
    placement = placement_;
    excluded = lost_;
  }
  const int layer = static_cast<int>(b.layer);
  if (!placement->is_moe_layer(layer)) {
    throw std::runtime_error(fmt::format("layer {} has no routed experts in placement epoch {}", layer, placement->epoch));
  }
  const bool fp8 = options_.numerics == model::Numerics::fp8act;
  const std::int64_t h = b.hidden;
  const std::int64_t blocks = h / gpu::kQuantBlock;
  std::vector<gpu::fp8_e4m3> xq;
  std::vector<float> scales;
  if (fp8) {
    xq.resize(static_cast<std::size_t>(b.tokens * h));
    scales.resize(static_cast<std::size_t>(b.tokens * blocks));
    model::quantize_activations(*options_.backend, b.x, b.tokens, h, h, xq.data(), scales.data());
  }

  std::vector<Row> todo;
  todo.reserve(static_cast<std::size_t>(b.tokens * b.top_k));
  for (std::int64_t s = 0; s < b.tokens * b.top_k; ++s) todo.push_back(Row{s / b.top_k, s, b.expert_ids[s], -1});

  while (!todo.empty()) {
    // Route every row to a replica on a host not excluded, spread by token.
    std::map<std::string, std::map<int, std::vector<Row>>> by_host;
    for (Row& r : todo) {
      std::vector<int> live;
      for (const int slot : placement->replicas(layer, r.expert)) {
        const std::string& host = placement->hosts[static_cast<std::size_t>(placement->host_of_slot[static_cast<std::size_t>(slot)])];
        if (excluded.count(host) == 0) live.push_back(slot);
      }
      if (live.empty()) {
        throw std::runtime_error(fmt::format("layer {}: expert {} has no replica on a live expert host (lost: {})",
                                             layer, r.expert, excluded.empty() ? "none" : join(excluded)));
      }
      r.slot = live[static_cast<std::size_t>(r.token) % live.size()];
      const std::string& host = placement->hosts[static_cast<std::size_t>(placement->host_of_slot[static_cast<std::size_t>(r.slot)])];
      by_host[host][r.slot].push_back(r);
    }
    todo.clear();

    std::vector<std::uint64_t> batches;
    for (auto& [host, slots] : by_host) {
      const auto peer = peers_.find(host);
      std::vector<Row> rows;
      for (auto& [slot, rs] : slots) rows.insert(rows.end(), rs.begin(), rs.end());
      if (!peer) {
        excluded.insert(host);
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
      batches.push_back(id);
      d.setBatchId(id);
      d.setLayer(static_cast<std::uint16_t>(layer));
      d.setEpoch(placement->epoch);
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
          std::memcpy(act.begin() + r * h, xq.data() + t * h, static_cast<std::size_t>(h));
          std::memcpy(sc.begin() + r * blocks * 4, scales.data() + t * blocks, static_cast<std::size_t>(blocks * 4));
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

    // Wait for every answer of this round, then take the outputs and re-route what failed.
    std::unique_lock lock(mutex_);
    const bool all = answered_.wait_until(lock, deadline, [&] {
      if (closed_) return true;
      for (const std::uint64_t id : batches) {
        if (!pending_.at(id).done) return false;
      }
      return true;
    });
    if (closed_) {
      for (const std::uint64_t id : batches) pending_.erase(id);
      throw std::runtime_error("the node is stopping");
    }
    if (!all) {
      std::set<std::string> silent;
      for (const std::uint64_t id : batches) {
        if (!pending_.at(id).done) silent.insert(pending_.at(id).host);
      }
      for (const std::uint64_t id : batches) pending_.erase(id);
      throw std::runtime_error(fmt::format("layer {}: expert host(s) {} did not answer within {} ms", layer,
                                           join(silent), options_.timeout.count()));
    }
    for (const std::uint64_t id : batches) {
      Pending& p = pending_.at(id);
      if (!p.error.empty()) {
        std::fprintf(stderr, "switchyard node %s: layer %d: %s; re-sending %zu rows to other replicas\n",
                     options_.node_name.c_str(), layer, p.error.c_str(), p.rows.size());
        excluded.insert(p.host);
        todo.insert(todo.end(), p.rows.begin(), p.rows.end());
        continue;
      }
      const bool bf16 = p.dtype == schemas::OutputDtype::BF16;
      const std::size_t width = bf16 ? 2 : 4;
      if (p.outputs.size() != p.rows.size() * static_cast<std::size_t>(h) * width) {
        pending_.clear();
        throw std::runtime_error(fmt::format("layer {}: expert host {} sent {} output bytes for {} rows of {}", layer,
                                             p.host, p.outputs.size(), p.rows.size(), h));
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
    for (const std::uint64_t id : batches) pending_.erase(id);
    if (!todo.empty() && Clock::now() >= deadline) {
      throw std::runtime_error(fmt::format("layer {}: {} rows still unserved after {} ms", layer, todo.size(),
                                           options_.timeout.count()));
    }
  }
}

}  // namespace sy::actors::dispatch
