#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

using test::compare;
using test::within;

// DeepSeek-V3 per-head sizes with a few heads.
constexpr std::int64_t kHeads = 4;
constexpr std::int64_t kLora = 512, kRope = 64, kNope = 128, kV = 128;
constexpr std::int64_t kQkDim = kNope + kRope;
constexpr std::int64_t kEntry = kLora + kRope;
const float kScale = static_cast<float>(attention_softmax_scale(kQkDim, YarnParams{.mscale_all_dim = 1.0}));

// A page pool of either dtype.
class PagePool {
 public:
  PagePool(std::int64_t pages, KvCacheDtype dtype) : pages_(pages), dtype_(dtype) {
    if (dtype == KvCacheDtype::fp32) {
      f32_.assign(static_cast<std::size_t>(pages * kMlaPageSize * kEntry), std::nanf(""));
    } else {
      bf16_.assign(static_cast<std::size_t>(pages * kMlaPageSize * kEntry), bf16_from_float(std::nanf("")));
    }
  }
  MlaKvCache view() {
    return {.data = dtype_ == KvCacheDtype::fp32 ? static_cast<void*>(f32_.data()) : static_cast<void*>(bf16_.data()),
            .dtype = dtype_, .num_pages = pages_, .kv_lora_rank = kLora, .rope_dim = kRope};
  }

 private:
  std::int64_t pages_;
  KvCacheDtype dtype_;
  std::vector<float> f32_;  // NaN-filled: reading an unwritten slot poisons the output
  std::vector<bf16> bf16_;
};

// One sequence's inputs: T tokens of latent and k_pe, and one query token's q per head.
struct Sequence {
  std::int64_t tokens = 0;
  std::vector<float> latent;  // [T, 512]
  std::vector<float> k_pe;    // [T, 64]
  std::vector<float> q;       // [T, heads, 192]: a query for every position, [q_nope ‖ q_pe]
};

Sequence make_sequence(test::TestRng& rng, std::int64_t tokens) {
  return {tokens, rng.normals(static_cast<std::size_t>(tokens * kLora), 1.0f),
          rng.normals(static_cast<std::size_t>(tokens * kRope), 1.0f),
          rng.normals(static_cast<std::size_t>(tokens * kHeads * kQkDim), 1.0f)};
}

std::vector<float> make_kv_b(test::TestRng& rng) {
  return rng.normals(static_cast<std::size_t>(kHeads * (kNope + kV) * kLora), 0.05f);
}

MlaUpWeights up_weights(const std::vector<float>& kv_b) {
  return {.kv_b = kv_b.data(), .heads = kHeads, .nope_dim = kNope, .v_dim = kV, .kv_lora_rank = kLora};
}

void write_sequence(MlaKvCache cache, const MlaBlockTable& table, std::int32_t seq, const Sequence& s) {
  const std::vector<std::int32_t> seq_ids(static_cast<std::size_t>(s.tokens), seq);
  std::vector<std::int32_t> positions(static_cast<std::size_t>(s.tokens));
  std::iota(positions.begin(), positions.end(), 0);
  ref::mla_cache_write({.cache = cache, .table = table, .latent = s.latent.data(), .k_pe = s.k_pe.data(),
                        .seq_ids = seq_ids.data(), .positions = positions.data(), .tokens = s.tokens,
                        .latent_stride = kLora, .k_pe_stride = kRope});
}

// Absorbed path for queries (seq_ids[i], positions[i]) whose q rows are qs[i] ([heads, 192]):
// absorb W_UK, decode over the cache, apply W_UV. Returns [queries, heads, v].
std::vector<float> absorbed_attention(MlaKvCache cache, const MlaBlockTable& table, const std::vector<float>& kv_b,
                                      const std::vector<const float*>& qs, const std::vector<std::int32_t>& seq_ids,
                                      const std::vector<std::int32_t>& positions, std::vector<float>* lse = nullptr) {
  const auto n = static_cast<std::int64_t>(qs.size());
  std::vector<float> q(static_cast<std::size_t>(n * kHeads * kQkDim));
  for (std::int64_t i = 0; i < n; ++i) std::copy(qs[i], qs[i] + kHeads * kQkDim, q.begin() + i * kHeads * kQkDim);
  std::vector<float> q_latent(static_cast<std::size_t>(n * kHeads * kLora));
  std::vector<float> out_latent(q_latent.size());
  std::vector<float> out(static_cast<std::size_t>(n * kHeads * kV));
  // q_nope and q_pe are read in place from the [q_nope ‖ q_pe] rows.
  ref::mla_absorb_q({.w = up_weights(kv_b), .q_nope = {q.data(), kHeads * kQkDim, kQkDim},
                     .q_latent = {q_latent.data(), kHeads * kLora, kLora}, .tokens = n});
  if (lse != nullptr) lse->resize(static_cast<std::size_t>(n * kHeads));
  ref::mla_decode({.cache = cache, .table = table, .q_latent = {q_latent.data(), kHeads * kLora, kLora},
                   .q_pe = {q.data() + kNope, kHeads * kQkDim, kQkDim},
                   .out_latent = {out_latent.data(), kHeads * kLora, kLora},
                   .lse = lse != nullptr ? lse->data() : nullptr, .seq_ids = seq_ids.data(),
                   .positions = positions.data(), .queries = n, .heads = kHeads, .softmax_scale = kScale});
  ref::mla_output_up({.w = up_weights(kv_b), .out_latent = {out_latent.data(), kHeads * kLora, kLora},
                      .out = {out.data(), kHeads * kV, kV}, .tokens = n});
  return out;
}

