// The device entry points of the CUDA backend: host-side checks (gpu/validate.cpp's shape and
// stride checks, then this backend's own limits and alignment), then the kernel folder's
// launcher. Never reads through the params' pointers (device memory), except where noted
// (mla_prefill reads one int of cu_seqlens_q; sample copies its rows to the host).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/cuda/check.hpp"
#include "gpu/cuda/cublaslt/fp8_gemm_lt.hpp"
#include "gpu/cuda/fp8_gemm/launch.hpp"
#include "gpu/cuda/kernels.hpp"
#include "gpu/cuda/mla_decode/config.hpp"
#include "gpu/cuda/mla_decode/launch.hpp"
#include "gpu/cuda/mla_prefill/config.hpp"
#include "gpu/cuda/mla_prefill/launch.hpp"
#include "gpu/cuda/pointwise/launch.hpp"
#include "gpu/cuda/router/config.hpp"
#include "gpu/cuda/router/launch.hpp"
#include "gpu/cuda/simt_gemm/launch.hpp"
#include "gpu/ref/kernels.hpp"

namespace sy::gpu::cuda {
namespace {

using detail::check_launch;
using detail::raw;

[[noreturn]] void fail(const char* kernel, const std::string& problem) {
  throw std::invalid_argument(std::string(kernel) + " (cuda): " + problem);
}

void at_most(const char* kernel, const char* name, std::int64_t value, std::int64_t limit) {
  if (value > limit) {
    fail(kernel, std::string(name) + " (" + std::to_string(value) + ") exceeds this backend's limit of " +
                     std::to_string(limit));
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// The MLA up-projection weight block of head h: W_UK_h rows start at kv_b + h·(nope+v)·lora.
std::int64_t head_block(const MlaUpWeights& w) { return (w.nope_dim + w.v_dim) * w.kv_lora_rank; }

}  // namespace

void rms_norm(const RmsNormParams& p, Stream s) {
  validate(p);
  if (p.rows == 0) return;
  at_most("rms_norm", "rows", p.rows, 0x7FFFFFFF);
  impl::pointwise::launch_rms_norm(p, raw(s));
  check_launch("rms_norm");
}

void apply_rope(const RopeParams& p, Stream s) {
  validate(p);
  if (p.rows == 0) return;
  impl::pointwise::launch_apply_rope(p, raw(s));
  check_launch("apply_rope");
}

void act_quant(const ActQuantParams& p, Stream s) {
  validate(p);
  if (p.rows == 0) return;
  impl::pointwise::launch_act_quant(p, raw(s));
  check_launch("act_quant");
}

void swiglu(const SwigluParams& p, Stream s) {
  validate(p);
  if (p.rows == 0) return;
  impl::pointwise::launch_swiglu(p, raw(s));
  check_launch("swiglu");
}

void moe_select(const MoeSelectParams& p, Stream s) {
  validate(p);
  if (p.tokens == 0) return;
  at_most("moe_select", "routing.experts", p.routing.experts, impl::router::kMaxExperts);
  at_most("moe_select", "routing.n_group", p.routing.n_group, impl::router::kMaxGroups);
  at_most("moe_select", "tokens", p.tokens, 0x7FFFFFFF);
  impl::router::launch_moe_select(p, raw(s));
  check_launch("moe_select");
}

void argmax(const ArgmaxParams& p, Stream s) {
  validate(p);
  if (p.rows == 0) return;
  at_most("argmax", "vocab", p.vocab, 0x7FFFFFFF);
  impl::router::launch_argmax(p, raw(s));
  check_launch("argmax");
}

void sample(const SampleParams& p, Stream s) {
  validate(p);
  if (p.rows == 0) return;
  const cudaStream_t stream = raw(s);
  const std::int64_t extent = (p.rows - 1) * p.logits_stride + p.vocab;
  std::vector<float> logits(static_cast<std::size_t>(extent));
  std::vector<SamplerConfig> configs(static_cast<std::size_t>(p.rows));
  std::vector<std::uint64_t> counters(static_cast<std::size_t>(p.rows));
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(p.rows));
  SY_CUDA_CHECK(cudaMemcpyAsync(logits.data(), p.logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  SY_CUDA_CHECK(cudaMemcpyAsync(configs.data(), p.configs, configs.size() * sizeof(SamplerConfig), cudaMemcpyDeviceToHost,
                                stream));
  SY_CUDA_CHECK(cudaMemcpyAsync(counters.data(), p.counters, counters.size() * sizeof(std::uint64_t),
                                cudaMemcpyDeviceToHost, stream));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream));
  SampleParams host = p;
  host.logits = logits.data();
  host.configs = configs.data();
  host.counters = counters.data();
  host.tokens = tokens.data();
  ref::sample(host);
  SY_CUDA_CHECK(cudaMemcpyAsync(p.tokens, tokens.data(), tokens.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice,
                                stream));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream));  // `tokens` dies here
}

