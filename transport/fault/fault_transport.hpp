// A Transport that wraps another and misbehaves on purpose, for failure tests: rules drop or
// delay active messages (outgoing, incoming or both, per peer and AM id) or kill a peer (stop
// delivering to and from it, fail its operations, and report it through on_peer_failure).
// Thread-safe like any Transport. Delayed messages, drop completions and kill notifications run
// on the wrapper's own timer thread; everything else runs on the inner transport's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "transport/task_thread.hpp"
#include "transport/thread_annotations.hpp"
#include "transport/transport.hpp"

namespace sy::transport::fault {

enum class Action : std::uint8_t {
  drop,   // the message vanishes; an outgoing send still completes ok (as a lossy wire would)
  delay,  // the message is held for `delay`, then goes on (order kept among delayed messages)
  kill,   // the peer is cut off for good: needs `peer`; ignores am_id and direction
};

enum class Direction : std::uint8_t { outgoing, incoming, both };

struct Rule {
  Action action = Action::drop;
  std::optional<PeerId> peer;    // every peer when empty
  std::optional<AmId> am_id;     // every AM id when empty
  Direction direction = Direction::both;
  std::chrono::milliseconds delay{0};  // for Action::delay
  // Applies to the first `count` matching messages, then lapses.
  std::uint64_t count = std::numeric_limits<std::uint64_t>::max();
};

using RuleId = std::uint64_t;

struct FaultStats {
  std::uint64_t dropped = 0;
  std::uint64_t delayed = 0;
  std::uint64_t refused_killed = 0;  // operations failed or messages discarded for a killed peer
};

class FaultTransport final : public Transport {
 public:
  explicit FaultTransport(std::unique_ptr<Transport> inner);
  ~FaultTransport() override;  // stops the timer (running what it holds), then closes inner

  // Thread-safe. A kill rule takes effect at once: on_peer_failure fires (graceful = false,
  // reason "killed by fault rule") on the timer thread. Throws TransportError for a kill
  // without a peer.
  RuleId add_rule(const Rule& rule);
  void remove_rule(RuleId id);  // a killed peer stays killed
  void clear_rules();
  void kill_peer(PeerId peer) {
    Rule rule;
    rule.action = Action::kill;
    rule.peer = peer;
    add_rule(rule);
  }
  FaultStats fault_stats() const;
  Transport& inner() { return *inner_; }

  void listen(const std::string& address) override { inner_->listen(address); }
  std::string local_address() const override { return inner_->local_address(); }
  PeerId connect(const std::string& address, std::chrono::milliseconds timeout) override {
    return inner_->connect(address, timeout);
  }
  void set_handler(AmId id, AmHandler handler) override;
  void on_peer_failure(PeerFailureHandler handler) override;
  void on_peer_connected(PeerConnectHandler handler) override {
    inner_->on_peer_connected(std::move(handler));
  }
  void send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) override;
  std::unique_ptr<MemoryRegion> allocate_memory(std::size_t size) override { return inner_->allocate_memory(size); }
  std::unique_ptr<MemoryRegion> register_memory(void* ptr, std::size_t size) override {
    return inner_->register_memory(ptr, size);
  }
  void put(PeerId peer, const void* local, std::size_t size, std::uint64_t remote_addr,
           Bytes remote_key, Completion done) override;
  void get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
           Bytes remote_key, Completion done) override;
  void flush(PeerId peer, Completion done) override;
  void close(std::chrono::milliseconds timeout) override;
  TransportStats stats() const override { return inner_->stats(); }

 private:
  struct Verdict {
    Action action = Action::delay;
    std::chrono::milliseconds delay{0};  // zero with action delay: pass through
  };
  Verdict judge(PeerId peer, AmId id, Direction direction);
  bool killed(PeerId peer) const;
  // Runs `done` with `status` on the timer thread (inline once it has stopped).
  void complete_later(const Completion& done, Status status);
  void deliver(AmId id, PeerId from, Bytes header, Bytes payload);

  std::unique_ptr<Transport> inner_;

  mutable std::mutex mutex_;
  std::map<RuleId, Rule> rules_ SY_GUARDED_BY(mutex_);
  RuleId next_rule_ SY_GUARDED_BY(mutex_) = 1;
  std::set<PeerId> killed_ SY_GUARDED_BY(mutex_);
  std::map<AmId, std::shared_ptr<const AmHandler>> handlers_ SY_GUARDED_BY(mutex_);
  std::shared_ptr<const PeerFailureHandler> failure_handler_ SY_GUARDED_BY(mutex_);

  std::atomic<std::uint64_t> dropped_{0}, delayed_{0}, refused_killed_{0};
  TaskThread timer_;  // last: destroyed (joined) first
};

}  // namespace sy::transport::fault
