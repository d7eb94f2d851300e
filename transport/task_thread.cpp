#include "transport/task_thread.hpp"

namespace sy::transport {

TaskThread::TaskThread() : thread_([this] { run(); }) {}

TaskThread::~TaskThread() { stop(); }

bool TaskThread::post_at(Clock::time_point deadline, Task task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return false;
    }
    queue_.push(Entry{deadline, next_seq_++, std::move(task)});
  }
  cv_.notify_one();
  return true;
}

void TaskThread::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void TaskThread::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (queue_.empty()) {
      if (stopping_) {
        return;
      }
      cv_.wait(lock);
      continue;
    }
    // While stopping, delayed tasks run at once so that stop() never waits on a timer.
    // A copy: a post() while we wait may reallocate the queue under a reference.
    const Clock::time_point deadline = queue_.top().deadline;
    if (!stopping_ && deadline > Clock::now()) {
      cv_.wait_until(lock, deadline);
      continue;
    }
    Task task = std::move(queue_.top().task);
    queue_.pop();
    lock.unlock();
    task();
    lock.lock();
  }
}

}  // namespace sy::transport
