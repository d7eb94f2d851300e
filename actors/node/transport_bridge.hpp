// The transport bridge: the one place where transport AMs become CAF messages and back. It installs
// a handler for every schemas::MessageKind on a Transport; each handler (on the transport's
// progress thread) decodes and validates the frame (schemas/wire.hpp), wraps it in received<Schema>
// and posts it to the actor routed for its kind. A bad frame (malformed, wrong kind or version,
// breaking a field rule) is refused, logged (rate-limited) and counted, never a crash; a valid
// message of a kind nobody here takes yet is counted as unrouted. Connection events go to the peer
// events actor as peer_connected / peer_down. send<Schema>() is the way back out.
// Metrics (export_metrics): messages, bytes and errors per peer, bad and unrouted frames; the
// peer label is the name the node actor gives a connection (name_peer), "unknown" before.
// Threading: routes and counters are safe from any thread. Ownership: the node bootstrap owns it;
// the Transport must be closed before the bridge is destroyed (handlers point at it).
#pragma once

#include <atomic>
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <caf/all.hpp>

#include "actors/messages.hpp"
#include "schemas/wire.hpp"
#include "transport/thread_annotations.hpp"
#include "transport/transport.hpp"

namespace sy::monitoring {
class Registry;
}

namespace sy::actors::node {

class BridgeMetrics;  // per-peer counts behind the bridge's metric families (transport_bridge.cpp)

struct BridgeStats {
  std::uint64_t delivered = 0;      // posted to an actor
  std::uint64_t bad_frames = 0;     // refused by the decoder
  std::uint64_t unrouted = 0;       // valid, but no actor takes the kind
  std::uint64_t send_failures = 0;  // encode or transport errors on the way out
};

class TransportBridge {
 public:
  // `log_name` prefixes log lines ("switchyard node decode0: ..."). Installs the handlers at once;
  // messages that arrive before a route exists are counted as unrouted.
  TransportBridge(transport::Transport& transport, std::string log_name);
  ~TransportBridge();
  TransportBridge(const TransportBridge&) = delete;
  TransportBridge& operator=(const TransportBridge&) = delete;

  // Where received<Schema> of `kind` goes (replaces the previous route; an invalid handle removes).
  // The actor must accept received<Schema> for that kind.
  void route(schemas::MessageKind kind, caf::actor dest);
  // Where peer_connected (inbound connections) and peer_down go.
  void route_peer_events(caf::actor dest);

  // Encodes (validating) and sends one message. Never throws: an invalid message or a failed send
  // is logged and counted (send_failures).
  template <class Schema>
  void send(transport::PeerId peer, capnp::MessageBuilder& message) {
    send_kind(schemas::kind_of<Schema>, peer, message);
  }

  BridgeStats stats() const;
  // Serves this bridge's counts through `registry` from now on (switchyard_transport_messages_total,
  // _bytes_total, _errors_total per peer; switchyard_node_bad_frames_total, _unrouted_frames_total).
  // The counts start at the bridge's construction; the registry holds them weakly.
  void export_metrics(monitoring::Registry& registry);
  // The peer label of connection `peer` (its node name); called when the name becomes known.
  void name_peer(transport::PeerId peer, const std::string& name);
  transport::Transport& transport() { return transport_; }

 private:
  template <class Schema>
  void deliver(transport::PeerId from, transport::Bytes header, transport::Bytes payload);
  void send_kind(schemas::MessageKind kind, transport::PeerId peer, capnp::MessageBuilder& message);
  caf::actor route_of(schemas::MessageKind kind) const;
  void log_rate_limited(std::atomic<std::uint64_t>& counter, const std::string& line);

  transport::Transport& transport_;
  const std::string log_name_;
  mutable std::mutex mutex_;
  std::array<caf::actor, schemas::message_kind_count + 1> routes_ SY_GUARDED_BY(mutex_);  // [kind]
  caf::actor peer_events_ SY_GUARDED_BY(mutex_);
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint64_t> bad_frames_{0};
  std::atomic<std::uint64_t> unrouted_{0};
  std::atomic<std::uint64_t> send_failures_{0};
  const std::shared_ptr<BridgeMetrics> metrics_;  // shared with the registry while it scrapes
};

}  // namespace sy::actors::node
