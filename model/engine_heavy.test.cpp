// Long generation runs on the reference backend (labelled heavy: the plain ./tests/run.sh pass
// runs them, the sanitizer pass skips them).
#include <gtest/gtest.h>

#include <chrono>

#include "model/engine_test_util.hpp"
#include "model/generator.hpp"

namespace sy::model {
namespace {

using testing::gen_options;
using testing::have_tokenizer;
using testing::LoadedModel;
using testing::test_prompt;

// (d) Greedy output with MTP self-speculative decoding is token-for-token the greedy output
// without it: 8 prompts × 64 tokens, all 8 sequences batched in every step. Prints the MTP
// acceptance rate (low with random tiny weights; correctness is the point).
TEST(EngineHeavy, MtpGreedyEqualsPlainGreedy8x64) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer files at " << default_tokenizer_dir();
  LoadedModel m;
  std::vector<GenerationRequest> requests;
  for (std::uint64_t i = 0; i < 8; ++i) {
    GenerationRequest r;
    r.prompt = test_prompt(200 + i, 4 + 3 * i, m.config.vocab_size);
    r.max_tokens = 64;
    r.stop_at_eos = false;
    requests.push_back(r);
  }
  EngineOptions o;
  o.numerics = Numerics::fp8act;
  o.kv_pages = 32;
  o.max_seqs = 8;
  o.max_seq_len = 256;
  Engine engine(m.config, m.weights, gpu::ref::backend(), o);
  const auto t0 = std::chrono::steady_clock::now();
  const auto plain = generate(engine, requests, gen_options(false));
  const auto t1 = std::chrono::steady_clock::now();
  const auto mtp = generate(engine, requests, gen_options(true));
  const auto t2 = std::chrono::steady_clock::now();
  std::int64_t drafts = 0;
  std::int64_t accepted = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    ASSERT_EQ(plain[i].tokens.size(), 64u);
    EXPECT_EQ(plain[i].tokens, mtp[i].tokens) << "request " << i;
    drafts += mtp[i].mtp_drafts;
    accepted += mtp[i].mtp_accepted;
  }
  EXPECT_GT(drafts, 0);
  std::printf("MTP acceptance: %lld of %lld drafts (%.1f%%); plain %.1f s, with MTP %.1f s\n",
              static_cast<long long>(accepted), static_cast<long long>(drafts),
              drafts > 0 ? 100.0 * static_cast<double>(accepted) / static_cast<double>(drafts) : 0.0,
              std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
  RecordProperty("mtp_accepted", std::to_string(accepted));
  RecordProperty("mtp_drafts", std::to_string(drafts));
}

}  // namespace
}  // namespace sy::model
