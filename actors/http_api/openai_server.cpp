#include "actors/http_api/openai_server.hpp"

#include <fmt/format.h>
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpu/sampling.hpp"
#include "model/chat_format.hpp"

namespace sy::actors::http_api {
namespace {

using cluster_api::ErrorKind;
using cluster_api::Finish;
using cluster_api::GenerateInput;
using cluster_api::GenerationError;
using cluster_api::GenerationSummary;
using cluster_api::RequestId;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// How long a streaming request waits for its first event (tokens or a refusal) before the 200
// and the SSE headers go out; until then a refusal still gets its own status code.
constexpr auto kFirstEventWait = std::chrono::seconds(2);
// A stream with nothing to say for this long sends an SSE comment: it keeps proxies from timing
// out and finds a client that has gone (the write fails) so its request is cancelled.
constexpr auto kKeepAliveInterval = std::chrono::seconds(1);
constexpr std::size_t kMaxStopStrings = 16;

// One answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field; empty: null
  std::string code;   // a stable machine-readable name; empty: null
};

struct RequestError : std::exception {
  explicit RequestError(ApiError e) : error(std::move(e)) {}
  const char* what() const noexcept override { return error.message.c_str(); }
  ApiError error;
};

[[noreturn]] void bad(std::string message, std::string param = {}, std::string code = {}) {
  throw RequestError(ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)});
}

// Generated text is valid UTF-8 (the stream decoder replaces broken sequences), but a dump must
// never throw: anything else is replaced, not fatal.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

json error_object(const ApiError& e) {
  return {{"message", e.message}, {"type", e.type}, {"param", null_or(e.param)}, {"code", null_or(e.code)}};
}

void reply_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
  if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
  res.set_content(dump(json{{"error", error_object(e)}}), "application/json");
}

void reply_json(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(dump(body), "application/json");
}

ApiError from_service(const GenerationError& e) {
  switch (e.kind) {
    case ErrorKind::bad_request: return ApiError{400, e.message, "invalid_request_error", "", ""};
    case ErrorKind::overloaded:
      return ApiError{429, "overloaded: " + e.message + " (retry later)", "rate_limit_error", "", "overloaded"};
    case ErrorKind::unavailable:
      return ApiError{503, "unavailable: " + e.message, "server_error", "", "unavailable"};
    case ErrorKind::internal: break;
  }
  return ApiError{500, "internal error: " + e.message, "server_error", "", "internal_error"};
}

const char* finish_name(Finish f) { return f == Finish::length ? "length" : "stop"; }

// One request's output on its way from the service's thread (the GenerationSink calls, which
// only append under the mutex and signal) to the HTTP worker that answers the client.
class Bridge final : public cluster_api::GenerationSink {
 public:
  struct Piece {
    std::int64_t tokens = 0;
    std::string text;
  };
  struct Batch {
    std::vector<Piece> pieces;
    bool ended = false;  // the service reported the end: summary or error is set
    std::optional<GenerationSummary> summary;
    std::optional<GenerationError> error;
    bool abandoned = false;  // the server is stopping: stop waiting
    bool empty() const { return pieces.empty() && !ended && !abandoned; }
  };

  // Service thread.
  void on_tokens(std::span<const std::int32_t> ids, std::string_view text) override {
    std::lock_guard lock(mutex_);
    pending_.push_back(Piece{static_cast<std::int64_t>(ids.size()), std::string(text)});
    wake_.notify_all();
  }
  void on_done(const GenerationSummary& summary) override {
    std::lock_guard lock(mutex_);
    ended_ = true;
    summary_ = summary;
    wake_.notify_all();
  }
  void on_error(const GenerationError& error) override {
    std::lock_guard lock(mutex_);
    ended_ = true;
    error_ = error;
    wake_.notify_all();
  }

  // Any thread: makes every wait return at once from now on.
  void abandon() {
    std::lock_guard lock(mutex_);
    abandoned_ = true;
    wake_.notify_all();
  }
  bool ended() const {
    std::lock_guard lock(mutex_);
    return ended_;
  }

