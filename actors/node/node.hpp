// The node bootstrap: what `switchyard serve --config C --node N` runs. It listens on the node's
// transport address, starts a CAF actor system with the transport bridge and the node actor, dials
// its peers (retrying with backoff, bounded by the peer timeout, logging whom it waits for), waits
// until every peer is connected and hello'd, reports ready, and then serves until stopped; it keeps
// redialling peers it dials that went away (a restarted node rejoins). Stopping (SIGTERM/SIGINT
// via the caller, or a peer's Shutdown) closes the transport politely (peers see a graceful
// leave) and stops the actor system.
// Connections: one per pair of nodes; the node whose name sorts first dials the other.
// Threading: run_node blocks the calling thread (the bootstrap thread). The caller builds the
// transport (ucx in production, loopback in tests) and the stop latch and passes them in.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <memory>
#include <string>
#include <vector>

#include "actors/config/cluster_config.hpp"
#include "actors/messages.hpp"
#include "actors/node/node_role.hpp"
#include "transport/thread_annotations.hpp"
#include "transport/transport.hpp"

namespace sy::monitoring {
class Registry;
}

namespace sy::actors::node {

// Asks a running node to stop, from any thread (signal-waiting thread, actor, test). The first
// reason wins; a latch never resets.
class StopLatch {
 public:
  void request(const std::string& reason);
  bool requested() const;
  std::string reason() const;
  // Returns requested() after waiting at most `timeout` for a request.
  bool wait_for(std::chrono::milliseconds timeout);

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool requested_ SY_GUARDED_BY(mutex_) = false;
  std::string reason_ SY_GUARDED_BY(mutex_);
};

struct NodeOptions {
  // How long to wait for every peer; zero takes the config's cluster.peer_timeout_s.
  std::chrono::milliseconds peer_timeout{0};
  // Called once on the bootstrap thread when the node is ready (serve prints its line here).
  std::function<void(const node_status&)> on_ready;
  // How often the "waiting for peer ..." line is logged while starting.
  std::chrono::milliseconds wait_log_interval{5000};
  // Bounds the polite close of the transport when stopping.
  std::chrono::milliseconds close_timeout{2000};
  // Bounds one connection attempt to a peer.
  std::chrono::milliseconds connect_timeout{1000};
  // Where the node registers its metrics (switchyard_node_up, switchyard_node_peers, the bridge's
  // transport and frame counters); null: none. Main builds it and its exporter; it outlives run_node.
  monitoring::Registry* metrics = nullptr;
  // Builds the roles this node hosts (serve: from the config's roles and the model); empty or
  // null: none (the node only keeps its peer table). Called once on the bootstrap thread before
  // the transport listens; an exception from it stops the node and propagates.
  std::function<std::vector<std::unique_ptr<NodeRole>>(RoleContext&)> make_roles;
};

// A node that could not start: what() names the node and every peer it still waits for, e.g.
// "node router: timed out after 2 s waiting for peer decode1 at 127.0.0.1:17403 (not reachable: ...)".
class NodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs node `node_name` of `cluster` over `transport` (not listening yet) until `stop` is requested
// and returns 0 after a clean stop (also when stopped before ready). Closes the transport before it
// returns or throws. Throws ConfigError (no such node), TransportError (cannot listen), NodeError
// (peers did not come up within the peer timeout).
int run_node(const config::ClusterConfig& cluster, const std::string& node_name, transport::Transport& transport,
             StopLatch& stop, const NodeOptions& options = {});

// The line serve prints when ready: "node NAME ready (roles R..., peers P...)".
std::string ready_line(const node_status& status);

}  // namespace sy::actors::node
