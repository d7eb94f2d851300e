#include "actors/node/transport_bridge.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <utility>
#include <vector>

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

TransportBridge::TransportBridge(tr::Transport& transport, std::string log_name)
    : transport_(transport), log_name_(std::move(log_name)) {
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
  std::shared_ptr<const schemas::Decoded<Schema>> message;
  try {
    const auto frame = schemas::frame_of_am(static_cast<std::uint16_t>(kind), header, payload);
    message = std::make_shared<const schemas::Decoded<Schema>>(schemas::decode<Schema>(frame));
  } catch (const std::exception& e) {  // WireError, or bad_alloc on a hostile size
    bad_frames_.fetch_add(1, std::memory_order_relaxed);
    log_rate_limited(bad_frames_, fmt::format("refused a frame from peer {}: {}", from, e.what()));
    return;
  }
  const caf::actor dest = route_of(kind);
  if (!dest) {
    unrouted_.fetch_add(1, std::memory_order_relaxed);
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
    log_rate_limited(send_failures_, fmt::format("not sending an invalid message to peer {}: {}", peer, e.what()));
    return;
  }
  const schemas::AmParts parts = schemas::am_parts(kind, *frame);
  // The frame (the payload part, when there is one) must live until the completion runs.
  transport_.send(peer, static_cast<tr::AmId>(kind), parts.header, parts.payload,
                  [this, frame, kind, peer](const tr::Status& status) {
                    if (status.ok()) return;
                    // A peer that died or a closing transport is reported by peer_down / close;
                    // anything else is worth a line.
                    send_failures_.fetch_add(1, std::memory_order_relaxed);
                    if (status.code != tr::Errc::peer_failed && status.code != tr::Errc::closed) {
                      log_rate_limited(send_failures_, fmt::format("sending {} to peer {} failed: {}",
                                                                   schemas::kind_name(kind), peer, status.message));
                    }
                  });
}

BridgeStats TransportBridge::stats() const {
  return {delivered_.load(), bad_frames_.load(), unrouted_.load(), send_failures_.load()};
}

}  // namespace sy::actors::node
