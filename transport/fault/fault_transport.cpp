#include "transport/fault/fault_transport.hpp"

#include <cstdio>
#include <vector>

namespace sy::transport::fault {

namespace {

Status killed_status(const std::string& what, PeerId peer) {
  return {Errc::peer_failed,
          what + " to peer " + std::to_string(peer) + ": peer killed by fault rule"};
}

bool direction_matches(Direction rule, Direction actual) {
  return rule == Direction::both || rule == actual;
}

}  // namespace

FaultTransport::FaultTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {
  if (!inner_) {
    throw TransportError(Errc::invalid_argument, "FaultTransport: no inner transport");
  }
  inner_->on_peer_failure([this](PeerId peer, const PeerDown& why) {
    std::shared_ptr<const PeerFailureHandler> handler;
    {
      std::lock_guard lock(mutex_);
      if (killed_.contains(peer)) {
        return;  // already reported when the kill rule was added
      }
      handler = failure_handler_;
    }
    if (handler && *handler) {
      (*handler)(peer, why);
    }
  });
}

FaultTransport::~FaultTransport() {
  // Inner first: its thread calls into this object's handlers.
  inner_->close(std::chrono::seconds(2));
  timer_.stop();
}

RuleId FaultTransport::add_rule(const Rule& rule) {
  if (rule.action == Action::kill) {
    if (!rule.peer) {
      throw TransportError(Errc::invalid_argument, "fault rule kill: needs a peer");
    }
    const PeerId peer = *rule.peer;
    bool newly_killed = false;
    RuleId id = 0;
    {
      std::lock_guard lock(mutex_);
      newly_killed = killed_.insert(peer).second;
      id = next_rule_++;
    }
    if (newly_killed) {
      auto notify = [this, peer] {
        std::shared_ptr<const PeerFailureHandler> handler;
        {
          std::lock_guard lock(mutex_);
          handler = failure_handler_;
        }
        if (handler && *handler) {
          (*handler)(peer, PeerDown{false, "killed by fault rule"});
        }
      };
      if (!timer_.post(notify)) {
        notify();
      }
    }
    return id;
  }
  std::lock_guard lock(mutex_);
  const RuleId id = next_rule_++;
  rules_[id] = rule;
  return id;
}

void FaultTransport::remove_rule(RuleId id) {
  std::lock_guard lock(mutex_);
  rules_.erase(id);
}

void FaultTransport::clear_rules() {
  std::lock_guard lock(mutex_);
  rules_.clear();
}

FaultStats FaultTransport::fault_stats() const {
  return FaultStats{dropped_.load(), delayed_.load(), refused_killed_.load()};
}

bool FaultTransport::killed(PeerId peer) const {
  std::lock_guard lock(mutex_);
  return killed_.contains(peer);
}

FaultTransport::Verdict FaultTransport::judge(PeerId peer, AmId id, Direction direction) {
  std::lock_guard lock(mutex_);
  for (auto it = rules_.begin(); it != rules_.end(); ++it) {
    Rule& rule = it->second;
    if ((rule.peer && *rule.peer != peer) || (rule.am_id && *rule.am_id != id) ||
        !direction_matches(rule.direction, direction)) {
      continue;
    }
    Verdict verdict{rule.action, rule.delay};
    if (--rule.count == 0) {
      rules_.erase(it);
    }
    return verdict;
  }
  return Verdict{};
}

void FaultTransport::complete_later(const Completion& done, Status status) {
  if (!done) {
    return;
  }
  auto task = [done, status] { done(status); };
  if (!timer_.post(task)) {
    task();
  }
}

void FaultTransport::deliver(AmId id, PeerId from, Bytes header, Bytes payload) {
  std::shared_ptr<const AmHandler> handler;
  {
    std::lock_guard lock(mutex_);
    if (killed_.contains(from)) {
      refused_killed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (auto it = handlers_.find(id); it != handlers_.end()) {
      handler = it->second;
    }
  }
  if (!handler) {
    return;  // removed while the message was delayed
  }
  try {
    (*handler)(from, header, payload);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sy::transport::fault: handler for am %u from peer %llu threw: %s\n", id,
                 static_cast<unsigned long long>(from), e.what());
  }
}

void FaultTransport::set_handler(AmId id, AmHandler handler) {
  if (!handler) {
    {
      std::lock_guard lock(mutex_);
      handlers_.erase(id);
    }
    inner_->set_handler(id, nullptr);  // the inner transport counts messages nobody handles
    return;
  }
  {
    std::lock_guard lock(mutex_);
    handlers_[id] = std::make_shared<const AmHandler>(std::move(handler));
  }
  inner_->set_handler(id, [this, id](PeerId from, Bytes header, Bytes payload) {
    if (killed(from)) {
      refused_killed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const Verdict verdict = judge(from, id, Direction::incoming);
    if (verdict.action == Action::drop) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (verdict.delay.count() > 0) {
      delayed_.fetch_add(1, std::memory_order_relaxed);
      auto held = std::make_shared<std::pair<std::vector<std::byte>, std::vector<std::byte>>>(
          std::vector<std::byte>(header.begin(), header.end()),
          std::vector<std::byte>(payload.begin(), payload.end()));
      auto task = [this, id, from, held] { deliver(id, from, held->first, held->second); };
      if (!timer_.post_after(verdict.delay, task)) {
        task();
      }
      return;
    }
    deliver(id, from, header, payload);
  });
}

void FaultTransport::on_peer_failure(PeerFailureHandler handler) {
  std::lock_guard lock(mutex_);
  failure_handler_ = std::make_shared<const PeerFailureHandler>(std::move(handler));
}

void FaultTransport::send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) {
  const std::string what = "send am " + std::to_string(id);
  if (killed(peer)) {
    refused_killed_.fetch_add(1, std::memory_order_relaxed);
    complete_later(done, killed_status(what, peer));
    return;
  }
  const Verdict verdict = judge(peer, id, Direction::outgoing);
  if (verdict.action == Action::drop) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    complete_later(done, Status::success());
    return;
  }
  if (verdict.delay.count() > 0) {
    delayed_.fetch_add(1, std::memory_order_relaxed);
    auto header_copy = std::make_shared<std::vector<std::byte>>(header.begin(), header.end());
    auto task = [this, peer, id, header_copy, payload, done, what] {
      if (killed(peer)) {
        refused_killed_.fetch_add(1, std::memory_order_relaxed);
        if (done) {
          done(killed_status(what, peer));
        }
        return;
      }
      inner_->send(peer, id, *header_copy, payload, done);
    };
    if (!timer_.post_after(verdict.delay, task)) {
      task();
    }
    return;
  }
  inner_->send(peer, id, header, payload, std::move(done));
}

void FaultTransport::put(PeerId peer, const void* local, std::size_t size,
                         std::uint64_t remote_addr, Bytes remote_key, Completion done) {
  if (killed(peer)) {
    refused_killed_.fetch_add(1, std::memory_order_relaxed);
    complete_later(done, killed_status("put", peer));
    return;
  }
  inner_->put(peer, local, size, remote_addr, remote_key, std::move(done));
}

void FaultTransport::get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
                         Bytes remote_key, Completion done) {
  if (killed(peer)) {
    refused_killed_.fetch_add(1, std::memory_order_relaxed);
    complete_later(done, killed_status("get", peer));
    return;
  }
  inner_->get(peer, local, size, remote_addr, remote_key, std::move(done));
}

void FaultTransport::flush(PeerId peer, Completion done) {
  if (killed(peer)) {
    complete_later(done, killed_status("flush", peer));
    return;
  }
  inner_->flush(peer, std::move(done));
}

void FaultTransport::close(std::chrono::milliseconds timeout) {
  inner_->close(timeout);
  timer_.stop();
}

}  // namespace sy::transport::fault