  // HTTP worker: waits until there is something (or the deadline passes), then takes it all.
  // The end is reported once every piece before it has been taken.
  Batch take(std::optional<Clock::time_point> deadline) {
    std::unique_lock lock(mutex_);
    const auto ready = [&] { return !pending_.empty() || ended_ || abandoned_; };
    if (deadline) {
      wake_.wait_until(lock, *deadline, ready);
    } else {
      wake_.wait(lock, ready);
    }
    Batch b;
    b.pieces.swap(pending_);
    b.ended = ended_;
    b.summary = summary_;
    b.error = error_;
    b.abandoned = abandoned_;
    return b;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Piece> pending_;               // GUARDED_BY(mutex_)
  bool ended_ = false;                       // GUARDED_BY(mutex_)
  std::optional<GenerationSummary> summary_;  // GUARDED_BY(mutex_)
  std::optional<GenerationError> error_;     // GUARDED_BY(mutex_)
  bool abandoned_ = false;                   // GUARDED_BY(mutex_)
};

// Cuts generated text at the first stop string. Text that could be the start of one is held back
// until it is known not to be, so a stream never sends part of a stop string. Stop strings are
// UTF-8 and start on a character boundary, so what is released always ends on one.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Returns the text that may be sent now. After a match it returns the text before the stop
  // string and ignores everything later.
  std::string push(std::string_view text) {
    if (matched_) return {};
    held_ += text;
    if (stops_.empty()) return std::exchange(held_, {});
    std::size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, held_.find(s));
    if (first != std::string::npos) {
      matched_ = true;
      std::string out = held_.substr(0, first);
      held_.clear();
      return out;
    }
    std::size_t keep = 0;  // the longest tail of held_ that begins some stop string
    for (const std::string& s : stops_) {
      for (std::size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
        if (std::string_view(held_).ends_with(std::string_view(s).substr(0, k))) {
          keep = k;
          break;
        }
      }
    }
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }
  // At the end of the generation: what is still held back.
  std::string flush() { return std::exchange(held_, {}); }
  bool matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;  // each non-empty
  std::string held_;
  bool matched_ = false;
};

// ---- request parsing: every check that needs no model; the service checks the rest ----

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::int64_t as_int(const json& v, const char* name) {
  if (v.is_number_unsigned()) {
    if (v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      bad(fmt::format("'{}' is out of range", name), name);
    }
    return static_cast<std::int64_t>(v.get<std::uint64_t>());
  }
  if (!v.is_number_integer()) bad(fmt::format("'{}' must be an integer (got {})", name, dump(v)), name);
  return v.get<std::int64_t>();
}

double as_number(const json& v, const char* name) {
  if (!v.is_number()) bad(fmt::format("'{}' must be a number (got {})", name, dump(v)), name);
  const double d = v.get<double>();
  if (!std::isfinite(d)) bad(fmt::format("'{}' must be finite", name), name);
  return d;
}

bool as_bool(const json& v, const char* name) {
  if (!v.is_boolean()) bad(fmt::format("'{}' must be true or false (got {})", name, dump(v)), name);
  return v.get<bool>();
}

const std::string& as_string(const json& v, const char* name) {
  if (!v.is_string()) bad(fmt::format("'{}' must be a string", name), name);
  return v.get_ref<const std::string&>();
}

std::int32_t as_token_id(const json& v, const char* name) {
  const std::int64_t id = as_int(v, name);
  if (id < 0 || id > std::numeric_limits<std::int32_t>::max()) {
    bad(fmt::format("'{}': token id {} is outside the vocabulary", name, id), name);
  }
  return static_cast<std::int32_t>(id);
}

// What one generation request asks for, beyond the prompt.
struct Parsed {
  GenerateInput input;
  bool max_tokens_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
};

