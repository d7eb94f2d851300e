// Shared by the KV hand-off tests (kv_transfer.test.cpp, kv_transfer_heavy.test.cpp): the tiny
// model made once per suite, engine options, and the prefill → copy → decode equivalence check.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "model/decode_batcher.hpp"
#include "model/engine_test_util.hpp"
#include "model/kv_transfer.hpp"

namespace sy::model::testing {

class Handoff : public TinyModelTest {
 protected:
  static EngineOptions engine_options(Numerics numerics, bool mtp = true) {
    EngineOptions o;
    o.numerics = numerics;
    o.kv_pages = 32;
    o.max_seqs = 12;
    o.max_seq_len = 512;
    o.max_chunk_tokens = 96;
    o.mtp = mtp;
    return o;
  }
  static GenerationRequest request(std::uint64_t seed, std::size_t prompt, std::int64_t max_tokens) {
    GenerationRequest r;
    r.prompt = test_prompt(seed, prompt, config().vocab_size);
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    return r;
  }
  static ContinuationParams params(const GenerationRequest& r) { return {r.max_tokens, r.sampler, r.stop_at_eos}; }
  // Puts a prefilled request's pages into the decode side's reservation: the test's RMA.
  static void copy_pages(Engine& from, SequenceId seq, std::int64_t tokens, Engine& to,
                         std::span<const std::int32_t> pages) {
    const auto src = kv_page_spans(from.kv_cache(), seq, tokens);
    const auto dst = kv_page_spans(kv_layout(to.kv_cache()), pages, tokens);
    copy_kv_spans(from.kv_arena(), src, to.kv_arena(), dst);
  }
  // Prefill on engine A (prefill_only requests, chunked and batched), a copy of the written
  // pages into engine B's reservation (other page ids: B holds pages of its own first), decode on
  // B: every request's tokens are exactly generate()'s on one engine. With MTP, prefill hands
  // over h of the prompt's last position and decode runs that MTP position; even requests'
  // drafts are replaced by the known continuation so drafts get accepted across the hand-off.
  // One prompt is a single token, one fills a page exactly, one is sampled; a ninth request with
  // max_tokens 1 finishes at prefill without a hand-off.
  static void check_prefill_copy_decode(Numerics numerics, bool mtp) {
    std::vector<GenerationRequest> requests;
    const std::size_t lengths[] = {1, 3, 7, 12, 20, 63, 64, 65};
    for (std::size_t i = 0; i < 8; ++i)
      requests.push_back(request(800 + i, lengths[i], 3 + static_cast<std::int64_t>(i % 2)));
    requests[3].sampler = {.temperature = 0.9f, .top_k = 0, .top_p = 0.95f, .seed = 11};
    requests.push_back(request(808, 9, 1));
    const std::string where = std::string(numerics == Numerics::fp8act ? "fp8act" : "dequant") + (mtp ? " mtp" : "");
    std::vector<std::vector<std::int32_t>> want;
    // The MTP module's own drafts (before the override), per request: with the MTP state handed
    // over right, decode drafts exactly what one engine drafts.
    using Drafts = std::map<RequestId, std::vector<std::int32_t>>;
    auto recording = [&](Drafts& into) {
      return [&want, &into](RequestId id, std::size_t index, std::int32_t draft) {
        into[id].push_back(draft);
        return id % 2 == 0 && index < want[id].size() ? want[id][index] : draft;
      };
    };
    Drafts want_drafts;
    {
      Engine one(config(), weights(), gpu::ref::backend(), engine_options(numerics));
      for (const auto& r : generate(one, requests, {})) want.push_back(r.tokens);
      if (mtp) {
        GenerationOptions o;
        o.mtp = true;
        Drafts drafts;
        const auto record = recording(drafts);
        o.draft_override = [&](std::size_t i, std::size_t index, std::int32_t draft) {
          return record(i, index, draft);
        };
        const auto with_mtp = generate(one, requests, o);
        for (std::size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(with_mtp[i].tokens, want[i]) << "request " << i;
        want_drafts = drafts;
      }
    }
    Engine a(config(), weights(), gpu::ref::backend(), engine_options(numerics));
    Engine b(config(), weights(), gpu::ref::backend(), engine_options(numerics));
    b.add_sequence(3 * 64);  // B's first pages are taken: the hand-off remaps page ids
    DecodeBatcher prefill(a, {.max_running = 8, .max_waiting = 8, .mtp = mtp});
    BatcherOptions decode_options{.max_running = 8, .max_waiting = 8, .mtp = mtp};
    Drafts got_drafts;
    decode_options.draft_override = recording(got_drafts);
    DecodeBatcher decode(b, decode_options);
    for (std::size_t i = 0; i < requests.size(); ++i) ASSERT_TRUE(prefill.admit(i, requests[i], true).admitted());

    std::map<RequestId, std::vector<std::int32_t>> got;
    std::int64_t handoffs = 0;
    std::int64_t accepted = 0;
    std::int64_t remapped = 0;
    while (!prefill.idle() || !decode.idle()) {
      if (!prefill.idle()) {
        for (const RequestEvent& ev : prefill.step()) {
          got[ev.id].insert(got[ev.id].end(), ev.tokens.begin(), ev.tokens.end());
          if (ev.finish != FinishReason::prefilled) {
            EXPECT_EQ(ev.finish, ev.id == 8 ? FinishReason::length : FinishReason::none) << where;
            continue;
          }
          ++handoffs;
          const KvHandoff& h = *ev.handoff;
          const GenerationRequest& r = requests[ev.id];
          ASSERT_EQ(h.prompt_tokens, static_cast<std::int64_t>(r.prompt.size()));
          ASSERT_EQ(ev.tokens, std::vector<std::int32_t>{h.first_token});
          const bool drafts = mtp && r.sampler.temperature == 0.0f;
          EXPECT_EQ(h.last_hidden.size(), drafts ? static_cast<std::size_t>(config().hidden_size) : 0u) << where;
          EXPECT_EQ(h.mtp_length, drafts ? h.prompt_tokens - 1 : 0) << where;
          const AdmitResult grant = decode.reserve(ev.id, h.prompt_tokens, r.max_tokens);
          ASSERT_TRUE(grant.admitted()) << grant.message;
          if (grant.pages[0] != a.kv_cache().pages(prefill.sequence(ev.id))[0]) ++remapped;
          copy_pages(a, prefill.sequence(ev.id), h.prompt_tokens, b, grant.pages);
          EXPECT_TRUE(prefill.release(ev.id));
          decode.adopt(ev.id, h, params(r));
        }
      }
      if (!decode.idle()) {
        for (const RequestEvent& ev : decode.step()) {
          got[ev.id].insert(got[ev.id].end(), ev.tokens.begin(), ev.tokens.end());
          accepted += ev.mtp_accepted;
          EXPECT_NE(ev.finish, FinishReason::failed) << ev.error;
        }
      }
    }
    EXPECT_EQ(handoffs, 8) << where;
    EXPECT_GT(remapped, 0) << where;
    for (std::size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], want[i]) << where << ", request " << i;
    if (mtp) {
      EXPECT_GT(accepted, 0) << where;
      EXPECT_EQ(got_drafts, want_drafts) << where;
    }
    EXPECT_EQ(a.kv_cache().free_pages(), a.kv_cache().num_pages()) << where;
    EXPECT_EQ(b.kv_cache().free_pages(), b.kv_cache().num_pages() - 3) << where;
  }

};

}  // namespace sy::model::testing
