// The OpenAI-compatible HTTP API end to end in one process: OpenAiServer on 127.0.0.1:0 over a
// LocalGenerationService (shared tiny model, ref backend), called by httplib::Client (and a raw
// socket for a client that vanishes). Greedy text must equal model::generate() on a fresh engine
// (DESIGN.md "Determinism contract"); streamed chunks must add up to the same text; every bad
// input gets its status code in OpenAI's error shape and leaves other requests unharmed; a
// dropped stream must give its KV pages back.
#include "actors/http_api/openai_server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "actors/cluster_api/local_generation_service.hpp"
#include "gpu/ref/kernels.hpp"
#include "model/chat_format.hpp"
#include "model/engine.hpp"
#include "model/generator.hpp"
#include "model/safetensors.hpp"
#include "model/test_util.hpp"
#include "model/tokenizer.hpp"
#include "model/weights.hpp"

namespace sy::actors::http_api {
namespace {

using cluster_api::LocalGenerationService;
using cluster_api::LocalServiceOptions;
using json = nlohmann::json;

constexpr std::int64_t kContext = 128;  // the service's max_seq_len here

// What a streamed answer said: the text of every chunk, the finish reason, the usage chunk.
struct Sse {
  std::vector<json> chunks;  // every data event but [DONE]
  std::string text;          // choices[0].text or .delta.content, concatenated
  std::string finish_reason;
  json usage;
  bool done = false;  // ended with data: [DONE]
};

Sse parse_sse(const std::string& body, bool chat) {
  Sse s;
  std::size_t at = 0;
  while (at < body.size()) {
    const std::size_t end = body.find("\n\n", at);
    const std::string event = body.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? body.size() : end + 2;
    if (event.starts_with(":")) continue;  // a comment (keep-alive)
    EXPECT_TRUE(event.starts_with("data: ")) << event;
    const std::string data = event.substr(6);
    EXPECT_FALSE(s.done) << "an event after [DONE]: " << data;
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(data);
    s.chunks.push_back(j);
    if (j.contains("usage") && !j["usage"].is_null()) s.usage = j["usage"];
    if (j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    if (chat) {
      if (c["delta"].contains("content")) s.text += c["delta"]["content"].get<std::string>();
    } else {
      s.text += c["text"].get<std::string>();
    }
    if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"];
  }
  return s;
}

class HttpApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (model::testing::have_tokenizer_files()) {
      model_dir_ = new std::filesystem::path(model::testing::shared_tiny_model());
      tokenizer_ = new model::Tokenizer(model::Tokenizer::load(*model_dir_));
    }
  }
  void SetUp() override {
    if (model_dir_ == nullptr) GTEST_SKIP() << "no tokenizer files at " << model::default_tokenizer_dir();
  }