// Fields OpenAI defines that this server cannot honour: refused rather than silently ignored,
// so a client never gets output it did not ask for.
void refuse_unsupported(const json& body, bool chat) {
  if (const json* n = field(body, "n"); n && as_int(*n, "n") != 1) bad("'n' must be 1 (one choice per request)", "n");
  if (const json* b = field(body, "best_of"); b && as_int(*b, "best_of") != 1) bad("'best_of' must be 1", "best_of");
  if (const json* e = field(body, "echo"); e && as_bool(*e, "echo")) bad("'echo' is not supported", "echo");
  if (const json* s = field(body, "suffix"); s && !as_string(*s, "suffix").empty()) {
    bad("'suffix' is not supported", "suffix");
  }
  if (const json* l = field(body, "logprobs")) {
    if (chat ? as_bool(*l, "logprobs") : as_int(*l, "logprobs") != 0) bad("'logprobs' are not supported", "logprobs");
  }
  if (field(body, "top_logprobs") != nullptr) bad("'top_logprobs' is not supported", "top_logprobs");
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (const json* p = field(body, name); p && as_number(*p, name) != 0.0) {
      bad(fmt::format("'{}' is not supported (only 0)", name), name);
    }
  }
  if (const json* b = field(body, "logit_bias"); b && !(b->is_object() && b->empty())) {
    bad("'logit_bias' is not supported", "logit_bias");
  }
  for (const char* name : {"tools", "functions"}) {
    if (const json* t = field(body, name); t && !(t->is_array() && t->empty())) {
      bad(fmt::format("'{}' (tool calling) is not supported", name), name);
    }
  }
  if (const json* f = field(body, "response_format")) {
    const json* type = f->is_object() ? field(*f, "type") : nullptr;
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
      bad("'response_format' must be {\"type\": \"text\"}", "response_format");
    }
  }
}

void parse_sampling(const json& body, bool chat, std::uint64_t default_seed, Parsed& p) {
  refuse_unsupported(body, chat);
  const char* max_name = "max_tokens";
  const json* max_tokens = field(body, "max_tokens");
  if (const json* m = chat ? field(body, "max_completion_tokens") : nullptr) {
    max_tokens = m;
    max_name = "max_completion_tokens";
  }
  if (max_tokens != nullptr) {
    const std::int64_t m = as_int(*max_tokens, max_name);
    if (m < 1) bad(fmt::format("'{}' must be at least 1 (got {})", max_name, m), max_name);
    p.input.max_tokens = m;
    p.max_tokens_given = true;
  } else {
    p.input.max_tokens = 16;  // OpenAI's default for completions; chat's is set once the prompt is known
  }
  gpu::SamplerConfig& s = p.input.sampler;
  s.temperature = 1.0f;  // OpenAI's default
  if (const json* t = field(body, "temperature")) {
    const double v = as_number(*t, "temperature");
    if (v < 0.0 || v > 2.0) bad(fmt::format("'temperature' must be between 0 and 2 (got {})", v), "temperature");
    s.temperature = static_cast<float>(v);
  }
  if (const json* t = field(body, "top_p")) {
    const double v = as_number(*t, "top_p");
    if (!(v > 0.0 && v <= 1.0)) bad(fmt::format("'top_p' must be in (0, 1] (got {})", v), "top_p");
    s.top_p = static_cast<float>(v);
  }
  if (const json* t = field(body, "top_k")) {  // vLLM's extension; -1 (or 0): no limit
    const std::int64_t k = as_int(*t, "top_k");
    if (k < -1) bad(fmt::format("'top_k' must be -1, 0 (no limit) or positive (got {})", k), "top_k");
    s.top_k = std::max<std::int64_t>(k, 0);
  }
  s.seed = default_seed;
  if (const json* t = field(body, "seed")) s.seed = static_cast<std::uint64_t>(as_int(*t, "seed"));
  if (const json* t = field(body, "ignore_eos")) p.input.stop_at_eos = !as_bool(*t, "ignore_eos");  // vLLM's

  if (const json* t = field(body, "stream")) p.stream = as_bool(*t, "stream");
  if (const json* o = field(body, "stream_options")) {
    if (!o->is_object()) bad("'stream_options' must be an object", "stream_options");
    if (const json* u = field(*o, "include_usage")) p.include_usage = as_bool(*u, "stream_options.include_usage");
  }
  if (const json* stop = field(body, "stop")) {
    std::vector<std::string> stops;
    if (stop->is_string()) {
      stops.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const json& s1 : *stop) stops.push_back(as_string(s1, "stop"));
    } else {
      bad("'stop' must be a string or an array of strings", "stop");
    }
    if (stops.size() > kMaxStopStrings) bad(fmt::format("'stop' has more than {} strings", kMaxStopStrings), "stop");
    for (std::string& s1 : stops) {
      if (!s1.empty()) p.stop.push_back(std::move(s1));
    }
  }
  if (const json* u = field(body, "user")) (void)as_string(*u, "user");
}

