#include "actors/node/transport_bridge.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <utility>
#include <vector>

#include "monitoring/metrics.hpp"

namespace sy::actors::node {
namespace {

namespace tr = sy::transport;
using schemas::MessageKind;

// Installs deliver<Schema> for every kind.
template <std::size_t... I, class Install>
void for_each_kind(std::index_sequence<I...>, Install&& install) {
  (install(std::type_identity<typename schemas::SchemaOf<static_cast<MessageKind>(I + 1)>::type>{}), ...);
}

}  // namespace

// The counts behind the bridge's metric families, per connection; a scrape sums them per peer
// name (a restarted peer's connections add up, so counters never go back). Shared with the
// registry, so a scrape during teardown still reads live memory.
// TODO(perf): one mutex per message is fine for the control plane; shard it when data-plane
// kinds (dispatch/combine) go through the bridge.
class BridgeMetrics : public prometheus::Collectable {
 public:
  enum Count : std::size_t { msgs_in, msgs_out, bytes_in, bytes_out, send_failed, bad_frame, count_kinds };

  void add(tr::PeerId peer, Count what, std::uint64_t n) {
    std::lock_guard lock(mutex_);
    counts_[peer][what] += n;
  }
  void add_unrouted() {
    std::lock_guard lock(mutex_);
    ++unrouted_;
  }
  void name(tr::PeerId peer, const std::string& peer_name) {
    std::lock_guard lock(mutex_);
    names_[peer] = peer_name;
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    using monitoring::Metric;
    using monitoring::Registry;
    std::map<std::string, std::array<std::uint64_t, count_kinds>> by_name;
    std::uint64_t bad = 0, unrouted = 0;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [peer, c] : counts_) {
        const auto it = names_.find(peer);
        auto& sum = by_name[it == names_.end() ? "unknown" : it->second];
        for (std::size_t k = 0; k < count_kinds; ++k) sum[k] += c[k];
        bad += c[bad_frame];
      }
      unrouted = unrouted_;
    }
    auto series = [](Metric m, std::initializer_list<std::string> values, std::uint64_t value) {
      prometheus::ClientMetric c;
      for (const auto& [k, v] : monitoring::labels(m, values)) c.label.push_back({k, v});
      c.counter.value = static_cast<double>(value);
      return c;
    };
    prometheus::MetricFamily messages = Registry::describe(Metric::transport_messages);
    prometheus::MetricFamily bytes = Registry::describe(Metric::transport_bytes);
    prometheus::MetricFamily errors = Registry::describe(Metric::transport_errors);
    for (const auto& [peer, c] : by_name) {
      messages.metric.push_back(series(Metric::transport_messages, {peer, "in"}, c[msgs_in]));
      messages.metric.push_back(series(Metric::transport_messages, {peer, "out"}, c[msgs_out]));
      bytes.metric.push_back(series(Metric::transport_bytes, {peer, "in"}, c[bytes_in]));
      bytes.metric.push_back(series(Metric::transport_bytes, {peer, "out"}, c[bytes_out]));
      errors.metric.push_back(series(Metric::transport_errors, {peer, "send_failed"}, c[send_failed]));
      errors.metric.push_back(series(Metric::transport_errors, {peer, "bad_frame"}, c[bad_frame]));
    }
    prometheus::MetricFamily bad_frames = Registry::describe(Metric::node_bad_frames);
    bad_frames.metric.push_back(series(Metric::node_bad_frames, {}, bad));
    prometheus::MetricFamily unrouted_frames = Registry::describe(Metric::node_unrouted_frames);
    unrouted_frames.metric.push_back(series(Metric::node_unrouted_frames, {}, unrouted));
    return {messages, bytes, errors, bad_frames, unrouted_frames};
  }

 private:
  mutable std::mutex mutex_;
  std::map<tr::PeerId, std::array<std::uint64_t, count_kinds>> counts_ SY_GUARDED_BY(mutex_);
  std::map<tr::PeerId, std::string> names_ SY_GUARDED_BY(mutex_);
  std::uint64_t unrouted_ SY_GUARDED_BY(mutex_) = 0;
};

TransportBridge::TransportBridge(tr::Transport& transport, std::string log_name)
    : transport_(transport), log_name_(std::move(log_name)), metrics_(std::make_shared<BridgeMetrics>()) {
  for_each_kind(std::make_index_sequence<schemas::message_kind_count>{}, [this](auto type) {
    using Schema = typename decltype(type)::type;
    transport_.set_handler(static_cast<tr::AmId>(schemas::kind_of<Schema>),
                           [this](tr::PeerId from, tr::Bytes header, tr::Bytes payload) {
                             deliver<Schema>(from, header, payload);
                           });
  });
  transport_.on_peer_connected([this](tr::PeerId peer, const std::string& address) {
    caf::actor dest;
    {
      std::lock_guard lock(mutex_);
      dest = peer_events_;
    }
    if (dest) caf::anon_send(dest, peer_connected{peer, address, false, {}});
  });
  transport_.on_peer_failure([this](tr::PeerId peer, const tr::PeerDown& why) {
    caf::actor dest;
    {
      std::lock_guard lock(mutex_);
      dest = peer_events_;
    }
    if (dest) caf::anon_send(dest, peer_down{peer, why.graceful, why.reason});
  });
}

