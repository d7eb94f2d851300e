// A small persistent thread pool for the CPU backend's kernels: run(tasks, fn) calls fn(task,
// worker) once for every task index in [0, tasks), spread over the pool's threads and the caller
// (worker 0), and returns when all are done. Tasks are claimed in index order from a shared
// counter; which worker runs a task is not fixed, so kernels make every output element one task's
// work and index scratch by worker. Thread-safe: a run() that finds the pool busy (another caller,
// or a task calling back in) runs its tasks on its own thread instead of waiting.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace sy::gpu::cpu {

class ThreadPool {
 public:
  // REQUIRES: threads >= 1 (the caller counts as one; threads - 1 are started).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  template <class F>
  void run(std::int64_t tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run_erased(tasks, [](void* f, std::int64_t task, int worker) { (*static_cast<Fn*>(f))(task, worker); },
               static_cast<void*>(&fn));
  }

 private:
  using TaskFn = void (*)(void*, std::int64_t, int);
  void run_erased(std::int64_t tasks, TaskFn fn, void* ctx);
  void worker_loop(int worker);
  void drain(int worker);

  const int size_;
  std::mutex run_mutex_;  // held by the one run() that owns the workers
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // The current job; written under mutex_ before generation_ is bumped.
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::int64_t tasks_ = 0;
  std::atomic<std::int64_t> next_{0};
  std::uint64_t generation_ = 0;  // guarded by mutex_
  int busy_workers_ = 0;          // guarded by mutex_: workers still inside the current job
  bool stop_ = false;             // guarded by mutex_
  std::vector<std::thread> threads_;
};

}  // namespace sy::gpu::cpu