// The prompt of /v1/completions: a string, token ids, or a batch of exactly one of those.
void parse_prompt(const json& body, GenerateInput& input) {
  const json* prompt = field(body, "prompt");
  if (prompt == nullptr) bad("'prompt' is required", "prompt");
  const json* one = prompt;
  if (prompt->is_array() && !prompt->empty() && !(*prompt)[0].is_number()) {
    if (prompt->size() != 1) {
      bad(fmt::format("batched prompts ({}) are not supported: send one prompt per request", prompt->size()), "prompt");
    }
    one = &(*prompt)[0];
  }
  if (one->is_string()) {
    input.prompt = one->get<std::string>();
  } else if (one->is_array()) {
    std::vector<std::int32_t> ids;
    ids.reserve(one->size());
    for (const json& id : *one) ids.push_back(as_token_id(id, "prompt"));
    input.prompt = std::move(ids);
  } else {
    bad("'prompt' must be a string, an array of token ids, or an array holding one of those", "prompt");
  }
}

// The messages of /v1/chat/completions, as model/chat_format takes them.
std::vector<model::ChatMessage> parse_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (messages == nullptr || !messages->is_array() || messages->empty()) {
    bad("'messages' must be a non-empty array", "messages");
  }
  std::vector<model::ChatMessage> out;
  out.reserve(messages->size());
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(where + " must be an object", "messages");
    const json* role = field(m, "role");
    if (role == nullptr || !role->is_string()) bad(where + ".role must be a string", "messages");
    model::ChatMessage message;
    message.role = role->get<std::string>();
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name for it
    if (const json* calls = field(m, "tool_calls"); calls && !(calls->is_array() && calls->empty())) {
      bad(where + ": tool calls are not supported", "messages");
    }
    if (const json* content = field(m, "content")) {
      if (content->is_string()) {
        message.content = content->get<std::string>();
      } else if (content->is_array()) {
        for (const json& part : *content) {
          const json* type = part.is_object() ? field(part, "type") : nullptr;
          const json* text = part.is_object() ? field(part, "text") : nullptr;
          if (type == nullptr || !type->is_string() || type->get<std::string>() != "text" || text == nullptr ||
              !text->is_string()) {
            bad(where + ": only content parts of type \"text\" are supported", "messages");
          }
          message.content += text->get<std::string>();
        }
      } else {
        bad(where + ".content must be a string or an array of text parts", "messages");
      }
    } else if (message.role != "assistant") {
      bad(where + ".content is required", "messages");
    }
    out.push_back(std::move(message));
  }
  return out;
}

// Compares a presented key with the configured one in time that does not depend on where they
// differ (only on the length).
bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::pair<std::string, int> split_host_port(const std::string& listen) {
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    throw std::runtime_error(fmt::format("http: cannot parse the address '{}' (want HOST:PORT)", listen));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) throw std::runtime_error(fmt::format("http: bad port in the address '{}'", listen));
  return {host, port};
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

json usage_json(std::int64_t prompt, std::int64_t completion) {
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

}  // namespace

struct OpenAiServer::Impl {
  Impl(cluster_api::GenerationService& s, model::Tokenizer t, OpenAiServerOptions o)
      : service(s), tokenizer(std::move(t)), options(std::move(o)) {}

