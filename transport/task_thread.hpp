// A thread that runs posted tasks one at a time, in deadline order (FIFO for equal deadlines):
// the delivery thread of a loopback transport and the timer of the fault wrapper. post() is
// thread-safe; tasks run on the owned thread. stop() runs every task still queued (delayed ones
// at once, in order), then joins, so nothing posted before stop() is lost; post() after stop()
// returns false and the caller handles the task itself.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "transport/thread_annotations.hpp"

namespace sy::transport {

class TaskThread {
 public:
  using Clock = std::chrono::steady_clock;
  using Task = std::function<void()>;

  TaskThread();
  ~TaskThread();  // stop()
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  // Runs `task` after every earlier-posted task with an equal or earlier deadline.
  // Returns false (and drops nothing: the task is not taken) once stop() has begun.
  bool post(Task task) { return post_at(Clock::now(), std::move(task)); }
  bool post_after(Clock::duration delay, Task task) {
    return post_at(Clock::now() + delay, std::move(task));
  }
  bool post_at(Clock::time_point deadline, Task task);

  bool on_this_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

  // Runs what is queued, then joins. Idempotent. REQUIRES: not on this thread.
  void stop();

 private:
  struct Entry {
    Clock::time_point deadline;
    std::uint64_t seq;
    // mutable: std::priority_queue::top() is const, and the task is moved out before pop().
    mutable Task task;
    bool operator>(const Entry& other) const {
      return deadline != other.deadline ? deadline > other.deadline : seq > other.seq;
    }
  };

  void run();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> queue_ SY_GUARDED_BY(mutex_);
  std::uint64_t next_seq_ SY_GUARDED_BY(mutex_) = 0;
  bool stopping_ SY_GUARDED_BY(mutex_) = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace sy::transport
