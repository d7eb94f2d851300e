// The transport seam: how one process (node) talks to others. Actors (actors/) and the cluster
// code see only this interface; `ucx/` implements it over UCP (tcp, shared memory, RDMA on real
// clusters), `loopback/` in one process, `fault/` wraps either to drop, delay or kill for tests.
// Threading: each Transport has one progress (delivery) thread; every handler and completion runs
// there. Ownership: main builds a Transport and passes it in (no singletons); a MemoryRegion must
// be destroyed before the memory it registered is freed (it may outlive its Transport).
//
// Design notes
// - Peers. `connect(address)` returns a PeerId; a peer that connects to our listener gets its own
//   PeerId, announced by on_peer_connected. PeerIds are local to one Transport and never reused.
//   connect() completes an application-level hello, so a returned peer is known to be live.
// - Active messages. `send(peer, am_id, header, payload)`: the header (small, a few hundred bytes:
//   request ids, layer, epoch...) is copied at the call; the payload (up to GiBs of activations)
//   is NOT copied: it must stay valid and unchanged until the completion runs (zero copy; UCX uses
//   rendezvous for large payloads). The receiver's handler gets both as spans valid only during
//   the call. Messages from one peer are handed to handlers in the order that peer sent them,
//   rendezvous ones included (a small message waits behind a large one still landing).
// - Handlers run on the progress thread and must be quick: copy what they need and hand the work
//   over (post to an actor). They may call send/put/get/flush, never connect/close (those wait for
//   the progress thread and throw TransportError when called from it). A message for an AM id with
//   no handler is dropped and counted (stats().am_dropped_no_handler).
// - RMA. register_memory pins a local region and yields a packed remote key: bytes the owner sends
//   to a peer (e.g. in an AM header), which the peer passes to put/get with an address inside the
//   region. put/get complete when the local buffer may be reused / holds the data; flush(peer)
//   completes when every earlier put to that peer is visible at the target.
// - Failure. on_peer_failure fires once per peer, on the progress thread, when the peer closes
//   politely (graceful = true) or dies (connection reset, SIGKILL, fault rule); every operation
//   pending on or later issued to that peer completes with Errc::peer_failed. UCX detects deaths
//   only in error mode PEER (tcp lanes); with shared memory (mode NONE) only polite closes show.
// - Errors. Synchronous calls (listen, connect, register_memory) throw TransportError; asynchronous
//   ones (send, put, get, flush) report through their completion, never throw for runtime
//   conditions. Every message names the operation and the peer. Every wait has a timeout.
// - close(timeout) says goodbye to every peer (bye / bye-ack), waits for outstanding operations
//   up to the timeout, then tears down; afterwards calls fail with Errc::closed. The destructor
//   closes if the owner did not.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace sy::transport {

// Local handle of a remote peer; 0 is never a valid peer.
using PeerId = std::uint64_t;
inline constexpr PeerId invalid_peer = 0;

// Active-message kind, chosen by the application (one per message kind; DESIGN.md "Wire").
using AmId = std::uint16_t;

using Bytes = std::span<const std::byte>;

enum class Errc : std::uint8_t {
  ok,
  peer_failed,       // the peer closed or died before the operation completed
  closed,            // this transport is closed (or closing)
  timed_out,         // a synchronous wait ran past its timeout
  invalid_argument,  // unknown peer id, bad address, remote range outside the keyed region
  unreachable,       // nothing listens at the address / connection refused
  internal,          // the implementation (UCX) reported an unexpected error
};
inline constexpr int errc_count = 7;
std::string_view to_string(Errc code);

// The outcome of an asynchronous operation. `message` names operation and peer when not ok.
struct Status {
  Errc code = Errc::ok;
  std::string message;

  bool ok() const { return code == Errc::ok; }
  static Status success() { return {}; }
};

