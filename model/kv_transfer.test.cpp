#include "model/kv_transfer.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "model/decode_batcher.hpp"
#include "model/engine_test_util.hpp"
#include "model/kv_transfer_test_util.hpp"
#include "schemas/checksum.hpp"

namespace sy::model {
namespace {

using testing::Handoff;
using testing::have_tokenizer;
using testing::LoadedModel;
using testing::test_prompt;

KvCacheOptions small_options(gpu::KvCacheDtype dtype) {
  return {.num_pages = 6,
          .num_layers = 3,
          .kv_lora_rank = 8,
          .rope_dim = 4,
          .dtype = dtype,
          .max_seqs = 4,
          .max_seq_len = 512,
          .arena_provider = nullptr};
}

// The arena: one page-aligned block, layer l's pool at l * layer_bytes(), the kernels' views
// inside it.
TEST(KvTransfer, OneArenaHoldsEveryLayer) {
  for (const auto dtype : {gpu::KvCacheDtype::fp32, gpu::KvCacheDtype::bf16}) {
    KvCache cache(small_options(dtype));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(cache.arena()) % 4096, 0u);
    EXPECT_EQ(cache.token_bytes(), 12 * (dtype == gpu::KvCacheDtype::fp32 ? 4 : 2));
    EXPECT_EQ(cache.arena_bytes(), 3 * cache.layer_bytes());
    for (std::int64_t l = 0; l < 3; ++l) {
      EXPECT_EQ(cache.layer(l).data, cache.arena() + l * cache.layer_bytes());
      EXPECT_EQ(cache.page_offset(l, 2), l * cache.layer_bytes() + 2 * cache.page_bytes());
    }
    EXPECT_THROW(cache.page_offset(3, 0), std::invalid_argument);
    EXPECT_THROW(cache.page_offset(0, 6), std::invalid_argument);
  }
}

// Spans: one per (layer, page) in checksum order, the last page's run cut at `tokens`; the
// checksum covers exactly those bytes (a page tail past the prompt does not count).
TEST(KvTransfer, SpansAndChecksumCoverExactlyThePromptEntries) {
  KvCache cache(small_options(gpu::KvCacheDtype::bf16));
  const SequenceId other = cache.add_sequence();
  cache.reserve(other, 64);  // page 0
  const SequenceId s = cache.add_sequence();
  cache.reserve(s, 100);  // pages 1, 2
  ASSERT_EQ(cache.pages(s), (std::vector<std::int32_t>{1, 2}));
  for (std::int64_t i = 0; i < cache.arena_bytes(); ++i) cache.arena()[i] = static_cast<std::byte>(i * 31 % 251);

  const std::int64_t tb = cache.token_bytes();
  const auto spans = kv_page_spans(cache, s, 70);
  ASSERT_EQ(spans.size(), 6u);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const std::int64_t layer = static_cast<std::int64_t>(i / 2);
    const std::int32_t page = i % 2 == 0 ? 1 : 2;
    EXPECT_EQ(spans[i].layer, layer);
    EXPECT_EQ(spans[i].page, page);
    EXPECT_EQ(spans[i].offset, cache.page_offset(layer, page));
    EXPECT_EQ(spans[i].bytes, (i % 2 == 0 ? 64 : 6) * tb);
  }
  schemas::Xxh64 h;
  for (const KvSpan& sp : spans) h.update({cache.arena() + sp.offset, static_cast<std::size_t>(sp.bytes)});
  const std::uint64_t sum = kv_checksum(cache, s, 70);
  EXPECT_EQ(sum, h.digest());

  cache.arena()[cache.page_offset(1, 2) + 6 * tb] ^= std::byte{1};  // layer 1, position 70: past the prompt
  EXPECT_EQ(kv_checksum(cache, s, 70), sum);
  cache.arena()[cache.page_offset(1, 2) + 6 * tb - 1] ^= std::byte{1};  // position 69
  EXPECT_NE(kv_checksum(cache, s, 70), sum);

  EXPECT_THROW(kv_page_spans(cache, s, 129), std::invalid_argument) << "more tokens than pages";
  const std::vector<std::int32_t> bad{1, 6};
  EXPECT_THROW(kv_page_spans(kv_layout(cache), bad, 70), std::invalid_argument) << "page outside the pool";

  // A copy is span to span; counts and sizes must pair up.
  KvCache dst(small_options(gpu::KvCacheDtype::bf16));
  const SequenceId d = dst.add_sequence();
  dst.reserve(d, 100);  // pages 0, 1: other ids than the source's
  const auto to = kv_page_spans(dst, d, 70);
  const std::span<std::byte> dst_arena(dst.arena(), static_cast<std::size_t>(dst.arena_bytes()));
  const std::span<const std::byte> src_arena(cache.arena(), static_cast<std::size_t>(cache.arena_bytes()));
  copy_kv_spans(src_arena, spans, dst_arena, to);
  EXPECT_EQ(kv_checksum(dst, d, 70), kv_checksum(cache, s, 70));
  EXPECT_THROW(copy_kv_spans(src_arena, spans, dst_arena, std::span(to).first(5)), std::invalid_argument);
  const auto shorter = kv_page_spans(dst, d, 69);
  EXPECT_THROW(copy_kv_spans(src_arena, spans, dst_arena, shorter), std::invalid_argument);
}