  // A generation request's place among those in flight: holds its bridge for stop(), and when
  // it goes (answer sent, stream ended or client gone) cancels the request unless the service
  // already ended it, so its KV pages are freed.
  class Ticket {
   public:
    Ticket(Impl& impl, std::shared_ptr<Bridge> bridge) : impl_(impl), bridge_(std::move(bridge)) {}
    ~Ticket() {
      if (id_ != 0 && !bridge_->ended()) impl_.service.cancel(id_);
      std::lock_guard lock(impl_.mutex);
      impl_.live.erase(bridge_.get());
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    void submitted(RequestId id) { id_ = id; }
    RequestId id() const { return id_; }
    Bridge& bridge() { return *bridge_; }

   private:
    Impl& impl_;
    std::shared_ptr<Bridge> bridge_;
    RequestId id_ = 0;
  };

  std::unique_ptr<Ticket> admit(std::shared_ptr<Bridge> bridge) {
    std::lock_guard lock(mutex);
    if (closing) throw RequestError(stopping_error());
    if (static_cast<int>(live.size()) >= options.max_in_flight) {
      throw RequestError(ApiError{429,
                                  fmt::format("overloaded: {} requests are in flight, the most this server takes; "
                                              "retry later",
                                              live.size()),
                                  "rate_limit_error", "", "overloaded"});
    }
    live.emplace(bridge.get(), bridge);
    return std::make_unique<Ticket>(*this, std::move(bridge));
  }

  void check_auth(const httplib::Request& req) const {
    if (options.api_key.empty()) return;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.empty()) {
      throw RequestError(ApiError{401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error",
                                  "", "invalid_api_key"});
    }
    if (!std::string_view(header).starts_with(kBearer) ||
        !constant_time_equal(std::string_view(header).substr(kBearer.size()), options.api_key)) {
      throw RequestError(ApiError{401, "incorrect API key", "invalid_request_error", "", "invalid_api_key"});
    }
  }