class TransportError : public std::runtime_error {
 public:
  TransportError(Errc code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  Errc code() const { return code_; }

 private:
  Errc code_;
};

// Runs on the progress thread. May be empty (fire and forget).
using Completion = std::function<void(const Status&)>;
// Runs on the progress thread; header and payload are valid only during the call.
using AmHandler = std::function<void(PeerId from, Bytes header, Bytes payload)>;

struct PeerDown {
  bool graceful = false;  // true: the peer said goodbye (close); false: it died or was cut off
  std::string reason;     // e.g. "closed by peer", "Connection reset by remote peer"
};
using PeerFailureHandler = std::function<void(PeerId peer, const PeerDown& why)>;
// `remote_address` is the peer's own listen address when it has one, else its socket address.
using PeerConnectHandler = std::function<void(PeerId peer, const std::string& remote_address)>;

// Counters since construction; read from any thread.
struct TransportStats {
  std::uint64_t am_sent = 0;                // sends that completed successfully
  std::uint64_t am_received = 0;            // messages handed to a handler
  std::uint64_t am_dropped_no_handler = 0;  // messages for an AM id without a handler
  std::uint64_t handler_exceptions = 0;     // handlers that threw (caught and logged)
  std::uint64_t rma_ops = 0;                // puts and gets that completed successfully
  std::uint64_t peers_failed = 0;           // on_peer_failure notifications
};

// A registered local region. Destroying it deregisters (and must happen before the memory is
// freed). Thread-safe to read; the owner keeps it alive while peers may still access it.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual std::byte* data() const = 0;
  virtual std::size_t size() const = 0;
  // Bytes to hand to a peer; with data() + offset they let it put/get into this region.
  virtual Bytes packed_key() const = 0;
  std::uint64_t remote_address() const { return reinterpret_cast<std::uintptr_t>(data()); }
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Starts accepting peers at `address` (ucx: "IP:PORT", port 0 picks one; loopback: a name).
  // At most once. Throws TransportError (address in use, bad address, closed).
  virtual void listen(const std::string& address) = 0;
  // The address peers connect to (after listen; ucx resolves port 0), or "" before listen.
  virtual std::string local_address() const = 0;

  // Connects and completes the hello handshake. REQUIRES: not on the progress thread.
  // Throws TransportError (unreachable, timed_out, closed).
  virtual PeerId connect(const std::string& address, std::chrono::milliseconds timeout) = 0;

  // Handler registration; any thread, any time (replaces the previous one; empty removes).
  virtual void set_handler(AmId id, AmHandler handler) = 0;
  virtual void on_peer_failure(PeerFailureHandler handler) = 0;
  virtual void on_peer_connected(PeerConnectHandler handler) = 0;

  // Thread-safe. `header` is copied; `payload` must stay valid until `done` runs, which means
  // the payload buffer may be reused (not that the peer handled the message).
  virtual void send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) = 0;

  // Thread-safe. Throws TransportError when registration fails.
  virtual std::unique_ptr<MemoryRegion> register_memory(void* ptr, std::size_t size) = 0;
  // Thread-safe. A new zero-filled region of `size` bytes (page-aligned) that the region owns and
  // frees, registered for peers' puts and gets. Prefer it for memory peers write into: a transport
  // may give memory its fastest paths reach (UCX's shared-memory RMA lanes reach only memory UCX
  // allocated). This default allocates host memory and registers it. Throws TransportError.
  virtual std::unique_ptr<MemoryRegion> allocate_memory(std::size_t size);
  // Thread-safe. Writes [local, local+size) to remote_addr in the peer's region named by
  // remote_key; `local` must stay valid until `done`.
  virtual void put(PeerId peer, const void* local, std::size_t size, std::uint64_t remote_addr,
                   Bytes remote_key, Completion done) = 0;
  // Thread-safe. Reads the peer's [remote_addr, +size) into `local`, valid when `done` runs ok.
  virtual void get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
                   Bytes remote_key, Completion done) = 0;
  // Thread-safe. Completes when every earlier put/get to `peer` has completed at the target.
  virtual void flush(PeerId peer, Completion done) = 0;

  // Polite shutdown (see design notes); idempotent. REQUIRES: not on the progress thread.
  virtual void close(std::chrono::milliseconds timeout) = 0;

  virtual TransportStats stats() const = 0;
};

}  // namespace sy::transport
