// The "cuda" Backend table: host-pointer entry points that stage through device memory (see
// kernels.hpp and README.md). Each one validates on the host, checks the data the device would
// trust (page ids, positions, cu_seqlens: the host has them here), stages every operand
// (detail::Staging), runs the device entry point and copies the outputs back.
#include <stdexcept>
#include <string>

#include "gpu/cuda/check.hpp"
#include "gpu/cuda/kernels.hpp"
#include "gpu/cuda/staging.hpp"

namespace sy::gpu::cuda {
namespace {

using detail::extent;
using detail::Staging;

[[noreturn]] void bad(const char* kernel, const std::string& problem) {
  throw std::invalid_argument(std::string(kernel) + ": " + problem);
}

template <class T>
std::int64_t head_extent(const HeadTensor<T>& t, std::int64_t tokens, std::int64_t heads, std::int64_t dim) {
  return extent(tokens, t.token_stride, (heads - 1) * t.head_stride + dim);
}

template <class T>
HeadTensor<T> dev(const Staging& st, const HeadTensor<T>& t) {
  return {st.dev(t.data), t.token_stride, t.head_stride};
}

// The reference's checks of (seq, position) against the table and the pool (gpu/ref/mla.cpp).
void check_entry(const char* kernel, const MlaKvCache& cache, const MlaBlockTable& table, std::int32_t seq,
                 std::int32_t position) {
  if (seq < 0 || seq >= table.num_seqs) {
    bad(kernel, "sequence id " + std::to_string(seq) + " is outside the block table (" +
                    std::to_string(table.num_seqs) + " rows)");
  }
  if (position < 0 || position >= table.max_pages * kMlaPageSize) {
    bad(kernel, "position " + std::to_string(position) + " is outside the block table's " +
                    std::to_string(table.max_pages) + " pages");
  }
  const std::int32_t page = table.pages[seq * table.stride + position / kMlaPageSize];
  if (page < 0 || page >= cache.num_pages) {
    bad(kernel, "block table entry " + std::to_string(page) + " (sequence " + std::to_string(seq) +
                    ") is outside the pool of " + std::to_string(cache.num_pages) + " pages");
  }
}

std::int64_t cache_elements(const MlaKvCache& c) { return c.num_pages * kMlaPageSize * mla_cache_entry_dim(c); }

void stage_cache(Staging& st, const MlaKvCache& c, bool written) {
  const std::int64_t n = cache_elements(c);
  if (c.dtype == KvCacheDtype::fp32) {
    st.add(c.data, static_cast<std::size_t>(n) * sizeof(float), written);
  } else {
    st.add(c.data, static_cast<std::size_t>(n) * sizeof(bf16), written);
  }
}

void stage_table(Staging& st, const MlaBlockTable& t) { st.in(t.pages, extent(t.num_seqs, t.stride, t.max_pages)); }

void s_rms_norm(const RmsNormParams& p) {
  validate(p);
  if (p.rows == 0) return;
  Staging st;
  st.in(p.x, extent(p.rows, p.x_stride, p.dim));
  st.in(p.weight, p.dim);
  st.out(p.y, extent(p.rows, p.y_stride, p.dim));
  st.commit();
  RmsNormParams d = p;
  d.x = st.dev(p.x);
  d.weight = st.dev(p.weight);
  d.y = st.dev(p.y);
  rms_norm(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_apply_rope(const RopeParams& p) {
  validate(p);
  if (p.rows == 0) return;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    if (p.positions[r] < 0) bad("apply_rope", "positions[" + std::to_string(r) + "] is negative");
  }
  Staging st;
  st.out(p.x, extent(p.rows, p.row_stride, (p.heads - 1) * p.head_stride + p.rope_dim));
  st.in(p.positions, p.rows);
  st.in(p.inv_freq, p.rope_dim / 2);
  st.commit();
  RopeParams d = p;
  d.x = st.dev(p.x);
  d.positions = st.dev(p.positions);
  d.inv_freq = st.dev(p.inv_freq);
  apply_rope(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_act_quant(const ActQuantParams& p) {
  validate(p);
  if (p.rows == 0) return;
  Staging st;
  const std::int64_t tiles = p.cols / kQuantBlock;
  st.in(p.x, extent(p.rows, p.x_stride, p.cols));
  st.out(p.y, extent(p.rows, p.y_stride, p.cols));
  st.out(p.scales, (p.rows - 1) * p.scale_row_stride + (tiles - 1) * p.scale_col_stride + 1);
  st.commit();
  ActQuantParams d = p;
  d.x = st.dev(p.x);
  d.y = st.dev(p.y);
  d.scales = st.dev(p.scales);
  act_quant(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_swiglu(const SwigluParams& p) {
  validate(p);
  if (p.rows == 0) return;
  Staging st;
  st.in(p.gate, extent(p.rows, p.gate_stride, p.cols));
  st.in(p.up, extent(p.rows, p.up_stride, p.cols));
  st.out(p.out, extent(p.rows, p.out_stride, p.cols));
  st.commit();
  SwigluParams d = p;
  d.gate = st.dev(p.gate);
  d.up = st.dev(p.up);
  d.out = st.dev(p.out);
  swiglu(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_moe_select(const MoeSelectParams& p) {
  validate(p);
  if (p.tokens == 0) return;
  Staging st;
  st.in(p.logits, extent(p.tokens, p.logits_stride, p.routing.experts));
  st.out(p.indices, p.tokens * p.routing.top_k);
  st.out(p.weights, p.tokens * p.routing.top_k);
  st.in(p.routing.bias, p.routing.bias != nullptr ? p.routing.experts : 0);
  st.commit();
  MoeSelectParams d = p;
  d.logits = st.dev(p.logits);
  d.indices = st.dev(p.indices);
  d.weights = st.dev(p.weights);
  d.routing.bias = st.dev(p.routing.bias);
  moe_select(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_argmax(const ArgmaxParams& p) {
  validate(p);
  if (p.rows == 0) return;
  Staging st;
  st.in(p.logits, extent(p.rows, p.logits_stride, p.vocab));
  st.out(p.tokens, p.rows);
  st.commit();
  ArgmaxParams d = p;
  d.logits = st.dev(p.logits);
  d.tokens = st.dev(p.tokens);
  argmax(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_sample(const SampleParams& p) {
  validate(p);
  if (p.rows == 0) return;
  Staging st;
  st.in(p.logits, extent(p.rows, p.logits_stride, p.vocab));
  st.in(p.configs, p.rows);
  st.in(p.counters, p.rows);
  st.out(p.tokens, p.rows);
  st.commit();
  SampleParams d = p;
  d.logits = st.dev(p.logits);
  d.configs = st.dev(p.configs);
  d.counters = st.dev(p.counters);
  d.tokens = st.dev(p.tokens);
  sample(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_bf16_gemm(const Bf16GemmParams& p) {
  validate(p);
  if (p.m == 0) return;
  Staging st;
  st.in(p.a, extent(p.m, p.lda, p.k));
  st.in(p.b, extent(p.n, p.ldb, p.k));
  st.out(p.c, extent(p.m, p.ldc, p.n));
  st.commit();
  Bf16GemmParams d = p;
  d.a = st.dev(p.a);
  d.b = st.dev(p.b);
  d.c = st.dev(p.c);
  bf16_gemm(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_fp8_dequant_gemm(const Fp8DequantGemmParams& p) {
  validate(p);
  if (p.m == 0) return;
  Staging st;
  st.in(p.a, extent(p.m, p.lda, p.k));
  st.in(p.b, extent(p.n, p.ldb, p.k));
  st.in(p.b_scales, quant_blocks(p.n) * quant_blocks(p.k));
  st.out(p.c, extent(p.m, p.ldc, p.n));
  st.commit();
  Fp8DequantGemmParams d = p;
  d.a = st.dev(p.a);
  d.b = st.dev(p.b);
  d.b_scales = st.dev(p.b_scales);
  d.c = st.dev(p.c);
  fp8_dequant_gemm(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_fp8_gemm(const Fp8GemmParams& p) {
  validate(p);
  if (p.m == 0) return;
  const std::int64_t k_blocks = p.k / kQuantBlock;
  Staging st;
  st.in(p.a, extent(p.m, p.lda, p.k));
  st.in(p.a_scales, (p.m - 1) * p.a_scale_row_stride + (k_blocks - 1) * p.a_scale_col_stride + 1);
  st.in(p.b, extent(p.n, p.ldb, p.k));
  st.in(p.b_scales, quant_blocks(p.n) * k_blocks);
  st.out(p.c, extent(p.m, p.ldc, p.n));
  st.commit();
  Fp8GemmParams d = p;
  d.a = st.dev(p.a);
  d.a_scales = st.dev(p.a_scales);
  d.b = st.dev(p.b);
  d.b_scales = st.dev(p.b_scales);
  d.c = st.dev(p.c);
  fp8_gemm(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_mla_cache_write(const MlaCacheWriteParams& p) {
  validate(p);
  if (p.tokens == 0) return;
  for (std::int64_t t = 0; t < p.tokens; ++t) check_entry("mla_cache_write", p.cache, p.table, p.seq_ids[t], p.positions[t]);
  Staging st;
  stage_cache(st, p.cache, true);
  stage_table(st, p.table);
  st.in(p.latent, extent(p.tokens, p.latent_stride, p.cache.kv_lora_rank));
  st.in(p.k_pe, extent(p.tokens, p.k_pe_stride, p.cache.rope_dim));
  st.in(p.seq_ids, p.tokens);
  st.in(p.positions, p.tokens);
  st.commit();
  MlaCacheWriteParams d = p;
  d.cache.data = st.dev(p.cache.data);
  d.table.pages = st.dev(p.table.pages);
  d.latent = st.dev(p.latent);
  d.k_pe = st.dev(p.k_pe);
  d.seq_ids = st.dev(p.seq_ids);
  d.positions = st.dev(p.positions);
  mla_cache_write(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_mla_decode(const MlaDecodeParams& p) {
  validate(p);
  if (p.queries == 0) return;
  for (std::int64_t q = 0; q < p.queries; ++q) {
    if (p.positions[q] < 0) bad("mla_decode", "positions[" + std::to_string(q) + "] is negative");
    // Every visible position's page: the last one covers the bounds, each page its id.
    check_entry("mla_decode", p.cache, p.table, p.seq_ids[q], p.positions[q]);
    for (std::int32_t pos = 0; pos <= p.positions[q]; pos += kMlaPageSize) {
      check_entry("mla_decode", p.cache, p.table, p.seq_ids[q], pos);
    }
  }
  const std::int64_t lora = p.cache.kv_lora_rank;
  Staging st;
  stage_cache(st, p.cache, false);
  stage_table(st, p.table);
  st.in(p.q_latent.data, head_extent(p.q_latent, p.queries, p.heads, lora));
  st.in(p.q_pe.data, head_extent(p.q_pe, p.queries, p.heads, p.cache.rope_dim));
  st.out(p.out_latent.data, head_extent(p.out_latent, p.queries, p.heads, lora));
  st.out(p.lse, p.lse != nullptr ? p.queries * p.heads : 0);
  st.in(p.seq_ids, p.queries);
  st.in(p.positions, p.queries);
  st.commit();
  MlaDecodeParams d = p;
  d.cache.data = st.dev(p.cache.data);
  d.table.pages = st.dev(p.table.pages);
  d.q_latent = dev(st, p.q_latent);
  d.q_pe = dev(st, p.q_pe);
  d.out_latent = dev(st, p.out_latent);
  d.lse = st.dev(p.lse);
  d.seq_ids = st.dev(p.seq_ids);
  d.positions = st.dev(p.positions);
  mla_decode(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_mla_prefill(const MlaPrefillParams& p) {
  validate(p);
  if (p.num_seqs == 0) return;
  if (p.cu_seqlens_q[0] != 0 || p.cu_seqlens_kv[0] != 0) bad("mla_prefill", "cu_seqlens must start at 0");
  for (std::int64_t s = 0; s < p.num_seqs; ++s) {
    const std::int64_t len_q = p.cu_seqlens_q[s + 1] - p.cu_seqlens_q[s];
    const std::int64_t len_kv = p.cu_seqlens_kv[s + 1] - p.cu_seqlens_kv[s];
    if (len_q < 0 || len_kv < 0) bad("mla_prefill", "cu_seqlens must be non-decreasing");
    if (len_kv < len_q) {
      bad("mla_prefill", "sequence " + std::to_string(s) + " has fewer keys (" + std::to_string(len_kv) +
                             ") than queries (" + std::to_string(len_q) + ")");
    }
  }
  const std::int64_t q_tokens = p.cu_seqlens_q[p.num_seqs];
  const std::int64_t kv_tokens = p.cu_seqlens_kv[p.num_seqs];
  if (q_tokens == 0) return;
  Staging st;
  st.in(p.q.data, head_extent(p.q, q_tokens, p.heads, p.nope_dim + p.rope_dim));
  st.in(p.k_nope.data, head_extent(p.k_nope, kv_tokens, p.heads, p.nope_dim));
  st.in(p.k_pe, extent(kv_tokens, p.k_pe_stride, p.rope_dim));
  st.in(p.v.data, head_extent(p.v, kv_tokens, p.heads, p.v_dim));
  st.out(p.out.data, head_extent(p.out, q_tokens, p.heads, p.v_dim));
  st.in(p.cu_seqlens_q, p.num_seqs + 1);
  st.in(p.cu_seqlens_kv, p.num_seqs + 1);
  st.commit();
  MlaPrefillParams d = p;
  d.q = dev(st, p.q);
  d.k_nope = dev(st, p.k_nope);
  d.k_pe = st.dev(p.k_pe);
  d.v = dev(st, p.v);
  d.out = dev(st, p.out);
  d.cu_seqlens_q = st.dev(p.cu_seqlens_q);
  d.cu_seqlens_kv = st.dev(p.cu_seqlens_kv);
  mla_prefill(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void stage_up_weights(Staging& st, const MlaUpWeights& w) {
  st.in(w.kv_b, w.heads * (w.nope_dim + w.v_dim) * w.kv_lora_rank);
}

void s_mla_absorb_q(const MlaAbsorbQParams& p) {
  validate(p);
  if (p.tokens == 0) return;
  Staging st;
  stage_up_weights(st, p.w);
  st.in(p.q_nope.data, head_extent(p.q_nope, p.tokens, p.w.heads, p.w.nope_dim));
  st.out(p.q_latent.data, head_extent(p.q_latent, p.tokens, p.w.heads, p.w.kv_lora_rank));
  st.commit();
  MlaAbsorbQParams d = p;
  d.w.kv_b = st.dev(p.w.kv_b);
  d.q_nope = dev(st, p.q_nope);
  d.q_latent = dev(st, p.q_latent);
  mla_absorb_q(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_mla_output_up(const MlaOutputUpParams& p) {
  validate(p);
  if (p.tokens == 0) return;
  Staging st;
  stage_up_weights(st, p.w);
  st.in(p.out_latent.data, head_extent(p.out_latent, p.tokens, p.w.heads, p.w.kv_lora_rank));
  st.out(p.out.data, head_extent(p.out, p.tokens, p.w.heads, p.w.v_dim));
  st.commit();
  MlaOutputUpParams d = p;
  d.w.kv_b = st.dev(p.w.kv_b);
  d.out_latent = dev(st, p.out_latent);
  d.out = dev(st, p.out);
  mla_output_up(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

void s_mla_kv_up(const MlaKvUpParams& p) {
  validate(p);
  if (p.tokens == 0) return;
  Staging st;
  stage_up_weights(st, p.w);
  st.in(p.latent, extent(p.tokens, p.latent_stride, p.w.kv_lora_rank));
  st.out(p.k_nope.data, head_extent(p.k_nope, p.tokens, p.w.heads, p.w.nope_dim));
  st.out(p.v.data, head_extent(p.v, p.tokens, p.w.heads, p.w.v_dim));
  st.commit();
  MlaKvUpParams d = p;
  d.w.kv_b = st.dev(p.w.kv_b);
  d.latent = st.dev(p.latent);
  d.k_nope = dev(st, p.k_nope);
  d.v = dev(st, p.v);
  mla_kv_up(d, reinterpret_cast<Stream>(st.stream()));
  st.finish();
}

}  // namespace

const Backend& backend() {
  static constexpr Backend table{
      .name = "cuda",
      .rms_norm = &s_rms_norm,
      .apply_rope = &s_apply_rope,
      .act_quant = &s_act_quant,
      .fp8_gemm = &s_fp8_gemm,
      .fp8_dequant_gemm = &s_fp8_dequant_gemm,
      .bf16_gemm = &s_bf16_gemm,
      .swiglu = &s_swiglu,
      .moe_select = &s_moe_select,
      .argmax = &s_argmax,
      .sample = &s_sample,
      .mla_cache_write = &s_mla_cache_write,
      .mla_decode = &s_mla_decode,
      .mla_prefill = &s_mla_prefill,
      .mla_absorb_q = &s_mla_absorb_q,
      .mla_output_up = &s_mla_output_up,
      .mla_kv_up = &s_mla_kv_up,
  };
  if (const std::string problem = device_problem(); !problem.empty()) {
    throw std::runtime_error("cuda backend unavailable: " + problem);
  }
  return table;
}

}  // namespace sy::gpu::cuda