  json parse_body(const httplib::Request& req) const {
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      bad(fmt::format("malformed JSON in the request body: {}", e.what()));
    }
    if (!body.is_object()) bad("the request body must be a JSON object");
    const json* name = field(body, "model");
    if (name == nullptr || !name->is_string()) bad("'model' is required (a string)", "model");
    if (name->get<std::string>() != options.model_id) {
      throw RequestError(ApiError{404,
                                  fmt::format("the model '{}' does not exist; this server serves '{}'",
                                              name->get<std::string>(), options.model_id),
                                  "invalid_request_error", "model", "model_not_found"});
    }
    return body;
  }

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    check_auth(req);
    const json body = parse_body(req);
    Parsed p;
    parse_sampling(body, chat, next_seed(), p);
    if (chat) {
      const std::vector<model::ChatMessage> messages = parse_messages(body);
      std::vector<std::int32_t> ids;
      try {
        const std::string text = model::format_chat(messages, /*add_generation_prompt=*/true, tokenizer.bos_token());
        ids = tokenizer.encode(text, /*add_bos=*/false);  // the format starts with BOS itself
      } catch (const std::invalid_argument& e) {
        bad(fmt::format("messages: {}", e.what()), "messages");
      }
      if (!p.max_tokens_given) {
        p.input.max_tokens = options.default_chat_max_tokens;
        const std::int64_t left = options.context_tokens - static_cast<std::int64_t>(ids.size());
        if (options.context_tokens > 0 && left >= 1) p.input.max_tokens = std::min(p.input.max_tokens, left);
      }
      p.input.prompt = std::move(ids);
    } else {
      parse_prompt(body, p.input);
    }
    serve(std::move(p), chat, res);
  }

  void serve(Parsed p, bool chat, httplib::Response& res) {
    auto bridge = std::make_shared<Bridge>();
    auto ticket = admit(bridge);
    const bool stream = p.stream;
    ticket->submitted(service.submit(std::move(p.input), bridge));
    const std::string id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", ticket->id());
    const std::int64_t created = static_cast<std::int64_t>(std::time(nullptr));
    StopMatcher stop(std::move(p.stop));

    Bridge::Batch first = bridge->take(stream ? std::optional(Clock::now() + kFirstEventWait) : std::nullopt);
    if (first.abandoned) throw RequestError(stopping_error());
    if (first.pieces.empty() && first.error) throw RequestError(from_service(*first.error));
    if (stream) {
      auto state = std::make_shared<StreamState>(StreamState{*this, std::move(ticket), chat, id, created,
                                                             std::move(stop), p.include_usage, std::move(first)});
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", [state](std::size_t, httplib::DataSink& sink) {
        return state->pump(sink);
      });
      return;
    }

    // Not streamed: gather everything, then answer once.
    std::string text;
    std::int64_t tokens = 0;
    Bridge::Batch b = std::move(first);
    for (;;) {
      for (Bridge::Piece& piece : b.pieces) {
        if (stop.matched()) break;
        tokens += piece.tokens;
        text += stop.push(piece.text);
      }
      if (b.abandoned) throw RequestError(stopping_error());
      if (stop.matched() || b.ended) break;
      b = bridge->take(std::nullopt);
    }
    if (stop.matched()) {
      service.cancel(ticket->id());  // the rest is not wanted; the summary still counts the prompt
      while (!b.ended && !b.abandoned) b = bridge->take(std::nullopt);
      if (!b.summary) throw RequestError(b.error ? from_service(*b.error) : stopping_error());
    } else {
      if (b.error) throw RequestError(from_service(*b.error));
      if (b.summary->finish == Finish::cancelled) throw RequestError(cancelled_error());
      text += stop.flush();
      tokens = b.summary->completion_tokens;
    }
    const GenerationSummary& s = *b.summary;
    const char* finish = stop.matched() ? "stop" : finish_name(s.finish);
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    reply_json(res, {{"id", id},
                     {"object", chat ? "chat.completion" : "text_completion"},
                     {"created", created},
                     {"model", options.model_id},
                     {"choices", json::array({choice})},
                     {"usage", usage_json(s.prompt_tokens, tokens)}});
  }

  static ApiError stopping_error() {
    return ApiError{503, "unavailable: the server is shutting down", "server_error", "", "unavailable"};
  }
  static ApiError cancelled_error() {
    return ApiError{503, "unavailable: the request was cancelled before it ended (the server is stopping)",
                    "server_error", "", "unavailable"};
  }

  // One streamed response: the SSE writer httplib calls until it reports done (or fails).
  struct StreamState {
    Impl& impl;
    std::unique_ptr<Ticket> ticket;
    bool chat;
    std::string id;
    std::int64_t created;
    StopMatcher stop;
    bool include_usage;
    Bridge::Batch pending;  // the first batch, taken before the headers went out
    bool role_sent = false;
    bool finished = false;
    std::int64_t tokens = 0;

    json chunk(json delta_or_text, json finish) const {
      json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", std::move(finish)}};
      choice[chat ? "delta" : "text"] = std::move(delta_or_text);
      json j = {{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", impl.options.model_id},
                {"choices", json::array({std::move(choice)})}};
      if (include_usage) j["usage"] = nullptr;
      return j;
    }
    std::string text_event(const std::string& text) const {
      return sse(chunk(chat ? json{{"content", text}} : json(text), nullptr));
    }

    // Returns false to drop the connection (the client is gone or the server is stopping);
    // the ticket then cancels the request.
    bool pump(httplib::DataSink& sink) {
      if (finished) {
        sink.done();
        return true;
      }
      Bridge::Batch b = pending.empty() ? ticket->bridge().take(Clock::now() + kKeepAliveInterval) : std::move(pending);
      pending = Bridge::Batch{};
      if (b.abandoned) return false;
      std::string out;
      if (chat && !role_sent) {
        out += sse(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr));
        role_sent = true;
      }
      for (Bridge::Piece& piece : b.pieces) {
        if (stop.matched()) break;
        tokens += piece.tokens;
        if (const std::string text = stop.push(piece.text); !text.empty()) out += text_event(text);
      }
      if (stop.matched() && !b.ended) {
        impl.service.cancel(ticket->id());
        while (!b.ended && !b.abandoned) b = ticket->bridge().take(std::nullopt);
        if (b.abandoned) return false;
      }
      if (b.ended) {
        finished = true;
        if (b.error) {  // with a stop string matched too: the service failed before it took the cancel
          out += sse(json{{"error", error_object(from_service(*b.error))}});
        } else if (!stop.matched() && b.summary->finish == Finish::cancelled) {
          out += sse(json{{"error", error_object(cancelled_error())}});
        } else {
          if (const std::string tail = stop.flush(); !tail.empty() && !stop.matched()) out += text_event(tail);
          const GenerationSummary& s = *b.summary;
          if (!stop.matched()) tokens = s.completion_tokens;
          out += sse(chunk(chat ? json::object() : json(""), stop.matched() ? "stop" : finish_name(s.finish)));
          if (include_usage) {
            out += sse(json{{"id", id},
                            {"object", chat ? "chat.completion.chunk" : "text_completion"},
                            {"created", created},
                            {"model", impl.options.model_id},
                            {"choices", json::array()},
                            {"usage", usage_json(s.prompt_tokens, tokens)}});
          }
          out += "data: [DONE]\n\n";
        }
      }
      // The request's place among those in flight is free before the client reads the end, so a
      // client that sends its next request at once finds it free (no 429 at exactly capacity).
      if (finished) ticket.reset();
      if (out.empty()) out = ": keep-alive\n\n";  // nothing new: probe the connection
      if (!sink.write(out.data(), out.size())) return false;
      if (finished) sink.done();
      return true;
    }
  };

  void models(const httplib::Request& req, httplib::Response& res) {
    check_auth(req);
    reply_json(res, {{"object", "list"}, {"data", json::array({model_json()})}});
  }
  void one_model(const httplib::Request& req, httplib::Response& res) {
    check_auth(req);
    const std::string name = req.matches[1];
    if (name != options.model_id) {
      throw RequestError(ApiError{404, fmt::format("the model '{}' does not exist; this server serves '{}'", name,
                                                   options.model_id),
                                  "invalid_request_error", "model", "model_not_found"});
    }
    reply_json(res, model_json());
  }
  json model_json() const {
    return {{"id", options.model_id}, {"object", "model"}, {"created", started}, {"owned_by", "switchyard"}};
  }

  void health(httplib::Response& res) {
    const cluster_api::StatusSnapshot s = service.status();
    bool down = false;
    for (const auto& node : s.nodes) down = down || node.health == cluster_api::NodeInfo::Health::down;
    bool is_closing = false;
    {
      std::lock_guard lock(mutex);
      is_closing = closing;
    }
    const char* status = is_closing ? "stopping" : down ? "down" : "ok";
    reply_json(res, {{"status", status},
                     {"model", options.model_id},
                     {"running", s.running},
                     {"waiting", s.waiting},
                     {"kv_pages_used", s.kv_pages_used},
                     {"kv_pages_free", s.kv_pages_free},
                     {"kv_pages_total", s.kv_pages_total}});
    if (is_closing || down) res.status = 503;
  }

  std::uint64_t next_seed() { return gpu::splitmix64(seed_counter.fetch_add(1, std::memory_order_relaxed)); }

  cluster_api::GenerationService& service;
  const model::Tokenizer tokenizer;
  const OpenAiServerOptions options;
  const std::int64_t started = static_cast<std::int64_t>(std::time(nullptr));
  std::atomic<std::uint64_t> seed_counter{std::random_device{}()};
  httplib::Server server;
  std::atomic<bool> listen_returned{false};  // the listener thread's listen_after_bind returned

  std::mutex mutex;
  bool closing = false;                                      // GUARDED_BY(mutex)
  std::unordered_map<Bridge*, std::weak_ptr<Bridge>> live;  // GUARDED_BY(mutex): requests in flight
};

