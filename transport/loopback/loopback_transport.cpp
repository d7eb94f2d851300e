#include "transport/loopback/loopback_transport.hpp"

#include <cstdio>
#include <cstring>
#include <future>
#include <vector>

#include "transport/task_thread.hpp"

namespace sy::transport::loopback {

namespace detail {

struct Link {
  std::weak_ptr<Node> remote;
  PeerId remote_peer = invalid_peer;  // our id at the remote node
  bool down = false;
};

struct Region {
  std::byte* base = nullptr;
  std::size_t size = 0;
};

// A packed loopback key: which node and which of its regions.
struct PackedKey {
  std::uint64_t node_id = 0;
  std::uint64_t region_id = 0;
};

// The shared state of one LoopbackTransport. Remote nodes post tasks to its thread; tasks that
// run there capture it by raw pointer (the thread is joined before the node dies), tasks for
// other threads by shared_ptr.
struct Node {
  explicit Node(std::uint64_t node_id) : id(node_id) {}

  const std::uint64_t id;
  TaskThread thread;

  mutable std::mutex mutex;
  std::string name SY_GUARDED_BY(mutex);
  bool closed SY_GUARDED_BY(mutex) = false;
  PeerId next_peer SY_GUARDED_BY(mutex) = 1;
  std::map<PeerId, Link> links SY_GUARDED_BY(mutex);
  std::map<AmId, std::shared_ptr<const AmHandler>> handlers SY_GUARDED_BY(mutex);
  std::shared_ptr<const PeerFailureHandler> failure_handler SY_GUARDED_BY(mutex);
  std::shared_ptr<const PeerConnectHandler> connect_handler SY_GUARDED_BY(mutex);
  std::map<std::uint64_t, Region> regions SY_GUARDED_BY(mutex);
  std::uint64_t next_region SY_GUARDED_BY(mutex) = 1;

  std::atomic<std::uint64_t> am_sent{0}, am_received{0}, am_dropped_no_handler{0},
      handler_exceptions{0}, rma_ops{0}, peers_failed{0};

  std::string display_name() const {
    std::lock_guard lock(mutex);
    return name.empty() ? "loopback:anon-" + std::to_string(id) : name;
  }

  // Runs `done` on this node's thread, or inline once that thread has stopped.
  void complete(const Completion& done, Status status) {
    if (!done) {
      return;
    }
    auto task = [done, status] { done(status); };
    if (!thread.post(task)) {
      task();
    }
  }

  // On this node's thread: a message from our peer `from`.
  Status deliver(PeerId from, AmId am_id, Bytes header, Bytes payload) {
    std::shared_ptr<const AmHandler> handler;
    {
      std::lock_guard lock(mutex);
      auto link = links.find(from);
      if (closed || link == links.end() || link->second.down) {
        return {Errc::peer_failed, "send am " + std::to_string(am_id) + ": peer " + name +
                                       " is closed or cut off"};
      }
      if (auto it = handlers.find(am_id); it != handlers.end()) {
        handler = it->second;
      }
    }
    if (!handler) {
      am_dropped_no_handler.fetch_add(1, std::memory_order_relaxed);
      return Status::success();  // as over the wire: the sender does not learn of the drop
    }
    am_received.fetch_add(1, std::memory_order_relaxed);  // before: the handler may wake a reader
    try {
      (*handler)(from, header, payload);
    } catch (const std::exception& e) {
      handler_exceptions.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "sy::transport::loopback: handler for am %u from peer %llu threw: %s\n",
                   am_id, static_cast<unsigned long long>(from), e.what());
    }
    return Status::success();
  }

  // On this node's thread: a put (write) or get from our peer `from`.
  Status rma(PeerId from, bool write, void* local, std::size_t size, std::uint64_t remote_addr,
             const std::vector<std::byte>& key) {
    const char* op = write ? "put" : "get";
    auto fail = [&](Errc code, const std::string& what) {
      return Status{code, std::string(op) + " of " + std::to_string(size) + " bytes at peer " +
                              name + ": " + what};
    };
    std::lock_guard lock(mutex);
    auto link = links.find(from);
    if (closed || link == links.end() || link->second.down) {
      return fail(Errc::peer_failed, "peer is closed or cut off");
    }
    PackedKey packed;
    if (key.size() != sizeof(packed)) {
      return fail(Errc::invalid_argument, "remote key has " + std::to_string(key.size()) +
                                              " bytes, not a loopback key");
    }
    std::memcpy(&packed, key.data(), sizeof(packed));
    auto region = regions.find(packed.region_id);
    if (packed.node_id != id || region == regions.end()) {
      return fail(Errc::invalid_argument, "remote key names no region registered there");
    }
    const auto base = reinterpret_cast<std::uintptr_t>(region->second.base);
    if (remote_addr < base || size > region->second.size ||
        remote_addr - base > region->second.size - size) {
      return fail(Errc::invalid_argument, "range outside the keyed region of " +
                                              std::to_string(region->second.size) + " bytes");
    }
    auto* remote = reinterpret_cast<std::byte*>(remote_addr);
    if (write) {
      std::memcpy(remote, local, size);
    } else {
      std::memcpy(local, remote, size);
    }
    return Status::success();
  }