  void start(OpenAiServerOptions o = {}, std::int64_t kv_pages = 64, std::int64_t max_seq_len = kContext) {
    LocalServiceOptions so;
    so.model_dir = *model_dir_;
    so.backend = &gpu::ref::backend();
    so.kv_pages = kv_pages;
    so.max_seq_len = max_seq_len;
    service_ = std::make_unique<LocalGenerationService>(so);
    o.listen = "127.0.0.1:0";
    o.model_id = "tiny";
    o.context_tokens = max_seq_len;
    server_ = std::make_unique<OpenAiServer>(*service_, *tokenizer_, o);
    port_ = std::stoi(server_->address().substr(server_->address().rfind(':') + 1));
  }
  void TearDown() override {
    server_.reset();
    service_.reset();
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  httplib::Result post(const std::string& path, const std::string& body, httplib::Headers headers = {}) const {
    return client().Post(path.c_str(), headers, body, "application/json");
  }
  httplib::Result post(const std::string& path, const json& body, httplib::Headers headers = {}) const {
    return post(path, body.dump(), std::move(headers));
  }

  // model::generate() alone on a fresh engine: the reference for greedy output.
  std::vector<std::int32_t> reference(const std::vector<std::int32_t>& prompt, std::int64_t max_tokens) const {
    const auto config = model::ModelConfig::from_file(*model_dir_ / "config.json");
    const auto checkpoint = model::Checkpoint::open(*model_dir_);
    const auto weights = model::bind_weights(checkpoint, config);
    model::EngineOptions eo;
    eo.kv_pages = 64;
    eo.max_seqs = 1;
    model::Engine engine(config, weights, gpu::ref::backend(), eo);
    model::GenerationRequest r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    return model::generate(engine, std::span(&r, 1), model::GenerationOptions{}).front().tokens;
  }
  std::string reference_text(const std::vector<std::int32_t>& prompt, std::int64_t max_tokens) const {
    return tokenizer_->decode(reference(prompt, max_tokens), /*skip_special_tokens=*/true);
  }
  std::vector<std::int32_t> chat_ids(const std::vector<model::ChatMessage>& messages) const {
    return tokenizer_->encode(model::format_chat(messages, true, tokenizer_->bos_token()), false);
  }

  // Polls the service until `done` holds, at most 10 s.
  template <typename Pred>
  cluster_api::StatusSnapshot status_until(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      cluster_api::StatusSnapshot s = service_->status();
      if (done(s) || std::chrono::steady_clock::now() > deadline) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  static void expect_error(const httplib::Result& r, int status, const std::string& message_part,
                           const std::string& where) {
    ASSERT_TRUE(r) << where << ": no response (" << httplib::to_string(r.error()) << ")";
    EXPECT_EQ(r->status, status) << where << ": " << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << where;
    const json j = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << where << ": " << r->body;
    const json& e = j["error"];
    ASSERT_TRUE(e["message"].is_string()) << where;
    EXPECT_NE(e["message"].get<std::string>().find(message_part), std::string::npos) << where << ": " << r->body;
    EXPECT_TRUE(e["type"].is_string()) << where;
    EXPECT_TRUE(e.contains("param") && (e["param"].is_null() || e["param"].is_string())) << where;
    EXPECT_TRUE(e.contains("code") && (e["code"].is_null() || e["code"].is_string())) << where;
    if (status == 429 || status == 503) {
      EXPECT_EQ(r->get_header_value("Retry-After"), "1") << where;
    }
  }

  static std::filesystem::path* model_dir_;
  static model::Tokenizer* tokenizer_;
  std::unique_ptr<LocalGenerationService> service_;
  std::unique_ptr<OpenAiServer> server_;
  int port_ = 0;
};

std::filesystem::path* HttpApi::model_dir_ = nullptr;
model::Tokenizer* HttpApi::tokenizer_ = nullptr;

TEST_F(HttpApi, GreedyCompletionsEqualTheEngine) {
  start();
  const std::vector<std::int32_t> ids = {0, 5, 7};
  auto r = post("/v1/completions", json{{"model", "tiny"}, {"prompt", ids}, {"max_tokens", 10}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("cmpl-"));
  const std::vector<std::int32_t> expected = reference(ids, 10);
  EXPECT_EQ(j["choices"][0]["text"], tokenizer_->decode(expected, true));
  EXPECT_EQ(j["choices"][0]["finish_reason"], expected.size() == 10 ? "length" : "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], expected.size());
  EXPECT_EQ(j["usage"]["total_tokens"], 3 + expected.size());

  // Text prompts are encoded by the model's tokenizer (BOS as its config says).
  const std::string prompt = "Hello, world";
  r = post("/v1/completions", json{{"model", "tiny"}, {"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto prompt_ids = tokenizer_->encode(prompt, tokenizer_->add_bos_by_default());
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], reference_text(prompt_ids, 8));
  EXPECT_EQ(json::parse(r->body)["usage"]["prompt_tokens"], prompt_ids.size());

  // A batch of one prompt is the same request.
  r = post("/v1/completions",
           json{{"model", "tiny"}, {"prompt", json::array({ids})}, {"max_tokens", 10}, {"temperature", 0}});
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], tokenizer_->decode(expected, true));
}

TEST_F(HttpApi, StreamedChunksAddUpToTheUnstreamedText) {
  start();
  const json request = {{"model", "tiny"},     {"prompt", {0, 9, 8, 7}}, {"max_tokens", 24},
                        {"temperature", 0},    {"ignore_eos", true},     {"stream", true},
                        {"stream_options", {{"include_usage", true}}}};
  auto r = post("/v1/completions", request);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const Sse s = parse_sse(r->body, false);
  EXPECT_TRUE(s.done);
  EXPECT_GT(s.chunks.size(), 2u);
  EXPECT_EQ(s.text, reference_text({0, 9, 8, 7}, 24));
  EXPECT_EQ(s.finish_reason, "length");
  EXPECT_EQ(s.usage["completion_tokens"], 24);
  EXPECT_EQ(s.usage["prompt_tokens"], 4);
  EXPECT_EQ(s.chunks.back()["choices"].size(), 0u);  // the usage chunk comes last

  json plain = request;
  plain.erase("stream");
  plain.erase("stream_options");
  r = post("/v1/completions", plain);
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], s.text);
}

TEST_F(HttpApi, ChatCompletionsFormatTheMessagesAndStream) {
  start();
  const std::vector<model::ChatMessage> messages = {{"system", "You are terse."}, {"user", "Say something."}};
  const json request = {{"model", "tiny"},
                        {"messages", {{{"role", "system"}, {"content", "You are terse."}},
                                      {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Say "}},
                                                                      {{"type", "text"}, {"text", "something."}}}}}}},
                        {"max_tokens", 12},
                        {"temperature", 0}};
  const std::vector<std::int32_t> ids = chat_ids(messages);
  const std::vector<std::int32_t> expected = reference(ids, 12);