OpenAiServer::OpenAiServer(cluster_api::GenerationService& service, model::Tokenizer tokenizer,
                           OpenAiServerOptions options) {
  if (options.model_id.empty()) throw std::invalid_argument("http: the served model id is empty");
  if (options.max_in_flight < 1 || options.threads <= options.max_in_flight) {
    throw std::invalid_argument(fmt::format("http: want max_in_flight >= 1 and threads > max_in_flight (got {}, {})",
                                            options.max_in_flight, options.threads));
  }
  if (options.max_body_bytes < 1) throw std::invalid_argument("http: max_body_bytes must be >= 1");
  const auto [host, port] = split_host_port(options.listen);
  impl_ = std::make_unique<Impl>(service, std::move(tokenizer), std::move(options));
  Impl& impl = *impl_;
  httplib::Server& svr = impl.server;
  const int threads = impl.options.threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  svr.set_payload_max_length(impl.options.max_body_bytes);
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(100);

  // Every handler answers its RequestError in OpenAI's shape.
  auto guarded = [&impl](auto body) {
    return [&impl, body](const httplib::Request& req, httplib::Response& res) {
      try {
        body(impl, req, res);
      } catch (const RequestError& e) {
        reply_error(res, e.error);
      }
    };
  };
  svr.Post("/v1/completions", guarded([](Impl& i, const httplib::Request& req, httplib::Response& res) {
             i.completions(req, res, /*chat=*/false);
           }));
  svr.Post("/v1/chat/completions", guarded([](Impl& i, const httplib::Request& req, httplib::Response& res) {
             i.completions(req, res, /*chat=*/true);
           }));
  svr.Get("/v1/models",
          guarded([](Impl& i, const httplib::Request& req, httplib::Response& res) { i.models(req, res); }));
  svr.Get(R"(/v1/models/(.+))",
          guarded([](Impl& i, const httplib::Request& req, httplib::Response& res) { i.one_model(req, res); }));
  svr.Get("/health", guarded([](Impl& i, const httplib::Request&, httplib::Response& res) { i.health(res); }));
  // What httplib answers itself (unknown path, oversize body, unparsable request) gets the same
  // error shape; answers the handlers wrote already have a body.
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [&impl](const httplib::Request& req, httplib::Response& res) -> httplib::Server::HandlerResponse {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e{res.status, fmt::format("HTTP error {}", res.status), "invalid_request_error", "", ""};
        if (res.status == 404) {
          e.message = fmt::format("unknown endpoint: {} {}", req.method, req.path);
          e.code = "unknown_url";
        } else if (res.status == 413) {
          e.message = fmt::format("the request body is larger than {} bytes", impl.options.max_body_bytes);
          e.code = "request_too_large";
        } else if (res.status == 400) {
          e.message = "malformed HTTP request";
        } else if (res.status >= 500) {
          e.type = "server_error";
        }
        reply_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    reply_error(res, ApiError{500, "internal error: " + what, "server_error", "", "internal_error"});
  });

  int bound = port;
  if (port == 0) {
    bound = svr.bind_to_any_port(host);
    if (bound < 0) bound = 0;
  } else if (!svr.bind_to_port(host, port)) {
    bound = 0;
  }
  if (bound <= 0) throw std::runtime_error(fmt::format("http: cannot listen on {}", impl.options.listen));
  const bool ipv6 = host.find(':') != std::string::npos;
  address_ = ipv6 ? fmt::format("[{}]:{}", host, bound) : fmt::format("{}:{}", host, bound);

  listener_ = std::thread([&impl] {
    // Writes to a client that has gone must fail with EPIPE, not kill the process: SIGPIPE is
    // blocked on this thread before httplib starts its workers here, and they inherit the mask.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    impl.server.listen_after_bind();
    impl.listen_returned = true;
  });
  // httplib's stop() only takes effect once the server runs.
  while (!svr.is_running() && !impl.listen_returned) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

OpenAiServer::~OpenAiServer() { stop(); }

void OpenAiServer::stop_accepting() {
  std::lock_guard lock(impl_->mutex);
  impl_->closing = true;
}

std::int64_t OpenAiServer::active_requests() const {
  std::lock_guard lock(impl_->mutex);
  return static_cast<std::int64_t>(impl_->live.size());
}

void OpenAiServer::stop() {
  if (!listener_.joinable()) return;
  std::vector<std::shared_ptr<Bridge>> live;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closing = true;
    for (auto& [ptr, weak] : impl_->live) {
      if (auto b = weak.lock()) live.push_back(std::move(b));
    }
  }
  impl_->server.stop();
  for (const auto& b : live) b->abandon();
  listener_.join();
}

}  // namespace sy::actors::http_api
