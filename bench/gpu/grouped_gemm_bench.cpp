// The grouped FP8 expert GEMM on the GPU at DeepSeek-V3 expert shapes: N×K = 4096×7168 (the fused
// gate+up projection, 2 × 2048 outputs, over hidden 7168) and 7168×2048 (down projection), 8
// experts (one EP32 rank's share of 256), 128 to 4096 rows per expert in the contiguous layout.
// Prints per case the median/min/max time and TFLOP/s (2·M·N·K) against the H200's dense FP8
// peak; beside it, as same-run baselines, one expert's rows through the dense fp8_gemm kernel
// (mma.sync) and through cuBLASLt's block scaling (VEC128 × BLK128x128; "n/a" when it declines).
// Acceptance (issue 10): >= 50% of the dense FP8 peak. Run: grouped_gemm_bench [--quick] [--reps N].
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench/gpu/gpu_bench.hpp"
#include "gpu/cuda/cublaslt/fp8_gemm_lt.hpp"
#include "gpu/cuda/kernels.hpp"

namespace {

using namespace sy::gpu;
using sy::bench::gpu::check;

template <class T>
T* device_alloc(std::size_t n) {
  T* d = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(T)), "cudaMalloc");
  return d;
}

// Random e4m3 bytes in a modest range (exponent field kept below the top, so no NaNs).
fp8_e4m3* device_fp8(std::size_t n, std::uint64_t seed) {
  std::vector<std::uint8_t> host(n);
  std::uint64_t x = seed;
  for (std::uint8_t& v : host) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<std::uint8_t>(((x >> 33) & 0x80u) | ((x >> 40) % 0x60u));
  }
  auto* d = device_alloc<fp8_e4m3>(n);
  check(cudaMemcpy(d, host.data(), n, cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

float* device_scales(std::size_t n) {
  std::vector<float> host(n, 1.0f / 448.0f);
  auto* d = device_alloc<float>(n);
  check(cudaMemcpy(d, host.data(), n * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 10;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
  }
  if (quick) reps = 3;
  sy::bench::gpu::require_device();
  std::printf("H200 peak: dense FP8 %.0f TFLOP/s\n", sy::bench::gpu::kH200Fp8Tflops);
  std::printf("%-34s %10s %10s %10s %9s %7s %12s %12s\n", "case", "median_us", "min_us", "max_us", "TFLOP/s", "%FP8",
              "dense_mma", "dense_cuBLASLt");
  const std::int64_t experts = 8;
  const std::int64_t shapes[][2] = {{4096, 7168}, {7168, 2048}};
  const std::vector<std::int64_t> rows_list =
      quick ? std::vector<std::int64_t>{128, 1024} : std::vector<std::int64_t>{128, 256, 512, 1024, 2048, 4096};
  for (const auto& shape : shapes) {
    const std::int64_t n = shape[0], k = shape[1];
    fp8_e4m3* b = device_fp8(static_cast<std::size_t>(experts * n * k), 7);
    float* b_scales = device_scales(static_cast<std::size_t>(experts * (n / 128) * (k / 128)));
    for (const std::int64_t rows : rows_list) {
      const std::int64_t m = experts * rows;
      fp8_e4m3* a = device_fp8(static_cast<std::size_t>(m * k), 11);
      float* a_scales = device_scales(static_cast<std::size_t>(m * (k / 128)));
      float* c = device_alloc<float>(static_cast<std::size_t>(m * n));
      std::vector<std::int32_t> ids(static_cast<std::size_t>(m));
      for (std::int64_t i = 0; i < m; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i / rows);
      auto* d_ids = device_alloc<std::int32_t>(ids.size());
      check(cudaMemcpy(d_ids, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      const cuda::GroupedFp8GemmParams p{.a = a, .a_scales = a_scales, .expert_ids = d_ids, .b = b, .b_scales = b_scales,
                                         .c = c, .m = m, .n = n, .k = k, .experts = experts};
      const auto t = sy::bench::gpu::time_it([&] { cuda::grouped_fp8_gemm(p, nullptr); }, reps);
      // Baseline in the same run: the dense fp8_gemm over one expert's rows, experts times.
      const Fp8GemmParams dense{.a = a, .a_scales = a_scales, .b = b, .b_scales = b_scales, .c = c, .m = rows, .n = n,
                                .k = k, .lda = k, .ldb = k, .ldc = n, .a_scale_row_stride = k / 128};
      const auto td = sy::bench::gpu::time_it([&] { cuda::fp8_gemm(dense, nullptr); }, reps);
      // cuBLASLt wants the activation scales M-major: time it on the same buffer read that way.
      Fp8GemmParams lt = dense;
      lt.a_scale_row_stride = 1;
      lt.a_scale_col_stride = rows;
      double lt_tflops = -1.0;
      if (cuda::impl::cublaslt::eligible(lt) && cuda::impl::cublaslt::run(lt, nullptr)) {
        const auto tl = sy::bench::gpu::time_it([&] { cuda::impl::cublaslt::run(lt, nullptr); }, reps);
        lt_tflops = 2.0 * static_cast<double>(rows) * static_cast<double>(n) * static_cast<double>(k) / tl.median / 1e12;
      }
      const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
      const double tflops = flops / t.median / 1e12;
      const double dense_tflops = flops / experts / td.median / 1e12;
      char lt_text[32] = "n/a";
      if (lt_tflops >= 0.0) std::snprintf(lt_text, sizeof(lt_text), "%.1f", lt_tflops);
      char name[64];  // snprintf: GCC 12 at -O3 warns falsely (-Wrestrict) on string concatenation
      std::snprintf(name, sizeof(name), "N%lld K%lld rows/expert %lld", static_cast<long long>(n),
                    static_cast<long long>(k), static_cast<long long>(rows));
      std::printf("%-34s %10.1f %10.1f %10.1f %9.1f %6.1f%% %12.1f %12s\n", name, t.median * 1e6, t.min * 1e6,
                  t.max * 1e6, tflops, 100.0 * tflops / sy::bench::gpu::kH200Fp8Tflops, dense_tflops, lt_text);
      check(cudaFree(a), "cudaFree");
      check(cudaFree(a_scales), "cudaFree");
      check(cudaFree(c), "cudaFree");
      check(cudaFree(d_ids), "cudaFree");
    }
    check(cudaFree(b), "cudaFree");
    check(cudaFree(b_scales), "cudaFree");
  }
  return 0;
}
