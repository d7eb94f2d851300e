// Multi-head Latent Attention (spec §1.4) over a paged latent KV cache. Decode (and any query whose
// keys are cached) uses the absorbed form: one 576-wide latent "KV head" [c_KV ‖ k_pe] shared by
// all query heads, W_UK folded into the query and W_UV applied after attention (FlashMLA's MQA
// mode). Prefill may use the naive form with per-head k_nope and v up-projected from the latent.
// Each backend provides sy::gpu::<backend>::{mla_cache_write, mla_decode, mla_prefill,
// mla_absorb_q, mla_output_up, mla_kv_up}. Stateless; the cache and block table belong to the
// caller (the engine's KV cache manager), which orders writes before the reads that need them.
#pragma once

#include <cstdint>

namespace sy::gpu {

// Tokens per cache page. FlashMLA's dense decode asserts a page (block) size of 64.
inline constexpr std::int64_t kMlaPageSize = 64;
// DeepSeek-V3 sizes, for callers and backends that specialize on them.
inline constexpr std::int64_t kMlaKvLoraRank = 512;
inline constexpr std::int64_t kMlaRopeDim = 64;
inline constexpr std::int64_t kMlaCacheEntryDim = kMlaKvLoraRank + kMlaRopeDim;  // 576

// A [tokens, heads, dim] activation: element (t, h, d) at data[t·token_stride + h·head_stride + d].
// The strides let kernels read q_nope/q_pe and k_nope/v straight out of fused projection outputs.
template <class T>
struct HeadTensor {
  T* data = nullptr;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
};

enum class KvCacheDtype {
  fp32,
  bf16,  // production: FlashMLA's dense decode reads a BF16 cache
};

// The page pool of one layer: pages[num_pages][kMlaPageSize][kv_lora_rank + rope_dim], contiguous.
// Entry = [c_KV (after kv_norm) ‖ k_pe (after RoPE)]. Writes round to the cache dtype.
struct MlaKvCache {
  void* data = nullptr;  // float* or bf16* by dtype
  KvCacheDtype dtype = KvCacheDtype::fp32;
  std::int64_t num_pages = 0;
  std::int64_t kv_lora_rank = kMlaKvLoraRank;
  std::int64_t rope_dim = kMlaRopeDim;
};

// Logical page j of sequence s is physical page pages[s·stride + j]. Token at position p of
// sequence s lives in page p/64, slot p%64. Sequences are rows of the table ("sequence ids").
struct MlaBlockTable {
  const std::int32_t* pages = nullptr;  // [num_seqs, max_pages], row stride stride
  std::int64_t num_seqs = 0;
  std::int64_t max_pages = 0;
  std::int64_t stride = 0;
};

// (a) Stores each new token's [latent ‖ k_pe] at (seq_ids[t], positions[t]).
struct MlaCacheWriteParams {
  MlaKvCache cache{};
  MlaBlockTable table{};
  const float* latent = nullptr;  // [tokens, kv_lora_rank] normalized c_KV, row stride latent_stride
  const float* k_pe = nullptr;    // [tokens, rope_dim] roped k_pe, row stride k_pe_stride
  const std::int32_t* seq_ids = nullptr;    // [tokens]
  const std::int32_t* positions = nullptr;  // [tokens]; REQUIRES: < max_pages·64
  std::int64_t tokens = 0;
  std::int64_t latent_stride = 0;
  std::int64_t k_pe_stride = 0;
};

// (b) Absorbed attention over the cache. Query q (a token of sequence seq_ids[q] at position
// positions[q]) sees cache positions 0..positions[q] of its sequence, which must all be written:
// one query per sequence is plain decode; several are MTP verification or chunked prefill.
//   score[t] = (q_latent·c[t] + q_pe·k_pe[t]) · softmax_scale   (one fp32 dot over 576 dims)
//   p = softmax(score) in fp32;  out_latent = Σ_t p[t]·c[t]
struct MlaDecodeParams {
  MlaKvCache cache{};  // read only
  MlaBlockTable table{};
  HeadTensor<const float> q_latent{};  // [queries, heads, kv_lora_rank]: q_nope · W_UK (mla_absorb_q)
  HeadTensor<const float> q_pe{};      // [queries, heads, rope_dim], roped
  HeadTensor<float> out_latent{};      // [queries, heads, kv_lora_rank]
  float* lse = nullptr;  // [queries, heads] contiguous: ln Σ exp(score), or nullptr (for
                         // merging split-KV partials)
  const std::int32_t* seq_ids = nullptr;    // [queries]
  const std::int32_t* positions = nullptr;  // [queries]
  std::int64_t queries = 0;
  std::int64_t heads = 0;
  float softmax_scale = 0.0f;  // attention_softmax_scale(); NOT FlashMLA's 576^-0.5 default
};

// (c) Naive attention for prefill, varlen: sequence s owns query rows [cu_seqlens_q[s],
// cu_seqlens_q[s+1]) and key rows [cu_seqlens_kv[s], cu_seqlens_kv[s+1]), with len_kv >= len_q;
// the queries are the last len_q of the len_kv tokens (causal, bottom-right aligned: query j
// sees keys 0..j + len_kv - len_q). Per head:
//   score = ([q_nope ‖ q_pe] · [k_nope ‖ k_pe]) · softmax_scale; out = softmax(score) · v.
struct MlaPrefillParams {
  HeadTensor<const float> q{};       // [q_tokens, heads, nope_dim + rope_dim]: [q_nope ‖ q_pe roped]
  HeadTensor<const float> k_nope{};  // [kv_tokens, heads, nope_dim]
  const float* k_pe = nullptr;       // [kv_tokens, rope_dim] roped, shared by all heads
  std::int64_t k_pe_stride = 0;
  HeadTensor<const float> v{};       // [kv_tokens, heads, v_dim]
  HeadTensor<float> out{};           // [q_tokens, heads, v_dim]
  const std::int32_t* cu_seqlens_q = nullptr;   // [num_seqs + 1], starts at 0, non-decreasing
  const std::int32_t* cu_seqlens_kv = nullptr;  // [num_seqs + 1]
  std::int64_t num_seqs = 0;
  std::int64_t heads = 0;
  std::int64_t nope_dim = 128;
  std::int64_t rope_dim = kMlaRopeDim;
  std::int64_t v_dim = 128;
  float softmax_scale = 0.0f;
};

// kv_b_proj's weight, dequantized: [heads·(nope_dim + v_dim), kv_lora_rank] row-major. Head h's
// block is rows h·(nope_dim + v_dim) ...: its first nope_dim rows are W_UK_h, the rest W_UV_h.
struct MlaUpWeights {
  const float* kv_b = nullptr;
  std::int64_t heads = 0;
  std::int64_t nope_dim = 128;
  std::int64_t v_dim = 128;
  std::int64_t kv_lora_rank = kMlaKvLoraRank;
};

// q_latent[t,h,c] = Σ_d q_nope[t,h,d] · W_UK_h[d,c]   (fp32, d ascending)
struct MlaAbsorbQParams {
  MlaUpWeights w{};
  HeadTensor<const float> q_nope{};  // [tokens, heads, nope_dim]
  HeadTensor<float> q_latent{};      // [tokens, heads, kv_lora_rank]
  std::int64_t tokens = 0;
};

// out[t,h,d] = Σ_c out_latent[t,h,c] · W_UV_h[d,c]   (fp32, c ascending)
struct MlaOutputUpParams {
  MlaUpWeights w{};
  HeadTensor<const float> out_latent{};  // [tokens, heads, kv_lora_rank]
  HeadTensor<float> out{};               // [tokens, heads, v_dim]
  std::int64_t tokens = 0;
};

// k_nope[t,h,d] = Σ_c latent[t,c] · W_UK_h[d,c],  v[t,h,d] = Σ_c latent[t,c] · W_UV_h[d,c]
struct MlaKvUpParams {
  MlaUpWeights w{};
  const float* latent = nullptr;  // [tokens, kv_lora_rank] normalized c_KV, row stride latent_stride
  std::int64_t latent_stride = 0;
  HeadTensor<float> k_nope{};  // [tokens, heads, nope_dim]
  HeadTensor<float> v{};       // [tokens, heads, v_dim]
  std::int64_t tokens = 0;
};

constexpr std::int64_t mla_cache_entry_dim(const MlaKvCache& c) { return c.kv_lora_rank + c.rope_dim; }

void validate(const MlaKvCache& c);
void validate(const MlaBlockTable& t);
void validate(const MlaCacheWriteParams& p);
void validate(const MlaDecodeParams& p);
void validate(const MlaPrefillParams& p);
void validate(const MlaUpWeights& w);
void validate(const MlaAbsorbQParams& p);
void validate(const MlaOutputUpParams& p);
void validate(const MlaKvUpParams& p);

}  // namespace sy::gpu