  // On this node's thread: our peer `peer` closed or died.
  void peer_down(PeerId peer, const PeerDown& why) {
    std::shared_ptr<const PeerFailureHandler> handler;
    {
      std::lock_guard lock(mutex);
      auto link = links.find(peer);
      if (closed || link == links.end() || link->second.down) {
        return;
      }
      link->second.down = true;
      handler = failure_handler;
    }
    peers_failed.fetch_add(1, std::memory_order_relaxed);
    if (handler && *handler) {
      (*handler)(peer, why);
    }
  }
};

}  // namespace detail

using detail::Node;

namespace {

class LoopbackRegion final : public MemoryRegion {
 public:
  LoopbackRegion(std::weak_ptr<Node> node, std::uint64_t region_id, std::byte* base,
                 std::size_t size)
      : node_(std::move(node)), region_id_(region_id), base_(base), size_(size) {
    detail::PackedKey packed{node_.lock()->id, region_id};
    key_.resize(sizeof(packed));
    std::memcpy(key_.data(), &packed, sizeof(packed));
  }
  ~LoopbackRegion() override {
    if (auto node = node_.lock()) {
      std::lock_guard lock(node->mutex);
      node->regions.erase(region_id_);
    }
  }
  std::byte* data() const override { return base_; }
  std::size_t size() const override { return size_; }
  Bytes packed_key() const override { return key_; }

 private:
  std::weak_ptr<Node> node_;
  std::uint64_t region_id_;
  std::byte* base_;
  std::size_t size_;
  std::vector<std::byte> key_;
};

// Where an operation from `node` to `peer` goes, or why it cannot.
struct Route {
  std::shared_ptr<Node> remote;
  PeerId remote_peer = invalid_peer;
  Status status;
};

Route route(Node& node, PeerId peer, const std::string& what) {
  std::lock_guard lock(node.mutex);
  const std::string prefix = what + " to peer " + std::to_string(peer) + ": ";
  if (node.closed) {
    return {nullptr, invalid_peer, {Errc::closed, prefix + "transport is closed"}};
  }
  auto link = node.links.find(peer);
  if (link == node.links.end()) {
    return {nullptr, invalid_peer, {Errc::invalid_argument, prefix + "unknown peer"}};
  }
  auto remote = link->second.remote.lock();
  if (link->second.down || !remote) {
    return {nullptr, invalid_peer, {Errc::peer_failed, prefix + "peer is down"}};
  }
  return {std::move(remote), link->second.remote_peer, Status::success()};
}

Status peer_gone(const std::string& what, PeerId peer) {
  return {Errc::peer_failed, what + " to peer " + std::to_string(peer) + ": peer is closed"};
}

}  // namespace

void LoopbackFabric::bind(const std::string& name, const std::shared_ptr<Node>& node) {
  std::lock_guard lock(mutex_);
  auto& slot = nodes_[name];
  if (slot.lock()) {
    throw TransportError(Errc::invalid_argument,
                         "listen on loopback '" + name + "': name already taken");
  }
  slot = node;
}

void LoopbackFabric::unbind(const std::string& name, const Node* node) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(name);
  if (it != nodes_.end()) {
    auto bound = it->second.lock();
    if (!bound || bound.get() == node) {
      nodes_.erase(it);
    }
  }
}

std::shared_ptr<Node> LoopbackFabric::find(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(name);
  return it == nodes_.end() ? nullptr : it->second.lock();
}

LoopbackTransport::LoopbackTransport(std::shared_ptr<LoopbackFabric> fabric)
    : fabric_(std::move(fabric)),
      node_(std::make_shared<Node>(fabric_->next_node_id_.fetch_add(1))) {}

