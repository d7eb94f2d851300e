#include "actors/cluster_api/rpc_server.hpp"

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "schemas/cluster.capnp.h"

namespace sy::actors::cluster_api {

struct RpcServer::Shared {
  explicit Shared(GenerationService& s) : service(s) {}

  GenerationService& service;
  std::atomic<bool> closing{false};      // stop_accepting() was called: refuse new generate calls
  std::atomic<std::int64_t> active{0};   // generate calls in flight
  std::mutex mutex;
  // Wake the loop thread; created and destroyed there, fulfilled from callers. Null once the
  // loop has exited (or before it started).
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_accepting;  // GUARDED_BY(mutex)
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;            // GUARDED_BY(mutex)
};

namespace {

constexpr std::size_t kMaxClientRequestIdBytes = 128;
constexpr unsigned kDefaultPort = 7433;

[[noreturn]] void throw_kj(kj::Exception::Type type, const std::string& message) {
  kj::throwFatalException(kj::Exception(type, __FILE__, __LINE__, kj::str(message.c_str())));
}

kj::Exception to_kj(const GenerationError& e) {
  switch (e.kind) {
    case ErrorKind::bad_request:
      return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str("bad request: ", e.message.c_str()));
    case ErrorKind::overloaded:
      return kj::Exception(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__,
                           kj::str("overloaded: ", e.message.c_str()));
    case ErrorKind::unavailable:
      return kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                           kj::str("unavailable: ", e.message.c_str()));
    case ErrorKind::internal:
      break;
  }
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str("internal: ", e.message.c_str()));
}

// The sink the service calls (its thread) and the generate call drains (the loop thread).
// Tokens accumulate here while a push is in flight, so one slow client holds at most its own
// completion's tokens, never the service.
class SinkBridge final : public GenerationSink {
 public:
  // User-provided so it is noexcept like ~GenerationSink (kj::Own's destructor is not).
  ~SinkBridge() noexcept override {}

  struct Batch {
    std::vector<std::int32_t> tokens;
    std::string text;
    bool ended = false;  // sticky: set once on_done/on_error arrived, and the data below
    std::optional<GenerationSummary> summary;
    std::optional<GenerationError> error;
  };

  // Service thread.
  void on_tokens(std::span<const std::int32_t> ids, std::string_view text) override {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    pending_.tokens.insert(pending_.tokens.end(), ids.begin(), ids.end());
    pending_.text += text;
    wake_locked();
  }
  void on_done(const GenerationSummary& summary) override {
    std::lock_guard lock(mutex_);
    pending_.ended = true;
    pending_.summary = summary;
    wake_locked();
  }
  void on_error(const GenerationError& error) override {
    std::lock_guard lock(mutex_);
    pending_.ended = true;
    pending_.error = error;
    wake_locked();
  }

  // Loop thread: resolves when there is something to take.
  kj::Promise<void> ready() {
    std::lock_guard lock(mutex_);
    wake_ = nullptr;  // a fulfilled one, if any: destroyed on the loop thread
    if (has_data_locked()) return kj::READY_NOW;
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    wake_ = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
  }
  // Loop thread: the tokens and text gathered so far, and the end once it arrived (the end is
  // only reported with no tokens pending, so the last push goes out before done or the error).
  Batch take() {
    std::lock_guard lock(mutex_);
    Batch b;
    b.tokens.swap(pending_.tokens);
    b.text.swap(pending_.text);
    if (b.tokens.empty() && b.text.empty() && pending_.ended) {
      b.ended = true;
      b.summary = pending_.summary;
      b.error = pending_.error;
    }
    return b;
  }
  // Loop thread, when the call ends for any reason: later callbacks are dropped. True when the
  // service had already ended the request (nothing to cancel).
  bool close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    wake_ = nullptr;
    return pending_.ended;
  }

 private:
  bool has_data_locked() const { return !pending_.tokens.empty() || !pending_.text.empty() || pending_.ended; }
  void wake_locked() {
    if (wake_) wake_->fulfill();  // destroyed by the loop thread (ready/close), never here
  }

  std::mutex mutex_;
  Batch pending_;        // GUARDED_BY(mutex_)
  bool closed_ = false;  // GUARDED_BY(mutex_)
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake_;  // GUARDED_BY(mutex_)
};

schemas::FinishReason to_wire(Finish f) {
  switch (f) {
    case Finish::stop: return schemas::FinishReason::STOP;
    case Finish::length: return schemas::FinishReason::LENGTH;
    case Finish::cancelled: return schemas::FinishReason::CANCELLED;
  }
  return schemas::FinishReason::ERROR;
}

void fill(schemas::GenerateSummary::Builder out, const GenerationSummary& s) {
  out.setFinishReason(to_wire(s.finish));
  auto usage = out.initUsage();
  usage.setPromptTokens(static_cast<std::uint32_t>(s.prompt_tokens));
  usage.setCompletionTokens(static_cast<std::uint32_t>(s.completion_tokens));
  auto t = out.initTimings();
  t.setQueueMs(s.queue_ms);
  t.setTimeToFirstTokenMs(s.ttft_ms);
  t.setTotalMs(s.total_ms);
  auto mtp = out.initMtp();
  mtp.setDrafts(static_cast<std::uint64_t>(s.mtp_drafts));
  mtp.setAccepted(static_cast<std::uint64_t>(s.mtp_accepted));
  out.setRequestId(s.client_request_id);
  out.setServerRequestId(s.id);
}

