// MLA decode on the GPU at DeepSeek-V3 dims (kv_lora 512 + rope 64, 128 heads, BF16 cache,
// 64-token pages) with 4096 cached tokens per sequence: batch 64 and 128, 1 query token per
// sequence (plain decode) and 2 (MTP verification). Prints per case the median/min/max time, the
// cache bytes read per second against the H200's HBM peak and this run's device copy bandwidth,
// and FlashMLA's FLOP count (2·heads·queries·len·(576 + 512)) against the dense BF16 peak; each
// case runs the tensor-core kernel ("mma") and the CUDA-core one ("simt", SY_CUDA_MLA_DECODE).
// Acceptance (issue 10): >= 60% of HBM bandwidth where memory-bound or >= 50% of BF16 peak
// where compute-bound. Run: mla_decode_bench [--quick] [--len N] [--reps N].
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bench/gpu/gpu_bench.hpp"
#include "gpu/cuda/kernels.hpp"

namespace {

using namespace sy::gpu;
using sy::bench::gpu::check;

template <class T>
T* device_filled(std::size_t n, std::uint64_t seed, float scale) {
  std::vector<T> host(n);
  std::uint64_t x = seed;
  for (T& v : host) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const float f = (static_cast<float>(x >> 40) / static_cast<float>(1ull << 24) - 0.5f) * 2.0f * scale;
    if constexpr (std::is_same_v<T, bf16>) v = bf16_from_float(f);
    else v = f;
  }
  T* d = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(d, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 10;
  std::int64_t len = 4096;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--len") == 0 && i + 1 < argc) len = std::atoll(argv[++i]);
  }
  if (quick) reps = 3;
  sy::bench::gpu::require_device();
  const double copy_gbs = sy::bench::gpu::copy_bandwidth_gbs();
  std::printf("baseline: device copy %.0f GB/s (read + write) this run; H200 peaks: HBM %.0f GB/s, BF16 %.0f TFLOP/s\n",
              copy_gbs, sy::bench::gpu::kH200HbmGBs, sy::bench::gpu::kH200Bf16Tflops);
  const std::int64_t lora = 512, rope = 64, dim = lora + rope, heads = 128;
  const float scale = 0.1352338f;
  std::printf("%-31s %10s %10s %10s %9s %7s %7s %9s %7s\n", "case", "median_us", "min_us", "max_us", "GB/s", "%HBM",
              "%copy", "TFLOP/s", "%BF16");
  for (const std::int64_t batch : {64, 128}) {
    const std::int64_t pages_per_seq = (len + kMlaPageSize - 1) / kMlaPageSize;
    const std::int64_t num_pages = batch * pages_per_seq;
    bf16* cache = device_filled<bf16>(static_cast<std::size_t>(num_pages * kMlaPageSize * dim), 1, 1.0f);
    std::vector<std::int32_t> table(static_cast<std::size_t>(num_pages));
    for (std::int64_t s = 0; s < batch; ++s)  // pages interleaved across sequences, as a pool hands them out
      for (std::int64_t j = 0; j < pages_per_seq; ++j) table[s * pages_per_seq + j] = static_cast<std::int32_t>(j * batch + s);
    std::int32_t* d_table = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&d_table), table.size() * 4), "cudaMalloc");
    check(cudaMemcpy(d_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    for (const std::int64_t q_per_seq : {1, 2}) {
      const std::int64_t queries = batch * q_per_seq;
      std::vector<std::int32_t> seq_ids, positions;
      for (std::int64_t s = 0; s < batch; ++s)
        for (std::int64_t j = 0; j < q_per_seq; ++j) {
          seq_ids.push_back(static_cast<std::int32_t>(s));
          positions.push_back(static_cast<std::int32_t>(len - q_per_seq + j));
        }
      std::int32_t* d_seq = nullptr;
      std::int32_t* d_pos = nullptr;
      check(cudaMalloc(reinterpret_cast<void**>(&d_seq), seq_ids.size() * 4), "cudaMalloc");
      check(cudaMalloc(reinterpret_cast<void**>(&d_pos), positions.size() * 4), "cudaMalloc");
      check(cudaMemcpy(d_seq, seq_ids.data(), seq_ids.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(d_pos, positions.data(), positions.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      float* q_latent = device_filled<float>(static_cast<std::size_t>(queries * heads * lora), 2, 1.0f);
      float* q_pe = device_filled<float>(static_cast<std::size_t>(queries * heads * rope), 3, 1.0f);
      float* out = nullptr;
      float* lse = nullptr;
      check(cudaMalloc(reinterpret_cast<void**>(&out), static_cast<std::size_t>(queries * heads * lora) * 4), "cudaMalloc");
      check(cudaMalloc(reinterpret_cast<void**>(&lse), static_cast<std::size_t>(queries * heads) * 4), "cudaMalloc");
      const MlaDecodeParams p{
          .cache = {.data = cache, .dtype = KvCacheDtype::bf16, .num_pages = num_pages},
          .table = {.pages = d_table, .num_seqs = batch, .max_pages = pages_per_seq, .stride = pages_per_seq},
          .q_latent = {q_latent, heads * lora, lora},
          .q_pe = {q_pe, heads * rope, rope},
          .out_latent = {out, heads * lora, lora},
          .lse = lse,
          .seq_ids = d_seq,
          .positions = d_pos,
          .queries = queries,
          .heads = heads,
          .softmax_scale = scale};
      for (const char* kernel : {"mma", "simt"}) {
        setenv("SY_CUDA_MLA_DECODE", kernel, 1);
        const auto t = sy::bench::gpu::time_it([&] { sy::gpu::cuda::mla_decode(p, nullptr); }, reps);
        // Bytes: the cache once per sequence (FlashMLA's count), queries in and outputs out (fp32 here).
        const double bytes = static_cast<double>(batch * len * dim * 2) +
                             static_cast<double>(queries * heads * (dim + lora + 1) * 4);
        double flops = 0.0;
        for (const std::int32_t pos : positions) flops += 2.0 * static_cast<double>(heads) * (pos + 1) * (dim + lora);
        const double gbs = bytes / t.median / 1e9;
        const double tflops = flops / t.median / 1e12;
        // snprintf, not string concatenation: GCC 12 at -O3 warns falsely (-Wrestrict) on the latter.
        char name[64];
        std::snprintf(name, sizeof(name), "%s b%lld q%lld len%lld", kernel, static_cast<long long>(batch),
                      static_cast<long long>(q_per_seq), static_cast<long long>(len));
        std::printf("%-31s %10.1f %10.1f %10.1f %9.0f %6.1f%% %6.1f%% %9.1f %6.1f%%\n", name, t.median * 1e6,
                    t.min * 1e6, t.max * 1e6, gbs, 100.0 * gbs / sy::bench::gpu::kH200HbmGBs, 100.0 * gbs / copy_gbs, tflops,
                    100.0 * tflops / sy::bench::gpu::kH200Bf16Tflops);
      }
      unsetenv("SY_CUDA_MLA_DECODE");
      check(cudaFree(q_latent), "cudaFree");
      check(cudaFree(q_pe), "cudaFree");
      check(cudaFree(out), "cudaFree");
      check(cudaFree(lse), "cudaFree");
      check(cudaFree(d_seq), "cudaFree");
      check(cudaFree(d_pos), "cudaFree");
    }
    check(cudaFree(cache), "cudaFree");
    check(cudaFree(d_table), "cudaFree");
  }
  return 0;
}