  auto r = post("/v1/chat/completions", request);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], tokenizer_->decode(expected, true));
  EXPECT_EQ(j["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], expected.size());

  json streamed = request;
  streamed["stream"] = true;
  r = post("/v1/chat/completions", streamed);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Sse s = parse_sse(r->body, true);
  EXPECT_TRUE(s.done);
  ASSERT_FALSE(s.chunks.empty());
  EXPECT_EQ(s.chunks.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(s.chunks.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(s.text, j["choices"][0]["message"]["content"]);
  EXPECT_EQ(s.finish_reason, j["choices"][0]["finish_reason"]);
  EXPECT_TRUE(s.usage.is_null());  // not asked for

  // Without max_tokens, chat generates up to the context left (capped by the server's default).
  json open_ended = request;
  open_ended.erase("max_tokens");
  open_ended["messages"] = {{{"role", "user"}, {"content", "Hi"}}};
  open_ended["ignore_eos"] = true;
  r = post("/v1/chat/completions", open_ended);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::int64_t prompt_tokens = static_cast<std::int64_t>(chat_ids({{"user", "Hi"}}).size());
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], kContext - prompt_tokens);
}

TEST_F(HttpApi, StopStringsCutTheTextStreamedOrNot) {
  start();
  const std::vector<std::int32_t> ids = {0, 5, 7};
  const std::string full = reference_text(ids, 24);
  ASSERT_GE(full.size(), 12u) << "the tiny model's text is too short to cut: '" << full << "'";
  const std::string stop = full.substr(6, 3);
  const std::string expected = full.substr(0, full.find(stop));
  for (const bool stream : {false, true}) {
    const json request = {{"model", "tiny"}, {"prompt", ids},        {"max_tokens", 24},
                          {"temperature", 0}, {"stop", {stop, "\x01\x02 never"}}, {"stream", stream},
                          {"ignore_eos", true}};
    auto r = post("/v1/completions", request);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    if (stream) {
      const Sse s = parse_sse(r->body, false);
      EXPECT_EQ(s.text, expected);
      EXPECT_EQ(s.finish_reason, "stop");
      EXPECT_TRUE(s.done);
    } else {
      const json j = json::parse(r->body);
      EXPECT_EQ(j["choices"][0]["text"], expected);
      EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
      EXPECT_LT(j["usage"]["completion_tokens"].get<int>(), 24);
    }
  }
  const auto s = status_until([](const auto& st) { return st.kv_pages_free == st.kv_pages_total; });
  EXPECT_EQ(s.kv_pages_free, s.kv_pages_total);
}

TEST_F(HttpApi, BadInputGetsItsStatusAndOpenAisErrorShape) {
  OpenAiServerOptions o;
  o.max_body_bytes = 4096;
  start(o);
  const json ok = {{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 2}};
  const auto with = [&](const char* key, json value) {
    json j = ok;
    j[key] = std::move(value);
    return j.dump();
  };
  const auto without = [&](const char* key) {
    json j = ok;
    j.erase(key);
    return j.dump();
  };
  std::vector<std::int32_t> too_long(kContext + 1, 5);
  struct Case {
    std::string name, path, body;
    int status;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"malformed JSON", "/v1/completions", R"({"model": "tiny", "prompt": [0, 5)", 400, "malformed JSON"},
      {"not an object", "/v1/completions", "[1, 2]", 400, "must be a JSON object"},
      {"no model", "/v1/completions", without("model"), 400, "'model' is required"},
      {"unknown model", "/v1/completions", with("model", "gpt-4"), 404, "'gpt-4' does not exist"},
      {"no prompt", "/v1/completions", without("prompt"), 400, "'prompt' is required"},
      {"max_tokens 0", "/v1/completions", with("max_tokens", 0), 400, "'max_tokens' must be at least 1"},
      {"max_tokens -3", "/v1/completions", with("max_tokens", -3), 400, "'max_tokens' must be at least 1"},
      {"max_tokens 1.5", "/v1/completions", with("max_tokens", 1.5), 400, "must be an integer"},
      {"top_p 1.5", "/v1/completions", with("top_p", 1.5), 400, "'top_p' must be in (0, 1]"},
      {"top_p 0", "/v1/completions", with("top_p", 0), 400, "'top_p' must be in (0, 1]"},
      {"temperature -1", "/v1/completions", with("temperature", -1), 400, "'temperature' must be between 0 and 2"},
      {"temperature as text", "/v1/completions", with("temperature", "hot"), 400, "must be a number"},
      {"n 2", "/v1/completions", with("n", 2), 400, "'n' must be 1"},
      {"two prompts", "/v1/completions", with("prompt", {"a", "b"}), 400, "batched prompts"},
      {"token out of vocabulary", "/v1/completions", with("prompt", {0, 129280}), 400, "outside the vocabulary"},
      {"negative token", "/v1/completions", with("prompt", {0, -1}), 400, "outside the vocabulary"},
      {"empty prompt", "/v1/completions", with("prompt", ""), 400, "empty"},
      {"prompt longer than the context", "/v1/completions", with("prompt", too_long), 400, "context"},
      {"oversize body", "/v1/completions", with("prompt", std::string(8192, 'a')), 413, "larger than 4096 bytes"},
      {"chat without messages", "/v1/chat/completions", R"({"model": "tiny"})", 400, "'messages'"},
      {"chat with a bad role", "/v1/chat/completions",
       R"({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]})", 400, "wizard"},
      {"chat with an image", "/v1/chat/completions",
       R"({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", 400,
       "type \"text\""},
      {"unknown endpoint", "/v1/embeddings", ok.dump(), 404, "unknown endpoint"},
  };
  for (const Case& c : cases) expect_error(post(c.path, c.body), c.status, c.message, c.name);

  // Nothing above reached the engine's pages, and the server still serves.
  auto r =
      post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5, 7}}, {"max_tokens", 4}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], reference_text({0, 5, 7}, 4));
  const auto s = status_until([](const auto& st) { return st.completed == 1; });
  EXPECT_EQ(s.kv_pages_free, s.kv_pages_total);
}