// Checks what the wire layer can check; the service checks the rest against the model.
GenerateInput parse(schemas::GenerateRequest::Reader r) {
  GenerateInput in;
  switch (r.getPrompt().which()) {
    case schemas::GenerateRequest::Prompt::TEXT:
      in.prompt = std::string(r.getPrompt().getText().cStr(), r.getPrompt().getText().size());
      break;
    case schemas::GenerateRequest::Prompt::TOKEN_IDS: {
      std::vector<std::int32_t> ids;
      for (const std::int32_t id : r.getPrompt().getTokenIds()) ids.push_back(id);
      in.prompt = std::move(ids);
      break;
    }
  }
  in.chat = r.getChat();
  if (!r.hasSampling()) {
    throw_kj(kj::Exception::Type::FAILED, "bad request: sampling is required (maxTokens has no default)");
  }
  const auto s = r.getSampling();
  in.max_tokens = s.getMaxTokens();
  in.sampler.temperature = s.getTemperature();
  in.sampler.top_p = s.getTopP();
  in.sampler.top_k = s.getTopK();
  in.sampler.seed = s.getSeed();
  in.stop_at_eos = s.getStopAtEos();
  if (r.getRequestId().size() > kMaxClientRequestIdBytes) {
    throw_kj(kj::Exception::Type::FAILED, fmt::format("bad request: requestId is {} bytes, at most {} allowed",
                                                      r.getRequestId().size(), kMaxClientRequestIdBytes));
  }
  in.client_request_id = r.getRequestId().cStr();
  return in;
}

// Drains one request's bridge into the client's sink: a push whenever tokens are there and the
// stream window allows (the previous push's promise resolved), then done; resolves with the
// summary, or fails with the service's error.
kj::Promise<GenerationSummary> pump(std::shared_ptr<SinkBridge> bridge, schemas::TokenSink::Client sink) {
  return bridge->ready().then([bridge, sink]() mutable -> kj::Promise<GenerationSummary> {
    SinkBridge::Batch b = bridge->take();
    if (!b.ended) {
      auto push = sink.pushRequest();
      push.setTokens(kj::ArrayPtr<const std::int32_t>(b.tokens.data(), b.tokens.size()));
      push.setText(kj::StringPtr(b.text.c_str(), b.text.size()));
      return push.send().then([bridge, sink]() mutable { return pump(bridge, sink); });
    }
    if (b.error) kj::throwFatalException(to_kj(*b.error));
    const GenerationSummary summary = *b.summary;
    auto done = sink.doneRequest();
    fill(done.initSummary(), summary);
    return done.send().then([summary](auto&&) { return summary; });
  });
}

// Generated Server classes have a protected non-virtual destructor path that -Wnon-virtual-dtor
// flags (capnp deletes them through Capability::Server, whose destructor is virtual).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class ClusterImpl final : public schemas::Cluster::Server {
 public:
  explicit ClusterImpl(std::shared_ptr<RpcServer::Shared> shared) : shared_(std::move(shared)) {}

 protected:
  kj::Promise<void> generate(GenerateContext context) override {
    if (shared_->closing.load()) throw_kj(kj::Exception::Type::DISCONNECTED, "unavailable: the server is shutting down");
    auto params = context.getParams();
    GenerateInput input = parse(params.getRequest());
    schemas::TokenSink::Client sink = params.getSink();
    context.allowCancellation();
    auto bridge = std::make_shared<SinkBridge>();
    GenerationService& service = shared_->service;
    const RequestId id = service.submit(std::move(input), bridge);
    shared_->active.fetch_add(1);
    // Runs when the call ends in any way: answered, failed, or cancelled by the client (the RPC
    // system drops this promise) or by a lost connection.
    auto on_end = kj::defer([bridge, id, shared = shared_] {
      if (!bridge->close()) shared->service.cancel(id);
      shared->active.fetch_sub(1);
    });
    return pump(bridge, kj::mv(sink))
        .then([context](GenerationSummary summary) mutable { fill(context.getResults().initSummary(), summary); })
        .attach(kj::mv(on_end));
  }

  kj::Promise<void> status(StatusContext context) override {
    const StatusSnapshot s = shared_->service.status();
    auto out = context.getResults().initStatus();
    out.setModelName(s.model_name);
    out.setBackend(s.backend);
    out.setNumerics(s.numerics);
    out.setUptimeMs(static_cast<std::uint64_t>(s.uptime_s * 1000.0));
    auto nodes = out.initNodes(static_cast<unsigned>(s.nodes.size()));
    for (unsigned i = 0; i < s.nodes.size(); ++i) {
      const NodeInfo& n = s.nodes[i];
      auto node = nodes[i];
      node.setName(n.name);
      auto roles = node.initRoles(static_cast<unsigned>(n.roles.size()));
      for (unsigned j = 0; j < n.roles.size(); ++j) roles.set(j, n.roles[j]);
      node.setHealth(n.health == NodeInfo::Health::healthy    ? schemas::Health::HEALTHY
                     : n.health == NodeInfo::Health::degraded ? schemas::Health::DEGRADED
                                                              : schemas::Health::DOWN);
      node.setDetail(n.detail);
    }
    out.setRunning(static_cast<std::uint32_t>(s.running));
    out.setWaiting(static_cast<std::uint32_t>(s.waiting));
    out.setMaxBatch(static_cast<std::uint32_t>(s.max_batch));
    out.setKvPagesUsed(static_cast<std::uint64_t>(s.kv_pages_used));
    out.setKvPagesFree(static_cast<std::uint64_t>(s.kv_pages_free));
    out.setKvPagesTotal(static_cast<std::uint64_t>(s.kv_pages_total));
    out.setCompleted(static_cast<std::uint64_t>(s.completed));
    out.setCancelled(static_cast<std::uint64_t>(s.cancelled));
    out.setFailed(static_cast<std::uint64_t>(s.failed));
    out.setRefused(static_cast<std::uint64_t>(s.refused));
    out.setMtp(s.mtp);
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<RpcServer::Shared> shared_;
};
#pragma GCC diagnostic pop