LoopbackTransport::~LoopbackTransport() { shut_down(true); }

void LoopbackTransport::listen(const std::string& address) {
  if (address.empty()) {
    throw TransportError(Errc::invalid_argument, "listen on loopback: empty name");
  }
  {
    std::lock_guard lock(node_->mutex);
    if (node_->closed) {
      throw TransportError(Errc::closed, "listen on loopback '" + address + "': closed");
    }
    if (!node_->name.empty()) {
      throw TransportError(Errc::invalid_argument, "listen on loopback '" + address +
                                                       "': already listening as " + node_->name);
    }
  }
  fabric_->bind(address, node_);
  std::lock_guard lock(node_->mutex);
  node_->name = address;
}

std::string LoopbackTransport::local_address() const {
  std::lock_guard lock(node_->mutex);
  return node_->name;
}

PeerId LoopbackTransport::connect(const std::string& address, std::chrono::milliseconds timeout) {
  const std::string what = "connect to loopback '" + address + "'";
  if (node_->thread.on_this_thread()) {
    throw TransportError(Errc::invalid_argument, what + ": called on the delivery thread");
  }
  auto target = fabric_->find(address);
  if (!target) {
    throw TransportError(Errc::unreachable, what + ": nothing listens there");
  }
  PeerId remote_id = invalid_peer;
  {
    std::lock_guard lock(target->mutex);
    if (target->closed) {
      throw TransportError(Errc::unreachable, what + ": it is closed");
    }
    remote_id = target->next_peer++;
    target->links[remote_id] = detail::Link{node_, invalid_peer, false};
  }
  PeerId local_id = invalid_peer;
  {
    std::lock_guard lock(node_->mutex);
    if (node_->closed) {
      throw TransportError(Errc::closed, what + ": this transport is closed");
    }
    local_id = node_->next_peer++;
    node_->links[local_id] = detail::Link{target, remote_id, false};
  }
  {
    std::lock_guard lock(target->mutex);
    target->links[remote_id].remote_peer = local_id;
  }
  // Hello: the target announces us on its thread; we return once that ran.
  auto hello = std::make_shared<std::promise<void>>();
  auto acked = hello->get_future();
  Node* raw = target.get();
  const bool posted = target->thread.post([raw, remote_id, hello, from = node_->display_name()] {
    std::shared_ptr<const PeerConnectHandler> handler;
    {
      std::lock_guard lock(raw->mutex);
      handler = raw->connect_handler;
    }
    if (handler && *handler) {
      (*handler)(remote_id, from);
    }
    hello->set_value();
  });
  if (!posted) {
    throw TransportError(Errc::unreachable, what + ": it closed during the handshake");
  }
  if (acked.wait_for(timeout) != std::future_status::ready) {
    throw TransportError(Errc::timed_out, what + ": no hello within " +
                                              std::to_string(timeout.count()) + " ms");
  }
  return local_id;
}

void LoopbackTransport::set_handler(AmId id, AmHandler handler) {
  std::lock_guard lock(node_->mutex);
  if (handler) {
    node_->handlers[id] = std::make_shared<const AmHandler>(std::move(handler));
  } else {
    node_->handlers.erase(id);
  }
}

void LoopbackTransport::on_peer_failure(PeerFailureHandler handler) {
  std::lock_guard lock(node_->mutex);
  node_->failure_handler = std::make_shared<const PeerFailureHandler>(std::move(handler));
}

void LoopbackTransport::on_peer_connected(PeerConnectHandler handler) {
  std::lock_guard lock(node_->mutex);
  node_->connect_handler = std::make_shared<const PeerConnectHandler>(std::move(handler));
}

void LoopbackTransport::send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) {
  const std::string what = "send am " + std::to_string(id);
  Route r = route(*node_, peer, what);
  if (!r.status.ok()) {
    node_->complete(done, std::move(r.status));
    return;
  }
  auto header_copy = std::make_shared<std::vector<std::byte>>(header.begin(), header.end());
  Node* remote = r.remote.get();
  const bool posted = remote->thread.post(
      [remote, self = node_, from = r.remote_peer, id, header_copy, payload, done] {
        Status status = remote->deliver(from, id, *header_copy, payload);
        if (status.ok()) {
          self->am_sent.fetch_add(1, std::memory_order_relaxed);
        }
        self->complete(done, std::move(status));
      });
  if (!posted) {
    node_->complete(done, peer_gone(what, peer));
  }
}