TEST_F(HttpApi, AnApiKeyGuardsTheV1EndpointsButNotHealth) {
  OpenAiServerOptions o;
  o.api_key = "sk-test";
  start(o);
  const json body = {{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 2}};
  expect_error(post("/v1/completions", body), 401, "missing API key", "no key");
  expect_error(post("/v1/completions", body, {{"Authorization", "Bearer sk-wrong"}}), 401, "incorrect API key",
               "wrong key");
  expect_error(post("/v1/completions", body, {{"Authorization", "sk-test"}}), 401, "incorrect API key", "no Bearer");
  auto models = client().Get("/v1/models");
  expect_error(models, 401, "missing API key", "models without a key");

  auto r = post("/v1/completions", body, {{"Authorization", "Bearer sk-test"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  models = client().Get("/v1/models", {{"Authorization", "Bearer sk-test"}});
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  const json list = json::parse(models->body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "tiny");
  EXPECT_EQ(list["data"][0]["object"], "model");
  auto one = client().Get("/v1/models/tiny", {{"Authorization", "Bearer sk-test"}});
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  expect_error(client().Get("/v1/models/other", {{"Authorization", "Bearer sk-test"}}), 404, "does not exist",
               "unknown model");

  auto health = client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json h = json::parse(health->body);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["kv_pages_total"], 64);
}

// A raw client of one streaming completion: open() sends it and reads until the first text
// event; vanish() closes the socket without reading the rest, as a client that goes away.
class RawStream {
 public:
  void open(int port, const json& request) {
    const std::string body = request.dump();
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    const std::string all = head + body;
    ASSERT_EQ(::send(fd_, all.data(), all.size(), 0), static_cast<ssize_t>(all.size()));
    std::string got;
    char buf[4096];
    while (got.find("\"text\"") == std::string::npos) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      ASSERT_GT(n, 0) << "the server closed first: " << got;
      got.append(buf, static_cast<std::size_t>(n));
    }
    EXPECT_TRUE(got.starts_with("HTTP/1.1 200")) << got;
  }
  void vanish() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  ~RawStream() { vanish(); }

 private:
  int fd_ = -1;
};

const json kLongStream = {{"model", "tiny"}, {"prompt", {0, 5, 7}}, {"max_tokens", 2000},
                          {"ignore_eos", true}, {"stream", true}};

TEST_F(HttpApi, MoreThanMaxInFlightIsRefusedWith429) {
  OpenAiServerOptions o;
  o.max_in_flight = 1;
  o.threads = 4;
  start(o, /*kv_pages=*/64, /*max_seq_len=*/0);
  RawStream a;
  a.open(port_, kLongStream);  // holds the one slot
  expect_error(post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 2}}), 429,
               "requests are in flight", "max in flight");
  a.vanish();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server_->active_requests() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto r = post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 2}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(HttpApi, AFullKvPoolIs429AndRequestsBesideItCompleteCorrectly) {
  start(OpenAiServerOptions{}, /*kv_pages=*/40, /*max_seq_len=*/0);
  RawStream a;
  a.open(port_, kLongStream);  // 2003 tokens: 32 of the 40 pages
  // Two greedy requests at once beside it; each must come out as the engine alone makes it.
  const std::vector<std::int32_t> prompt = {0, 9, 8, 7};
  std::string side_text;
  std::thread side([&] {
    auto r = post("/v1/completions", json{{"model", "tiny"}, {"prompt", prompt}, {"max_tokens", 40},
                                          {"temperature", 0}, {"ignore_eos", true}, {"stream", true}});
    if (r && r->status == 200) side_text = parse_sse(r->body, false).text;
  });
  auto r = post("/v1/chat/completions", json{{"model", "tiny"},
                                             {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                             {"max_tokens", 6},
                                             {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["content"], reference_text(chat_ids({{"user", "Hi"}}), 6));
  side.join();
  EXPECT_EQ(side_text, reference_text(prompt, 40));

  // 2302 tokens need 36 pages; 8 are free: retryable.
  expect_error(post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 2300}}), 429,
               "kv_exhausted", "kv pool full");
  // More than the whole pool can never fit: a bad request.
  expect_error(post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 3000}}), 400,
               "more than the pool's 40", "larger than the pool");
  expect_error(post("/v1/completions", std::string("{oops")), 400, "malformed JSON", "malformed beside a stream");
  a.vanish();
  const auto s = status_until([](const auto& st) { return st.cancelled == 1 && st.kv_pages_free == 40; });
  EXPECT_EQ(s.kv_pages_free, 40);
  EXPECT_EQ(s.refused, 1);
}