// "HOST:PORT" with the bound port, or the unix address as given.
std::string bound_address(const std::string& listen, unsigned port) {
  if (listen.starts_with("unix:")) return listen;
  std::string host = listen;
  const std::size_t colon = listen.rfind(':');
  if (colon != std::string::npos && listen.find(']', colon) == std::string::npos) host = listen.substr(0, colon);
  return fmt::format("{}:{}", host, port);
}

// The loop thread. Fulfils `ready` with the bound address, or fails it when binding fails.
void serve(std::shared_ptr<RpcServer::Shared> shared, std::string listen, std::promise<std::string>& ready) {
  bool announced = false;
  auto failure = kj::runCatchingExceptions([&] {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    auto stop_accepting = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard lock(shared->mutex);
      shared->stop = kj::mv(stop.fulfiller);
      shared->stop_accepting = kj::mv(stop_accepting.fulfiller);
    }
    KJ_DEFER({
      std::lock_guard lock(shared->mutex);
      shared->stop = nullptr;
      shared->stop_accepting = nullptr;
    });
    if (listen.starts_with("unix:")) ::unlink(listen.substr(5).c_str());
    kj::Own<kj::NetworkAddress> address =
        io.provider->getNetwork().parseAddress(kj::StringPtr(listen.c_str()), kDefaultPort).wait(io.waitScope);
    kj::Own<kj::ConnectionReceiver> listener = address->listen();
    capnp::TwoPartyServer server(kj::heap<ClusterImpl>(shared));
    kj::Promise<void> accepting = server.listen(*listener)
                                      .exclusiveJoin(kj::mv(stop_accepting.promise))
                                      .then([&listener] { listener = nullptr; })
                                      .eagerlyEvaluate([](kj::Exception&& e) {
                                        fmt::print(stderr, "cluster api: accept failed: {}\n", e.getDescription().cStr());
                                      });
    ready.set_value(bound_address(listen, listener->getPort()));
    announced = true;
    stop.promise.wait(io.waitScope);
    // Leaving the scope drops `accepting`, then the server with every connection: calls still
    // in flight are cancelled (their requests with them).
  });
  KJ_IF_MAYBE(e, failure) {
    const std::string message =
        fmt::format("cluster api: cannot listen on \"{}\": {}", listen, e->getDescription().cStr());
    if (!announced) {
      ready.set_exception(std::make_exception_ptr(std::runtime_error(message)));
    } else {
      fmt::print(stderr, "{}\n", message);
    }
  }
}

}  // namespace

RpcServer::RpcServer(GenerationService& service, RpcServerOptions options)
    : shared_(std::make_shared<Shared>(service)) {
  std::promise<std::string> ready;
  std::future<std::string> bound = ready.get_future();
  loop_ = std::thread([shared = shared_, listen = options.listen, ready = std::move(ready)]() mutable {
    serve(std::move(shared), std::move(listen), ready);
  });
  try {
    address_ = bound.get();
  } catch (...) {
    loop_.join();
    throw;
  }
}

RpcServer::~RpcServer() { stop(); }

void RpcServer::stop_accepting() {
  shared_->closing.store(true);
  std::lock_guard lock(shared_->mutex);
  if (shared_->stop_accepting) shared_->stop_accepting->fulfill();
}

std::int64_t RpcServer::active_calls() const { return shared_->active.load(); }

void RpcServer::stop() {
  shared_->closing.store(true);
  {
    std::lock_guard lock(shared_->mutex);
    if (shared_->stop) shared_->stop->fulfill();
  }
  if (loop_.joinable()) loop_.join();
}

}  // namespace sy::actors::cluster_api
