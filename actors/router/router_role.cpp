#include "actors/router/router_role.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors/cluster_api/generation_service.hpp"
#include "actors/cluster_api/prompt.hpp"
#include "actors/cluster_api/rpc_server.hpp"
#include "actors/http_api/openai_server.hpp"
#include "actors/messages.hpp"
#include "actors/node/serving_wire.hpp"
#include "balance/migration.hpp"
#include "model/config.hpp"
#include "model/kv_cache.hpp"
#include "model/tokenizer.hpp"
#include "monitoring/metrics.hpp"
#include "transport/task_thread.hpp"

namespace sy::actors::router {
namespace {

namespace tr = sy::transport;
namespace api = sy::actors::cluster_api;
using Clock = std::chrono::steady_clock;
using schemas::MessageKind;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// How a request ended, as switchyard_requests_total{outcome} counts it.
enum class Outcome : std::uint8_t { ok, error, cancelled, rejected, timeout };
inline constexpr std::size_t outcome_count = 5;

// The router's serving metrics (monitoring/metrics.hpp): the series are made once, so the token
// path only bumps atomics. With no registry every pointer is null and nothing is counted.
// Threading: prometheus-cpp's counters and histograms are thread-safe; the router thread updates
// them (and submit(), on an RPC thread, counts refusals while shutting down).
struct RouterMetrics {
  explicit RouterMetrics(monitoring::Registry* registry) {
    if (registry == nullptr) return;
    using monitoring::Metric;
    auto& requests = registry->counter(Metric::requests);
    constexpr std::array<const char*, outcome_count> names{"ok", "error", "cancelled", "rejected", "timeout"};
    for (std::size_t i = 0; i < outcome_count; ++i) {
      outcomes[i] = &requests.Add(monitoring::labels(Metric::requests, {names[i]}));
    }
    auto histogram = [&](Metric m) { return &registry->histogram(m).Add({}, monitoring::Registry::buckets(m)); };
    queue_time = histogram(Metric::request_queue_time);
    ttft = histogram(Metric::time_to_first_token);
    itl = histogram(Metric::inter_token_latency);
    e2e = histogram(Metric::e2e_request_latency);
    prompt_tokens = &registry->counter(Metric::prompt_tokens).Add({});
    generation_tokens = &registry->counter(Metric::generation_tokens).Add({});
  }
  void count(Outcome o) const {
    if (prometheus::Counter* c = outcomes[static_cast<std::size_t>(o)]) c->Increment();
  }
  static void observe(prometheus::Histogram* h, double seconds) {
    if (h != nullptr) h->Observe(seconds);
  }

  std::array<prometheus::Counter*, outcome_count> outcomes{};
  prometheus::Histogram* queue_time = nullptr;
  prometheus::Histogram* ttft = nullptr;
  prometheus::Histogram* itl = nullptr;
  prometheus::Histogram* e2e = nullptr;
  prometheus::Counter* prompt_tokens = nullptr;
  prometheus::Counter* generation_tokens = nullptr;
};

// A run of tokens that arrived ahead of its turn (decode's batches can overtake prefill's first
// token: they come over different connections).
struct Chunk {
  std::vector<std::int32_t> tokens;
  schemas::FinishReason finish = schemas::FinishReason::NONE;
};

struct Live {
  std::shared_ptr<api::GenerationSink> sink;
  model::StreamDecoder decoder;
  std::string client_request_id;
  std::string prefill;
  std::string decode;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t next_index = 0;  // completion index of the next token the client gets
  std::map<std::uint32_t, Chunk> early;  // by firstIndex
  Clock::time_point received;
  Clock::time_point sent;
  Clock::time_point first_token{};
  Clock::time_point last_progress;
  Clock::time_point last_token{};  // when the client got its latest token (inter-token latency)
};

// What the last WorkerLoad of a decode node said, and what this router sent it since.
struct DecodeLoad {
  bool reported = false;
  std::int64_t free_pages = 0;
  std::int64_t total_pages = 0;
  std::int64_t running = 0;
  std::int64_t waiting = 0;
  std::int64_t pages_sent_since_report = 0;
  std::int64_t live = 0;  // requests of this router it holds now
};

// A drain in progress (router thread): who waits for the node to empty.
struct Drain {
  Clock::time_point started;
  std::int64_t at_start = 0;
  std::vector<api::OperatorCallback<api::DrainReport>> waiters;
};

class RouterRole final : public node::NodeRole, public api::GenerationService, public api::OperatorService {
 public:
  RouterRole(node::RoleContext& context, RouterRoleOptions options);
  ~RouterRole() override { stop(); }

