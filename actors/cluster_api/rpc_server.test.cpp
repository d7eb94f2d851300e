// The cluster API end to end in one process: RpcServer on 127.0.0.1:0 over a
// LocalGenerationService (shared tiny model, ref backend), called by a real Cap'n Proto client.
// Greedy output must equal model::generate() on a fresh engine token for token (DESIGN.md
// "Determinism contract"); errors must be typed and leave the server serving; a cancelled call
// must give its KV pages back.
#include "actors/cluster_api/rpc_server.hpp"

#include <capnp/ez-rpc.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/cluster_api/local_generation_service.hpp"
#include "gpu/ref/kernels.hpp"
#include "model/engine.hpp"
#include "model/generator.hpp"
#include "model/safetensors.hpp"
#include "model/test_util.hpp"
#include "model/tokenizer.hpp"
#include "model/weights.hpp"
#include "schemas/cluster.capnp.h"

namespace sy::actors::cluster_api {
namespace {

RpcServerOptions listen_on(std::string address) {
  RpcServerOptions o;
  o.listen = std::move(address);
  return o;
}

using schemas::Cluster;
using schemas::TokenSink;

// What a client's TokenSink saw.
struct Stream {
  std::vector<std::int32_t> tokens;
  std::string text;
  int pushes = 0;
  bool done = false;
  std::optional<kj::Own<kj::PromiseFulfiller<void>>> first_push;  // fulfilled by the first push
};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"  // generated Server classes (see rpc_server.cpp)
class RecordingSink final : public TokenSink::Server {
 public:
  explicit RecordingSink(std::shared_ptr<Stream> s) : s_(std::move(s)) {}

 protected:
  kj::Promise<void> push(PushContext context) override {
    auto p = context.getParams();
    for (const std::int32_t t : p.getTokens()) s_->tokens.push_back(t);
    s_->text += p.getText().cStr();
    if (s_->pushes++ == 0 && s_->first_push) (*s_->first_push)->fulfill();
    return kj::READY_NOW;
  }
  kj::Promise<void> done(DoneContext) override {
    s_->done = true;
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<Stream> s_;
};
#pragma GCC diagnostic pop

struct Prompt {
  std::vector<std::int32_t> ids;  // used when text is empty
  std::string text;
};

capnp::Request<Cluster::GenerateParams, Cluster::GenerateResults> make_request(Cluster::Client& cluster, const Prompt& prompt, std::uint32_t max_tokens,
                                      std::shared_ptr<Stream> stream, float temperature = 0.0f,
                                      bool stop_at_eos = true) {
  auto req = cluster.generateRequest();
  auto r = req.initRequest();
  if (prompt.text.empty()) {
    auto ids = r.getPrompt().initTokenIds(static_cast<unsigned>(prompt.ids.size()));
    for (unsigned i = 0; i < prompt.ids.size(); ++i) ids.set(i, prompt.ids[i]);
  } else {
    r.getPrompt().setText(prompt.text);
  }
  auto s = r.initSampling();
  s.setTemperature(temperature);
  s.setMaxTokens(max_tokens);
  s.setStopAtEos(stop_at_eos);
  r.setRequestId("test");
  req.setSink(kj::heap<RecordingSink>(std::move(stream)));
  return req;
}

// Waits for a call; the exception when it failed (never lets one escape wait()).
template <typename T>
std::optional<kj::Exception> wait_for(kj::Promise<T>&& promise, kj::WaitScope& ws) {
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { promise.wait(ws); })) { return kj::mv(*e); }
  return std::nullopt;
}

class ClusterApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (model::testing::have_tokenizer_files()) model_dir_ = new std::filesystem::path(model::testing::shared_tiny_model());
  }
  void SetUp() override {
    if (model_dir_ == nullptr) GTEST_SKIP() << "no tokenizer files at " << model::default_tokenizer_dir();
  }

  std::unique_ptr<LocalGenerationService> make_service(std::int64_t kv_pages = 64, std::int64_t max_batch = 8) {
    LocalServiceOptions o;
    o.model_dir = *model_dir_;
    o.backend = &gpu::ref::backend();
    o.kv_pages = kv_pages;
    o.max_batch = max_batch;
    return std::make_unique<LocalGenerationService>(o);
  }

  // model::generate() alone on a fresh engine: the reference for greedy output.
  std::vector<std::int32_t> reference(const std::vector<std::int32_t>& prompt, std::int64_t max_tokens) {
    const auto config = model::ModelConfig::from_file(*model_dir_ / "config.json");
    const auto checkpoint = model::Checkpoint::open(*model_dir_);
    const auto weights = model::bind_weights(checkpoint, config);
    model::EngineOptions eo;
    eo.kv_pages = 64;
    eo.max_seqs = 1;
    eo.mtp = false;
    model::Engine engine(config, weights, gpu::ref::backend(), eo);
    model::GenerationRequest r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    return model::generate(engine, std::span(&r, 1), model::GenerationOptions{}).front().tokens;
  }

  // Polls status until `done` holds (the service updates it after each step), at most 10 s.
  template <typename Pred>
  capnp::Response<Cluster::StatusResults> status_until(Cluster::Client& cluster, kj::WaitScope& ws, Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      auto response = cluster.statusRequest().send().wait(ws);
      if (done(response.getStatus()) || std::chrono::steady_clock::now() > deadline) return response;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  static std::filesystem::path* model_dir_;
};

