// Host-side parameter checks shared by every backend (shapes, strides, null pointers, scalar
// ranges). They never read through the params' pointers, which may be device memory; checks on
// data (page ids, positions) are each backend's business.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "gpu/activation.hpp"
#include "gpu/gemm.hpp"
#include "gpu/mla.hpp"
#include "gpu/moe_gate.hpp"
#include "gpu/norm.hpp"
#include "gpu/quant.hpp"
#include "gpu/rope.hpp"
#include "gpu/sampling.hpp"

namespace sy::gpu {
namespace {

// Helpers build the message only on failure: these run before every kernel launch.
[[noreturn]] void fail(std::string_view kernel, const std::string& problem) {
  throw std::invalid_argument(std::string(kernel) + ": " + problem);
}

void require(bool ok, std::string_view kernel, const char* problem) {
  if (!ok) fail(kernel, problem);
}

void not_null(std::string_view kernel, const char* name, const void* ptr) {
  if (ptr == nullptr) fail(kernel, std::string(name) + " is null");
}

void positive(std::string_view kernel, const char* name, std::int64_t value) {
  if (value <= 0) fail(kernel, std::string(name) + " must be > 0 (got " + std::to_string(value) + ")");
}

void non_negative(std::string_view kernel, const char* name, std::int64_t value) {
  if (value < 0) fail(kernel, std::string(name) + " must be >= 0 (got " + std::to_string(value) + ")");
}

void at_least(std::string_view kernel, const char* name, std::int64_t value, const char* bound_name,
              std::int64_t bound) {
  if (value < bound) {
    fail(kernel, std::string(name) + " (" + std::to_string(value) + ") must be >= " + bound_name + " (" +
                     std::to_string(bound) + ")");
  }
}

void multiple_of_block(std::string_view kernel, const char* name, std::int64_t value) {
  if (value % kQuantBlock != 0) {
    fail(kernel, std::string(name) + " (" + std::to_string(value) + ") must be a multiple of " +
                     std::to_string(kQuantBlock));
  }
}

void check_head_tensor(std::string_view kernel, const char* name, const void* data, std::int64_t token_stride,
                       std::int64_t head_stride, std::int64_t heads, std::int64_t dim) {
  not_null(kernel, name, data);
  // Heads need not be packed, but one head's dims must not overlap the next head's.
  if (heads > 1 && head_stride < dim) {
    fail(kernel, std::string(name) + ".head_stride (" + std::to_string(head_stride) + ") must be >= its dim (" +
                     std::to_string(dim) + ")");
  }
  const std::int64_t span = (heads - 1) * head_stride + dim;
  if (token_stride < span) {
    fail(kernel, std::string(name) + ".token_stride (" + std::to_string(token_stride) +
                     ") must cover all heads (" + std::to_string(span) + ")");
  }
}

}  // namespace

void validate(const RmsNormParams& p) {
  constexpr std::string_view k = "rms_norm";
  non_negative(k, "rows", p.rows);
  positive(k, "dim", p.dim);
  if (p.rows == 0) return;
  not_null(k, "x", p.x);
  not_null(k, "weight", p.weight);
  not_null(k, "y", p.y);
  at_least(k, "x_stride", p.x_stride, "dim", p.dim);
  at_least(k, "y_stride", p.y_stride, "dim", p.dim);
  require(p.eps >= 0.0f && std::isfinite(p.eps), k, "eps must be finite and >= 0");
}

void validate(const SwigluParams& p) {
  constexpr std::string_view k = "swiglu";
  non_negative(k, "rows", p.rows);
  positive(k, "cols", p.cols);
  if (p.rows == 0) return;
  not_null(k, "gate", p.gate);
  not_null(k, "up", p.up);
  not_null(k, "out", p.out);
  at_least(k, "gate_stride", p.gate_stride, "cols", p.cols);
  at_least(k, "up_stride", p.up_stride, "cols", p.cols);
  at_least(k, "out_stride", p.out_stride, "cols", p.cols);
}

void validate(const RopeParams& p) {
  constexpr std::string_view k = "apply_rope";
  non_negative(k, "rows", p.rows);
  positive(k, "heads", p.heads);
  positive(k, "rope_dim", p.rope_dim);
  require(p.rope_dim % 2 == 0, k, "rope_dim must be even (it rotates (x[2i], x[2i+1]) pairs)");
  if (p.rows == 0) return;
  not_null(k, "x", p.x);
  not_null(k, "positions", p.positions);
  not_null(k, "inv_freq", p.inv_freq);
  if (p.heads > 1) at_least(k, "head_stride", p.head_stride, "rope_dim", p.rope_dim);
  if (p.rows > 1) at_least(k, "row_stride", p.row_stride, "heads' span", (p.heads - 1) * p.head_stride + p.rope_dim);
  require(std::isfinite(p.cos_sin_scale), k, "cos_sin_scale must be finite");
}

void validate(const ActQuantParams& p) {
  constexpr std::string_view k = "act_quant";
  non_negative(k, "rows", p.rows);
  positive(k, "cols", p.cols);
  multiple_of_block(k, "cols", p.cols);
  if (p.rows == 0) return;
  not_null(k, "x", p.x);
  not_null(k, "y", p.y);
  not_null(k, "scales", p.scales);
  at_least(k, "x_stride", p.x_stride, "cols", p.cols);
  at_least(k, "y_stride", p.y_stride, "cols", p.cols);
  require(p.scale_row_stride > 0 && p.scale_col_stride > 0, k, "scale strides must be > 0");
}

void validate(const WeightQuantParams& p) {
  constexpr std::string_view k = "weight_quant";
  positive(k, "rows", p.rows);
  positive(k, "cols", p.cols);
  not_null(k, "w", p.w);
  not_null(k, "q", p.q);
  not_null(k, "scales", p.scales);
  at_least(k, "w_stride", p.w_stride, "cols", p.cols);
  at_least(k, "q_stride", p.q_stride, "cols", p.cols);
}

void validate(const WeightDequantParams& p) {
  constexpr std::string_view k = "weight_dequant";
  positive(k, "rows", p.rows);
  positive(k, "cols", p.cols);
  not_null(k, "q", p.q);
  not_null(k, "scales", p.scales);
  not_null(k, "w", p.w);
  at_least(k, "q_stride", p.q_stride, "cols", p.cols);
  at_least(k, "w_stride", p.w_stride, "cols", p.cols);
}

void validate(const Fp8GemmParams& p) {
  constexpr std::string_view k = "fp8_gemm";
  non_negative(k, "m", p.m);
  positive(k, "n", p.n);
  positive(k, "k", p.k);
  multiple_of_block(k, "k", p.k);
  if (p.m == 0) return;
  not_null(k, "a", p.a);
  not_null(k, "a_scales", p.a_scales);
  not_null(k, "b", p.b);
  not_null(k, "b_scales", p.b_scales);
  not_null(k, "c", p.c);
  at_least(k, "lda", p.lda, "k", p.k);
  at_least(k, "ldb", p.ldb, "k", p.k);
  at_least(k, "ldc", p.ldc, "n", p.n);
  require(p.a_scale_row_stride > 0 && p.a_scale_col_stride > 0, k, "a_scale strides must be > 0");
}

void validate(const Fp8DequantGemmParams& p) {
  constexpr std::string_view k = "fp8_dequant_gemm";
  non_negative(k, "m", p.m);
  positive(k, "n", p.n);
  positive(k, "k", p.k);
  if (p.m == 0) return;
  not_null(k, "a", p.a);
  not_null(k, "b", p.b);
  not_null(k, "b_scales", p.b_scales);
  not_null(k, "c", p.c);
  at_least(k, "lda", p.lda, "k", p.k);
  at_least(k, "ldb", p.ldb, "k", p.k);
  at_least(k, "ldc", p.ldc, "n", p.n);
}

void validate(const Bf16GemmParams& p) {
  constexpr std::string_view k = "bf16_gemm";
  non_negative(k, "m", p.m);
  positive(k, "n", p.n);
  positive(k, "k", p.k);
  if (p.m == 0) return;
  not_null(k, "a", p.a);
  not_null(k, "b", p.b);
  not_null(k, "c", p.c);
  at_least(k, "lda", p.lda, "k", p.k);
  at_least(k, "ldb", p.ldb, "k", p.k);
  at_least(k, "ldc", p.ldc, "n", p.n);
}

void validate(const MoeRouting& r) {
  constexpr std::string_view k = "moe routing";
  positive(k, "experts", r.experts);
  positive(k, "top_k", r.top_k);
  positive(k, "n_group", r.n_group);
  positive(k, "topk_group", r.topk_group);
  if (r.experts % r.n_group != 0) {
    fail(k, "n_group (" + std::to_string(r.n_group) + ") must divide experts (" + std::to_string(r.experts) + ")");
  }
  if (r.topk_group > r.n_group) {
    fail(k, "topk_group (" + std::to_string(r.topk_group) + ") must be <= n_group (" + std::to_string(r.n_group) +
                ")");
  }
  const std::int64_t group_size = r.experts / r.n_group;
  if (r.top_k > r.topk_group * group_size) {
    fail(k, "top_k (" + std::to_string(r.top_k) + ") exceeds the experts in the kept groups (" +
                std::to_string(r.topk_group * group_size) + ")");
  }
  require(!(r.n_group > 1 && r.group_score == GroupScore::top2_sum && group_size < 2), k,
          "group_score top2_sum needs at least 2 experts per group");
  require(std::isfinite(r.routed_scaling_factor), k, "routed_scaling_factor must be finite");
}

void validate(const MoeSelectParams& p) {
  constexpr std::string_view k = "moe_select";
  validate(p.routing);
  non_negative(k, "tokens", p.tokens);
  if (p.tokens == 0) return;
  not_null(k, "logits", p.logits);
  not_null(k, "indices", p.indices);
  not_null(k, "weights", p.weights);
  at_least(k, "logits_stride", p.logits_stride, "experts", p.routing.experts);
}

void validate(const MoeGateParams& p) {
  constexpr std::string_view k = "moe_gate";
  validate(p.routing);
  non_negative(k, "tokens", p.tokens);
  positive(k, "hidden", p.hidden);
  if (p.tokens == 0) return;
  not_null(k, "x", p.x);
  not_null(k, "weight", p.weight);
  not_null(k, "logits", p.logits);
  not_null(k, "indices", p.indices);
  not_null(k, "weights", p.weights);
  at_least(k, "x_stride", p.x_stride, "hidden", p.hidden);
}

void validate(const SamplerConfig& c) {
  constexpr std::string_view k = "sampler config";
  if (!(std::isfinite(c.temperature) && c.temperature >= 0.0f)) {
    fail(k, "temperature must be finite and >= 0 (got " + std::to_string(c.temperature) + ")");
  }
  if (c.top_k < 0) fail(k, "top_k must be >= 0, 0 meaning no limit (got " + std::to_string(c.top_k) + ")");
  if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) {
    fail(k, "top_p must be in (0, 1] (got " + std::to_string(c.top_p) + ")");
  }
}

