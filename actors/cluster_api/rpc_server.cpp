#include "actors/cluster_api/rpc_server.hpp"

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <limits>
#include <future>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <stdexcept>
#include <utility>
#include <variant>
#include <vector>

#include "schemas/cluster.capnp.h"

namespace sy::actors::cluster_api {

struct RpcServer::Shared {
  Shared(GenerationService& s, OperatorService* o, std::string token)
      : service(s), operators(o), admin_token(std::move(token)) {}

  GenerationService& service;
  OperatorService* const operators;  // null: no operator calls
  const std::string admin_token;     // empty: admin() always refused
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
// ---- Operator calls.

[[noreturn]] void throw_operator(const OperatorError& e) {
  kj::throwFatalException(to_kj(GenerationError{e.kind, e.what()}));
}

OperatorService& operators_of(const std::shared_ptr<RpcServer::Shared>& shared) {
  if (shared->operators == nullptr) {
    throw_kj(kj::Exception::Type::DISCONNECTED,
             "unavailable: this server has no expert parallelism to operate (no controller)");
  }
  return *shared->operators;
}

// Runs a synchronous operator call, turning OperatorError into the API's exception.
template <typename F>
auto call(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const OperatorError& e) {
    throw_operator(e);
  }
}

// An asynchronous operator call: `start` gets the callback the service calls (on its thread) once.
// The result waits in a slot beside a void fulfiller (a variant through kj's promise trips GCC
// 12's maybe-uninitialized analysis).
template <typename T, typename Start>
kj::Promise<T> await_result(Start&& start) {
  struct Slot {
    std::mutex mutex;
    std::optional<OperatorResult<T>> result;  // GUARDED_BY(mutex)
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller;
  };
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto slot = std::make_shared<Slot>();
  slot->fulfiller = kj::mv(paf.fulfiller);
  start(OperatorCallback<T>([slot](OperatorResult<T> result) {
    {
      std::lock_guard lock(slot->mutex);
      slot->result.emplace(std::move(result));
    }
    slot->fulfiller->fulfill();
  }));
  return paf.promise.then([slot]() -> T {
    std::lock_guard lock(slot->mutex);
    if (const OperatorError* e = std::get_if<OperatorError>(&*slot->result)) throw_operator(*e);
    return std::get<T>(std::move(*slot->result));
  });
}

void fill(schemas::Placement::Builder out, const balance::ExpertPlacement& p) {
  out.setEpoch(p.epoch);
  out.setExperts(static_cast<std::uint32_t>(p.experts));
  out.setSlots(static_cast<std::uint32_t>(p.slots));
  out.setNumLayers(static_cast<std::uint16_t>(p.phy2log.size()));
  auto hosts = out.initHosts(static_cast<unsigned>(p.hosts.size()));
  for (unsigned i = 0; i < p.hosts.size(); ++i) hosts.set(i, p.hosts[i]);
  auto host_of_slot = out.initHostOfSlot(static_cast<unsigned>(p.host_of_slot.size()));
  for (unsigned i = 0; i < p.host_of_slot.size(); ++i) host_of_slot.set(i, static_cast<std::uint16_t>(p.host_of_slot[i]));
  unsigned moe = 0;
  for (int l = 0; l < static_cast<int>(p.phy2log.size()); ++l) moe += p.is_moe_layer(l) ? 1 : 0;
  auto layers = out.initLayers(moe);
  unsigned i = 0;
  for (int l = 0; l < static_cast<int>(p.phy2log.size()); ++l) {
    if (!p.is_moe_layer(l)) continue;
    auto layer = layers[i++];
    layer.setLayer(static_cast<std::uint16_t>(l));
    const std::vector<int>& row = p.phy2log[static_cast<std::size_t>(l)];
    auto slots = layer.initPhy2log(static_cast<unsigned>(row.size()));
    for (unsigned s = 0; s < row.size(); ++s) slots.set(s, static_cast<std::uint32_t>(row[s]));
  }
}

// The wire form back into a placement; what it must agree with is checked by the controller.
balance::ExpertPlacement parse(schemas::Placement::Reader r) {
  balance::ExpertPlacement p;
  p.epoch = r.getEpoch();
  p.experts = static_cast<int>(r.getExperts());
  p.slots = static_cast<int>(r.getSlots());
  for (const auto h : r.getHosts()) p.hosts.emplace_back(h.cStr(), h.size());
  for (const std::uint16_t h : r.getHostOfSlot()) p.host_of_slot.push_back(h);
  p.phy2log.resize(r.getNumLayers());
  for (const auto layer : r.getLayers()) {
    const unsigned l = layer.getLayer();
    if (l >= p.phy2log.size()) {
      throw_kj(kj::Exception::Type::FAILED,
               fmt::format("bad request: placement layer {} is outside numLayers {}", l, p.phy2log.size()));
    }
    if (!p.phy2log[l].empty()) throw_kj(kj::Exception::Type::FAILED, fmt::format("bad request: placement lists layer {} twice", l));
    if (layer.getPhy2log().size() == 0) {
      throw_kj(kj::Exception::Type::FAILED, fmt::format("bad request: placement layer {} has no slots", l));
    }
    for (const std::uint32_t e : layer.getPhy2log()) {
      p.phy2log[l].push_back(e > static_cast<std::uint32_t>(std::numeric_limits<int>::max()) ? -1 : static_cast<int>(e));
    }
  }
  return p;
}

void fill(schemas::RebalanceRound::Builder out, const RoundInfo& r) {
  out.setEpoch(r.epoch);
  out.setOutcome(r.outcome);
  out.setDetail(r.detail);
  out.setTrigger(r.trigger);
  out.setMoves(static_cast<std::uint32_t>(r.moves));
  out.setBytes(r.bytes);
  out.setBalancednessBefore(r.balancedness_before);
  out.setBalancednessAfter(r.balancedness_after);
  out.setSeconds(r.seconds);
  out.setStartedUnixMs(r.started_unix_ms);
}

void fill(schemas::RebalancePlan::Builder out, const RoundPlan& plan) {
  fill(out.initRound(), plan.round);
  auto moves = out.initMoves(static_cast<unsigned>(plan.moves.size()));
  for (unsigned i = 0; i < plan.moves.size(); ++i) {
    const MoveInfo& m = plan.moves[i];
    moves[i].setLayer(static_cast<std::uint16_t>(m.layer));
    moves[i].setSlot(static_cast<std::uint32_t>(m.slot));
    moves[i].setHost(m.host);
    moves[i].setFromExpert(static_cast<std::uint32_t>(m.from_expert));
    moves[i].setToExpert(static_cast<std::uint32_t>(m.to_expert));
  }
  const std::size_t n = std::min({plan.layers.size(), plan.before.size(), plan.after.size()});
  auto layers = out.initLayers(static_cast<unsigned>(n));
  for (unsigned i = 0; i < n; ++i) {
    layers[i].setLayer(static_cast<std::uint16_t>(plan.layers[i]));
    layers[i].setBefore(plan.before[i]);
    layers[i].setAfter(plan.after[i]);
  }
}

void fill(schemas::BalancingSettings::Builder out, const BalancingSettings& s) {
  out.setPaused(s.paused);
  out.setIntervalS(s.interval_s);
  out.setThreshold(s.threshold);
  out.setPolicy(s.policy);
  auto pins = out.initPins(static_cast<unsigned>(s.pins.size()));
  for (unsigned i = 0; i < s.pins.size(); ++i) {
    pins[i].setLayer(static_cast<std::uint16_t>(s.pins[i].layer));
    pins[i].setSlot(static_cast<std::uint32_t>(s.pins[i].slot));
    pins[i].setExpert(static_cast<std::uint32_t>(s.pins[i].expert));
  }
  out.setEpoch(s.epoch);
  out.setRoundRunning(s.round_running);
  out.setNextRoundInS(s.next_round_in_s);
}

// Equal without telling, by timing, how much of a guess matched.
bool same_token(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<std::size_t>(b.size(), 1)]);
  return diff == 0 && !b.empty();
}

