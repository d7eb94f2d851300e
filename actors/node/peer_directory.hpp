// Which configured peer is reachable over which transport connection, for the roles of one node.
// The node actor is the only writer (a peer is up once its NodeHello arrived, down when the
// transport reports it gone); roles read it from their own threads to address messages by node
// name (NodeRef.name in the schemas) and subscribe to learn when a peer goes away, so they can fail
// or release what that peer held (DESIGN.md "Failure": a lost decode worker's requests fail with
// a retryable error). CAF-free.
// Threading: every method is safe from any thread. Subscribers are called on the writer's thread
// (the node actor), outside the directory's lock, and must be quick (post work, do not block).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/config/cluster_config.hpp"
#include "transport/thread_annotations.hpp"
#include "transport/transport.hpp"

namespace sy::actors::node {

struct PeerChange {
  std::string name;
  transport::PeerId peer = transport::invalid_peer;
  bool up = false;        // true: hello'd (usable); false: gone
  bool graceful = false;  // down only: said goodbye
  std::string reason;     // down only
};

class PeerDirectory {
 public:
  using Subscriber = std::function<void(const PeerChange&)>;

  // Writer side (the node actor).
  void up(const std::string& name, transport::PeerId peer, std::vector<config::Role> roles);
  // A connection went away; no-op (returns false) when it is not the peer's current connection.
  bool down(transport::PeerId peer, bool graceful, const std::string& reason);

  // The current connection of a hello'd peer, if any.
  std::optional<transport::PeerId> find(const std::string& name) const;
  // The name of a hello'd connection, or "" when unknown.
  std::string name_of(transport::PeerId peer) const;
  // Hello'd peers that host `role`, by name (sorted).
  std::vector<std::string> with_role(config::Role role) const;

  // Calls `subscriber` for every later change until unsubscribe(handle) returns; after that it
  // is never called again (so a role may then go away).
  std::uint64_t subscribe(Subscriber subscriber);
  void unsubscribe(std::uint64_t handle);

 private:
  struct Entry {
    transport::PeerId peer = transport::invalid_peer;
    std::vector<config::Role> roles;
  };
  void notify(const PeerChange& change);

  mutable std::mutex mutex_;
  std::map<std::string, Entry> up_ SY_GUARDED_BY(mutex_);  // by name: hello'd peers only
  // Held while subscribers run (never together with mutex_), so unsubscribe waits for a call in
  // progress.
  std::mutex notify_mutex_;
  std::map<std::uint64_t, Subscriber> subscribers_ SY_GUARDED_BY(notify_mutex_);
  std::uint64_t next_handle_ SY_GUARDED_BY(notify_mutex_) = 1;
};

}  // namespace sy::actors::node