void validate(const ArgmaxParams& p) {
  constexpr std::string_view k = "argmax";
  non_negative(k, "rows", p.rows);
  positive(k, "vocab", p.vocab);
  if (p.rows == 0) return;
  not_null(k, "logits", p.logits);
  not_null(k, "tokens", p.tokens);
  at_least(k, "logits_stride", p.logits_stride, "vocab", p.vocab);
}

void validate(const SampleParams& p) {
  constexpr std::string_view k = "sample";
  non_negative(k, "rows", p.rows);
  positive(k, "vocab", p.vocab);
  if (p.rows == 0) return;
  not_null(k, "logits", p.logits);
  not_null(k, "configs", p.configs);
  not_null(k, "counters", p.counters);
  not_null(k, "tokens", p.tokens);
  at_least(k, "logits_stride", p.logits_stride, "vocab", p.vocab);
  // The configs are host memory in every backend: they come from request parameters.
  for (std::int64_t r = 0; r < p.rows; ++r) validate(p.configs[r]);
}

void validate(const MlaKvCache& c) {
  constexpr std::string_view k = "mla cache";
  not_null(k, "data", c.data);
  positive(k, "num_pages", c.num_pages);
  positive(k, "kv_lora_rank", c.kv_lora_rank);
  positive(k, "rope_dim", c.rope_dim);
  require(c.dtype == KvCacheDtype::fp32 || c.dtype == KvCacheDtype::bf16, k, "unknown dtype");
}

