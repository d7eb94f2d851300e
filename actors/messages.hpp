// Every message that crosses actors inside one node process, and the single CAF type-ID block
// that registers them (STYLE.md "Messages and actor interfaces in one place"). Wire messages from
// peers arrive as received<Schema>: the transport bridge (actors/node/transport_bridge.hpp) has
// already decoded and validated the frame, so actors read fields without re-checking the wire
// rules. Values are immutable once sent; a received<> shares its decoded frame read-only.
// New roles add their messages here, to the one block, and register nothing elsewhere.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/config/cluster_config.hpp"
#include "schemas/wire.hpp"
#include "transport/transport.hpp"

namespace sy::actors {

// ---- From peers (through the transport bridge).

// A validated wire message of one kind from one peer. `message` is never null when sent by the
// bridge. Only ever sent within the process: inspect() covers `from` alone (CAF needs an inspect
// to register the type; the decoded frame is never serialized).
template <class Schema>
struct received {
  transport::PeerId from = transport::invalid_peer;
  std::shared_ptr<const schemas::Decoded<Schema>> message;

  typename Schema::Reader reader() const { return message->reader(); }
};

template <class Inspector, class Schema>
typename Inspector::result_type inspect(Inspector& f, received<Schema>& x) {
  return f(caf::meta::type_name("received"), x.from);
}

// A transport connection came up. Outbound ones (we dialled) carry the configured name of the
// node we dialled; inbound ones learn the name from the peer's NodeHello.
struct peer_connected {
  transport::PeerId peer = transport::invalid_peer;
  std::string address;  // the peer's listen address
  bool outbound = false;
  std::string name;  // outbound only
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, peer_connected& x) {
  return f(caf::meta::type_name("peer_connected"), x.peer, x.address, x.outbound, x.name);
}

// The transport lost a peer: it said goodbye (graceful) or died / was cut off.
struct peer_down {
  transport::PeerId peer = transport::invalid_peer;
  bool graceful = false;
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, peer_down& x) {
  return f(caf::meta::type_name("peer_down"), x.peer, x.graceful, x.reason);
}

// ---- Node status (answers to status_atom).

// Where a configured peer stands, from this node's point of view. Ordered as a peer progresses.
enum class PeerState : std::uint8_t {
  waiting,    // no transport connection yet
  connected,  // connected, its NodeHello has not arrived
  hello,      // NodeHello received: known and usable
  ready,      // NodeReady received: its roles accept work
  left,       // closed politely
  lost,       // died or was cut off
};
std::string_view peer_state_name(PeerState state);

struct peer_status {
  std::string name;
  std::string address;  // configured transport address
  PeerState state = PeerState::waiting;
  std::vector<std::string> roles;   // role names from its NodeHello (empty before)
  std::uint32_t pid = 0;            // from its NodeHello (0 before)
  std::int64_t last_heartbeat_ms_ago = -1;  // -1: none yet
  std::string reason;                       // why it left or was lost
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, peer_status& x) {
  return f(caf::meta::type_name("peer_status"), x.name, x.address, x.state, x.roles, x.pid,
           x.last_heartbeat_ms_ago, x.reason);
}

struct node_status {
  std::string name;
  std::string address;
  std::vector<std::string> roles;  // role names (config::role_name), config order
  bool ready = false;     // every peer connected and hello'd (and NodeReady sent)
  bool draining = false;  // a Drain arrived
  std::vector<peer_status> peers;  // config order, this node left out
  std::uint64_t bad_frames = 0;    // frames the bridge refused (malformed, wrong kind, invalid)
  std::uint64_t unrouted = 0;      // valid messages of a kind no actor here takes yet
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("node_status"), x.name, x.address, x.roles, x.ready, x.draining, x.peers,
           x.bad_frames, x.unrouted);
}

}  // namespace sy::actors

// ---- The one type-ID block. Atoms are atom_constants in CAF 0.17 (text <= 10 characters).
CAF_BEGIN_TYPE_ID_BLOCK(sy_actors, caf::first_custom_type_id)
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::peer_connected))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::peer_down))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::peer_status))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::node_status))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::NodeHello>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::NodeReady>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::Heartbeat>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::WorkerLoad>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::Drain>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::Shutdown>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::Ack>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::PrefillJob>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::TokenBatch>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::RequestFailed>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::CancelRequest>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::KvReserveRequest>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::KvReservation>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::KvHandOff>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::KvRelease>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::ExpertDispatch>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::ExpertCombine>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::ExpertLoadReport>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::PlacementUpdate>))
  CAF_ADD_TYPE_ID(sy_actors, (sy::actors::received<sy::schemas::PlacementAck>))
  CAF_ADD_ATOM(sy_actors, sy::actors, status_atom, "status")
  CAF_ADD_ATOM(sy_actors, sy::actors, tick_atom, "tick")
CAF_END_TYPE_ID_BLOCK(sy_actors)

namespace sy::actors {
// Every wire kind has its received<> registered above (one row per MessageKind, 20 today).
inline constexpr std::size_t received_type_ids = 20;
static_assert(received_type_ids == schemas::message_kind_count,
              "a new MessageKind needs its received<Schema> row in the sy_actors type-ID block");
static_assert(caf::id_block::sy_actors::end - caf::id_block::sy_actors::begin == 4 + received_type_ids,
              "the sy_actors block lists the four node types and one received<> per MessageKind");
}  // namespace sy::actors
