#include "model/decode_batcher.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "model/engine_test_util.hpp"

namespace sy::model {
namespace {

using testing::have_tokenizer;
using testing::LoadedModel;
using testing::test_prompt;

const gpu::Backend& ref() { return gpu::ref::backend(); }

class Batcher : public testing::TinyModelTest {
 protected:
  static EngineOptions engine_options(std::int64_t kv_pages = 64, std::int64_t chunk = 24) {
    EngineOptions o;
    o.numerics = Numerics::fp8act;
    o.kv_pages = kv_pages;
    o.max_seqs = 16;
    o.max_seq_len = 512;
    o.max_chunk_tokens = chunk;
    return o;
  }
  static GenerationRequest request(std::uint64_t seed, std::size_t prompt, std::int64_t max_tokens) {
    GenerationRequest r;
    r.prompt = test_prompt(seed, prompt, config().vocab_size);
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    return r;
  }
  // Each request alone through generate() on the engine: the reference the batcher must match.
  static std::vector<std::vector<std::int32_t>> alone(Engine& engine, const std::vector<GenerationRequest>& requests) {
    std::vector<std::vector<std::int32_t>> tokens;
    for (const GenerationRequest& r : requests) tokens.push_back(generate(engine, std::span(&r, 1), {})[0].tokens);
    return tokens;
  }
};

struct Collected {
  std::map<RequestId, std::vector<std::int32_t>> tokens;
  std::map<RequestId, FinishReason> finish;
  std::int64_t drafts = 0;
  std::int64_t accepted = 0;
  void add(const std::vector<RequestEvent>& events) {
    for (const RequestEvent& ev : events) {
      auto& t = tokens[ev.id];
      t.insert(t.end(), ev.tokens.begin(), ev.tokens.end());
      if (ev.finish != FinishReason::none) finish[ev.id] = ev.finish;
      drafts += ev.mtp_drafts;
      accepted += ev.mtp_accepted;
    }
  }
};

// 16 requests of different prompt and output lengths (two of them sampled) arrive a few at a
// time while others run: a small step budget (24 tokens) mixes prompt chunks with decode tokens
// and splits prompts differently than a lone run does. Each request's tokens are exactly those
// of running it alone through generate() (the ref backend is batch-invariant, so bitwise).
TEST_F(Batcher, StaggeredArrivalsMatchGenerateAlone) {
  std::vector<GenerationRequest> requests;
  for (std::uint64_t i = 0; i < 16; ++i) {
    requests.push_back(request(300 + i, 3 + (i * 7) % 40, 2 + static_cast<std::int64_t>(i % 5)));
    if (i % 7 == 3) requests.back().sampler = {.temperature = 0.8f, .top_k = 0, .top_p = 0.9f, .seed = i};
  }
  Engine engine(config(), weights(), ref(), engine_options());
  const auto want = alone(engine, requests);

  DecodeBatcher batcher(engine, {.max_running = 6, .max_waiting = 16});
  Collected got;
  std::size_t next = 0;
  for (int step = 0; next < requests.size() || !batcher.idle(); ++step) {
    // Two arrivals every third step.
    for (int k = 0; k < 2 && next < requests.size() && step % 3 == 0; ++k, ++next) {
      ASSERT_TRUE(batcher.admit(next, requests[next]).admitted()) << "request " << next;
    }
    EXPECT_LE(batcher.running(), 6);
    got.add(batcher.step());
  }
  for (std::size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got.tokens[i], want[i]) << "request " << i;
    EXPECT_EQ(got.finish[i], FinishReason::length) << "request " << i;
  }
  EXPECT_EQ(engine.kv_cache().free_pages(), engine.kv_cache().num_pages());
  EXPECT_EQ(engine.kv_cache().live_sequences(), 0);
}

// MTP on or off, staggered: the same tokens (those of plain generate() alone). Drafts replaced by
// the known continuation for even requests drive the accept path (two tokens in one step) inside
// a mixed batch; odd requests keep the MTP module's own drafts (mostly rejected: cache rollback).
TEST_F(Batcher, MtpOnAndOffGiveTheSameTokens) {
  std::vector<GenerationRequest> requests;
  for (std::uint64_t i = 0; i < 6; ++i) requests.push_back(request(400 + i, 4 + 9 * i, 5));
  Engine engine(config(), weights(), ref(), engine_options());
  const auto want = alone(engine, requests);
  for (const bool mtp : {false, true}) {
    BatcherOptions o{.max_running = 4, .max_waiting = 8, .mtp = mtp};
    o.draft_override = [&](RequestId id, std::size_t index, std::int32_t draft) {
      return id % 2 == 0 && index < want[id].size() ? want[id][index] : draft;
    };
    DecodeBatcher batcher(engine, o);
    Collected got;
    std::size_t next = 0;
    for (int step = 0; next < requests.size() || !batcher.idle(); ++step) {
      if (step % 2 == 0 && next < requests.size()) {
        ASSERT_TRUE(batcher.admit(next, requests[next]).admitted());
        ++next;
      }
      got.add(batcher.step());
    }
    for (std::size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got.tokens[i], want[i]) << "request " << i;
    if (mtp) {
      EXPECT_GT(got.accepted, 0);
      EXPECT_LT(got.accepted, got.drafts);
      std::printf("MTP in the batcher: %lld of %lld drafts accepted\n", static_cast<long long>(got.accepted),
                  static_cast<long long>(got.drafts));
    } else {
      EXPECT_EQ(got.drafts, 0);
    }
    EXPECT_EQ(engine.kv_cache().free_pages(), engine.kv_cache().num_pages());
  }
}

// cancel() takes effect at the next step boundary: a running and a queued request are reported
// cancelled, their pages return to the pool, and the others run on unchanged.
TEST_F(Batcher, CancelFreesPagesAtTheNextStep) {
  Engine engine(config(), weights(), ref(), engine_options());
  const KvCache& cache = engine.kv_cache();
  DecodeBatcher batcher(engine, {.max_running = 2, .max_waiting = 4});
  const std::vector<GenerationRequest> requests{request(500, 5, 4), request(501, 70, 4), request(502, 6, 4)};
  const auto want = alone(engine, std::vector{requests[0]});
  for (std::size_t i = 0; i < requests.size(); ++i) ASSERT_TRUE(batcher.admit(i, requests[i]).admitted());
  EXPECT_EQ(cache.free_pages(), cache.num_pages() - 1 - 2 - 1) << "pages reserved at admission";
  Collected got;
  got.add(batcher.step());  // 0 and 1 run (1 prefills a first chunk), 2 waits
  EXPECT_EQ(batcher.running(), 2);
  EXPECT_EQ(batcher.waiting(), 1);
  EXPECT_TRUE(batcher.cancel(1));
  EXPECT_TRUE(batcher.cancel(2));
  EXPECT_FALSE(batcher.cancel(99));
  EXPECT_EQ(cache.free_pages(), cache.num_pages() - 4) << "nothing freed before the boundary";
  got.add(batcher.step());
  EXPECT_EQ(got.finish[1], FinishReason::cancelled);
  EXPECT_EQ(got.finish[2], FinishReason::cancelled);
  EXPECT_EQ(cache.free_pages(), cache.num_pages() - 1);
  EXPECT_EQ(batcher.running(), 1);
  EXPECT_EQ(batcher.waiting(), 0);
  while (!batcher.idle()) got.add(batcher.step());
  EXPECT_EQ(got.tokens[0], want[0]);
  EXPECT_TRUE(got.tokens[2].empty());
  EXPECT_EQ(cache.free_pages(), cache.num_pages());
  EXPECT_EQ(cache.live_sequences(), 0);
}

// Admission refusals are values with a retryable reason; once others finish the same request is
// admitted. Invalid requests are errors naming the problem.
TEST_F(Batcher, RefusesWhenFullThenAdmitsAfterOthersFinish) {
  Engine engine(config(), weights(), ref(), engine_options(/*kv_pages=*/3));
  DecodeBatcher batcher(engine, {.max_running = 1, .max_waiting = 1});
  const GenerationRequest big = request(600, 60, 10);  // 70 tokens: 2 pages
  const GenerationRequest small = request(601, 5, 3);  // 1 page
  ASSERT_TRUE(batcher.admit(1, big).admitted());
  const AdmitResult no_kv = batcher.admit(2, big);
  EXPECT_EQ(no_kv.refusal, AdmitRefusal::kv_exhausted);
  EXPECT_EQ(no_kv.pages_needed, 2);
  EXPECT_EQ(no_kv.free_pages, 1);
  EXPECT_NE(no_kv.message.find("exhausted"), std::string::npos) << no_kv.message;
  ASSERT_TRUE(batcher.admit(3, small).admitted());
  const AdmitResult full = batcher.admit(4, small);
  EXPECT_EQ(full.refusal, AdmitRefusal::queue_full) << full.message;
  EXPECT_EQ(engine.kv_cache().free_pages(), 0);

  // Not refusals: errors.
  GenerationRequest bad = small;
  bad.prompt.push_back(static_cast<std::int32_t>(config().vocab_size));
  try {
    batcher.admit(5, bad);
    ADD_FAILURE() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("request 5: token id"), std::string::npos) << e.what();
  }
  EXPECT_THROW(batcher.admit(1, small), std::invalid_argument) << "id in use";
  EXPECT_THROW(batcher.admit(6, request(602, 300, 10)), std::invalid_argument) << "more than the whole pool";