  std::string name() const override { return "router"; }
  void stop() override;

  api::RequestId submit(api::GenerateInput input, std::shared_ptr<api::GenerationSink> sink) override;
  void cancel(api::RequestId id) override;
  api::StatusSnapshot status() override;

  // OperatorService: forwarded to the controller and load_stats roles of this node.
  api::ExpertLoadInfo expert_load() override;
  balance::ExpertPlacement placement() override { return controller().placement(); }
  std::vector<api::RoundInfo> history() override { return controller().history(); }
  api::BalancingSettings balancing() override { return controller().settings(); }
  void plan_rebalance(api::OperatorCallback<api::RoundPlan> done) override;
  void rebalance(api::OperatorCallback<api::RoundPlan> done) override;
  void import_placement(balance::ExpertPlacement placement, api::OperatorCallback<api::RoundPlan> done) override;
  api::BalancingSettings set_paused(bool paused) override { return controller().set_paused(paused); }
  api::BalancingSettings set_interval(double seconds) override { return controller().set_interval(seconds); }
  api::BalancingSettings set_threshold(double threshold) override { return controller().set_threshold(threshold); }
  api::BalancingSettings pin(api::PinInfo pin) override { return controller().pin(pin); }
  api::BalancingSettings unpin(int layer, int slot) override { return controller().unpin(layer, slot); }
  // Drains are the router's own (router thread).
  void drain(std::string node, api::OperatorCallback<api::DrainReport> done) override;
  void undrain(const std::string& node) override;

  void post(std::function<void()> task) { worker_.post(std::move(task)); }

  // ---- Router thread only.
  void on_tokens(const received<schemas::TokenBatch>& m);
  void on_failed(const received<schemas::RequestFailed>& m);
  void on_load(const received<schemas::WorkerLoad>& m);

 private:
  void start(api::RequestId id, api::GenerateInput input, std::shared_ptr<api::GenerationSink> sink,
             Clock::time_point received);
  std::optional<std::string> pick_decode(std::int64_t pages);
  std::optional<std::string> pick_prefill();
  void apply(api::RequestId id, Live& live, std::uint32_t first_index, const std::vector<std::int32_t>& tokens,
             schemas::FinishReason finish);
  void finish(api::RequestId id, api::Finish how);
  void fail(api::RequestId id, const api::GenerationError& error, bool tell_workers,
            Outcome outcome = Outcome::error);
  void send_cancel(const Live& live, api::RequestId id, schemas::CancelReason reason);
  void on_peer_change(const node::PeerChange& change);
  void watchdog();
  controller::ControllerRole& controller() const;  // throws no_controller()
  api::OperatorError no_controller() const;
  // Runs `call` on the controller, or answers `done` that this node has none.
  void on_controller(api::OperatorCallback<api::RoundPlan> done,
                     const std::function<void(controller::ControllerRole&, api::OperatorCallback<api::RoundPlan>)>& call);
  // Requests of this router that `node` holds (as decode, or as prefill before the first token).
  std::int64_t held_by(const std::string& node) const;
  // Answers the drains whose node emptied.
  void check_drains();
  bool draining(const std::string& node) const;  // REQUIRES status_mutex_
  void log(const std::string& line) const {
    std::fprintf(stderr, "switchyard node %s: router: %s\n", me_.name.c_str(), line.c_str());
  }

  const config::ClusterConfig& cluster_;
  const config::NodeConfig& me_;
  node::TransportBridge& bridge_;
  node::PeerDirectory& peers_;
  RouterRoleOptions options_;
  const model::ModelConfig config_;
  const model::Tokenizer tokenizer_;
  const Clock::time_point started_ = Clock::now();
  const RouterMetrics metrics_;
  caf::actor actor_;
  std::uint64_t subscription_ = 0;
  std::atomic<api::RequestId> next_id_{1};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};

  // Router thread only.
  std::unordered_map<api::RequestId, Live> live_;
  std::size_t prefill_turn_ = 0;
  std::size_t decode_turn_ = 0;
  std::uint64_t late_messages_ = 0;  // for requests that already ended (or were never ours)
  std::map<std::string, Drain> drains_;  // drains not yet answered, by node

  // Shared with status(); guarded by status_mutex_.
  mutable std::mutex status_mutex_;
  std::map<std::string, DecodeLoad> loads_;  // by decode node name
  std::set<std::string> draining_;           // drained or draining nodes: no new requests
  std::int64_t completed_ = 0, cancelled_ = 0, failed_ = 0, refused_ = 0, in_flight_ = 0;

