// The in-process transport: several LoopbackTransports in one process reach each other by name
// through a LoopbackFabric that the test (or a single-process cluster) creates and passes in.
// Same semantics as ucx/: each transport has its own delivery thread where handlers and
// completions run; payloads are not copied (the receiver's handler reads the sender's buffer,
// and the send completes after the handler returns); put/get are memcpys into regions validated
// against their keys; closing or kill()ing a transport notifies its peers.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "transport/thread_annotations.hpp"
#include "transport/transport.hpp"

namespace sy::transport::loopback {

namespace detail {
struct Node;
}

// The namespace transports listen in. Thread-safe. Shared by its transports (shared_ptr), so it
// outlives every one of them.
class LoopbackFabric {
 public:
  LoopbackFabric() = default;
  LoopbackFabric(const LoopbackFabric&) = delete;
  LoopbackFabric& operator=(const LoopbackFabric&) = delete;

 private:
  friend class LoopbackTransport;

  // Throws TransportError when the name is taken by a live transport.
  void bind(const std::string& name, const std::shared_ptr<detail::Node>& node);
  void unbind(const std::string& name, const detail::Node* node);
  std::shared_ptr<detail::Node> find(const std::string& name);

  std::mutex mutex_;
  std::map<std::string, std::weak_ptr<detail::Node>> nodes_ SY_GUARDED_BY(mutex_);
  std::atomic<std::uint64_t> next_node_id_{1};  // region keys name their node
};

class LoopbackTransport final : public Transport {
 public:
  explicit LoopbackTransport(std::shared_ptr<LoopbackFabric> fabric);
  ~LoopbackTransport() override;  // close()s politely

  void listen(const std::string& address) override;
  std::string local_address() const override;
  PeerId connect(const std::string& address, std::chrono::milliseconds timeout) override;
  void set_handler(AmId id, AmHandler handler) override;
  void on_peer_failure(PeerFailureHandler handler) override;
  void on_peer_connected(PeerConnectHandler handler) override;
  void send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) override;
  std::unique_ptr<MemoryRegion> register_memory(void* ptr, std::size_t size) override;
  void put(PeerId peer, const void* local, std::size_t size, std::uint64_t remote_addr,
           Bytes remote_key, Completion done) override;
  void get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
           Bytes remote_key, Completion done) override;
  void flush(PeerId peer, Completion done) override;
  void close(std::chrono::milliseconds timeout) override;
  TransportStats stats() const override;

  // Simulates a crash: no goodbye; peers see on_peer_failure (graceful = false) and every
  // operation towards this transport fails from then on. REQUIRES: not on the delivery thread.
  void kill();

 private:
  void shut_down(bool graceful);

  std::shared_ptr<LoopbackFabric> fabric_;
  std::shared_ptr<detail::Node> node_;
};

}  // namespace sy::transport::loopback
