// CPU GEMM throughput at DeepSeek-V3 layer shapes: the cpu backend's fp8_gemm (block-scaled FP8
// weight, act_quant'ed activations) against OpenBLAS cblas_sgemm on the same weights dequantized
// to fp32, both measured in this run on the same threads; and bf16_gemm at an lm_head-like shape
// against sgemm. Prints one table: median (min-max) time, GFLOP/s, weight GB/s and the
// throughput ratio (sgemm time / our time). Targets: ratio >= 1.5 at m = 1, 8; >= 0.5 at 512.
// Run: gemm_bench [--quick] [--threads N]   (N defaults to the cpu backend's thread count)
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/cpu_baselines.hpp"
#include "bench/lcg.hpp"
#include "gpu/cpu/kernels.hpp"
#include "gpu/cpu/runtime.hpp"
#include "gpu/ref/kernels.hpp"

namespace {

using sy::bench::Lcg;

using namespace sy::gpu;

struct Row {
  std::string shape;
  std::int64_t m;
  sy::bench::Timing ours, base;
  double flops, our_bytes, base_bytes, err;
};

double normalized_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0.0, r = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    r += double(b[i]) * b[i];
  }
  return std::sqrt(e / r);
}

void print(const std::vector<Row>& rows, int threads, const char* isa) {
  std::printf("\n%d threads, isa %s; times in ms as median (min-max); ratio = sgemm time / ours\n", threads, isa);
  std::printf("| kernel | N x K | M | ours ms | ours GFLOP/s | ours GB/s | sgemm ms | sgemm GFLOP/s | sgemm GB/s "
              "| ratio | rel. diff |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %lld | %s | %.1f | %.1f | %s | %.1f | %.1f | **%.2f** | %.1e |\n", r.shape.c_str(),
                static_cast<long long>(r.m), sy::bench::cell(r.ours.median * 1e3, r.ours.min * 1e3, r.ours.max * 1e3).c_str(),
                r.flops / r.ours.median * 1e-9, r.our_bytes / r.ours.median * 1e-9,
                sy::bench::cell(r.base.median * 1e3, r.base.min * 1e3, r.base.max * 1e3).c_str(),
                r.flops / r.base.median * 1e-9, r.base_bytes / r.base.median * 1e-9, r.base.median / r.ours.median,
                r.err);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: gemm_bench [--quick] [--threads N]\n");
      return 2;
    }
  }
  if (threads > 0) cpu::set_num_threads(threads);
  threads = cpu::num_threads();
  openblas_set_num_threads(threads);
  const int reps = quick ? 3 : 7;
  const double min_seconds = quick ? 0.05 : 0.3;
  Lcg rng(0x9E3779B97F4A7C15ull);
  std::vector<Row> rows;

  struct Shape {
    std::int64_t n, k;
  };
  const Shape shapes[] = {{2112, 7168}, {24576, 1536}, {4096, 7168}, {7168, 2048}};
  const std::int64_t ms[] = {1, 8, 32, 512};
  for (const Shape s : shapes) {
    // Weight: random e4m3 codes (no NaN) with per-block scales; its fp32 dequantization for sgemm.
    std::vector<fp8_e4m3> w(static_cast<std::size_t>(s.n * s.k));
    for (auto& x : w) {
      std::uint8_t code = static_cast<std::uint8_t>(rng.next());
      if ((code & 0x7F) == 0x7F) code ^= 1;
      x.bits = code;
    }
    std::vector<float> w_scales(static_cast<std::size_t>(quant_blocks(s.n) * quant_blocks(s.k)));
    for (float& x : w_scales) x = rng.uniform(1e-3f, 2e-3f);
    std::vector<float> w_f32(w.size());
    ref::weight_dequant({.q = w.data(), .scales = w_scales.data(), .w = w_f32.data(), .rows = s.n, .cols = s.k,
                         .q_stride = s.k, .w_stride = s.k});
    for (const std::int64_t m : ms) {
      std::vector<float> x(static_cast<std::size_t>(m * s.k));
      for (float& v : x) v = rng.uniform(-2.0f, 2.0f);
      std::vector<fp8_e4m3> a(x.size());
      std::vector<float> a_scales(static_cast<std::size_t>(m * (s.k / 128)));
      ref::act_quant({.x = x.data(), .y = a.data(), .scales = a_scales.data(), .rows = m, .cols = s.k,
                      .x_stride = s.k, .y_stride = s.k, .scale_row_stride = s.k / 128});
      std::vector<float> a_f32(x.size());
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t k = 0; k < s.k; ++k)
          a_f32[i * s.k + k] = fp8_to_float(a[i * s.k + k]) * a_scales[i * (s.k / 128) + k / 128];
      std::vector<float> c(static_cast<std::size_t>(m * s.n)), c_base(c.size());
      const Fp8GemmParams p{.a = a.data(), .a_scales = a_scales.data(), .b = w.data(), .b_scales = w_scales.data(),
                            .c = c.data(), .m = m, .n = s.n, .k = s.k, .lda = s.k, .ldb = s.k, .ldc = s.n,
                            .a_scale_row_stride = s.k / 128};
      Row r;
      r.shape = "fp8_gemm " + std::to_string(s.n) + " x " + std::to_string(s.k);
      r.m = m;
      r.ours = sy::bench::time_it([&] { cpu::fp8_gemm(p); }, reps, min_seconds);
      r.base = sy::bench::time_it(
          [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(s.n),
                        static_cast<int>(s.k), 1.0f, a_f32.data(), static_cast<int>(s.k), w_f32.data(),
                        static_cast<int>(s.k), 0.0f, c_base.data(), static_cast<int>(s.n));
          },
          reps, min_seconds);
      r.flops = 2.0 * double(m) * double(s.n) * double(s.k);
      r.our_bytes = double(s.n) * double(s.k);
      r.base_bytes = 4.0 * double(s.n) * double(s.k);
      r.err = normalized_diff(c, c_base);
      rows.push_back(r);
      std::fprintf(stderr, "%s m=%lld: %.2f ms vs %.2f ms\n", r.shape.c_str(), static_cast<long long>(m),
                   r.ours.median * 1e3, r.base.median * 1e3);
    }
  }
  // lm_head-like BF16 weight [129280, 256].
  {
    const std::int64_t n = 129280, k = 256;
    std::vector<bf16> w(static_cast<std::size_t>(n * k));
    std::vector<float> w_f32(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      w[i] = bf16_from_float(rng.uniform(-0.05f, 0.05f));
      w_f32[i] = bf16_to_float(w[i]);
    }
    for (const std::int64_t m : {std::int64_t{1}, std::int64_t{16}}) {
      std::vector<float> a(static_cast<std::size_t>(m * k));
      for (float& v : a) v = rng.uniform(-2.0f, 2.0f);
      std::vector<float> c(static_cast<std::size_t>(m * n)), c_base(c.size());
      const Bf16GemmParams p{.a = a.data(), .b = w.data(), .c = c.data(), .m = m, .n = n, .k = k, .lda = k,
                             .ldb = k, .ldc = n};
      Row r;
      r.shape = "bf16_gemm " + std::to_string(n) + " x " + std::to_string(k);
      r.m = m;
      r.ours = sy::bench::time_it([&] { cpu::bf16_gemm(p); }, reps, min_seconds);
      r.base = sy::bench::time_it(
          [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                        static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), w_f32.data(), static_cast<int>(k),
                        0.0f, c_base.data(), static_cast<int>(n));
          },
          reps, min_seconds);
      r.flops = 2.0 * double(m) * double(n) * double(k);
      r.our_bytes = 2.0 * double(n) * double(k);
      r.base_bytes = 4.0 * double(n) * double(k);
      r.err = normalized_diff(c, c_base);
      rows.push_back(r);
    }
  }
  print(rows, threads, std::string(cpu::isa_name(cpu::active_isa())).c_str());
  return 0;
}