std::filesystem::path* ClusterApi::model_dir_ = nullptr;

TEST_F(ClusterApi, FourConcurrentGreedyRequestsMatchGenerateAlone) {
  auto service = make_service();
  RpcServer server(*service, listen_on("127.0.0.1:0"));
  ASSERT_TRUE(server.address().starts_with("127.0.0.1:")) << server.address();
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();

  const model::Tokenizer tokenizer = model::Tokenizer::load(*model_dir_);
  const std::vector<Prompt> prompts = {
      {{0, 5, 7}, ""}, {{0, 100, 200, 300, 400, 500}, ""}, {{}, "Hello, world"}, {{0, 42}, ""}};
  const std::int64_t max_tokens = 10;
  std::vector<std::shared_ptr<Stream>> streams;
  std::vector<kj::Promise<capnp::Response<Cluster::GenerateResults>>> calls;
  for (const Prompt& p : prompts) {
    streams.push_back(std::make_shared<Stream>());
    calls.push_back(make_request(cluster, p, max_tokens, streams.back()).send());
  }
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    auto response = calls[i].wait(ws);
    const auto summary = response.getSummary();
    const std::vector<std::int32_t> prompt =
        prompts[i].text.empty() ? prompts[i].ids : tokenizer.encode(prompts[i].text, tokenizer.add_bos_by_default());
    const std::vector<std::int32_t> expected = reference(prompt, max_tokens);
    EXPECT_EQ(streams[i]->tokens, expected) << "prompt " << i;
    EXPECT_TRUE(streams[i]->done);
    EXPECT_EQ(streams[i]->text, tokenizer.decode(expected, /*skip_special_tokens=*/true));
    EXPECT_EQ(summary.getUsage().getPromptTokens(), prompt.size());
    EXPECT_EQ(summary.getUsage().getCompletionTokens(), expected.size());
    EXPECT_EQ(summary.getFinishReason(), static_cast<std::int64_t>(expected.size()) == max_tokens
                                             ? schemas::FinishReason::LENGTH
                                             : schemas::FinishReason::STOP);
    EXPECT_EQ(std::string(summary.getRequestId().cStr()), "test");
    EXPECT_NE(summary.getServerRequestId(), 0u);
    EXPECT_GT(summary.getTimings().getTimeToFirstTokenMs(), 0.0);
    EXPECT_GE(summary.getTimings().getTotalMs(), summary.getTimings().getTimeToFirstTokenMs());
    EXPECT_LE(summary.getTimings().getQueueMs(), summary.getTimings().getTimeToFirstTokenMs());
  }

  auto status = status_until(cluster, ws, [](auto s) { return s.getCompleted() == 4; });
  const auto s = status.getStatus();
  EXPECT_EQ(s.getCompleted(), 4u);
  EXPECT_EQ(s.getRunning(), 0u);
  EXPECT_EQ(s.getWaiting(), 0u);
  EXPECT_EQ(s.getKvPagesTotal(), 64u);
  EXPECT_EQ(s.getKvPagesFree(), 64u);
  EXPECT_EQ(s.getKvPagesUsed(), 0u);
  EXPECT_EQ(s.getMaxBatch(), 8u);
  EXPECT_EQ(std::string(s.getBackend().cStr()), "ref");
  EXPECT_EQ(std::string(s.getNumerics().cStr()), "fp8act");
  EXPECT_EQ(std::string(s.getModelName().cStr()), model_dir_->filename().string());
  ASSERT_EQ(s.getNodes().size(), 1u);
  EXPECT_EQ(s.getNodes()[0].getHealth(), schemas::Health::HEALTHY);
  EXPECT_GE(s.getNodes()[0].getRoles().size(), 3u);
}