  tr::TaskThread worker_;
  std::unique_ptr<api::RpcServer> rpc_;  // after worker_: stopped before it in stop()
  std::unique_ptr<http_api::OpenAiServer> http_;
};

RouterRole::RouterRole(node::RoleContext& context, RouterRoleOptions options)
    : cluster_(context.cluster),
      me_(context.me),
      bridge_(context.bridge),
      peers_(context.peers),
      options_(std::move(options)),
      config_(model::ModelConfig::from_file(options_.model_dir / "config.json")),
      tokenizer_(model::Tokenizer::load(options_.model_dir)),
      metrics_(context.metrics) {
  RouterRole* role = this;
  actor_ = context.system.spawn([role](caf::event_based_actor*) -> caf::behavior {
    return {
        [role](const received<schemas::TokenBatch>& m) { role->post([role, m] { role->on_tokens(m); }); },
        [role](const received<schemas::RequestFailed>& m) { role->post([role, m] { role->on_failed(m); }); },
        [role](const received<schemas::WorkerLoad>& m) { role->post([role, m] { role->on_load(m); }); },
    };
  });
  for (MessageKind kind : {MessageKind::token_batch, MessageKind::request_failed, MessageKind::worker_load}) {
    bridge_.route(kind, actor_);
  }
  subscription_ = peers_.subscribe(
      [role](const node::PeerChange& change) { role->post([role, change] { role->on_peer_change(change); }); });
  worker_.post_after(std::chrono::seconds(1), [role] { role->watchdog(); });
  if (!options_.rpc_listen.empty()) {
    if ((options_.controller == nullptr) != (options_.stats == nullptr)) {
      throw std::invalid_argument("router role: the controller and load_stats back ends come together");
    }
    api::RpcServerOptions rpc;
    rpc.listen = options_.rpc_listen;
    rpc.admin_token = options_.admin_token;
    rpc.tls_cert_file = options_.rpc_tls_cert;
    rpc.tls_key_file = options_.rpc_tls_key;
    rpc_ = std::make_unique<api::RpcServer>(*this, rpc, options_.controller != nullptr ? this : nullptr);
    log("cluster API listening on " + rpc_->address());
  }
  if (!options_.http_listen.empty()) {
    http_api::OpenAiServerOptions h;
    h.listen = options_.http_listen;
    h.model_id = options_.model_dir.filename().string();
    if (h.model_id.empty()) h.model_id = options_.model_dir.parent_path().filename().string();
    h.api_key = options_.api_key;
    h.context_tokens = options_.max_seq_len > 0 ? options_.max_seq_len : config_.max_position_embeddings;
    http_ = std::make_unique<http_api::OpenAiServer>(*this, model::Tokenizer::load(options_.model_dir), h);
    log("HTTP API listening on " + http_->address());
  }
}

void RouterRole::stop() {
  if (stopped_.exchange(true)) return;
  stopping_ = true;
  if (rpc_) rpc_->stop_accepting();
  if (http_) http_->stop_accepting();
  peers_.unsubscribe(subscription_);
  worker_.post([this] {
    std::vector<api::RequestId> ids;
    for (const auto& [id, live] : live_) ids.push_back(id);
    for (const api::RequestId id : ids) {
      fail(id, api::GenerationError{api::ErrorKind::unavailable, "the router is shutting down; retry"}, true);
    }
  });
  worker_.stop();
  if (rpc_) {
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    while (rpc_->active_calls() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    rpc_->stop();
  }
  if (http_) http_->stop();
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  if (late_messages_ > 0) log(fmt::format("{} messages for requests that had ended were ignored", late_messages_));
}

api::RequestId RouterRole::submit(api::GenerateInput input, std::shared_ptr<api::GenerationSink> sink) {
  const api::RequestId id = next_id_++;
  const Clock::time_point now = Clock::now();
  if (stopping_) {
    metrics_.count(Outcome::rejected);
    sink->on_error(api::GenerationError{api::ErrorKind::unavailable, "the router is shutting down; retry"});
    return id;
  }
  auto task = std::make_shared<std::tuple<api::GenerateInput, std::shared_ptr<api::GenerationSink>>>(std::move(input),
                                                                                                      sink);
  if (!worker_.post([this, id, task, now] { start(id, std::move(std::get<0>(*task)), std::get<1>(*task), now); })) {
    metrics_.count(Outcome::rejected);
    sink->on_error(api::GenerationError{api::ErrorKind::unavailable, "the router is shutting down; retry"});
  }
  return id;
}

void RouterRole::cancel(api::RequestId id) {
  worker_.post([this, id] {
    const auto it = live_.find(id);
    if (it == live_.end()) return;
    send_cancel(it->second, id, schemas::CancelReason::CLIENT_GONE);
    finish(id, api::Finish::cancelled);
  });
}

void RouterRole::start(api::RequestId id, api::GenerateInput input, std::shared_ptr<api::GenerationSink> sink,
                       Clock::time_point received) {
  auto refuse = [&](api::ErrorKind kind, std::string message) {
    const bool refused = kind == api::ErrorKind::overloaded || kind == api::ErrorKind::unavailable;
    {
      std::lock_guard lock(status_mutex_);
      (refused ? refused_ : failed_) += 1;
    }
    metrics_.count(refused ? Outcome::rejected : Outcome::error);  // as status() counts them
    sink->on_error(api::GenerationError{kind, std::move(message)});
  };
  if (stopping_) return refuse(api::ErrorKind::unavailable, "the router is shutting down; retry");
  std::vector<std::int32_t> prompt;
  try {
    prompt = api::prompt_token_ids(tokenizer_, input);
    gpu::validate(input.sampler);
  } catch (const std::invalid_argument& e) {
    return refuse(api::ErrorKind::bad_request, e.what());
  }
  const std::int64_t context = options_.max_seq_len > 0 ? options_.max_seq_len : config_.max_position_embeddings;
  if (input.max_tokens < 1) {
    return refuse(api::ErrorKind::bad_request, fmt::format("max_tokens must be >= 1 (got {})", input.max_tokens));
  }
  if (static_cast<std::int64_t>(prompt.size()) + input.max_tokens > context) {
    return refuse(api::ErrorKind::bad_request,
                  fmt::format("prompt ({} tokens) + max_tokens ({}) exceeds the model's context of {} tokens",
                              prompt.size(), input.max_tokens, context));
  }
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= config_.vocab_size) {
      return refuse(api::ErrorKind::bad_request, fmt::format("prompt token {} at position {} is outside the vocabulary "
                                                             "[0, {})",
                                                             prompt[i], i, config_.vocab_size));
    }
  }
  const std::int64_t pages = model::KvCache::pages_for(static_cast<std::int64_t>(prompt.size()) + input.max_tokens);
  const std::optional<std::string> decode = pick_decode(pages);
  if (!decode) return refuse(api::ErrorKind::unavailable, "no decode node is up and undrained; retry later");
  const std::optional<std::string> prefill = pick_prefill();
  if (!prefill) return refuse(api::ErrorKind::unavailable, "no prefill node is up and undrained; retry later");
  const auto prefill_peer = peers_.find(*prefill);
  const config::NodeConfig* decode_node = cluster_.find_node(*decode);
  if (!prefill_peer || decode_node == nullptr) return refuse(api::ErrorKind::unavailable, "a worker just went away; retry");