  Collected got;
  while (!batcher.idle()) got.add(batcher.step());
  EXPECT_EQ(got.finish[1], FinishReason::length);
  EXPECT_EQ(got.finish[3], FinishReason::length);
  ASSERT_TRUE(batcher.admit(2, big).admitted()) << "room again";
  while (!batcher.idle()) got.add(batcher.step());
  EXPECT_EQ(got.tokens[2], got.tokens[1]) << "the same request gives the same tokens";
  EXPECT_EQ(engine.kv_cache().free_pages(), 3);
}

// EOS stops a request (reason stop) when stop_at_eos, and is an ordinary token otherwise.
TEST_F(Batcher, StopsAtEos) {
  Engine engine(config(), weights(), ref(), engine_options());
  GenerationRequest r = request(700, 6, 4);
  const auto plain = alone(engine, std::vector{r})[0];
  // Make the model's second token the EOS id by declaring it so: a copy of the config.
  ModelConfig eos_config = config();
  eos_config.eos_token_id = plain[1];
  Engine eos_engine(eos_config, weights(), ref(), engine_options());
  DecodeBatcher batcher(eos_engine, {});
  for (const bool stop : {true, false}) {
    r.stop_at_eos = stop;
    ASSERT_TRUE(batcher.admit(stop ? 1 : 2, r).admitted());
  }
  Collected got;
  while (!batcher.idle()) got.add(batcher.step());
  const auto eos_at = std::find(plain.begin(), plain.end(), plain[1]);
  EXPECT_EQ(got.tokens[1], std::vector<std::int32_t>(plain.begin(), eos_at + 1));
  EXPECT_EQ(got.finish[1], FinishReason::stop);
  EXPECT_EQ(got.tokens[2], plain);
  EXPECT_EQ(got.finish[2], FinishReason::length);
}

