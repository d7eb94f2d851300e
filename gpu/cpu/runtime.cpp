#include "gpu/cpu/runtime.hpp"

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "gpu/cpu/thread_pool.hpp"

namespace sy::gpu::cpu {
namespace {

Isa isa_from_env() {
  const Isa best = best_isa();
  const char* env = std::getenv("SY_CPU_ISA");
  if (env == nullptr) return best;
  const std::string_view want(env);
  for (const Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    // An ISA the CPU lacks falls back to the best one it has rather than faulting later.
    if (want == isa_name(isa)) return isa_supported(isa) ? isa : best;
  }
  return best;
}

int threads_from_env() {
  if (const char* env = std::getenv("SY_CPU_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(isa_from_env())};
  return slot;
}

struct PoolHolder {
  std::mutex mutex;
  std::unique_ptr<ThreadPool> pool;  // guarded by mutex (replaced only by set_num_threads)
};

PoolHolder& pool_holder() {
  static PoolHolder holder;
  return holder;
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

bool isa_supported(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::avx512:
      return isa_supported(Isa::avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == Isa::scalar;
#endif
}

Isa best_isa() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::scalar;
}

Isa active_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  if (!isa_supported(isa)) {
    throw std::invalid_argument("cpu backend: this CPU lacks " + std::string(isa_name(isa)));
  }
  isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

ThreadPool& thread_pool() {
  PoolHolder& h = pool_holder();
  std::lock_guard lock(h.mutex);
  if (!h.pool) h.pool = std::make_unique<ThreadPool>(threads_from_env());
  return *h.pool;
}

int num_threads() { return thread_pool().size(); }

void set_num_threads(int n) {
  PoolHolder& h = pool_holder();
  std::lock_guard lock(h.mutex);
  h.pool = std::make_unique<ThreadPool>(n < 1 ? 1 : n);
}

}  // namespace sy::gpu::cpu