  capnp::MallocMessageBuilder message;
  auto job = message.initRoot<schemas::PrefillJob>();
  job.setRequestId(id);
  auto ids = job.initPromptTokens(static_cast<unsigned>(prompt.size()));
  for (unsigned i = 0; i < prompt.size(); ++i) ids.set(i, prompt[i]);
  node::set_sampling(job.initSampling(), input.sampler, input.max_tokens, input.stop_at_eos);
  node::set_node_ref(job.initDecode(), *decode, decode_node->transport_address());
  node::set_node_ref(job.initRouter(), me_.name, bridge_.transport().local_address());
  job.setTimeoutMs(0);
  bridge_.send<schemas::PrefillJob>(*prefill_peer, message);

  const Clock::time_point now = Clock::now();
  Live live{sink,        model::StreamDecoder(tokenizer_, /*skip_special_tokens=*/true),
            input.client_request_id, *prefill, *decode, static_cast<std::uint32_t>(prompt.size()), 0, {}, received,
            now,         {},          now};
  live_.emplace(id, std::move(live));
  RouterMetrics::observe(metrics_.queue_time, seconds_between(received, now));
  if (metrics_.prompt_tokens != nullptr) metrics_.prompt_tokens->Increment(static_cast<double>(prompt.size()));
  std::lock_guard lock(status_mutex_);
  DecodeLoad& load = loads_[*decode];
  load.pages_sent_since_report += pages;
  ++load.live;
  ++in_flight_;
}

