// Timing harness and same-run baselines for the CPU kernel benchmarks (gemm_bench, mla_bench):
// repeated timing with median/min/max, a memcpy bandwidth loop and an FMA-peak loop (several
// independent vector FMA chains in registers), each on 1 or n threads, so a kernel's figure is
// read as a fraction of what this machine does in the same run. Bench-only; single-threaded
// callers. The ISA-specific loops use target attributes and run only where the CPU has the ISA.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace sy::bench {

struct Timing {
  double median = 0.0, min = 0.0, max = 0.0;  // seconds per call
};

// Runs fn once to warm up, then `reps` times, or more while under min_seconds in total (capped
// at 50 repetitions).
inline Timing time_it(const std::function<void()>& fn, int reps, double min_seconds) {
  using clock = std::chrono::steady_clock;
  fn();
  std::vector<double> t;
  double total = 0.0;
  while (static_cast<int>(t.size()) < reps || (total < min_seconds && t.size() < 50)) {
    const auto start = clock::now();
    fn();
    const double s = std::chrono::duration<double>(clock::now() - start).count();
    t.push_back(s);
    total += s;
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front(), t.back()};
}

// Runs body(thread) on `threads` threads at once and returns the wall time.
inline double run_parallel(int threads, const std::function<void(int)>& body) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(body, i);
  body(0);
  for (std::thread& th : pool) th.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// memcpy bandwidth in bytes copied per second (each byte is read once and written once), over a
// buffer far larger than the caches, split into one contiguous part per thread.
inline double copy_bandwidth(int threads, std::size_t bytes, int reps) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const std::size_t part = bytes / static_cast<std::size_t>(threads);
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const double s = run_parallel(threads, [&](int i) {
      std::memcpy(dst.data() + part * static_cast<std::size_t>(i), src.data() + part * static_cast<std::size_t>(i),
                  part);
    });
    best = std::max(best, static_cast<double>(part * static_cast<std::size_t>(threads)) / s);
  }
  return best;
}

// FMA peak: 12 independent chains of vector FMAs held in registers (enough to cover the
// 4-cycle latency on two pipes), written out one variable per chain so none lives in memory.
// Returns flops (2 per lane per FMA).
#define SY_BENCH_FMA_CHAINS(VEC, SET1, FMADD, LANES)                                          \
  VEC c0 = SET1(0.f), c1 = SET1(1.f), c2 = SET1(2.f), c3 = SET1(3.f), c4 = SET1(4.f),            \
      c5 = SET1(5.f), c6 = SET1(6.f), c7 = SET1(7.f), c8 = SET1(8.f), c9 = SET1(9.f),           \
      c10 = SET1(10.f), c11 = SET1(11.f);                                                       \
  const VEC a = SET1(0.999f), b = SET1(0.001f);                                                 \
  for (std::int64_t it = 0; it < iters; ++it) {                                                 \
    c0 = FMADD(c0, a, b); c1 = FMADD(c1, a, b); c2 = FMADD(c2, a, b); c3 = FMADD(c3, a, b);     \
    c4 = FMADD(c4, a, b); c5 = FMADD(c5, a, b); c6 = FMADD(c6, a, b); c7 = FMADD(c7, a, b);     \
    c8 = FMADD(c8, a, b); c9 = FMADD(c9, a, b); c10 = FMADD(c10, a, b); c11 = FMADD(c11, a, b); \
  }                                                                                             \
  float lanes[LANES];                                                                           \
  VEC s = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;                          \
  std::memcpy(lanes, &s, sizeof lanes);                                                         \
  volatile float sink = lanes[0];                                                               \
  (void)sink;                                                                                   \
  return static_cast<double>(iters) * 12 * LANES * 2

__attribute__((target("avx512f"))) inline double fma_chains_avx512(std::int64_t iters) {
  SY_BENCH_FMA_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16);
}

__attribute__((target("avx2,fma"))) inline double fma_chains_avx2(std::int64_t iters) {
  SY_BENCH_FMA_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8);
}
#undef SY_BENCH_FMA_CHAINS

// Peak fp32 FMA flop/s on `threads` threads with the widest vectors this CPU has.
inline double fma_peak(int threads, int reps) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  constexpr std::int64_t kIters = 20'000'000;
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    std::vector<double> flops(static_cast<std::size_t>(threads));
    const double s = run_parallel(threads, [&](int i) {
      flops[static_cast<std::size_t>(i)] =
          avx512 ? fma_chains_avx512(kIters) : avx2 ? fma_chains_avx2(kIters) : 0.0;
    });
    double total = 0.0;
    for (const double f : flops) total += f;
    best = std::max(best, total / s);
  }
  return best;
}

// Median/min/max cell: "12.34 (11.90-13.10)".
inline std::string cell(double median, double lo, double hi, int precision = 2) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.*f (%.*f-%.*f)", precision, median, precision, lo, precision, hi);
  return buf;
}

}  // namespace sy::bench