// Both numerics and both MTP modes, crossed (all four: kv_transfer_heavy.test.cpp).
TEST_F(Handoff, PrefillCopyDecodeMatchesGenerate) {
  check_prefill_copy_decode(Numerics::fp8act, /*mtp=*/true);
  check_prefill_copy_decode(Numerics::dequant, /*mtp=*/false);
}

// What decode refuses: a flipped byte inside the written entries (checksum mismatch), a
// reservation too small for prompt + max_tokens, a prompt length other than the reserved one, a
// cache of another layout. Each is a KvHandoffError naming the problem, and the reservation's
// pages are free afterwards. A byte changed past the prompt (a page tail) is not checked.
TEST_F(Handoff, RefusesBadHandoffsAndFreesThePages) {
  const GenerationRequest r = request(900, 40, 6);
  Engine a(config(), weights(), gpu::ref::backend(), engine_options(Numerics::fp8act));
  DecodeBatcher prefill(a, {.mtp = true});
  ASSERT_TRUE(prefill.admit(1, r, true).admitted());
  std::optional<KvHandoff> handoff;
  while (!prefill.idle()) {
    for (const RequestEvent& ev : prefill.step()) {
      if (ev.handoff) handoff = ev.handoff;
    }
  }
  ASSERT_TRUE(handoff.has_value());
  const KvHandoff& h = *handoff;
  const SequenceId seq = prefill.sequence(1);

  Engine b(config(), weights(), gpu::ref::backend(), engine_options(Numerics::fp8act));
  const std::int64_t all = b.kv_cache().num_pages();
  DecodeBatcher decode(b, {.mtp = true});
  auto expect_refused = [&](RequestId id, const KvHandoff& sent, const ContinuationParams& p, const std::string& what) {
    try {
      decode.adopt(id, sent, p);
      ADD_FAILURE() << "expected a refusal: " << what;
    } catch (const KvHandoffError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_EQ(decode.sequence(id), -1) << "the reservation is gone";
    EXPECT_EQ(b.kv_cache().free_pages(), all) << what;
    EXPECT_THROW(decode.adopt(id, sent, p), std::invalid_argument) << "no reservation left";
  };

  // A page tail past the prompt may hold anything.
  AdmitResult g = decode.reserve(1, h.prompt_tokens, r.max_tokens);
  ASSERT_TRUE(g.admitted());
  copy_pages(a, seq, h.prompt_tokens, b, g.pages);
  b.kv_arena()[static_cast<std::size_t>(b.kv_cache().page_offset(0, g.pages[0]) + 40 * b.kv_cache().token_bytes())] ^=
      std::byte{0x10};
  decode.adopt(1, h, params(r));
  EXPECT_TRUE(decode.cancel(1));
  decode.step();
  EXPECT_EQ(b.kv_cache().free_pages(), all);

  // One flipped bit in a main layer's entry.
  g = decode.reserve(2, h.prompt_tokens, r.max_tokens);
  copy_pages(a, seq, h.prompt_tokens, b, g.pages);
  b.kv_arena()[static_cast<std::size_t>(b.kv_cache().page_offset(2, g.pages[0]) + 7 * b.kv_cache().token_bytes() +
                                        3)] ^= std::byte{0x01};
  expect_refused(2, h, params(r), "checksum mismatch");

  // Reserved for 40 + 2 tokens (one page, 64 tokens); the hand-off asks for 40 + 30.
  g = decode.reserve(3, h.prompt_tokens, 2);
  copy_pages(a, seq, h.prompt_tokens, b, g.pages);
  ContinuationParams longer = params(r);
  longer.max_tokens = 30;
  expect_refused(3, h, longer, "reservation is too small");

  g = decode.reserve(4, h.prompt_tokens + 1, r.max_tokens);
  expect_refused(4, h, params(r), "the reservation was for 41");

  // A decode engine without the MTP layer's cache cannot take a hand-off with it.
  Engine no_mtp(config(), weights(), gpu::ref::backend(), engine_options(Numerics::fp8act, /*mtp=*/false));
  DecodeBatcher plain(no_mtp, {});
  g = plain.reserve(5, h.prompt_tokens, r.max_tokens);
  EXPECT_THROW(plain.adopt(5, h, params(r)), KvHandoffError);
  EXPECT_EQ(no_mtp.kv_cache().free_pages(), no_mtp.kv_cache().num_pages());

  EXPECT_TRUE(prefill.release(1));
  EXPECT_FALSE(prefill.release(1)) << "idempotent";
  EXPECT_EQ(a.kv_cache().free_pages(), a.kv_cache().num_pages());
}

// Engine::adopt_sequence's preconditions.
TEST_F(Handoff, AdoptSequenceChecksItsArguments) {
  Engine e(config(), weights(), gpu::ref::backend(), engine_options(Numerics::fp8act, /*mtp=*/false));
  const SequenceId s = e.add_sequence(64);
  EXPECT_THROW(e.adopt_sequence(s, 65, 0), std::invalid_argument) << "beyond the reservation";
  EXPECT_THROW(e.adopt_sequence(s, 10, 9), std::invalid_argument) << "no MTP cache";
  EXPECT_THROW(e.adopt_sequence(s, 0, 0), std::invalid_argument);
  e.adopt_sequence(s, 10, 0);
  EXPECT_EQ(e.length(s), 10);
  EXPECT_THROW(e.adopt_sequence(s, 10, 0), std::invalid_argument) << "not empty";
}

}  // namespace
}  // namespace sy::model