std::optional<std::string> RouterRole::pick_decode(std::int64_t pages) {
  const std::vector<std::string> up = peers_.with_role(config::Role::decode);
  if (up.empty()) return std::nullopt;
  std::lock_guard lock(status_mutex_);
  // Estimated free pages: the last report minus what was sent since. Unreported nodes rank as
  // empty pools of unknown size (they just joined), after nodes known to have room.
  std::optional<std::string> best;
  std::tuple<bool, std::int64_t, std::int64_t, std::size_t> best_key{};
  for (std::size_t k = 0; k < up.size(); ++k) {
    const std::size_t i = (decode_turn_ + k) % up.size();
    if (draining(up[i])) continue;
    const DecodeLoad& load = loads_[up[i]];
    const std::int64_t free = load.reported ? load.free_pages - load.pages_sent_since_report : 0;
    const bool fits = !load.reported || free >= pages;
    const auto key = std::make_tuple(fits, load.reported ? free : 0, -load.live, up.size() - k);
    if (!best || key > best_key) {
      best = up[i];
      best_key = key;
    }
  }
  ++decode_turn_;
  return best;
}

std::optional<std::string> RouterRole::pick_prefill() {
  std::vector<std::string> up = peers_.with_role(config::Role::prefill);
  {
    std::lock_guard lock(status_mutex_);
    std::erase_if(up, [this](const std::string& n) { return draining(n); });
  }
  if (up.empty()) return std::nullopt;
  return up[prefill_turn_++ % up.size()];
}

void RouterRole::on_tokens(const received<schemas::TokenBatch>& m) {
  const auto b = m.reader();
  const auto it = live_.find(b.getRequestId());
  if (it == live_.end()) {
    ++late_messages_;
    return;
  }
  const std::vector<std::int32_t> tokens = node::to_vector(b.getTokens());
  apply(it->first, it->second, b.getFirstIndex(), tokens, b.getFinishReason());
}

void RouterRole::apply(api::RequestId id, Live& live, std::uint32_t first_index,
                       const std::vector<std::int32_t>& tokens, schemas::FinishReason finish_reason) {
  live.last_progress = Clock::now();
  if (first_index > live.next_index) {
    live.early[first_index] = Chunk{tokens, finish_reason};
    return;
  }
  // Skip what the client already has (a duplicate), then stream the rest.
  const std::size_t skip = std::min<std::size_t>(live.next_index - first_index, tokens.size());
  const std::span<const std::int32_t> fresh = std::span(tokens).subspan(skip);
  if (!fresh.empty()) {
    const Clock::time_point now = Clock::now();
    // Every token but a request's first is one inter-token sample; a chunk of n (MTP, or a batch
    // that waited) spreads its gap over its n tokens.
    std::size_t later = fresh.size();
    if (live.next_index == 0) {
      live.first_token = now;
      live.last_token = now;
      RouterMetrics::observe(metrics_.ttft, seconds_between(live.received, now));
      --later;
    }
    if (metrics_.itl != nullptr && later > 0) {
      const double gap = seconds_between(live.last_token, now) / static_cast<double>(later);
      for (std::size_t i = 0; i < later; ++i) metrics_.itl->Observe(gap);
    }
    live.last_token = now;
    if (metrics_.generation_tokens != nullptr) metrics_.generation_tokens->Increment(static_cast<double>(fresh.size()));
    std::string text;
    for (const std::int32_t token : fresh) {
      text += live.decoder.push_model_token(token);
    }
    live.next_index += static_cast<std::uint32_t>(fresh.size());
    live.sink->on_tokens(fresh, text);
  }
  switch (finish_reason) {
    case schemas::FinishReason::NONE: break;
    case schemas::FinishReason::STOP: return finish(id, api::Finish::stop);
    case schemas::FinishReason::LENGTH: return finish(id, api::Finish::length);
    case schemas::FinishReason::CANCELLED: return finish(id, api::Finish::cancelled);
    case schemas::FinishReason::ERROR:
      return fail(id, api::GenerationError{api::ErrorKind::internal, "the worker ended the request with an error"},
                  true);
  }
  if (!live.early.empty() && live.early.begin()->first <= live.next_index) {
    auto node = live.early.extract(live.early.begin());
    apply(id, live, node.key(), node.mapped().tokens, node.mapped().finish);
  }
}