void validate(const MlaBlockTable& t) {
  constexpr std::string_view k = "mla block table";
  not_null(k, "pages", t.pages);
  positive(k, "num_seqs", t.num_seqs);
  positive(k, "max_pages", t.max_pages);
  at_least(k, "stride", t.stride, "max_pages", t.max_pages);
}

void validate(const MlaCacheWriteParams& p) {
  constexpr std::string_view k = "mla_cache_write";
  non_negative(k, "tokens", p.tokens);
  if (p.tokens == 0) return;
  validate(p.cache);
  validate(p.table);
  not_null(k, "latent", p.latent);
  not_null(k, "k_pe", p.k_pe);
  not_null(k, "seq_ids", p.seq_ids);
  not_null(k, "positions", p.positions);
  at_least(k, "latent_stride", p.latent_stride, "kv_lora_rank", p.cache.kv_lora_rank);
  at_least(k, "k_pe_stride", p.k_pe_stride, "rope_dim", p.cache.rope_dim);
}

void validate(const MlaDecodeParams& p) {
  constexpr std::string_view k = "mla_decode";
  non_negative(k, "queries", p.queries);
  positive(k, "heads", p.heads);
  if (p.queries == 0) return;
  validate(p.cache);
  validate(p.table);
  check_head_tensor(k, "q_latent", p.q_latent.data, p.q_latent.token_stride, p.q_latent.head_stride, p.heads,
                    p.cache.kv_lora_rank);
  check_head_tensor(k, "q_pe", p.q_pe.data, p.q_pe.token_stride, p.q_pe.head_stride, p.heads, p.cache.rope_dim);
  check_head_tensor(k, "out_latent", p.out_latent.data, p.out_latent.token_stride, p.out_latent.head_stride,
                    p.heads, p.cache.kv_lora_rank);
  not_null(k, "seq_ids", p.seq_ids);
  not_null(k, "positions", p.positions);
  require(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.0f, k, "softmax_scale must be finite and > 0");
}

