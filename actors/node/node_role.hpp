// What a role (router, prefill, decode; expert_host, load_stats and controller later) gets from
// the node process that hosts it, and what the node asks of it. The node bootstrap (node.hpp)
// builds the roles through NodeOptions::make_roles after the transport bridge and the node actor
// exist and before the transport listens, so every route is in place before the first peer
// message. A role spawns its own actor(s) in `system`, routes the wire kinds it consumes through
// `bridge`, and runs heavy compute on its own thread, never on CAF's scheduler threads.
// Stopping: the bootstrap closes the transport (no handler runs afterwards), then calls stop() on
// each role, then destroys the roles, then the actor system.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "actors/config/cluster_config.hpp"
#include "actors/node/peer_directory.hpp"
#include "actors/node/transport_bridge.hpp"

namespace sy::monitoring {
class Registry;
}

namespace sy::actors::node {

struct RoleContext {
  const config::ClusterConfig& cluster;
  const config::NodeConfig& me;
  caf::actor_system& system;
  TransportBridge& bridge;
  PeerDirectory& peers;
  monitoring::Registry* metrics = nullptr;  // null: no metrics
};

class NodeRole {
 public:
  virtual ~NodeRole() = default;
  // "router", "decode", ...: for logs.
  virtual std::string name() const = 0;
  // Ends the role's work: fail or cancel what it holds (peers are gone or going), join its
  // threads, exit its actors. Called once, after the transport closed.
  virtual void stop() = 0;
};

}  // namespace sy::actors::node