TEST_F(ClusterApi, StreamsALongGenerationInOrderOverSeveralPushes) {
  auto service = make_service();
  RpcServer server(*service, listen_on("127.0.0.1:0"));
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();
  auto stream = std::make_shared<Stream>();
  const std::vector<std::int32_t> prompt = {0, 9, 8, 7};
  auto response = make_request(cluster, {prompt, ""}, 32, stream, 0.0f, /*stop_at_eos=*/false).send().wait(ws);
  EXPECT_EQ(stream->tokens, reference(prompt, 32));
  EXPECT_EQ(response.getSummary().getUsage().getCompletionTokens(), 32u);
  EXPECT_GT(stream->pushes, 1);
}

TEST_F(ClusterApi, BadInputFailsClearlyAndTheServerKeepsServing) {
  auto service = make_service();
  RpcServer server(*service, listen_on("127.0.0.1:0"));
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();

  struct Case {
    Prompt prompt;
    float temperature;
    std::uint32_t max_tokens;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{{0, 129280}, ""}, 0.0f, 4, "outside the vocabulary"},
      {{{0, 5}, ""}, -1.0f, 4, "temperature"},
      {{{}, "(set to the empty text below)"}, 0.0f, 4, "empty"},
      {{{0, 5}, ""}, 0.0f, 0, "max_tokens"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto stream = std::make_shared<Stream>();
    auto req = make_request(cluster, c.prompt, c.max_tokens, stream, c.temperature);
    if (i == 2) req.getRequest().getPrompt().setText("");
    auto error = wait_for(req.send(), ws);
    ASSERT_TRUE(error.has_value()) << "case " << i << " was accepted";
    EXPECT_EQ(error->getType(), kj::Exception::Type::FAILED) << "case " << i;
    const std::string what = error->getDescription().cStr();
    EXPECT_NE(what.find("bad request: "), std::string::npos) << what;
    EXPECT_NE(what.find(c.expected), std::string::npos) << "case " << i << ": " << what;
    EXPECT_TRUE(stream->tokens.empty());
  }
  {  // sampling missing altogether
    auto req = cluster.generateRequest();
    req.initRequest().getPrompt().setText("hi");
    req.setSink(kj::heap<RecordingSink>(std::make_shared<Stream>()));
    auto error = wait_for(req.send(), ws);
    ASSERT_TRUE(error.has_value());
    EXPECT_NE(std::string(error->getDescription().cStr()).find("sampling is required"), std::string::npos);
  }
  auto stream = std::make_shared<Stream>();
  auto response = make_request(cluster, {{0, 5, 7}, ""}, 4, stream).send().wait(ws);
  EXPECT_EQ(stream->tokens, reference({0, 5, 7}, 4));
  // Keep the response: a Reader points into it.
  const auto final_status = status_until(cluster, ws, [](auto st) { return st.getCompleted() == 1; });
  const auto s = final_status.getStatus();
  EXPECT_EQ(s.getFailed(), 4u);  // the missing sampling never reached the service
  EXPECT_EQ(s.getKvPagesFree(), s.getKvPagesTotal());
}

