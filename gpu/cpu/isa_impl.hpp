// The CPU backend's inner loops, written once over a vector "traits" type V and compiled three
// times (isa_scalar.cpp, isa_avx2.cpp, isa_avx512.cpp), each with its own V and ISA flags.
// Everything here sits in an anonymous namespace and uses raw pointers only: a TU compiled with
// -mavx512f must not emit any shared (COMDAT) function, such as a std:: template instantiation,
// that the linker could pick for the scalar path on a CPU without AVX-512. Include only from
// those three files, after defining V.
//
// V provides: reg, W (lanes), zero/load/store/bcast/add/mul/fma(a,b,c)=a·b+c/hsum/exp,
// decode_fp8 (W bytes, value × 1/kFp8Factor), decode_bf16 (W halfwords), and the blocking
// constants kGemvMg, kTileMg, kMlaHb, kMlaDv. Blocking never changes a result: each output's
// operations run in one fixed order whatever the blocking (see "The accumulation order" below
// and mla_task), which is what makes the kernels batch-invariant.
#pragma once

#include <cstdint>

#include "gpu/cpu/isa_kernels.hpp"

// Register blocking relies on the constant-trip loops over a micro-tile being unrolled, so the
// accumulator arrays live in registers; -O2 alone leaves them in memory.
#define SY_UNROLL _Pragma("GCC unroll 32")

