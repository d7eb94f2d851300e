#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {
namespace {

[[noreturn]] void bad(const char* kernel, const std::string& problem) {
  throw std::invalid_argument(std::string(kernel) + ": " + problem);
}

// Offset, in elements, of the cache entry of (seq, position), after checking the table's data.
std::int64_t entry_offset(const char* kernel, const MlaKvCache& cache, const MlaBlockTable& table,
                          std::int32_t seq, std::int32_t position) {
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
  return (page * kMlaPageSize + position % kMlaPageSize) * mla_cache_entry_dim(cache);
}

void load_entry(const MlaKvCache& cache, std::int64_t offset, float* out) {
  const std::int64_t dim = mla_cache_entry_dim(cache);
  if (cache.dtype == KvCacheDtype::fp32) {
    const float* src = static_cast<const float*>(cache.data) + offset;
    std::copy(src, src + dim, out);
  } else {
    const bf16* src = static_cast<const bf16*>(cache.data) + offset;
    for (std::int64_t i = 0; i < dim; ++i) out[i] = bf16_to_float(src[i]);
  }
}

void store(const MlaKvCache& cache, std::int64_t offset, const float* values, std::int64_t count) {
  if (cache.dtype == KvCacheDtype::fp32) {
    std::copy(values, values + count, static_cast<float*>(cache.data) + offset);
  } else {
    bf16* dst = static_cast<bf16*>(cache.data) + offset;
    for (std::int64_t i = 0; i < count; ++i) dst[i] = bf16_from_float(values[i]);
  }
}

// Softmax of scores in place (fp32); returns ln Σ exp(score).
float softmax_in_place(std::vector<float>& scores) {
  const float max_score = *std::max_element(scores.begin(), scores.end());
  float sum = 0.0f;
  for (float& s : scores) {
    s = std::exp(s - max_score);
    sum += s;
  }
  for (float& s : scores) s /= sum;
  return max_score + std::log(sum);
}

float dot(const float* a, const float* b, std::int64_t n, float acc) {
  for (std::int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Row d of head h's W_UK (d < nope_dim) or W_UV (d < v_dim) block: kv_lora_rank values.
const float* w_uk_row(const MlaUpWeights& w, std::int64_t h, std::int64_t d) {
  return w.kv_b + (h * (w.nope_dim + w.v_dim) + d) * w.kv_lora_rank;
}
const float* w_uv_row(const MlaUpWeights& w, std::int64_t h, std::int64_t d) {
  return w.kv_b + (h * (w.nope_dim + w.v_dim) + w.nope_dim + d) * w.kv_lora_rank;
}

}  // namespace

void mla_cache_write(const MlaCacheWriteParams& p) {
  validate(p);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const std::int64_t offset = entry_offset("mla_cache_write", p.cache, p.table, p.seq_ids[t], p.positions[t]);
    store(p.cache, offset, p.latent + t * p.latent_stride, p.cache.kv_lora_rank);
    store(p.cache, offset + p.cache.kv_lora_rank, p.k_pe + t * p.k_pe_stride, p.cache.rope_dim);
  }
}

void mla_decode(const MlaDecodeParams& p) {
  validate(p);
  const std::int64_t lora = p.cache.kv_lora_rank;
  const std::int64_t rope = p.cache.rope_dim;
  const std::int64_t dim = lora + rope;
  std::vector<float> entries;
  std::vector<float> scores;
  for (std::int64_t q = 0; q < p.queries; ++q) {
    // The query's visible keys: its sequence's cache positions 0..positions[q], as fp32.
    const std::int64_t visible = static_cast<std::int64_t>(p.positions[q]) + 1;
    if (visible <= 0) bad("mla_decode", "positions[" + std::to_string(q) + "] is negative");
    entries.resize(static_cast<std::size_t>(visible * dim));
    for (std::int64_t t = 0; t < visible; ++t) {
      const std::int64_t offset =
          entry_offset("mla_decode", p.cache, p.table, p.seq_ids[q], static_cast<std::int32_t>(t));
      load_entry(p.cache, offset, entries.data() + t * dim);
    }
    for (std::int64_t h = 0; h < p.heads; ++h) {
      const float* q_latent = p.q_latent.data + q * p.q_latent.token_stride + h * p.q_latent.head_stride;
      const float* q_pe = p.q_pe.data + q * p.q_pe.token_stride + h * p.q_pe.head_stride;
      scores.resize(static_cast<std::size_t>(visible));
      for (std::int64_t t = 0; t < visible; ++t) {
        const float* entry = entries.data() + t * dim;
        // One dot over the 576-wide [c_KV ‖ k_pe] key, as FlashMLA's MQA view.
        const float s = dot(q_pe, entry + lora, rope, dot(q_latent, entry, lora, 0.0f));
        scores[t] = s * p.softmax_scale;
      }
      const float lse = softmax_in_place(scores);
      if (p.lse != nullptr) p.lse[q * p.heads + h] = lse;
      float* out = p.out_latent.data + q * p.out_latent.token_stride + h * p.out_latent.head_stride;
      std::fill(out, out + lora, 0.0f);
      for (std::int64_t t = 0; t < visible; ++t) {
        const float* c = entries.data() + t * dim;  // V is the latent part of the same entry
        for (std::int64_t i = 0; i < lora; ++i) out[i] += scores[t] * c[i];
      }
    }
  }
}

void mla_prefill(const MlaPrefillParams& p) {
  validate(p);
  if (p.cu_seqlens_q[0] != 0 || p.cu_seqlens_kv[0] != 0) bad("mla_prefill", "cu_seqlens must start at 0");
  std::vector<float> scores;
  for (std::int64_t s = 0; s < p.num_seqs; ++s) {
    const std::int64_t q0 = p.cu_seqlens_q[s];
    const std::int64_t len_q = p.cu_seqlens_q[s + 1] - q0;
    const std::int64_t kv0 = p.cu_seqlens_kv[s];
    const std::int64_t len_kv = p.cu_seqlens_kv[s + 1] - kv0;
    if (len_q < 0 || len_kv < 0) bad("mla_prefill", "cu_seqlens must be non-decreasing");
    if (len_kv < len_q) {
      bad("mla_prefill", "sequence " + std::to_string(s) + " has fewer keys (" + std::to_string(len_kv) +
                             ") than queries (" + std::to_string(len_q) + ")");
    }
    for (std::int64_t j = 0; j < len_q; ++j) {
      const std::int64_t visible = j + (len_kv - len_q) + 1;  // causal, bottom-right aligned
      for (std::int64_t h = 0; h < p.heads; ++h) {
        const float* q = p.q.data + (q0 + j) * p.q.token_stride + h * p.q.head_stride;
        scores.resize(static_cast<std::size_t>(visible));
        for (std::int64_t t = 0; t < visible; ++t) {
          const float* k_nope = p.k_nope.data + (kv0 + t) * p.k_nope.token_stride + h * p.k_nope.head_stride;
          const float* k_pe = p.k_pe + (kv0 + t) * p.k_pe_stride;
          // q·[k_nope ‖ k_pe] over the 192-wide concatenation.
          const float dot_qk = dot(q + p.nope_dim, k_pe, p.rope_dim, dot(q, k_nope, p.nope_dim, 0.0f));
          scores[t] = dot_qk * p.softmax_scale;
        }
        softmax_in_place(scores);
        float* out = p.out.data + (q0 + j) * p.out.token_stride + h * p.out.head_stride;
        std::fill(out, out + p.v_dim, 0.0f);
        for (std::int64_t t = 0; t < visible; ++t) {
          const float* v = p.v.data + (kv0 + t) * p.v.token_stride + h * p.v.head_stride;
          for (std::int64_t d = 0; d < p.v_dim; ++d) out[d] += scores[t] * v[d];
        }
      }
    }
  }
}

void mla_absorb_q(const MlaAbsorbQParams& p) {
  validate(p);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    for (std::int64_t h = 0; h < p.w.heads; ++h) {
      const float* q_nope = p.q_nope.data + t * p.q_nope.token_stride + h * p.q_nope.head_stride;
      float* q_latent = p.q_latent.data + t * p.q_latent.token_stride + h * p.q_latent.head_stride;
      std::fill(q_latent, q_latent + p.w.kv_lora_rank, 0.0f);
      for (std::int64_t d = 0; d < p.w.nope_dim; ++d) {
        const float* w = w_uk_row(p.w, h, d);
        for (std::int64_t c = 0; c < p.w.kv_lora_rank; ++c) q_latent[c] += q_nope[d] * w[c];
      }
    }
  }
}