std::unique_ptr<MemoryRegion> LoopbackTransport::register_memory(void* ptr, std::size_t size) {
  if (ptr == nullptr || size == 0) {
    throw TransportError(Errc::invalid_argument, "register_memory: null or empty region");
  }
  std::uint64_t region_id = 0;
  {
    std::lock_guard lock(node_->mutex);
    if (node_->closed) {
      throw TransportError(Errc::closed, "register_memory: transport is closed");
    }
    region_id = node_->next_region++;
    node_->regions[region_id] = detail::Region{static_cast<std::byte*>(ptr), size};
  }
  return std::make_unique<LoopbackRegion>(node_, region_id, static_cast<std::byte*>(ptr), size);
}

namespace {

void post_rma(const std::shared_ptr<Node>& self, PeerId peer, bool write, void* local,
              std::size_t size, std::uint64_t remote_addr, Bytes remote_key, Completion done) {
  const std::string what = write ? "put" : "get";
  Route r = route(*self, peer, what);
  if (!r.status.ok()) {
    self->complete(done, std::move(r.status));
    return;
  }
  Node* remote = r.remote.get();
  const bool posted = remote->thread.post(
      [remote, self, from = r.remote_peer, write, local, size, remote_addr,
       key = std::vector<std::byte>(remote_key.begin(), remote_key.end()), done] {
        Status status = remote->rma(from, write, local, size, remote_addr, key);
        if (status.ok()) {
          self->rma_ops.fetch_add(1, std::memory_order_relaxed);
        }
        self->complete(done, std::move(status));
      });
  if (!posted) {
    self->complete(done, peer_gone(what, peer));
  }
}

}  // namespace

void LoopbackTransport::put(PeerId peer, const void* local, std::size_t size,
                            std::uint64_t remote_addr, Bytes remote_key, Completion done) {
  // The memcpy only reads `local`; the cast lets put and get share one path.
  post_rma(node_, peer, true, const_cast<void*>(local), size, remote_addr, remote_key,
           std::move(done));
}

void LoopbackTransport::get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
                            Bytes remote_key, Completion done) {
  post_rma(node_, peer, false, local, size, remote_addr, remote_key, std::move(done));
}

void LoopbackTransport::flush(PeerId peer, Completion done) {
  Route r = route(*node_, peer, "flush");
  if (!r.status.ok()) {
    node_->complete(done, std::move(r.status));
    return;
  }
  // put/get complete only after their memcpy ran at the target, in its queue's order: a marker
  // through the same queue is a flush.
  if (!r.remote->thread.post([self = node_, done] { self->complete(done, Status::success()); })) {
    node_->complete(done, peer_gone("flush", peer));
  }
}

void LoopbackTransport::close(std::chrono::milliseconds /*timeout: nothing here waits on I/O*/) {
  shut_down(true);
}

void LoopbackTransport::kill() { shut_down(false); }

void LoopbackTransport::shut_down(bool graceful) {
  if (node_->thread.on_this_thread()) {
    throw TransportError(Errc::invalid_argument, "close: called on the delivery thread");
  }
  std::map<PeerId, detail::Link> links;
  std::string name;
  {
    std::lock_guard lock(node_->mutex);
    if (node_->closed) {
      return;
    }
    node_->closed = true;
    links = node_->links;
    name = node_->name;
  }
  if (!name.empty()) {
    fabric_->unbind(name, node_.get());
  }
  const PeerDown why{graceful, graceful ? "closed by peer" : "peer killed"};
  for (const auto& [peer, link] : links) {
    auto remote = link.remote.lock();
    if (link.down || !remote) {
      continue;
    }
    Node* raw = remote.get();
    raw->thread.post([raw, remote_peer = link.remote_peer, why] { raw->peer_down(remote_peer, why); });
  }
  // Drains: deliveries queued to us now fail back to their senders (we are closed).
  node_->thread.stop();
}

TransportStats LoopbackTransport::stats() const {
  TransportStats s;
  s.am_sent = node_->am_sent.load();
  s.am_received = node_->am_received.load();
  s.am_dropped_no_handler = node_->am_dropped_no_handler.load();
  s.handler_exceptions = node_->handler_exceptions.load();
  s.rma_ops = node_->rma_ops.load();
  s.peers_failed = node_->peers_failed.load();
  return s;
}

}  // namespace sy::transport::loopback