TransportBridge::~TransportBridge() {
  // REQUIRES (class comment): the transport is closed, so no handler runs any more. Removing them
  // keeps a transport that outlives the bridge from calling into freed memory.
  for (std::size_t k = 1; k <= schemas::message_kind_count; ++k) {
    transport_.set_handler(static_cast<tr::AmId>(k), {});
  }
  transport_.on_peer_connected({});
  transport_.on_peer_failure({});
}

void TransportBridge::route(MessageKind kind, caf::actor dest) {
  if (!schemas::is_message_kind(static_cast<std::uint16_t>(kind))) return;
  std::lock_guard lock(mutex_);
  routes_[static_cast<std::size_t>(kind)] = std::move(dest);
}

void TransportBridge::route_peer_events(caf::actor dest) {
  std::lock_guard lock(mutex_);
  peer_events_ = std::move(dest);
}

caf::actor TransportBridge::route_of(MessageKind kind) const {
  std::lock_guard lock(mutex_);
  return routes_[static_cast<std::size_t>(kind)];
}

void TransportBridge::log_rate_limited(std::atomic<std::uint64_t>& counter, const std::string& line) {
  // The first ten of a kind of trouble, then every thousandth: a flood must not drown the log.
  const std::uint64_t n = counter.load(std::memory_order_relaxed);
  if (n <= 10 || n % 1000 == 0) {
    std::fprintf(stderr, "switchyard node %s: %s (%llu so far)\n", log_name_.c_str(), line.c_str(),
                 static_cast<unsigned long long>(n));
  }
}

template <class Schema>
void TransportBridge::deliver(tr::PeerId from, tr::Bytes header, tr::Bytes payload) {
  constexpr MessageKind kind = schemas::kind_of<Schema>;
  metrics_->add(from, BridgeMetrics::msgs_in, 1);
  metrics_->add(from, BridgeMetrics::bytes_in, header.size() + payload.size());
  std::shared_ptr<const schemas::Decoded<Schema>> message;
  try {
    const auto frame = schemas::frame_of_am(static_cast<std::uint16_t>(kind), header, payload);
    message = std::make_shared<const schemas::Decoded<Schema>>(schemas::decode<Schema>(frame));
  } catch (const std::exception& e) {  // WireError, or bad_alloc on a hostile size
    bad_frames_.fetch_add(1, std::memory_order_relaxed);
    metrics_->add(from, BridgeMetrics::bad_frame, 1);
    log_rate_limited(bad_frames_, fmt::format("refused a frame from peer {}: {}", from, e.what()));
    return;
  }
  const caf::actor dest = route_of(kind);
  if (!dest) {
    unrouted_.fetch_add(1, std::memory_order_relaxed);
    metrics_->add_unrouted();
    log_rate_limited(unrouted_, fmt::format("no actor here takes {} (from peer {}); dropped",
                                            schemas::kind_name(kind), from));
    return;
  }
  caf::anon_send(dest, received<Schema>{from, std::move(message)});
  delivered_.fetch_add(1, std::memory_order_relaxed);
}

void TransportBridge::send_kind(MessageKind kind, tr::PeerId peer, capnp::MessageBuilder& message) {
  std::shared_ptr<schemas::Frame> frame;
  try {
    frame = std::make_shared<schemas::Frame>(schemas::visit_kind(kind, [&](auto type) {
      using Schema = typename decltype(type)::type;
      return schemas::encode<Schema>(message);
    }));
  } catch (const std::exception& e) {
    send_failures_.fetch_add(1, std::memory_order_relaxed);
    metrics_->add(peer, BridgeMetrics::send_failed, 1);
    log_rate_limited(send_failures_, fmt::format("not sending an invalid message to peer {}: {}", peer, e.what()));
    return;
  }
  const schemas::AmParts parts = schemas::am_parts(kind, *frame);
  const std::uint64_t size = parts.header.size() + parts.payload.size();
  // The frame (the payload part, when there is one) must live until the completion runs.
  transport_.send(peer, static_cast<tr::AmId>(kind), parts.header, parts.payload,
                  [this, frame, kind, peer, size](const tr::Status& status) {
                    if (status.ok()) {
                      metrics_->add(peer, BridgeMetrics::msgs_out, 1);
                      metrics_->add(peer, BridgeMetrics::bytes_out, size);
                      return;
                    }
                    metrics_->add(peer, BridgeMetrics::send_failed, 1);
                    // A peer that died or a closing transport is reported by peer_down / close;
                    // anything else is worth a line.
                    send_failures_.fetch_add(1, std::memory_order_relaxed);
                    if (status.code != tr::Errc::peer_failed && status.code != tr::Errc::closed) {
                      log_rate_limited(send_failures_, fmt::format("sending {} to peer {} failed: {}",
                                                                   schemas::kind_name(kind), peer, status.message));
                    }
                  });
}

void TransportBridge::export_metrics(monitoring::Registry& registry) { registry.add_collector(metrics_); }

void TransportBridge::name_peer(tr::PeerId peer, const std::string& name) { metrics_->name(peer, name); }

BridgeStats TransportBridge::stats() const {
  return {delivered_.load(), bad_frames_.load(), unrouted_.load(), send_failures_.load()};
}

}  // namespace sy::actors::node