void mla_output_up(const MlaOutputUpParams& p) {
  validate(p);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    for (std::int64_t h = 0; h < p.w.heads; ++h) {
      const float* latent = p.out_latent.data + t * p.out_latent.token_stride + h * p.out_latent.head_stride;
      float* out = p.out.data + t * p.out.token_stride + h * p.out.head_stride;
      for (std::int64_t d = 0; d < p.w.v_dim; ++d) out[d] = dot(latent, w_uv_row(p.w, h, d), p.w.kv_lora_rank, 0.0f);
    }
  }
}

void mla_kv_up(const MlaKvUpParams& p) {
  validate(p);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* latent = p.latent + t * p.latent_stride;
    for (std::int64_t h = 0; h < p.w.heads; ++h) {
      float* k_nope = p.k_nope.data + t * p.k_nope.token_stride + h * p.k_nope.head_stride;
      float* v = p.v.data + t * p.v.token_stride + h * p.v.head_stride;
      for (std::int64_t d = 0; d < p.w.nope_dim; ++d) k_nope[d] = dot(latent, w_uk_row(p.w, h, d), p.w.kv_lora_rank, 0.0f);
      for (std::int64_t d = 0; d < p.w.v_dim; ++d) v[d] = dot(latent, w_uv_row(p.w, h, d), p.w.kv_lora_rank, 0.0f);
    }
  }
}

}  // namespace sy::gpu::ref
