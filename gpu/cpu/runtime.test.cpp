#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gpu/cpu/runtime.hpp"
#include "gpu/cpu/thread_pool.hpp"

namespace sy::gpu::cpu {
namespace {

TEST(CpuThreadPool, RunsEveryTaskOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (std::int64_t tasks : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(tasks));
      std::atomic<int> bad_worker{0};
      pool.run(tasks, [&](std::int64_t t, int worker) {
        hits[static_cast<std::size_t>(t)].fetch_add(1);
        if (worker < 0 || worker >= threads) bad_worker.fetch_add(1);
      });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1);
      EXPECT_EQ(bad_worker.load(), 0);
    }
  }
}

TEST(CpuThreadPool, ConcurrentAndNestedCallersRunInline) {
  ThreadPool pool(2);
  std::atomic<std::int64_t> sum{0};
  auto work = [&] {
    for (int rep = 0; rep < 50; ++rep) {
      pool.run(8, [&](std::int64_t t, int) {
        pool.run(2, [&](std::int64_t u, int) { sum.fetch_add(t * 2 + u); });  // nested: inline
      });
    }
  };
  std::thread other(work);
  work();
  other.join();
  EXPECT_EQ(sum.load(), 2 * 50 * (15 * 16 / 2));
}

TEST(CpuRuntime, IsaOverride) {
  EXPECT_TRUE(isa_supported(Isa::scalar));
  set_isa(Isa::scalar);
  EXPECT_EQ(active_isa(), Isa::scalar);
  set_isa(best_isa());
  EXPECT_EQ(active_isa(), best_isa());
  for (const Isa isa : {Isa::avx2, Isa::avx512}) {
    if (!isa_supported(isa)) {
      EXPECT_THROW(set_isa(isa), std::invalid_argument);
    }
  }
}

TEST(CpuRuntime, ThreadCount) {
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  set_num_threads(2);
  EXPECT_EQ(num_threads(), 2);
}

}  // namespace
}  // namespace sy::gpu::cpu
