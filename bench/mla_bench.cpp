// CPU MLA decode (absorbed form over the paged latent cache) against baselines measured in the
// same run on the same threads: at tiny dims (kv_lora 128, rope 32, 4 heads; 16 sequences of
// 4096 tokens) the kernel is memory-bound and is reported as GB/s of cache read against memcpy
// bandwidth; at V3 dims (512 + 64, 128 heads) it is compute-bound and is reported as GFLOP/s
// (FlashMLA's count, 2·heads·Σlen·(576 + 512)) against an FMA-peak loop. Targets: >= 40% of copy
// bandwidth, >= 30% of FMA peak. Run: mla_bench [--quick] [--threads N].
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "bench/cpu_baselines.hpp"
#include "bench/lcg.hpp"
#include "gpu/cpu/kernels.hpp"
#include "gpu/cpu/runtime.hpp"

namespace {

using sy::bench::Lcg;

using namespace sy::gpu;

struct Case {
  const char* name;
  std::int64_t lora, rope, heads, seqs, len;
  KvCacheDtype dtype;
};

struct Result {
  sy::bench::Timing t;
  double bytes, flops;
};

Result run_case(const Case& c, Lcg& rng, int reps, double min_seconds) {
  const std::int64_t dim = c.lora + c.rope;
  const std::int64_t pages_per_seq = (c.len + kMlaPageSize - 1) / kMlaPageSize;
  const std::int64_t num_pages = c.seqs * pages_per_seq;
  const std::size_t entries = static_cast<std::size_t>(num_pages * kMlaPageSize * dim);
  std::vector<float> cache_f32;
  std::vector<bf16> cache_bf16;
  if (c.dtype == KvCacheDtype::fp32) {
    cache_f32.resize(entries);
    for (float& x : cache_f32) x = rng.uniform(-1.0f, 1.0f);
  } else {
    cache_bf16.resize(entries);
    for (bf16& x : cache_bf16) x = bf16_from_float(rng.uniform(-1.0f, 1.0f));
  }
  // Pages interleaved across sequences, as a pool hands them out.
  std::vector<std::int32_t> table(static_cast<std::size_t>(num_pages));
  for (std::int64_t s = 0; s < c.seqs; ++s)
    for (std::int64_t j = 0; j < pages_per_seq; ++j) table[s * pages_per_seq + j] = static_cast<std::int32_t>(j * c.seqs + s);
  std::vector<std::int32_t> seq_ids(static_cast<std::size_t>(c.seqs)), positions(seq_ids.size());
  std::iota(seq_ids.begin(), seq_ids.end(), 0);
  for (auto& p : positions) p = static_cast<std::int32_t>(c.len - 1);
  std::vector<float> q_latent(static_cast<std::size_t>(c.seqs * c.heads * c.lora));
  std::vector<float> q_pe(static_cast<std::size_t>(c.seqs * c.heads * c.rope));
  for (float& x : q_latent) x = rng.uniform(-1.0f, 1.0f);
  for (float& x : q_pe) x = rng.uniform(-1.0f, 1.0f);
  std::vector<float> out(q_latent.size()), lse(static_cast<std::size_t>(c.seqs * c.heads));
  MlaDecodeParams p;
  p.cache = {.data = c.dtype == KvCacheDtype::fp32 ? static_cast<void*>(cache_f32.data()) : cache_bf16.data(),
             .dtype = c.dtype, .num_pages = num_pages, .kv_lora_rank = c.lora, .rope_dim = c.rope};
  p.table = {.pages = table.data(), .num_seqs = c.seqs, .max_pages = pages_per_seq, .stride = pages_per_seq};
  p.q_latent = {q_latent.data(), c.heads * c.lora, c.lora};
  p.q_pe = {q_pe.data(), c.heads * c.rope, c.rope};
  p.out_latent = {out.data(), c.heads * c.lora, c.lora};
  p.lse = lse.data();
  p.seq_ids = seq_ids.data();
  p.positions = positions.data();
  p.queries = c.seqs;
  p.heads = c.heads;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(dim));
  Result r;
  r.t = sy::bench::time_it([&] { cpu::mla_decode(p); }, reps, min_seconds);
  const double tokens = double(c.seqs) * double(c.len);
  r.bytes = tokens * double(dim) * (c.dtype == KvCacheDtype::fp32 ? 4.0 : 2.0);
  r.flops = 2.0 * double(c.heads) * tokens * double(dim + c.lora);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: mla_bench [--quick] [--threads N]\n");
      return 2;
    }
  }
  if (threads > 0) cpu::set_num_threads(threads);
  threads = cpu::num_threads();
  const int reps = quick ? 3 : 9;
  const double min_seconds = quick ? 0.1 : 0.5;

  // Single-thread baselines once, for context; the ratio uses the all-thread baseline measured
  // right before each case, because on a shared machine the available bandwidth and cores drift.
  const double copy_1 = sy::bench::copy_bandwidth(1, std::size_t{256} << 20, reps);
  const double peak_1 = sy::bench::fma_peak(1, reps);
  Lcg rng(0x2545F4914F6CDD1Dull);
  const Case cases[] = {
      {"tiny fp32 cache (128+32, 4 heads, 32 x 4096)", 128, 32, 4, 32, 4096, KvCacheDtype::fp32},
      {"tiny bf16 cache (128+32, 4 heads, 32 x 4096)", 128, 32, 4, 32, 4096, KvCacheDtype::bf16},
      {"V3 bf16 cache (512+64, 128 heads, 4 x 1024)", 512, 64, 128, 4, 1024, KvCacheDtype::bf16},
      {"V3 fp32 cache (512+64, 128 heads, 4 x 1024)", 512, 64, 128, 4, 1024, KvCacheDtype::fp32},
  };
  std::printf("\n%d threads, isa %s; ms as median (min-max). One thread: memcpy %.1f GB/s, FMA peak %.1f GFLOP/s\n",
              threads, std::string(cpu::isa_name(cpu::active_isa())).c_str(), copy_1 * 1e-9, peak_1 * 1e-9);
  std::printf("| case | ms | cache GB/s | GFLOP/s | baseline (%d threads, best of %d) | ratio |\n"
              "|---|---|---|---|---|---|\n", threads, reps);
  for (const Case& c : cases) {
    const bool memory_bound = c.heads <= 16;
    const double base = memory_bound ? sy::bench::copy_bandwidth(threads, std::size_t{256} << 20, reps)
                                     : sy::bench::fma_peak(threads, reps);
    const Result r = run_case(c, rng, reps, min_seconds);
    const double gbs = r.bytes / r.t.median;
    const double gflops = r.flops / r.t.median;
    char baseline[64], ratio[64];
    if (memory_bound) {
      std::snprintf(baseline, sizeof baseline, "memcpy %.1f GB/s", base * 1e-9);
      std::snprintf(ratio, sizeof ratio, "**%.0f%%** of memcpy", 100.0 * gbs / base);
    } else {
      std::snprintf(baseline, sizeof baseline, "FMA peak %.1f GFLOP/s", base * 1e-9);
      std::snprintf(ratio, sizeof ratio, "**%.0f%%** of FMA peak", 100.0 * gflops / base);
    }
    std::printf("| %s | %s | %.1f | %.1f | %s | %s |\n", c.name,
                sy::bench::cell(r.t.median * 1e3, r.t.min * 1e3, r.t.max * 1e3).c_str(), gbs * 1e-9, gflops * 1e-9,
                baseline, ratio);
  }
  return 0;
}