TEST_F(HttpApi, AClientDroppingItsStreamCancelsTheRequestAndFreesItsPages) {
  start(OpenAiServerOptions{}, /*kv_pages=*/64, /*max_seq_len=*/0);
  RawStream a;
  a.open(port_, kLongStream);
  const auto busy = service_->status();
  EXPECT_EQ(busy.running + busy.waiting, 1);
  EXPECT_LT(busy.kv_pages_free, busy.kv_pages_total);
  a.vanish();
  const auto t0 = std::chrono::steady_clock::now();
  const auto s = status_until(
      [](const auto& st) { return st.cancelled == 1 && st.kv_pages_free == st.kv_pages_total && st.running == 0; });
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_EQ(s.kv_pages_free, s.kv_pages_total);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server_->active_requests() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server_->active_requests(), 0);

  auto r =
      post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5, 7}}, {"max_tokens", 4}, {"temperature", 0}});
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], reference_text({0, 5, 7}, 4));
}

TEST_F(HttpApi, StopAbandonsAStreamAndCancelsItsRequest) {
  start(OpenAiServerOptions{}, /*kv_pages=*/64, /*max_seq_len=*/0);
  RawStream a;
  a.open(port_, kLongStream);
  server_->stop();
  EXPECT_EQ(server_->active_requests(), 0);
  const auto s =
      status_until([](const auto& st) { return st.cancelled == 1 && st.kv_pages_free == st.kv_pages_total; });
  EXPECT_EQ(s.cancelled, 1);
}

TEST_F(HttpApi, ShuttingDownAnswers503AndABadAddressIsNamed) {
  start();
  EXPECT_THROW(
      {
        try {
          OpenAiServerOptions o;
          o.listen = "127.0.0.1:notaport";
          o.model_id = "tiny";
          OpenAiServer bad(*service_, *tokenizer_, o);
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("127.0.0.1:notaport"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
  server_->stop_accepting();
  expect_error(post("/v1/completions", json{{"model", "tiny"}, {"prompt", {0, 5}}, {"max_tokens", 2}}), 503,
               "shutting down", "after stop_accepting");
  auto health = client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body)["status"], "stopping");
  server_->stop();
  server_->stop();  // idempotent
}

}  // namespace
}  // namespace sy::actors::http_api