// An engine failure (here: the expert executor throws) fails the requests of that step, frees
// their pages and leaves the batcher serving.
class FailingExecutor final : public ExpertExecutor {
 public:
  explicit FailingExecutor(const ModelWeights& w) : local_(w, gpu::ref::backend(), Numerics::fp8act) {}
  void run(const ExpertBatch& b) override {
    if (fail) throw std::runtime_error("expert host lost");
    local_.run(b);
  }
  bool fail = false;

 private:
  LocalExpertExecutor local_;
};

TEST_F(Batcher, AFailedStepFailsItsRequestsOnly) {
  FailingExecutor experts(weights());
  Engine engine(config(), weights(), ref(), engine_options(), &experts);
  DecodeBatcher batcher(engine, {});
  ASSERT_TRUE(batcher.admit(1, request(710, 5, 4)).admitted());
  ASSERT_TRUE(batcher.admit(2, request(711, 7, 4)).admitted());
  Collected got;
  got.add(batcher.step());
  experts.fail = true;
  const auto events = batcher.step();
  ASSERT_EQ(events.size(), 2u);
  for (const RequestEvent& ev : events) {
    EXPECT_EQ(ev.finish, FinishReason::failed);
    EXPECT_NE(ev.error.find("expert host lost"), std::string::npos) << ev.error;
  }
  EXPECT_TRUE(batcher.idle());
  EXPECT_EQ(engine.kv_cache().free_pages(), engine.kv_cache().num_pages());
  experts.fail = false;
  const GenerationRequest r = request(712, 6, 3);
  ASSERT_TRUE(batcher.admit(3, r).admitted());
  while (!batcher.idle()) got.add(batcher.step());
  EXPECT_EQ(got.tokens[3], alone(engine, std::vector{r})[0]);
}

}  // namespace
}  // namespace sy::model