class AdminImpl final : public schemas::Admin::Server {
 public:
  explicit AdminImpl(std::shared_ptr<RpcServer::Shared> shared) : shared_(std::move(shared)) {}

 protected:
  kj::Promise<void> rebalance(RebalanceContext context) override {
    OperatorService& ops = operators_of(shared_);
    return await_result<RoundPlan>([&ops](OperatorCallback<RoundPlan> done) { ops.rebalance(std::move(done)); })
        .then([context](RoundPlan plan) mutable { fill(context.getResults().initPlan(), plan); });
  }
  kj::Promise<void> importPlacement(ImportPlacementContext context) override {
    OperatorService& ops = operators_of(shared_);
    balance::ExpertPlacement p = parse(context.getParams().getPlacement());
    auto shared_p = std::make_shared<balance::ExpertPlacement>(std::move(p));
    return await_result<RoundPlan>([&ops, shared_p](OperatorCallback<RoundPlan> done) {
             ops.import_placement(std::move(*shared_p), std::move(done));
           })
        .then([context](RoundPlan plan) mutable { fill(context.getResults().initPlan(), plan); });
  }
  kj::Promise<void> pause(PauseContext context) override {
    return settings(context, [](OperatorService& ops) { return ops.set_paused(true); });
  }
  kj::Promise<void> resume(ResumeContext context) override {
    return settings(context, [](OperatorService& ops) { return ops.set_paused(false); });
  }
  kj::Promise<void> setInterval(SetIntervalContext context) override {
    const double seconds = context.getParams().getSeconds();
    return settings(context, [seconds](OperatorService& ops) { return ops.set_interval(seconds); });
  }
  kj::Promise<void> setThreshold(SetThresholdContext context) override {
    const double threshold = context.getParams().getThreshold();
    return settings(context, [threshold](OperatorService& ops) { return ops.set_threshold(threshold); });
  }
  kj::Promise<void> pin(PinContext context) override {
    const auto p = context.getParams();
    const PinInfo pin{p.getLayer(), static_cast<int>(std::min<std::uint32_t>(p.getSlot(), 1u << 30)),
                      static_cast<int>(std::min<std::uint32_t>(p.getExpert(), 1u << 30))};
    return settings(context, [pin](OperatorService& ops) { return ops.pin(pin); });
  }
  kj::Promise<void> unpin(UnpinContext context) override {
    const auto p = context.getParams();
    const int layer = p.getLayer();
    const int slot = static_cast<int>(std::min<std::uint32_t>(p.getSlot(), 1u << 30));
    return settings(context, [layer, slot](OperatorService& ops) { return ops.unpin(layer, slot); });
  }
  kj::Promise<void> drain(DrainContext context) override {
    OperatorService& ops = operators_of(shared_);
    std::string node = context.getParams().getNode().cStr();
    context.allowCancellation();
    return await_result<DrainReport>([&ops, node](OperatorCallback<DrainReport> done) { ops.drain(node, std::move(done)); })
        .then([context](DrainReport r) mutable {
          auto out = context.getResults().initReport();
          out.setNode(r.node);
          out.setRequestsAtStart(static_cast<std::uint32_t>(r.requests_at_start));
          out.setSeconds(r.seconds);
        });
  }
  kj::Promise<void> undrain(UndrainContext context) override {
    OperatorService& ops = operators_of(shared_);
    const std::string node = context.getParams().getNode().cStr();
    call([&] { ops.undrain(node); });
    return kj::READY_NOW;
  }