void bf16_gemm(const Bf16GemmParams& p, Stream s) {
  validate(p);
  if (p.m == 0) return;
  impl::simt_gemm::launch_bf16({.a = p.a, .a_m = p.lda, .b = p.b, .b_n = p.ldb, .c = p.c, .c_m = p.ldc,
                          .m = p.m, .n = p.n, .k = p.k},
                         raw(s));
  check_launch("bf16_gemm");
}

void fp8_dequant_gemm(const Fp8DequantGemmParams& p, Stream s) {
  validate(p);
  if (p.m == 0) return;
  impl::simt_gemm::launch_fp8_dequant({.a = p.a, .a_m = p.lda, .b = p.b, .b_n = p.ldb, .c = p.c, .c_m = p.ldc,
                                 .m = p.m, .n = p.n, .k = p.k, .b_scales = p.b_scales,
                                 .scale_k_blocks = quant_blocks(p.k)},
                                raw(s));
  check_launch("fp8_dequant_gemm");
}

Fp8GemmPath fp8_gemm_path(const Fp8GemmParams& p) {
  if (impl::cublaslt::eligible(p)) return Fp8GemmPath::cublaslt;
  // cp.async moves 16-byte chunks: every row of A and B must start 16-byte aligned.
  const bool rows_aligned = p.lda % 16 == 0 && p.ldb % 16 == 0 && aligned16(p.a) && aligned16(p.b);
  return rows_aligned ? Fp8GemmPath::mma : Fp8GemmPath::simt;
}

void fp8_gemm(const Fp8GemmParams& p, Stream s) {
  validate(p);
  if (p.m == 0) return;
  Fp8GemmPath path = fp8_gemm_path(p);
  // cuBLASLt may still decline (no algorithm for the shape): the tensor-core kernel takes it.
  if (path == Fp8GemmPath::cublaslt) {
    if (impl::cublaslt::run(p, raw(s))) return;
    path = Fp8GemmPath::mma;
  }
  if (path == Fp8GemmPath::mma) {
    impl::fp8_gemm::launch({.a = p.a, .lda = p.lda, .a_scales = p.a_scales, .a_scale_m = p.a_scale_row_stride,
                      .a_scale_k = p.a_scale_col_stride, .b = p.b, .ldb = p.ldb, .b_scales = p.b_scales,
                      .c = p.c, .ldc = p.ldc, .m = p.m, .n = p.n, .k = p.k},
                     raw(s));
  } else {
    impl::simt_gemm::launch_fp8_block({.a = p.a, .a_m = p.lda, .b = p.b, .b_n = p.ldb, .c = p.c, .c_m = p.ldc,
                                 .m = p.m, .n = p.n, .k = p.k, .b_scales = p.b_scales,
                                 .scale_k_blocks = p.k / kQuantBlock, .a_scales = p.a_scales,
                                 .a_scale_m = p.a_scale_row_stride, .a_scale_k = p.a_scale_col_stride},
                                raw(s));
  }
  check_launch("fp8_gemm");
}

void grouped_fp8_gemm(const GroupedFp8GemmParams& p, Stream s) {
  constexpr const char* k = "grouped_fp8_gemm";
  if (p.m < 0 || p.m % kQuantBlock != 0) fail(k, "m (" + std::to_string(p.m) + ") must be a multiple of 128");
  if (p.n <= 0 || p.n % kQuantBlock != 0) fail(k, "n (" + std::to_string(p.n) + ") must be a positive multiple of 128");
  if (p.k <= 0 || p.k % kQuantBlock != 0) fail(k, "k (" + std::to_string(p.k) + ") must be a positive multiple of 128");
  if (p.experts <= 0) fail(k, "experts must be > 0");
  if (p.m == 0) return;
  if (p.a == nullptr || p.a_scales == nullptr || p.expert_ids == nullptr || p.b == nullptr || p.b_scales == nullptr ||
      p.c == nullptr) {
    fail(k, "a, a_scales, expert_ids, b, b_scales and c must all be set");
  }
  if (!aligned16(p.a) || !aligned16(p.b)) fail(k, "a and b must be 16-byte aligned");
  impl::fp8_gemm::launch({.a = p.a, .lda = p.k, .a_scales = p.a_scales, .a_scale_m = p.k / kQuantBlock, .a_scale_k = 1,
                    .b = p.b, .ldb = p.k, .b_expert_stride = p.n * p.k, .b_scales = p.b_scales,
                    .b_scale_expert_stride = (p.n / kQuantBlock) * (p.k / kQuantBlock), .expert_ids = p.expert_ids,
                    .c = p.c, .ldc = p.n, .m = p.m, .n = p.n, .k = p.k},
                   raw(s));
  check_launch(k);
}

void mla_cache_write(const MlaCacheWriteParams& p, Stream s) {
  validate(p);
  if (p.tokens == 0) return;
  at_most("mla_cache_write", "tokens", p.tokens, 0x7FFFFFFF);
  impl::pointwise::launch_mla_cache_write(p, raw(s));
  check_launch("mla_cache_write");
}