void validate(const MlaPrefillParams& p) {
  constexpr std::string_view k = "mla_prefill";
  non_negative(k, "num_seqs", p.num_seqs);
  positive(k, "heads", p.heads);
  positive(k, "nope_dim", p.nope_dim);
  positive(k, "rope_dim", p.rope_dim);
  positive(k, "v_dim", p.v_dim);
  if (p.num_seqs == 0) return;
  check_head_tensor(k, "q", p.q.data, p.q.token_stride, p.q.head_stride, p.heads, p.nope_dim + p.rope_dim);
  check_head_tensor(k, "k_nope", p.k_nope.data, p.k_nope.token_stride, p.k_nope.head_stride, p.heads, p.nope_dim);
  check_head_tensor(k, "v", p.v.data, p.v.token_stride, p.v.head_stride, p.heads, p.v_dim);
  check_head_tensor(k, "out", p.out.data, p.out.token_stride, p.out.head_stride, p.heads, p.v_dim);
  not_null(k, "k_pe", p.k_pe);
  at_least(k, "k_pe_stride", p.k_pe_stride, "rope_dim", p.rope_dim);
  not_null(k, "cu_seqlens_q", p.cu_seqlens_q);
  not_null(k, "cu_seqlens_kv", p.cu_seqlens_kv);
  require(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.0f, k, "softmax_scale must be finite and > 0");
}

void validate(const MlaUpWeights& w) {
  constexpr std::string_view k = "mla up weights";
  not_null(k, "kv_b", w.kv_b);
  positive(k, "heads", w.heads);
  positive(k, "nope_dim", w.nope_dim);
  positive(k, "v_dim", w.v_dim);
  positive(k, "kv_lora_rank", w.kv_lora_rank);
}

void validate(const MlaAbsorbQParams& p) {
  constexpr std::string_view k = "mla_absorb_q";
  validate(p.w);
  non_negative(k, "tokens", p.tokens);
  if (p.tokens == 0) return;
  check_head_tensor(k, "q_nope", p.q_nope.data, p.q_nope.token_stride, p.q_nope.head_stride, p.w.heads,
                    p.w.nope_dim);
  check_head_tensor(k, "q_latent", p.q_latent.data, p.q_latent.token_stride, p.q_latent.head_stride, p.w.heads,
                    p.w.kv_lora_rank);
}

void validate(const MlaOutputUpParams& p) {
  constexpr std::string_view k = "mla_output_up";
  validate(p.w);
  non_negative(k, "tokens", p.tokens);
  if (p.tokens == 0) return;
  check_head_tensor(k, "out_latent", p.out_latent.data, p.out_latent.token_stride, p.out_latent.head_stride,
                    p.w.heads, p.w.kv_lora_rank);
  check_head_tensor(k, "out", p.out.data, p.out.token_stride, p.out.head_stride, p.w.heads, p.w.v_dim);
}

void validate(const MlaKvUpParams& p) {
  constexpr std::string_view k = "mla_kv_up";
  validate(p.w);
  non_negative(k, "tokens", p.tokens);
  if (p.tokens == 0) return;
  not_null(k, "latent", p.latent);
  at_least(k, "latent_stride", p.latent_stride, "kv_lora_rank", p.w.kv_lora_rank);
  check_head_tensor(k, "k_nope", p.k_nope.data, p.k_nope.token_stride, p.k_nope.head_stride, p.w.heads,
                    p.w.nope_dim);
  check_head_tensor(k, "v", p.v.data, p.v.token_stride, p.v.head_stride, p.w.heads, p.w.v_dim);
}

}  // namespace sy::gpu