// Straightforward naive attention in double for one query row q [heads, 192] of sequence s at
// position pos: up-project the latent with W_UK / W_UV, softmax over positions 0..pos.
std::vector<double> naive_double(const Sequence& s, const std::vector<float>& kv_b, const float* q, std::int64_t pos,
                                 std::vector<double>* lse = nullptr) {
  std::vector<double> out(static_cast<std::size_t>(kHeads * kV), 0.0);
  for (std::int64_t h = 0; h < kHeads; ++h) {
    std::vector<double> scores;
    std::vector<std::vector<double>> values;
    for (std::int64_t t = 0; t <= pos; ++t) {
      double score = 0.0;
      std::vector<double> v(kV);
      for (std::int64_t d = 0; d < kNope + kV; ++d) {
        double up = 0.0;
        for (std::int64_t c = 0; c < kLora; ++c) up += double(kv_b[(h * (kNope + kV) + d) * kLora + c]) * s.latent[t * kLora + c];
        if (d < kNope) {
          score += double(q[h * kQkDim + d]) * up;
        } else {
          v[d - kNope] = up;
        }
      }
      for (std::int64_t r = 0; r < kRope; ++r) score += double(q[h * kQkDim + kNope + r]) * s.k_pe[t * kRope + r];
      scores.push_back(score * kScale);
      values.push_back(std::move(v));
    }
    const double max_score = *std::max_element(scores.begin(), scores.end());
    double sum = 0.0;
    for (double& x : scores) sum += (x = std::exp(x - max_score));
    for (std::size_t t = 0; t < scores.size(); ++t) {
      for (std::int64_t d = 0; d < kV; ++d) out[h * kV + d] += scores[t] / sum * values[t][d];
    }
    if (lse != nullptr) lse->push_back(max_score + std::log(sum));
  }
  return out;
}

std::vector<std::int32_t> identity_table(std::int64_t pages) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(pages));
  std::iota(t.begin(), t.end(), 0);
  return t;
}

TEST(RefMla, AbsorbedDecodeEqualsNaiveAttention) {
  test::TestRng rng(17);
  const Sequence s = make_sequence(rng, 150);  // 3 pages, the last partial
  const std::vector<float> kv_b = make_kv_b(rng);
  PagePool pool(3, KvCacheDtype::fp32);
  const std::vector<std::int32_t> pages = identity_table(3);
  const MlaBlockTable table = {.pages = pages.data(), .num_seqs = 1, .max_pages = 3, .stride = 3};
  write_sequence(pool.view(), table, 0, s);
  const std::int64_t pos = s.tokens - 1;
  const float* q = s.q.data() + pos * kHeads * kQkDim;

  std::vector<float> lse;
  const std::vector<float> absorbed = absorbed_attention(pool.view(), table, kv_b, {q}, {0}, {static_cast<std::int32_t>(pos)}, &lse);

  // Naive path: explicit k_nope / v per head from the latent, then attention over [k_nope ‖ k_pe].
  std::vector<float> k_nope(static_cast<std::size_t>(s.tokens * kHeads * kNope));
  std::vector<float> v(static_cast<std::size_t>(s.tokens * kHeads * kV));
  ref::mla_kv_up({.w = up_weights(kv_b), .latent = s.latent.data(), .latent_stride = kLora,
                  .k_nope = {k_nope.data(), kHeads * kNope, kNope}, .v = {v.data(), kHeads * kV, kV},
                  .tokens = s.tokens});
  std::vector<float> naive(static_cast<std::size_t>(kHeads * kV));
  const std::int32_t cu_q[] = {0, 1};
  const std::int32_t cu_kv[] = {0, static_cast<std::int32_t>(s.tokens)};
  ref::mla_prefill({.q = {q, kHeads * kQkDim, kQkDim}, .k_nope = {k_nope.data(), kHeads * kNope, kNope},
                    .k_pe = s.k_pe.data(), .k_pe_stride = kRope, .v = {v.data(), kHeads * kV, kV},
                    .out = {naive.data(), kHeads * kV, kV}, .cu_seqlens_q = cu_q, .cu_seqlens_kv = cu_kv,
                    .num_seqs = 1, .heads = kHeads, .nope_dim = kNope, .rope_dim = kRope, .v_dim = kV,
                    .softmax_scale = kScale});

  std::vector<double> want_lse;
  const std::vector<double> want = naive_double(s, kv_b, q, pos, &want_lse);
  // The two fp32 forms agree to 1e-4 relative; each is within 1e-5 of the double computation.
  EXPECT_TRUE(within(compare(absorbed, naive), 1e-4, 1e-4));
  EXPECT_TRUE(within(compare(absorbed, want), 1e-4, 1e-5));
  EXPECT_TRUE(within(compare(naive, want), 1e-4, 1e-5));
  EXPECT_TRUE(within(compare(lse, want_lse), 1e-4, 1e-5));
}