void mla_decode(const MlaDecodeParams& p, Stream s) {
  validate(p);
  if (p.queries == 0) return;
  at_most("mla_decode", "cache.kv_lora_rank", p.cache.kv_lora_rank, impl::mla_decode::kMaxLoraRank);
  at_most("mla_decode", "cache.rope_dim", p.cache.rope_dim, 128);
  at_most("mla_decode", "queries", p.queries, 0x7FFFFFFF);
  at_most("mla_decode", "heads", p.heads, 65535L * impl::mla_decode::kHeadsPerBlock);
  impl::mla_decode::launch(p, raw(s));
}

void mla_prefill(const MlaPrefillParams& p, Stream s) {
  validate(p);
  if (p.num_seqs == 0) return;
  at_most("mla_prefill", "nope_dim + rope_dim", p.nope_dim + p.rope_dim, impl::mla_prefill::kMaxQkDim);
  at_most("mla_prefill", "v_dim", p.v_dim, static_cast<std::int64_t>(impl::mla_prefill::kThreads) * impl::mla_prefill::kMaxVPerThread);
  at_most("mla_prefill", "heads", p.heads, 65535);
  // The grid needs the query row count, which lives on the device.
  std::int32_t q_tokens = 0;
  SY_CUDA_CHECK(cudaMemcpyAsync(&q_tokens, p.cu_seqlens_q + p.num_seqs, sizeof(q_tokens), cudaMemcpyDeviceToHost, raw(s)));
  SY_CUDA_CHECK(cudaStreamSynchronize(raw(s)));
  if (q_tokens <= 0) return;
  impl::mla_prefill::launch(p, q_tokens, raw(s));
  check_launch("mla_prefill");
}

void mla_absorb_q(const MlaAbsorbQParams& p, Stream s) {
  validate(p);
  if (p.tokens == 0) return;
  const MlaUpWeights& w = p.w;
  // Per head h (the batch): q_latent[t, c] = Σ_d q_nope[t, d] · W_UK_h[d, c].
  impl::simt_gemm::launch_f32({.a = p.q_nope.data, .a_batch = p.q_nope.head_stride, .a_m = p.q_nope.token_stride,
                         .b = w.kv_b, .b_batch = head_block(w), .b_n = 1, .b_k = w.kv_lora_rank,
                         .c = p.q_latent.data, .c_batch = p.q_latent.head_stride, .c_m = p.q_latent.token_stride,
                         .m = p.tokens, .n = w.kv_lora_rank, .k = w.nope_dim, .batch = w.heads},
                        raw(s));
  check_launch("mla_absorb_q");
}

void mla_output_up(const MlaOutputUpParams& p, Stream s) {
  validate(p);
  if (p.tokens == 0) return;
  const MlaUpWeights& w = p.w;
  // Per head h: out[t, d] = Σ_c out_latent[t, c] · W_UV_h[d, c].
  impl::simt_gemm::launch_f32({.a = p.out_latent.data, .a_batch = p.out_latent.head_stride, .a_m = p.out_latent.token_stride,
                         .b = w.kv_b + w.nope_dim * w.kv_lora_rank, .b_batch = head_block(w), .b_n = w.kv_lora_rank,
                         .c = p.out.data, .c_batch = p.out.head_stride, .c_m = p.out.token_stride,
                         .m = p.tokens, .n = w.v_dim, .k = w.kv_lora_rank, .batch = w.heads},
                        raw(s));
  check_launch("mla_output_up");
}

void mla_kv_up(const MlaKvUpParams& p, Stream s) {
  validate(p);
  if (p.tokens == 0) return;
  const MlaUpWeights& w = p.w;
  // Per head h: k_nope[t, d] = Σ_c latent[t, c] · W_UK_h[d, c]; v likewise with W_UV_h.
  impl::simt_gemm::launch_f32({.a = p.latent, .a_batch = 0, .a_m = p.latent_stride, .b = w.kv_b,
                         .b_batch = head_block(w), .b_n = w.kv_lora_rank, .c = p.k_nope.data,
                         .c_batch = p.k_nope.head_stride, .c_m = p.k_nope.token_stride, .m = p.tokens,
                         .n = w.nope_dim, .k = w.kv_lora_rank, .batch = w.heads},
                        raw(s));
  impl::simt_gemm::launch_f32({.a = p.latent, .a_batch = 0, .a_m = p.latent_stride,
                         .b = w.kv_b + w.nope_dim * w.kv_lora_rank, .b_batch = head_block(w), .b_n = w.kv_lora_rank,
                         .c = p.v.data, .c_batch = p.v.head_stride, .c_m = p.v.token_stride, .m = p.tokens,
                         .n = w.v_dim, .k = w.kv_lora_rank, .batch = w.heads},
                        raw(s));
  check_launch("mla_kv_up");
}

}  // namespace sy::gpu::cuda
