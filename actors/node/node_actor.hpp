// The node actor (interfaces.hpp: node_actor): one per node process. It keeps the peer table,
// greets every new connection with this node's NodeHello, announces NodeReady once every
// configured peer is hello'd, beats Heartbeats, answers Drain and Shutdown with Ack, and reports
// node_status. Spawned by the node bootstrap (node.hpp), which dials the peers and waits on it.
// Threading: an actor; its state is its own. The arguments' pointees outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <caf/all.hpp>

#include "actors/config/cluster_config.hpp"
#include "actors/interfaces.hpp"
#include "actors/node/peer_directory.hpp"
#include "actors/node/transport_bridge.hpp"

namespace sy::actors::node {

struct NodeActorArgs {
  const config::ClusterConfig* cluster = nullptr;
  std::string self;                    // this node's configured name
  TransportBridge* bridge = nullptr;   // its transport is listening
  PeerDirectory* peers = nullptr;      // kept current: hello'd peers up, lost ones down
  std::uint64_t incarnation = 0;       // non-zero, random per process start
  // Called (on the actor's thread) when a peer orders this node to shut down; must be quick.
  std::function<void(const std::string& reason)> request_stop;
};

// Spawns the node actor and routes the control-plane kinds and peer events to it.
node_actor spawn_node_actor(caf::actor_system& system, NodeActorArgs args);

// "router load_stats".
std::string roles_text(const std::vector<std::string>& roles);

}  // namespace sy::actors::node