 private:
  template <typename Context, typename F>
  kj::Promise<void> settings(Context& context, F&& f) {
    OperatorService& ops = operators_of(shared_);
    const BalancingSettings s = call([&] { return f(ops); });
    fill(context.getResults().initSettings(), s);
    return kj::READY_NOW;
  }

  std::shared_ptr<RpcServer::Shared> shared_;
};

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
      node.setDraining(n.draining);
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

  kj::Promise<void> expertLoad(ExpertLoadContext context) override {
    const ExpertLoadInfo load = call([&] { return operators_of(shared_).expert_load(); });
    auto out = context.getResults().initLoad();
    out.setWindowS(load.window_s);
    out.setReports(static_cast<std::uint32_t>(load.reports));
    out.setExperts(static_cast<std::uint32_t>(load.experts));
    auto layers = out.initLayers(static_cast<unsigned>(load.layers.size()));
    for (unsigned i = 0; i < load.layers.size(); ++i) {
      const LayerLoadInfo& l = load.layers[i];
      layers[i].setLayer(static_cast<std::uint16_t>(l.layer));
      layers[i].setTokens(kj::ArrayPtr<const std::uint64_t>(l.tokens.data(), l.tokens.size()));
      layers[i].setBalancedness(l.balancedness);
    }
    auto hosts = out.initHosts(static_cast<unsigned>(load.hosts.size()));
    for (unsigned i = 0; i < load.hosts.size(); ++i) {
      hosts[i].setName(load.hosts[i].first);
      hosts[i].setTokens(load.hosts[i].second);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> placement(PlacementContext context) override {
    const balance::ExpertPlacement p = call([&] { return operators_of(shared_).placement(); });
    fill(context.getResults().initPlacement(), p);
    return kj::READY_NOW;
  }

  kj::Promise<void> history(HistoryContext context) override {
    const std::vector<RoundInfo> rounds = call([&] { return operators_of(shared_).history(); });
    auto out = context.getResults().initRounds(static_cast<unsigned>(rounds.size()));
    for (unsigned i = 0; i < rounds.size(); ++i) fill(out[i], rounds[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> balancing(BalancingContext context) override {
    const BalancingSettings s = call([&] { return operators_of(shared_).balancing(); });
    fill(context.getResults().initSettings(), s);
    return kj::READY_NOW;
  }

  kj::Promise<void> planRebalance(PlanRebalanceContext context) override {
    OperatorService& ops = operators_of(shared_);
    return await_result<RoundPlan>([&ops](OperatorCallback<RoundPlan> done) { ops.plan_rebalance(std::move(done)); })
        .then([context](RoundPlan plan) mutable { fill(context.getResults().initPlan(), plan); });
  }

  kj::Promise<void> admin(AdminContext context) override {
    const auto token = context.getParams().getToken();
    if (shared_->admin_token.empty()) {
      throw_kj(kj::Exception::Type::FAILED,
               "permission denied: this server has no admin token configured ([cluster] admin_token or "
               "SY_ADMIN_TOKEN)");
    }
    if (!same_token(std::string_view(token.cStr(), token.size()), shared_->admin_token)) {
      throw_kj(kj::Exception::Type::FAILED, "permission denied: wrong admin token");
    }
    context.getResults().setAdmin(kj::heap<AdminImpl>(shared_));
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
// PEM text of a TLS file (empty path: empty text).
std::string read_pem(const std::string& path, const char* what) {
  if (path.empty()) return "";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    throw std::runtime_error(fmt::format("cluster api: cannot read the TLS {} file \"{}\"", what, path));
  }
  return text.str();
}

void serve(std::shared_ptr<RpcServer::Shared> shared, std::string listen, std::string cert_pem, std::string key_pem,
           std::promise<std::string>& ready) {
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
    // With TLS every accepted connection is wrapped (handshake first) before the RPC system sees it.
    kj::Maybe<kj::Own<kj::TlsContext>> tls;
    if (!cert_pem.empty()) {
      kj::TlsKeypair keypair{kj::TlsPrivateKey(kj::StringPtr(key_pem.c_str())),
                             kj::TlsCertificate(kj::StringPtr(cert_pem.c_str()))};
      kj::TlsContext::Options tls_options;
      tls_options.defaultKeypair = keypair;
      auto& context = *tls.emplace(kj::heap<kj::TlsContext>(kj::mv(tls_options)));
      listener = context.wrapPort(kj::mv(listener));
    }
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

RpcServer::RpcServer(GenerationService& service, RpcServerOptions options, OperatorService* operators)
    : shared_(std::make_shared<Shared>(service, operators, options.admin_token)) {
  std::promise<std::string> ready;
  std::future<std::string> bound = ready.get_future();
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    throw std::runtime_error("cluster api: TLS needs both a certificate and a key file");
  }
  std::string cert = read_pem(options.tls_cert_file, "certificate");
  std::string key = read_pem(options.tls_key_file, "key");
  loop_ = std::thread([shared = shared_, listen = options.listen, cert = std::move(cert), key = std::move(key),
                       ready = std::move(ready)]() mutable {
    serve(std::move(shared), std::move(listen), std::move(cert), std::move(key), ready);
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