void RouterRole::finish(api::RequestId id, api::Finish how) {
  const auto it = live_.find(id);
  if (it == live_.end()) return;
  Live& l = it->second;
  const std::string tail = l.decoder.flush();
  if (!tail.empty()) l.sink->on_tokens({}, tail);
  const Clock::time_point now = Clock::now();
  api::GenerationSummary summary;
  summary.id = id;
  summary.client_request_id = l.client_request_id;
  summary.finish = how;
  summary.prompt_tokens = l.prompt_tokens;
  summary.completion_tokens = l.next_index;
  summary.queue_ms = ms_between(l.received, l.sent);
  summary.ttft_ms = l.next_index > 0 ? ms_between(l.received, l.first_token) : 0.0;
  summary.total_ms = ms_between(l.received, now);
  metrics_.count(how == api::Finish::cancelled ? Outcome::cancelled : Outcome::ok);
  RouterMetrics::observe(metrics_.e2e, seconds_between(l.received, now));
  const std::shared_ptr<api::GenerationSink> sink = l.sink;
  {
    std::lock_guard lock(status_mutex_);
    (how == api::Finish::cancelled ? cancelled_ : completed_) += 1;
    --in_flight_;
    --loads_[l.decode].live;
  }
  live_.erase(it);
  sink->on_done(summary);
  check_drains();
}

void RouterRole::fail(api::RequestId id, const api::GenerationError& error, bool tell_workers, Outcome outcome) {
  const auto it = live_.find(id);
  if (it == live_.end()) return;
  metrics_.count(outcome);
  if (tell_workers) send_cancel(it->second, id, schemas::CancelReason::SHUTDOWN);
  const std::shared_ptr<api::GenerationSink> sink = it->second.sink;
  {
    std::lock_guard lock(status_mutex_);
    ++failed_;
    --in_flight_;
    --loads_[it->second.decode].live;
  }
  live_.erase(it);
  sink->on_error(error);
  check_drains();
}

void RouterRole::send_cancel(const Live& live, api::RequestId id, schemas::CancelReason reason) {
  for (const std::string* node : {&live.prefill, &live.decode}) {
    const auto peer = peers_.find(*node);
    if (!peer) continue;
    capnp::MallocMessageBuilder message;
    auto c = message.initRoot<schemas::CancelRequest>();
    c.setRequestId(id);
    c.setReason(reason);
    bridge_.send<schemas::CancelRequest>(*peer, message);
  }
}

void RouterRole::on_failed(const received<schemas::RequestFailed>& m) {
  const auto f = m.reader();
  const auto it = live_.find(f.getRequestId());
  if (it == live_.end()) {
    ++late_messages_;
    return;
  }
  api::ErrorKind kind = api::ErrorKind::internal;
  switch (f.getCode()) {
    case schemas::FailureCode::OVERLOADED:
    case schemas::FailureCode::KV_EXHAUSTED: kind = api::ErrorKind::overloaded; break;
    case schemas::FailureCode::WORKER_LOST: kind = api::ErrorKind::unavailable; break;
    case schemas::FailureCode::BAD_REQUEST: kind = api::ErrorKind::bad_request; break;
    case schemas::FailureCode::TIMEOUT:
    case schemas::FailureCode::INTERNAL: kind = api::ErrorKind::internal; break;
  }
  if (f.getRetryable() && kind == api::ErrorKind::internal) kind = api::ErrorKind::unavailable;
  fail(it->first, api::GenerationError{kind, f.getMessage()}, true);
}

void RouterRole::on_load(const received<schemas::WorkerLoad>& m) {
  const std::string name = peers_.name_of(m.from);
  if (name.empty()) return;
  const auto w = m.reader();
  std::lock_guard lock(status_mutex_);
  DecodeLoad& load = loads_[name];
  load.reported = true;
  load.free_pages = w.getFreeKvPages();
  load.total_pages = w.getTotalKvPages();
  load.running = w.getRunningRequests();
  load.waiting = w.getWaitingRequests();
  load.pages_sent_since_report = 0;
}

void RouterRole::on_peer_change(const node::PeerChange& change) {
  if (change.up) return;
  std::vector<api::RequestId> lost;
  for (const auto& [id, l] : live_) {
    if (l.decode == change.name || (l.prefill == change.name && l.next_index == 0)) lost.push_back(id);
  }
  if (!lost.empty()) {
    log(fmt::format("node {} {}: failing its {} request(s)", change.name, change.graceful ? "left" : "was lost",
                    lost.size()));
  }
  for (const api::RequestId id : lost) {
    fail(id,
         api::GenerationError{api::ErrorKind::unavailable,
                              fmt::format("worker node {} {} ({}); retry the request", change.name,
                                          change.graceful ? "left" : "was lost", change.reason)},
         true);
  }
  std::lock_guard lock(status_mutex_);
  if (const auto it = loads_.find(change.name); it != loads_.end()) it->second.reported = false;
}