namespace sy::gpu::cpu::detail {
namespace {

inline std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
// A local copy of detail::round_up: an inline function shared with other TUs could be emitted
// here with AVX-512 encodings and picked by the linker for everyone.
inline std::int64_t iround_up(std::int64_t x, std::int64_t to) { return (x + to - 1) / to * to; }

// Decodes w[row, k0 .. k0+len) into dst[0 .. iround_up(len, W)), zeros past len.
template <class V>
void decode_row(const GemmArgs& g, std::int64_t row, std::int64_t k0, std::int64_t len, float* dst) {
  std::int64_t i = 0;
  if (g.format == WeightFormat::fp8_e4m3) {
    const std::uint8_t* src = static_cast<const std::uint8_t*>(g.b) + row * g.ldb + k0;
    for (; i + V::W <= len; i += V::W) V::store(dst + i, V::decode_fp8(src + i));
    if (i < len) {
      std::uint8_t tail[V::W] = {};
      for (std::int64_t j = i; j < len; ++j) tail[j - i] = src[j];
      V::store(dst + i, V::decode_fp8(tail));
    }
  } else {
    const std::uint16_t* src = static_cast<const std::uint16_t*>(g.b) + row * g.ldb + k0;
    for (; i + V::W <= len; i += V::W) V::store(dst + i, V::decode_bf16(src + i));
    if (i < len) {
      std::uint16_t tail[V::W] = {};
      for (std::int64_t j = i; j < len; ++j) tail[j - i] = src[j];
      V::store(dst + i, V::decode_bf16(tail));
    }
  }
}

template <class V>
float weight_scale(const GemmArgs& g, std::int64_t n, std::int64_t kb) {
  const float factor = g.format == WeightFormat::fp8_e4m3 ? V::kFp8Factor : 1.0f;
  return g.b_scales == nullptr ? factor : g.b_scales[(n / 128) * g.k_blocks + kb] * factor;
}

// ---- The accumulation order both GEMM kernels follow, so that an output's bits depend only on
// its own row of A and on the weight, never on m (which kernel runs), the other rows or the task
// split. For output (m, n), in W-lane vectors over k, lenv = len rounded up to W (zero padded):
//   tot = 0
//   for kb in order:
//     acc = 0
//     for k = 0, W, 2W, .. < lenv:  acc = fma(a[m, k0+k ..], w[n, k0+k ..], acc)     (lane-wise)
//     tot = fma(acc, b_scale[n/128, kb] · a_scale[m, kb], tot)                         (lane-wise)
//   C[m, n] = V::hsum(tot)                                     (one fixed tree, isa_*.cpp)
// Lane j of acc sums k ≡ j (mod W) in order. Both kernels run it through the one micro-kernel
// below (gemv_micro); they differ only in which outputs a call covers and the loops around it.
// (Vectorizing along n with k sequential instead would need the weight transposed per block,
// which cost GEMV 1.3-2× at m = 1 in our measurements; this order keeps GEMV as it was and
// costs the tiled kernel a W-lane total per output.)

// ---- GEMV (m <= 8): vectorized along k; 4 weight rows × MG activation rows per step.
// Per-block partial sums stay in vector form and are scaled lane-wise into vector totals, so
// the horizontal sum happens once per output, not once per 128-wide block.
constexpr int kGemvRows = 4;

// tot[i · tot_stride + r] += acc(row i of a, weight row r) · scales[i], lane-wise, for one block.
template <class V, int MG>
void gemv_micro(const float* a, std::int64_t lda, const float* wd, std::int64_t lenv, typename V::reg* tot,
                std::int64_t tot_stride, const float* scales) {
  using reg = typename V::reg;
  reg acc[MG][kGemvRows];
  SY_UNROLL
  for (int i = 0; i < MG; ++i)
    SY_UNROLL
    for (int r = 0; r < kGemvRows; ++r) acc[i][r] = V::zero();
  for (std::int64_t k = 0; k < lenv; k += V::W) {
    reg w[kGemvRows];
    SY_UNROLL
    for (int r = 0; r < kGemvRows; ++r) w[r] = V::load(wd + r * 128 + k);
    SY_UNROLL
    for (int i = 0; i < MG; ++i) {
      const reg x = V::load(a + i * lda + k);
      SY_UNROLL
      for (int r = 0; r < kGemvRows; ++r) acc[i][r] = V::fma(x, w[r], acc[i][r]);
    }
  }
  SY_UNROLL
  for (int i = 0; i < MG; ++i) {
    const reg s = V::bcast(scales[i]);
    SY_UNROLL
    for (int r = 0; r < kGemvRows; ++r) tot[i * tot_stride + r] = V::fma(acc[i][r], s, tot[i * tot_stride + r]);
  }
}

// Runs f.template operator()<c>() for the count c in 1..N.
template <int N, class F>
void with_count(std::int64_t c, F&& f) {
  if constexpr (N >= 1) {
    if (c == N) {
      f.template operator()<N>();
      return;
    }
    with_count<N - 1>(c, f);
  }
}

// gemv_micro for rows [0, m) of a, MG at a time.
template <class V, int MG>
void gemv_rows(const float* a, std::int64_t lda, std::int64_t m, const float* wd, std::int64_t lenv,
               typename V::reg* tot, std::int64_t tot_stride, const float* scales) {
  for (std::int64_t i = 0; i < m; i += MG) {
    with_count<MG>(imin(MG, m - i), [&]<int mg>() {
      gemv_micro<V, mg>(a + i * lda, lda, wd, lenv, tot + i * tot_stride, tot_stride, scales + i);
    });
  }
}

// Per-row scale of block kb for rows [m0, m0 + m): b_scale · a_scale, in that order everywhere.
template <class V>
void block_scales(const GemmArgs& g, std::int64_t n, std::int64_t kb, std::int64_t m0, std::int64_t m, float* scales) {
  const float bs = weight_scale<V>(g, n, kb);
  for (std::int64_t i = 0; i < m; ++i) scales[i] = g.a_scales == nullptr ? bs : bs * g.a_scales[(m0 + i) * g.k_blocks + kb];
}

template <class V>
void gemv(const GemmArgs& g, std::int64_t n_begin, std::int64_t n_end, float* scratch) {
  using reg = typename V::reg;
  float* wd = scratch;  // [4][128]
  reg* tot = reinterpret_cast<reg*>(scratch + kGemvRows * 128);  // [m][4]
  float scales[kGemvMaxM];
  for (std::int64_t n = n_begin; n < n_end; n += kGemvRows) {
    const std::int64_t rows = imin(kGemvRows, n_end - n);
    for (std::int64_t i = 0; i < g.m * kGemvRows; ++i) tot[i] = V::zero();
    for (std::int64_t kb = 0; kb < g.k_blocks; ++kb) {
      const std::int64_t k0 = kb * 128;
      const std::int64_t len = imin(128, g.k - k0);
      const std::int64_t lenv = (len + V::W - 1) / V::W * V::W;
      // Missing rows of a ragged group repeat the last real row; their results are dropped.
      SY_UNROLL
      for (int r = 0; r < kGemvRows; ++r) decode_row<V>(g, n + imin(r, rows - 1), k0, len, wd + r * 128);
      block_scales<V>(g, n, kb, 0, g.m, scales);
      gemv_rows<V, V::kGemvMg>(g.a + k0, g.lda, g.m, wd, lenv, tot, kGemvRows, scales);
    }
    for (std::int64_t m = 0; m < g.m; ++m) {
      for (std::int64_t r = 0; r < rows; ++r) g.c[m * g.ldc + n + r] = V::hsum(tot[m * kGemvRows + r]);
    }
  }
}

// ---- Tiled GEMM (m > 8): the same micro-kernel over panels of kTilePanel rows of A. Per
// 128-wide block the task's 64 weight rows are decoded once per panel into L1 and reused by all
// of the panel's rows; the lane-wise totals [kTilePanel][64] stay in scratch (L2) until the
// final horizontal sums.
template <class V>
void gemm_tile(const GemmArgs& g, std::int64_t n_begin, float* scratch) {
  using reg = typename V::reg;
  float* wd = scratch;                                                // [64][128]
  reg* tot = reinterpret_cast<reg*>(scratch + kGemmTaskRows * 128);  // [kTilePanel][64]
  float scales[kTilePanel];
  const std::int64_t rows = imin(kGemmTaskRows, g.n - n_begin);
  const std::int64_t rows4 = iround_up(rows, kGemvRows);
  for (std::int64_t m0 = 0; m0 < g.m; m0 += kTilePanel) {
    const std::int64_t mp = imin(kTilePanel, g.m - m0);
    for (std::int64_t i = 0; i < mp * kGemmTaskRows; ++i) tot[i] = V::zero();
    for (std::int64_t kb = 0; kb < g.k_blocks; ++kb) {
      const std::int64_t k0 = kb * 128;
      const std::int64_t len = imin(128, g.k - k0);
      const std::int64_t lenv = (len + V::W - 1) / V::W * V::W;
      // As in GEMV, a ragged last group of 4 repeats the last real row.
      for (std::int64_t r = 0; r < rows4; ++r) decode_row<V>(g, n_begin + imin(r, rows - 1), k0, len, wd + r * 128);
      block_scales<V>(g, n_begin, kb, m0, mp, scales);
      // Rows of A outer: their 128-wide slices stay in L1 while the decoded block streams by.
      // Full panels take the wider blocking; small ones measured faster with GEMV's.
      with_count<2>(mp >= 48 ? 2 : 1, [&]<int wide>() {
        constexpr int MG = wide == 2 ? V::kTileMg : V::kGemvMg;
        for (std::int64_t m = 0; m < mp; m += MG) {
          const std::int64_t mg = imin(MG, mp - m);
          for (std::int64_t n = 0; n < rows4; n += kGemvRows) {
            gemv_rows<V, MG>(g.a + (m0 + m) * g.lda + k0, g.lda, mg, wd + n * 128, lenv,
                             tot + m * kGemmTaskRows + n, kGemmTaskRows, scales + m);
          }
        }
      });
    }
    for (std::int64_t m = 0; m < mp; ++m) {
      for (std::int64_t r = 0; r < rows; ++r) g.c[(m0 + m) * g.ldc + n_begin + r] = V::hsum(tot[m * kGemmTaskRows + r]);
    }
  }
}

// ---- MLA decode task. Per tile of up to 32 cached tokens (inside one page): scores for every
// head of the group (576-wide dots vectorized along the entry), an online-softmax update, then
// o += p · c over the latent part, register-blocked over heads × latent columns. Every sum is
// per (query, head) in a fixed order and tile bounds follow cache positions, so a query's result
// does not depend on which queries share the call (mla.cpp fixes the chunk bounds).
template <class V, int TB, int HB>
void mla_scores(const float* tile, std::int64_t ld, std::int64_t tokens, const float* qcat, std::int64_t dim_pad,
                std::int64_t dimv, float* scores, float scale) {
  using reg = typename V::reg;
  for (std::int64_t t = 0; t < tokens; t += TB) {
    reg acc[TB][HB];
    SY_UNROLL
    for (int a = 0; a < TB; ++a)
      SY_UNROLL
      for (int h = 0; h < HB; ++h) acc[a][h] = V::zero();
    for (std::int64_t d = 0; d < dimv; d += V::W) {
      reg key[TB];
      SY_UNROLL
      for (int a = 0; a < TB; ++a) key[a] = V::load(tile + (t + a) * ld + d);
      SY_UNROLL
      for (int h = 0; h < HB; ++h) {
        const reg q = V::load(qcat + h * dim_pad + d);
        SY_UNROLL
        for (int a = 0; a < TB; ++a) acc[a][h] = V::fma(q, key[a], acc[a][h]);
      }
    }
    SY_UNROLL
    for (int a = 0; a < TB; ++a)
      SY_UNROLL
      for (int h = 0; h < HB; ++h) scores[h * kMlaTileTokens + t + a] = V::hsum(acc[a][h]) * scale;
  }
}

template <class V, int HB, int DV>
void mla_accumulate(const float* tile, std::int64_t ld, std::int64_t tokens, const float* p, float* o,
                    std::int64_t o_stride, std::int64_t d) {
  using reg = typename V::reg;
  reg acc[HB][DV];
  SY_UNROLL
  for (int h = 0; h < HB; ++h)
    SY_UNROLL
    for (int v = 0; v < DV; ++v) acc[h][v] = V::load(o + h * o_stride + d + v * V::W);
  for (std::int64_t t = 0; t < tokens; ++t) {
    reg c[DV];
    SY_UNROLL
    for (int v = 0; v < DV; ++v) c[v] = V::load(tile + t * ld + d + v * V::W);
    SY_UNROLL
    for (int h = 0; h < HB; ++h) {
      const reg w = V::bcast(p[h * kMlaTileTokens + t]);
      SY_UNROLL
      for (int v = 0; v < DV; ++v) acc[h][v] = V::fma(w, c[v], acc[h][v]);
    }
  }
  SY_UNROLL
  for (int h = 0; h < HB; ++h)
    SY_UNROLL
    for (int v = 0; v < DV; ++v) V::store(o + h * o_stride + d + v * V::W, acc[h][v]);
}

template <class V, int HB>
void mla_scores_heads(const float* tile, std::int64_t ld, std::int64_t tokens, const float* qcat,
                      std::int64_t dim_pad, std::int64_t dimv, float* scores, float scale) {
  const std::int64_t pairs = tokens / 2 * 2;
  if (pairs > 0) mla_scores<V, 2, HB>(tile, ld, pairs, qcat, dim_pad, dimv, scores, scale);
  if (pairs < tokens) mla_scores<V, 1, HB>(tile + pairs * ld, ld, 1, qcat, dim_pad, dimv, scores + pairs, scale);
}

template <class V, int HB>
void mla_accumulate_heads(const float* tile, std::int64_t ld, std::int64_t tokens, const float* p, float* o,
                          std::int64_t o_stride, std::int64_t lorav) {
  constexpr int DV = V::kMlaDv;
  std::int64_t d = 0;
  for (; d + DV * V::W <= lorav; d += DV * V::W) mla_accumulate<V, HB, DV>(tile, ld, tokens, p, o, o_stride, d);
  for (; d < lorav; d += V::W) mla_accumulate<V, HB, 1>(tile, ld, tokens, p, o, o_stride, d);
}

template <class V>
void mla_task(const MlaTaskArgs& t) {
  using reg = typename V::reg;
  const std::int64_t dim = t.lora + t.rope;
  const std::int64_t dim_pad = iround_up(dim, 16);
  const std::int64_t dimv = iround_up(dim, V::W);
  const std::int64_t lorav = iround_up(t.lora, V::W);
  float* qcat = t.scratch;                                 // [8][dim_pad] = [q_latent ‖ q_pe], zero pad
  float* tile_buf = qcat + kMlaHeadGroup * dim_pad;       // [32][dim_pad]
  float* p = tile_buf + kMlaTileTokens * dim_pad;         // [8][32] scores, then probabilities
  float* o = p + kMlaHeadGroup * kMlaTileTokens;          // [8][iround_up(lora,16)]
  const std::int64_t o_ld = iround_up(t.lora, 16);
  for (int h = 0; h < t.heads; ++h) {
    float* q = qcat + h * dim_pad;
    for (std::int64_t i = 0; i < t.lora; ++i) q[i] = t.q_latent[h * t.q_latent_head_stride + i];
    for (std::int64_t i = 0; i < t.rope; ++i) q[t.lora + i] = t.q_pe[h * t.q_pe_head_stride + i];
    for (std::int64_t i = dim; i < dim_pad; ++i) q[i] = 0.0f;
    for (std::int64_t i = 0; i < o_ld; ++i) o[h * o_ld + i] = 0.0f;
    t.m[h] = -__builtin_inff();
    t.l[h] = 0.0f;
  }
  // Tile rows past dim stay zero, so padded dots add nothing.
  for (std::int64_t i = 0; i < kMlaTileTokens * dim_pad; ++i) tile_buf[i] = 0.0f;
  // Score slots past a short tile's end go through exp too (whole vectors) but are never used.
  for (std::int64_t i = 0; i < kMlaHeadGroup * kMlaTileTokens; ++i) p[i] = 0.0f;
  const bool direct = !t.bf16_cache && dim % V::W == 0;  // read an fp32 cache in place
  for (std::int64_t pos = t.t_begin; pos < t.t_end;) {
    const std::int64_t slot = pos % 64;
    const std::int64_t tokens = imin(imin(kMlaTileTokens - slot % kMlaTileTokens, 64 - slot), t.t_end - pos);
    const std::int64_t entry = (static_cast<std::int64_t>(t.pages[pos / 64]) * 64 + slot) * dim;
    const float* tile;
    std::int64_t ld;
    if (direct) {
      tile = static_cast<const float*>(t.cache) + entry;
      ld = dim;
    } else {
      for (std::int64_t a = 0; a < tokens; ++a) {
        float* dst = tile_buf + a * dim_pad;
        if (t.bf16_cache) {
          const std::uint16_t* src = static_cast<const std::uint16_t*>(t.cache) + entry + a * dim;
          std::int64_t i = 0;
          for (; i + V::W <= dim; i += V::W) V::store(dst + i, V::decode_bf16(src + i));
          for (; i < dim; ++i) dst[i] = __builtin_bit_cast(float, static_cast<std::uint32_t>(src[i]) << 16);
        } else {
          const float* src = static_cast<const float*>(t.cache) + entry + a * dim;
          for (std::int64_t i = 0; i < dim; ++i) dst[i] = src[i];
        }
      }
      tile = tile_buf;
      ld = dim_pad;
    }
    for (int h0 = 0; h0 < t.heads; h0 += V::kMlaHb) {
      const int hb = static_cast<int>(imin(V::kMlaHb, t.heads - h0));
      with_count<V::kMlaHb>(hb, [&]<int HB>() {
        mla_scores_heads<V, HB>(tile, ld, tokens, qcat + h0 * dim_pad, dim_pad, dimv, p + h0 * kMlaTileTokens,
                                t.softmax_scale);
      });
    }
    for (int h = 0; h < t.heads; ++h) {
      float* s = p + h * kMlaTileTokens;
      float tile_max = s[0];
      for (std::int64_t a = 1; a < tokens; ++a) tile_max = s[a] > tile_max ? s[a] : tile_max;
      const float m_new = tile_max > t.m[h] ? tile_max : t.m[h];
      const float alpha = __builtin_expf(t.m[h] - m_new);
      const reg mv = V::bcast(m_new);
      for (std::int64_t a = 0; a < kMlaTileTokens; a += V::W) V::store(s + a, V::exp(V::sub(V::load(s + a), mv)));
      float sum = 0.0f;
      for (std::int64_t a = 0; a < tokens; ++a) sum += s[a];
      t.l[h] = t.l[h] * alpha + sum;
      t.m[h] = m_new;
      if (alpha != 1.0f) {
        const reg av = V::bcast(alpha);
        for (std::int64_t i = 0; i < lorav; i += V::W) V::store(o + h * o_ld + i, V::mul(V::load(o + h * o_ld + i), av));
      }
    }
    for (int h0 = 0; h0 < t.heads; h0 += V::kMlaHb) {
      const int hb = static_cast<int>(imin(V::kMlaHb, t.heads - h0));
      with_count<V::kMlaHb>(hb, [&]<int HB>() {
        mla_accumulate_heads<V, HB>(tile, ld, tokens, p + h0 * kMlaTileTokens, o + h0 * o_ld, o_ld, lorav);
      });
    }
    pos += tokens;
  }
  for (int h = 0; h < t.heads; ++h) {
    for (std::int64_t i = 0; i < t.lora; ++i) t.o[h * t.o_stride + i] = o[h * o_ld + i];
  }
}

}  // namespace
}  // namespace sy::gpu::cpu::detail

#undef SY_UNROLL