TEST(RefMla, PagedLayoutIndependence) {
  // Two sequences in a pool of 8 pages: once in order, once scattered through a shuffled table.
  test::TestRng rng(18);
  const Sequence s0 = make_sequence(rng, 130), s1 = make_sequence(rng, 64);
  const std::vector<float> kv_b = make_kv_b(rng);
  const std::vector<std::int32_t> ordered = {0, 1, 2, 3, 4, 5, 6, 7};
  const std::vector<std::int32_t> shuffled = {6, 1, 4, 0, 7, 2, 5, 3};  // row 0: 6,1,4,0; row 1: 7,2,...
  const std::vector<const float*> qs = {s0.q.data() + 129 * kHeads * kQkDim, s1.q.data() + 63 * kHeads * kQkDim,
                                        s0.q.data() + 70 * kHeads * kQkDim};
  std::vector<std::vector<float>> outs;
  for (const std::vector<std::int32_t>* pages : {&ordered, &shuffled}) {
    PagePool pool(8, KvCacheDtype::fp32);
    const MlaBlockTable table = {.pages = pages->data(), .num_seqs = 2, .max_pages = 4, .stride = 4};
    write_sequence(pool.view(), table, 0, s0);
    write_sequence(pool.view(), table, 1, s1);
    outs.push_back(absorbed_attention(pool.view(), table, kv_b, qs, {0, 1, 0}, {129, 63, 70}));
  }
  EXPECT_EQ(outs[0], outs[1]);  // bit-identical: the same arithmetic in the same order
  EXPECT_TRUE(within(compare(std::vector<float>(outs[0].begin(), outs[0].begin() + kHeads * kV),
                             naive_double(s0, kv_b, qs[0], 129)),
                     1e-4, 1e-5));
  EXPECT_TRUE(within(compare(std::vector<float>(outs[0].begin() + kHeads * kV, outs[0].begin() + 2 * kHeads * kV),
                             naive_double(s1, kv_b, qs[1], 63)),
                     1e-4, 1e-5));
}

TEST(RefMla, MultiQueryCausalDecodeEqualsSingleDecodes) {
  // Three query tokens of one sequence (MTP verification / chunked prefill) across a page edge,
  // plus a query of another sequence in the same batch.
  test::TestRng rng(19);
  const Sequence s0 = make_sequence(rng, 130), s1 = make_sequence(rng, 10);
  const std::vector<float> kv_b = make_kv_b(rng);
  PagePool pool(5, KvCacheDtype::fp32);
  const std::vector<std::int32_t> pages = {4, 0, 2, /* seq 1 */ 3, 1, 1};
  const MlaBlockTable table = {.pages = pages.data(), .num_seqs = 2, .max_pages = 3, .stride = 3};
  write_sequence(pool.view(), table, 0, s0);
  write_sequence(pool.view(), table, 1, s1);
  const std::vector<std::int32_t> seq_ids = {0, 1, 0, 0};
  const std::vector<std::int32_t> positions = {127, 9, 128, 129};
  std::vector<const float*> qs;
  for (std::size_t i = 0; i < seq_ids.size(); ++i) {
    qs.push_back((seq_ids[i] == 0 ? s0 : s1).q.data() + positions[i] * kHeads * kQkDim);
  }
  const std::vector<float> batched = absorbed_attention(pool.view(), table, kv_b, qs, seq_ids, positions);
  for (std::size_t i = 0; i < qs.size(); ++i) {
    const std::vector<float> single = absorbed_attention(pool.view(), table, kv_b, {qs[i]}, {seq_ids[i]}, {positions[i]});
    EXPECT_TRUE(std::equal(single.begin(), single.end(), batched.begin() + static_cast<std::ptrdiff_t>(i) * kHeads * kV))
        << "query " << i;
  }
  // And the causal cut is where it should be: query at 127 ignores positions 128 and 129.
  EXPECT_TRUE(within(compare(std::vector<float>(batched.begin(), batched.begin() + kHeads * kV),
                             naive_double(s0, kv_b, qs[0], 127)),
                     1e-4, 1e-5));
}