TEST_F(ClusterApi, AFullKvPoolRefusesRetryablyAndAnOversizeRequestIsBad) {
  auto service = make_service(/*kv_pages=*/40);
  RpcServer server(*service, listen_on("127.0.0.1:0"));
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();

  // A holds 32 of the 40 pages for a long time; B needs 10 while A runs.
  auto a_stream = std::make_shared<Stream>();
  auto a = make_request(cluster, {{0, 5, 7}, ""}, 2000, a_stream, 0.0f, /*stop_at_eos=*/false).send();
  auto b_error = wait_for(make_request(cluster, {{0, 5, 7}, ""}, 600, std::make_shared<Stream>()).send(), ws);
  ASSERT_TRUE(b_error.has_value());
  EXPECT_EQ(b_error->getType(), kj::Exception::Type::OVERLOADED) << b_error->getDescription().cStr();
  EXPECT_NE(std::string(b_error->getDescription().cStr()).find("overloaded: kv_exhausted"), std::string::npos)
      << b_error->getDescription().cStr();

  // More pages than the whole pool: never fits, so not retryable.
  auto c_error = wait_for(make_request(cluster, {{0, 5, 7}, ""}, 3000, std::make_shared<Stream>()).send(), ws);
  ASSERT_TRUE(c_error.has_value());
  EXPECT_EQ(c_error->getType(), kj::Exception::Type::FAILED);
  EXPECT_NE(std::string(c_error->getDescription().cStr()).find("more than the pool's 40"), std::string::npos)
      << c_error->getDescription().cStr();

  { auto dropped = kj::mv(a); }  // cancel A
  const auto final_status =
      status_until(cluster, ws, [](auto st) { return st.getCancelled() == 1 && st.getKvPagesFree() == 40; });
  const auto s = final_status.getStatus();
  EXPECT_EQ(s.getRefused(), 1u);
  EXPECT_EQ(s.getKvPagesFree(), 40u);
}

TEST_F(ClusterApi, DroppingTheCallMidStreamCancelsTheRequestAndFreesItsPages) {
  auto service = make_service();
  RpcServer server(*service, listen_on("127.0.0.1:0"));
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();

  auto stream = std::make_shared<Stream>();
  auto first = kj::newPromiseAndFulfiller<void>();
  stream->first_push = kj::mv(first.fulfiller);
  auto call = make_request(cluster, {{0, 5, 7}, ""}, 2000, stream, 0.0f, /*stop_at_eos=*/false).send();
  first.promise.wait(ws);  // streaming has begun
  const auto busy = cluster.statusRequest().send().wait(ws);
  EXPECT_EQ(busy.getStatus().getRunning() + busy.getStatus().getWaiting(), 1u);
  EXPECT_LT(busy.getStatus().getKvPagesFree(), busy.getStatus().getKvPagesTotal());
  { auto dropped = kj::mv(call); }

  const auto final_status = status_until(cluster, ws, [](auto st) {
    return st.getCancelled() == 1 && st.getKvPagesFree() == st.getKvPagesTotal();
  });
  const auto s = final_status.getStatus();
  EXPECT_EQ(s.getCancelled(), 1u);
  EXPECT_EQ(s.getRunning(), 0u);
  EXPECT_EQ(s.getKvPagesFree(), s.getKvPagesTotal());
  EXPECT_LT(stream->tokens.size(), 2000u);
  EXPECT_EQ(server.active_calls(), 0);

  // And it still serves.
  auto again = std::make_shared<Stream>();
  make_request(cluster, {{0, 5, 7}, ""}, 4, again).send().wait(ws);
  EXPECT_EQ(again->tokens, reference({0, 5, 7}, 4));
}

TEST_F(ClusterApi, ShutdownRefusesNewCallsAndABadAddressIsNamed) {
  auto service = make_service();
  EXPECT_THROW(
      {
        try {
          RpcServer bad(*service, listen_on("256.1.2.3:0"));
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("256.1.2.3"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);

  RpcServer server(*service, listen_on("127.0.0.1:0"));
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();
  cluster.statusRequest().send().wait(ws);  // connected
  server.stop_accepting();
  auto error = wait_for(make_request(cluster, {{0, 5}, ""}, 4, std::make_shared<Stream>()).send(), ws);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->getType(), kj::Exception::Type::DISCONNECTED);
  EXPECT_NE(std::string(error->getDescription().cStr()).find("shutting down"), std::string::npos);
  server.stop();
  service->stop(std::chrono::milliseconds(0));
}

}  // namespace
}  // namespace sy::actors::cluster_api
