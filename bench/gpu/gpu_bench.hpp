// Timing and same-run baselines for the GPU kernel benchmarks (bench/gpu/*_bench.cpp): CUDA-event
// timing with median/min/max, the device-to-device copy bandwidth measured in the same run, and
// the H200's datasheet peaks the tables print beside each figure (HBM3e 4.8 TB/s; dense BF16
// ~989 TFLOP/s and dense FP8 ~1979 TFLOP/s, the H100 SXM's rates). Bench-only; single-threaded.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

namespace sy::bench::gpu {

inline constexpr double kH200HbmGBs = 4800.0;
inline constexpr double kH200Bf16Tflops = 989.0;
inline constexpr double kH200Fp8Tflops = 1979.0;

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// Exits 77 ("skipped", with the reason) when no CUDA device can be used.
inline void require_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    std::printf("skipped: no CUDA device: %s\n", status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    std::exit(77);
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s, %d SMs, %.0f GiB\n", prop.name, prop.multiProcessorCount,
              static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
}

struct Timing {
  double median = 0.0, min = 0.0, max = 0.0;  // seconds per call
};

// One warm-up call, then `reps` calls timed one by one with CUDA events on the default stream.
inline Timing time_it(const std::function<void()>& fn, int reps) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  fn();
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(start, nullptr), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    t.push_back(ms * 1e-3);
  }
  check(cudaEventDestroy(start), "cudaEventDestroy");
  check(cudaEventDestroy(stop), "cudaEventDestroy");
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front(), t.back()};
}

// Device-to-device copy of 2 GiB: bytes read + written per second, the same run's HBM baseline.
inline double copy_bandwidth_gbs() {
  const std::size_t bytes = std::size_t{1} << 31;
  void* a = nullptr;
  void* b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMemset(a, 1, bytes), "cudaMemset");
  const Timing t = time_it([&] { check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr), "copy"); }, 10);
  check(cudaFree(a), "cudaFree");
  check(cudaFree(b), "cudaFree");
  return 2.0 * static_cast<double>(bytes) / t.median / 1e9;
}

}  // namespace sy::bench::gpu
