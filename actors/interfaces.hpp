// Every typed-actor interface of a node process, in data-flow order (STYLE.md "Messages and actor
// interfaces in one place"): read top to bottom, a message's path through the node follows.
//
//   peers ──UCX──► transport bridge (not an actor: the transport's progress thread decodes and
//                  posts; actors/node/transport_bridge.hpp)
//          ──received<NodeHello|NodeReady|Heartbeat|Drain|Shutdown|Ack>, peer_connected,
//            peer_down──► node actor (per process: peer table, readiness, heartbeats, status)
//
// The roles (router, prefill, decode, expert_host, load_stats, controller) join below the node
// actor as they land; each takes the received<> kinds its role consumes from the bridge.
#pragma once

#include <caf/all.hpp>

#include "actors/messages.hpp"

namespace sy::actors {

// The node actor: one per process. Owns the peer table (who is configured, connected, hello'd,
// ready, gone), sends this node's NodeHello on every new connection and NodeReady once every peer
// is hello'd, beats Heartbeats (tick_atom is its own timer), answers Drain/Shutdown with Ack, and
// reports its state.
using node_actor = caf::typed_actor<
    // From the bridge (inbound connections, failures) and the bootstrap (outbound connections).
    caf::reacts_to<peer_connected>,
    caf::reacts_to<peer_down>,
    // The control plane (schemas/control.capnp), from peers.
    caf::reacts_to<received<schemas::NodeHello>>,
    caf::reacts_to<received<schemas::NodeReady>>,
    caf::reacts_to<received<schemas::Heartbeat>>,
    caf::reacts_to<received<schemas::Drain>>,
    caf::reacts_to<received<schemas::Shutdown>>,
    caf::reacts_to<received<schemas::Ack>>,
    // Its heartbeat timer.
    caf::reacts_to<tick_atom>,
    // Operators, the bootstrap (readiness) and tests.
    caf::replies_to<status_atom>::with<node_status>>;

}  // namespace sy::actors