void RouterRole::watchdog() {
  const Clock::time_point now = Clock::now();
  std::vector<api::RequestId> stalled;
  for (const auto& [id, l] : live_) {
    if (now - l.last_progress > options_.stall_timeout) stalled.push_back(id);
  }
  for (const api::RequestId id : stalled) {
    const Live& l = live_.at(id);
    fail(id,
         api::GenerationError{api::ErrorKind::unavailable,
                              fmt::format("no progress for {} ms (prefill {}, decode {}); retry the request",
                                          options_.stall_timeout.count(), l.prefill, l.decode)},
         true, Outcome::timeout);
  }
  worker_.post_after(std::chrono::seconds(1), [this] { watchdog(); });
}

api::StatusSnapshot RouterRole::status() {
  api::StatusSnapshot s;
  s.model_name = options_.model_dir.filename().string();
  if (s.model_name.empty()) s.model_name = options_.model_dir.parent_path().filename().string();
  s.backend = options_.backend_name;
  s.numerics = options_.numerics;
  s.uptime_s = std::chrono::duration<double>(Clock::now() - started_).count();
  s.mtp = cluster_.decode.mtp;
  for (const config::NodeConfig& n : cluster_.nodes) {
    api::NodeInfo info;
    info.name = n.name;
    for (config::Role r : n.roles) info.roles.emplace_back(config::role_name(r));
    if (n.name != me_.name && !peers_.find(n.name)) {
      info.health = api::NodeInfo::Health::down;
      info.detail = "not connected";
    }
    s.nodes.push_back(std::move(info));
  }
  std::lock_guard lock(status_mutex_);
  for (api::NodeInfo& info : s.nodes) {
    if (!draining(info.name)) continue;
    info.draining = true;
    if (info.detail.empty()) info.detail = "drained: gets no new requests";
  }
  std::int64_t decode_nodes = 0;
  for (const auto& [name, load] : loads_) {
    if (!load.reported) continue;
    ++decode_nodes;
    s.running += load.running;
    s.waiting += load.waiting;
    s.kv_pages_free += load.free_pages;
    s.kv_pages_total += load.total_pages;
  }
  s.kv_pages_used = s.kv_pages_total - s.kv_pages_free;
  s.max_batch = decode_nodes * cluster_.decode.max_batch;
  s.completed = completed_;
  s.cancelled = cancelled_;
  s.failed = failed_;
  s.refused = refused_;
  return s;
}

bool RouterRole::draining(const std::string& node) const { return draining_.count(node) != 0; }

api::OperatorError RouterRole::no_controller() const {
  return api::OperatorError(api::ErrorKind::unavailable,
                            fmt::format("node {} runs no rebalancing controller: operator calls need expert hosts and "
                                        "the controller and load_stats roles on the router's node",
                                        me_.name));
}

controller::ControllerRole& RouterRole::controller() const {
  if (options_.controller == nullptr) throw no_controller();
  return *options_.controller;
}

api::ExpertLoadInfo RouterRole::expert_load() {
  const balance::ExpertPlacement placement = controller().placement();
  const load_stats::LoadSnapshot snapshot = options_.stats->snapshot();
  api::ExpertLoadInfo out;
  out.window_s = snapshot.window_s;
  out.reports = snapshot.reports;
  out.experts = placement.experts;
  const int slots_per_host = placement.slots / static_cast<int>(placement.hosts.size());
  for (int l = 0; l < static_cast<int>(placement.phy2log.size()); ++l) {
    if (!placement.is_moe_layer(l)) continue;
    api::LayerLoadInfo layer;
    layer.layer = l;
    layer.tokens.assign(static_cast<std::size_t>(placement.experts), 0);
    if (l < snapshot.layers && snapshot.experts == placement.experts) {
      layer.tokens = snapshot.tokens[static_cast<std::size_t>(l)];
    }
    const std::vector<double> load(layer.tokens.begin(), layer.tokens.end());
    layer.balancedness =
        balance::predict_balancedness({placement.phy2log[static_cast<std::size_t>(l)]}, {load}, slots_per_host).mean;
    out.layers.push_back(std::move(layer));
  }
  for (const std::string& host : placement.hosts) {
    const auto it = snapshot.host_tokens.find(host);
    out.hosts.emplace_back(host, it == snapshot.host_tokens.end() ? 0 : it->second);
  }
  return out;
}