TEST(RefMla, Bf16CacheDecode) {
  test::TestRng rng(20);
  Sequence s = make_sequence(rng, 100);
  const std::vector<float> kv_b = make_kv_b(rng);
  const std::vector<std::int32_t> pages = {1, 0};
  const MlaBlockTable table = {.pages = pages.data(), .num_seqs = 1, .max_pages = 2, .stride = 2};
  PagePool bf16_pool(2, KvCacheDtype::bf16), f32_pool(2, KvCacheDtype::fp32);
  write_sequence(bf16_pool.view(), table, 0, s);
  write_sequence(f32_pool.view(), table, 0, s);
  const float* q = s.q.data() + 99 * kHeads * kQkDim;
  const std::vector<float> from_bf16 = absorbed_attention(bf16_pool.view(), table, kv_b, {q}, {0}, {99});
  const std::vector<float> from_f32 = absorbed_attention(f32_pool.view(), table, kv_b, {q}, {0}, {99});
  // Exact math on the BF16-rounded cache contents.
  Sequence rounded = s;
  for (float& x : rounded.latent) x = bf16_to_float(bf16_from_float(x));
  for (float& x : rounded.k_pe) x = bf16_to_float(bf16_from_float(x));
  EXPECT_TRUE(within(compare(from_bf16, naive_double(rounded, kv_b, q, 99)), 1e-4, 1e-5));
  // BF16 storage (8 mantissa bits) moves the result by well under 1%.
  EXPECT_TRUE(within(compare(from_bf16, from_f32), 0.05, 1e-2));
}

TEST(RefMla, NaivePrefillIsCausalPerSequence) {
  // Sequence 0: a fresh 70-token prompt. Sequence 1: 5 new tokens after a 35-token prefix, so its
  // queries are the last 5 of 40 keys.
  test::TestRng rng(21);
  const Sequence s0 = make_sequence(rng, 70), s1 = make_sequence(rng, 40);
  const std::vector<float> kv_b = make_kv_b(rng);
  const std::int64_t kv_tokens = 110, q_tokens = 75;
  std::vector<float> latent(s0.latent), k_pe(s0.k_pe), q(s0.q);
  latent.insert(latent.end(), s1.latent.begin(), s1.latent.end());
  k_pe.insert(k_pe.end(), s1.k_pe.begin(), s1.k_pe.end());
  q.insert(q.end(), s1.q.begin() + 35 * kHeads * kQkDim, s1.q.end());
  // k_nope and v stay interleaved per head as one up-projection writes them: [T, heads, 128 ‖ 128].
  std::vector<float> kv(static_cast<std::size_t>(kv_tokens * kHeads * (kNope + kV)));
  const std::int64_t kv_stride = kHeads * (kNope + kV);
  ref::mla_kv_up({.w = up_weights(kv_b), .latent = latent.data(), .latent_stride = kLora,
                  .k_nope = {kv.data(), kv_stride, kNope + kV}, .v = {kv.data() + kNope, kv_stride, kNope + kV},
                  .tokens = kv_tokens});
  std::vector<float> out(static_cast<std::size_t>(q_tokens * kHeads * kV));
  const std::int32_t cu_q[] = {0, 70, 75};
  const std::int32_t cu_kv[] = {0, 70, 110};
  ref::mla_prefill({.q = {q.data(), kHeads * kQkDim, kQkDim}, .k_nope = {kv.data(), kv_stride, kNope + kV},
                    .k_pe = k_pe.data(), .k_pe_stride = kRope, .v = {kv.data() + kNope, kv_stride, kNope + kV},
                    .out = {out.data(), kHeads * kV, kV}, .cu_seqlens_q = cu_q, .cu_seqlens_kv = cu_kv,
                    .num_seqs = 2, .heads = kHeads, .nope_dim = kNope, .rope_dim = kRope, .v_dim = kV,
                    .softmax_scale = kScale});
  std::vector<double> want;
  for (std::int64_t j = 0; j < 70; j += 23) {  // a few rows of sequence 0, including the first
    const std::vector<double> row = naive_double(s0, kv_b, s0.q.data() + j * kHeads * kQkDim, j);
    EXPECT_TRUE(within(compare(std::vector<float>(out.begin() + j * kHeads * kV, out.begin() + (j + 1) * kHeads * kV), row),
                       1e-4, 1e-5))
        << "seq 0 row " << j;
  }
  for (std::int64_t j = 0; j < 5; ++j) {
    const std::vector<double> row = naive_double(s1, kv_b, s1.q.data() + (35 + j) * kHeads * kQkDim, 35 + j);
    const std::int64_t r = 70 + j;
    EXPECT_TRUE(within(compare(std::vector<float>(out.begin() + r * kHeads * kV, out.begin() + (r + 1) * kHeads * kV), row),
                       1e-4, 1e-5))
        << "seq 1 row " << j;
  }
}

