// Helpers for the transport tests: a mailbox that handlers fill and tests wait on (every wait
// has a timeout, no sleeps), a completion that can be awaited, byte patterns. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transport/transport.hpp"

namespace sy::transport::testing {

using namespace std::chrono_literals;

struct Message {
  PeerId from = invalid_peer;
  AmId am_id = 0;
  std::vector<std::byte> header;
  std::vector<std::byte> payload;
  std::string header_text() const {
    return {reinterpret_cast<const char*>(header.data()), header.size()};
  }
};

class Mailbox {
 public:
  // A handler that records every message for `id`.
  AmHandler handler(AmId id) {
    return [this, id](PeerId from, Bytes header, Bytes payload) {
      Message m{from, id, {header.begin(), header.end()}, {payload.begin(), payload.end()}};
      std::lock_guard lock(mutex_);
      messages_.push_back(std::move(m));
      cv_.notify_all();
    };
  }
  // Waits until at least `n` messages arrived; returns whether they did within `timeout`.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return messages_.size() >= n; });
  }
  std::vector<Message> messages() {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  std::size_t size() {
    std::lock_guard lock(mutex_);
    return messages_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Message> messages_;
};

// A Completion whose status a test awaits.
class Awaited {
 public:
  Awaited() : future_(promise_->get_future()) {}
  Completion completion() {
    return [p = promise_](const Status& s) { p->set_value(s); };
  }
  // The status, or a timed_out status when the completion did not run within `timeout`.
  Status wait(std::chrono::milliseconds timeout = 10s) {
    if (future_.wait_for(timeout) != std::future_status::ready) {
      return {Errc::timed_out, "test: completion did not run within " +
                                   std::to_string(timeout.count()) + " ms"};
    }
    return future_.get();
  }

 private:
  std::shared_ptr<std::promise<Status>> promise_ = std::make_shared<std::promise<Status>>();
  std::future<Status> future_;
};

// Counts completions (and failures) of many operations; tests wait for all of them before
// their payloads go out of scope (the payload contract of Transport::send).
class Completions {
 public:
  Completion completion() {
    return [this](const Status& s) {
      std::lock_guard lock(mutex_);
      ++done_;
      failed_ += s.ok() ? 0 : 1;
      cv_.notify_all();
    };
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return done_ >= n; });
  }
  std::size_t failed() {
    std::lock_guard lock(mutex_);
    return failed_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t done_ = 0;
  std::size_t failed_ = 0;
};

// Records peer-failure notifications.
class FailureLog {
 public:
  PeerFailureHandler handler() {
    return [this](PeerId peer, const PeerDown& why) {
      std::lock_guard lock(mutex_);
      events_.push_back({peer, why});
      cv_.notify_all();
    };
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
  }
  std::vector<std::pair<PeerId, PeerDown>> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::pair<PeerId, PeerDown>> events_;
};

inline std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : bytes) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return bytes;
}

inline Bytes as_bytes(const std::string& text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

}  // namespace sy::transport::testing