void RouterRole::on_controller(api::OperatorCallback<api::RoundPlan> done,
                               const std::function<void(controller::ControllerRole&, api::OperatorCallback<api::RoundPlan>)>& call) {
  if (options_.controller == nullptr) return done(no_controller());
  call(*options_.controller, std::move(done));
}

void RouterRole::plan_rebalance(api::OperatorCallback<api::RoundPlan> done) {
  on_controller(std::move(done), [](controller::ControllerRole& c, auto d) { c.plan(std::move(d)); });
}

void RouterRole::rebalance(api::OperatorCallback<api::RoundPlan> done) {
  on_controller(std::move(done), [](controller::ControllerRole& c, auto d) { c.run_round(std::nullopt, std::move(d)); });
}

void RouterRole::import_placement(balance::ExpertPlacement placement, api::OperatorCallback<api::RoundPlan> done) {
  on_controller(std::move(done), [&placement](controller::ControllerRole& c, auto d) {
    c.run_round(std::move(placement), std::move(d));
  });
}

std::int64_t RouterRole::held_by(const std::string& node) const {
  std::int64_t n = 0;
  for (const auto& [id, l] : live_) n += (l.decode == node || (l.prefill == node && l.next_index == 0)) ? 1 : 0;
  return n;
}

void RouterRole::drain(std::string node, api::OperatorCallback<api::DrainReport> done) {
  const bool posted = worker_.post([this, node, done]() mutable {
    const config::NodeConfig* n = cluster_.find_node(node);
    if (n == nullptr) {
      return done(api::OperatorError(api::ErrorKind::bad_request, fmt::format("no node named \"{}\"", node)));
    }
    if (!n->has_role(config::Role::prefill) && !n->has_role(config::Role::decode)) {
      return done(api::OperatorError(api::ErrorKind::bad_request,
                                     fmt::format("node {} runs neither prefill nor decode ({}): only workers drain", node,
                                                 config::join_roles(n->roles))));
    }
    {
      std::lock_guard lock(status_mutex_);
      for (const config::Role role : {config::Role::prefill, config::Role::decode}) {
        if (!n->has_role(role)) continue;
        bool other = false;
        for (const config::NodeConfig* o : cluster_.nodes_with(role)) other |= o->name != node && !draining(o->name);
        if (!other) {
          return done(api::OperatorError(
              api::ErrorKind::bad_request,
              fmt::format("node {} is the last {} node not drained: nothing else could serve", node, config::role_name(role))));
        }
      }
      if (draining_.insert(node).second) log(fmt::format("draining node {}", node));
    }
    Drain& d = drains_[node];
    if (d.waiters.empty()) {
      d.started = Clock::now();
      d.at_start = held_by(node);
    }
    d.waiters.push_back(std::move(done));
    check_drains();
  });
  if (!posted) done(api::OperatorError(api::ErrorKind::unavailable, "the router is shutting down"));
}

void RouterRole::check_drains() {
  for (auto it = drains_.begin(); it != drains_.end();) {
    if (held_by(it->first) > 0) {
      ++it;
      continue;
    }
    const api::DrainReport report{it->first, it->second.at_start, seconds_between(it->second.started, Clock::now())};
    log(fmt::format("node {} drained ({} requests finished in {:.3f} s)", report.node, report.requests_at_start,
                    report.seconds));
    const std::vector<api::OperatorCallback<api::DrainReport>> waiters = std::move(it->second.waiters);
    it = drains_.erase(it);
    for (const auto& w : waiters) w(report);
  }
}

void RouterRole::undrain(const std::string& node) {
  if (cluster_.find_node(node) == nullptr) {
    throw api::OperatorError(api::ErrorKind::bad_request, fmt::format("no node named \"{}\"", node));
  }
  {
    std::lock_guard lock(status_mutex_);
    if (draining_.erase(node) == 0) {
      throw api::OperatorError(api::ErrorKind::bad_request, fmt::format("node {} is not drained", node));
    }
  }
  log(fmt::format("node {} undrained: routing requests to it again", node));
  worker_.post([this, node] {
    const auto it = drains_.find(node);
    if (it == drains_.end()) return;
    const std::vector<api::OperatorCallback<api::DrainReport>> waiters = std::move(it->second.waiters);
    drains_.erase(it);
    for (const auto& w : waiters) {
      w(api::OperatorError(api::ErrorKind::unavailable, fmt::format("node {} was undrained before it emptied", node)));
    }
  });
}

}  // namespace

std::unique_ptr<node::NodeRole> make_router_role(node::RoleContext& context, RouterRoleOptions options) {
  return std::make_unique<RouterRole>(context, std::move(options));
}

}  // namespace sy::actors::router