TEST(RefMla, AbsorbAndOutputUpMatchDouble) {
  test::TestRng rng(22);
  const std::vector<float> kv_b = make_kv_b(rng);
  const std::vector<float> q_nope = rng.normals(3 * kHeads * kNope, 1.0f);
  std::vector<float> q_latent(3 * kHeads * kLora);
  ref::mla_absorb_q({.w = up_weights(kv_b), .q_nope = {q_nope.data(), kHeads * kNope, kNope},
                     .q_latent = {q_latent.data(), kHeads * kLora, kLora}, .tokens = 3});
  std::vector<float> out(3 * kHeads * kV);
  ref::mla_output_up({.w = up_weights(kv_b), .out_latent = {q_latent.data(), kHeads * kLora, kLora},
                      .out = {out.data(), kHeads * kV, kV}, .tokens = 3});
  std::vector<double> want_latent, want_out;
  for (std::int64_t t = 0; t < 3; ++t) {
    for (std::int64_t h = 0; h < kHeads; ++h) {
      std::vector<double> lat(kLora, 0.0);
      for (std::int64_t c = 0; c < kLora; ++c) {
        for (std::int64_t d = 0; d < kNope; ++d) {
          lat[c] += double(q_nope[(t * kHeads + h) * kNope + d]) * kv_b[(h * (kNope + kV) + d) * kLora + c];
        }
      }
      want_latent.insert(want_latent.end(), lat.begin(), lat.end());
      for (std::int64_t d = 0; d < kV; ++d) {
        double acc = 0.0;  // from the fp32 latent the kernel produced, to test the second step alone
        for (std::int64_t c = 0; c < kLora; ++c) {
          acc += double(q_latent[(t * kHeads + h) * kLora + c]) * kv_b[(h * (kNope + kV) + kNope + d) * kLora + c];
        }
        want_out.push_back(acc);
      }
    }
  }
  EXPECT_TRUE(within(compare(q_latent, want_latent), 1e-5, 1e-6));
  EXPECT_TRUE(within(compare(out, want_out), 1e-5, 1e-6));
}

TEST(RefMla, RejectsBadPagesAndPositions) {
  test::TestRng rng(23);
  const Sequence s = make_sequence(rng, 1);
  PagePool pool(2, KvCacheDtype::fp32);
  const std::vector<std::int32_t> bad_pages = {5};
  const MlaBlockTable bad_table = {.pages = bad_pages.data(), .num_seqs = 1, .max_pages = 1, .stride = 1};
  EXPECT_THROW(write_sequence(pool.view(), bad_table, 0, s), std::invalid_argument);
  const std::vector<std::int32_t> pages = {1};
  const MlaBlockTable table = {.pages = pages.data(), .num_seqs = 1, .max_pages = 1, .stride = 1};
  const std::int32_t seq = 0, position = 64;  // beyond the table's one page
  EXPECT_THROW(ref::mla_cache_write({.cache = pool.view(), .table = table, .latent = s.latent.data(),
                                     .k_pe = s.k_pe.data(), .seq_ids = &seq, .positions = &position, .tokens = 1,
                                     .latent_stride = kLora, .k_pe_stride = kRope}),
               std::invalid_argument);
  const std::int32_t other_seq = 1;
  EXPECT_THROW(ref::mla_cache_write({.cache = pool.view(), .table = table, .latent = s.latent.data(),
                                     .k_pe = s.k_pe.data(), .seq_ids = &other_seq, .positions = &seq, .tokens = 1,
                                     .latent_stride = kLora, .k_pe_stride = kRope}),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu
