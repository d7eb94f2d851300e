// The production transport over UCX's UCP layer: one context and one worker per transport, a
// sockaddr listener, active messages (eager, or rendezvous for large payloads), RMA through
// registered memory, and failure detection in error mode PEER. One progress thread owns the
// worker and runs every UCX call, handler and completion; other threads hand it work through a
// mutex-guarded command queue. It busy-polls the worker while operations are in flight and for a
// short window after the last activity, then sleeps on the worker's event fd and a wake-up
// eventfd (so an idle transport costs no CPU, and a busy one pays no wake-up per message).
// UCX types stay in ucx_transport.cpp so that users of this header need no UCX headers.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transport/transport.hpp"

namespace sy::transport::ucx {

enum class ErrorMode : std::uint8_t {
  // UCP_ERR_HANDLING_MODE_PEER: peer deaths are detected and reported; UCX 1.13 then uses tcp
  // lanes only (no shared memory). The default: a cluster must notice a dead host.
  peer,
  // UCP_ERR_HANDLING_MODE_NONE: lets UCX pick shared memory between processes of one host
  // (sm is 40x faster for puts here), but a dead peer goes unnoticed (only polite closes show).
  none,
};

struct UcxOptions {
  ErrorMode error_mode = ErrorMode::peer;
  // UCX settings for this transport's context only (ucp_config_modify), names without the UCX_
  // prefix, e.g. {"TLS", "tcp"} or {"TLS", "sm,tcp"} (the listener path needs tcp),
  // {"NET_DEVICES", "lo"}. Unset names come from the environment (UCX_*) or UCX defaults.
  std::vector<std::pair<std::string, std::string>> config;
  // Used in error text and as the UCX worker name.
  std::string name = "sy";
  // Longest sleep of the progress thread with nothing to do; it bounds how late UCX's own
  // timers (keepalive) run. Events (messages, new commands) wake it at once.
  std::chrono::milliseconds max_idle_wait{100};
  // Busy-poll window: after the last activity (a message, a completion, a command) the progress
  // thread keeps calling ucp_worker_progress this long before it arms the event fd and sleeps.
  // A round trip shorter than this pays no wake-up on either side. 0: sleep at once.
  std::chrono::microseconds busy_poll{200};
  // While our operations are in flight the thread keeps polling (some completions, e.g. a shared
  // memory send waiting for FIFO space, raise no event) until this long passes without any
  // completion or other activity; then it sleeps at most 1 ms at a time until they finish
  // (bounded CPU use when a peer stalls).
  std::chrono::milliseconds in_flight_poll{20};
};

class UcxTransport final : public Transport {
 public:
  // Creates the context and worker and starts the progress thread. Throws TransportError.
  explicit UcxTransport(UcxOptions options);
  ~UcxTransport() override;  // close(2 s) when the owner did not

  void listen(const std::string& address) override;
  std::string local_address() const override;
  PeerId connect(const std::string& address, std::chrono::milliseconds timeout) override;
  void set_handler(AmId id, AmHandler handler) override;
  void on_peer_failure(PeerFailureHandler handler) override;
  void on_peer_connected(PeerConnectHandler handler) override;
  void send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) override;
  std::unique_ptr<MemoryRegion> register_memory(void* ptr, std::size_t size) override;
  // Allocates `size` bytes through UCX (ucp_mem_map with UCP_MEM_MAP_ALLOCATE: shared memory,
  // sysv or posix, when the context has an sm transport) and registers them; the region owns the
  // memory (zero-filled) and frees it when destroyed. Use this for memory that peers put into or
  // get from: on one host, puts into it are a direct copy into the mapped segment (UCX's sysv/posix
  // RMA lanes), while puts into register_memory()'d memory are emulated by UCX with active
  // messages (UCX 1.13 has no RMA lane for foreign memory over sm; cma does zero copy only for
  // rendezvous), which needs the target's progress thread and runs at a fraction of the speed.
  // Throws TransportError.
  std::unique_ptr<MemoryRegion> allocate_memory(std::size_t size) override;
  // UCX does not check the remote range against the region (tcp lanes write where told):
  // stay inside the region the key came with.
  void put(PeerId peer, const void* local, std::size_t size, std::uint64_t remote_addr,
           Bytes remote_key, Completion done) override;
  void get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
           Bytes remote_key, Completion done) override;
  void flush(PeerId peer, Completion done) override;
  void close(std::chrono::milliseconds timeout) override;
  TransportStats stats() const override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sy::transport::ucx
