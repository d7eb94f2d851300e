#include "actors/decode/decode_role.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors/dispatch/remote_experts.hpp"
#include "actors/messages.hpp"
#include "actors/node/serving_wire.hpp"
#include "model/decode_batcher.hpp"
#include "model/kv_transfer.hpp"
#include "model/serving_model.hpp"
#include "monitoring/metrics.hpp"
#include "transport/task_thread.hpp"

namespace sy::actors::decode {
namespace {

namespace tr = sy::transport;
using Clock = std::chrono::steady_clock;
using schemas::MessageKind;

// The decode node's serving metrics (monitoring/metrics.hpp), made once; null pointers (no
// registry) count nothing. Only the worker thread sets them (after each step and each load
// report), so the gauges show the batcher as it stood then.
struct DecodeMetrics {
  explicit DecodeMetrics(monitoring::Registry* registry) {
    if (registry == nullptr) return;
    using monitoring::Metric;
    running = &registry->gauge(Metric::requests_running).Add({});
    waiting = &registry->gauge(Metric::requests_waiting).Add({});
    pages_used = &registry->gauge(Metric::kv_pages_used).Add({});
    pages_free = &registry->gauge(Metric::kv_pages_free).Add({});
    mtp_drafts = &registry->counter(Metric::mtp_draft_tokens).Add({});
    mtp_accepted = &registry->counter(Metric::mtp_accepted_tokens).Add({});
  }
  bool enabled() const { return running != nullptr; }

  prometheus::Gauge* running = nullptr;
  prometheus::Gauge* waiting = nullptr;
  prometheus::Gauge* pages_used = nullptr;
  prometheus::Gauge* pages_free = nullptr;
  prometheus::Counter* mtp_drafts = nullptr;
  prometheus::Counter* mtp_accepted = nullptr;
};

class DecodeRole final : public node::NodeRole {
 public:
  DecodeRole(node::RoleContext& context, DecodeRoleOptions options);
  ~DecodeRole() override { stop(); }

  std::string name() const override { return "decode"; }
  void stop() override;

  // From the actor (any thread): runs `task` on the worker thread.
  void post(std::function<void()> task) { worker_.post(std::move(task)); }

  // ---- Worker thread only.
  void on_reserve(const received<schemas::KvReserveRequest>& m);
  void on_hand_off(const received<schemas::KvHandOff>& m);
  void on_release(const received<schemas::KvRelease>& m);
  void on_cancel(const received<schemas::CancelRequest>& m);
  // Any thread: expert combines and host changes go straight to the executor.
  void on_combine(const received<schemas::ExpertCombine>& m) {
    if (experts_) experts_->on_combine(m);
  }
  void experts_peer_change(const node::PeerChange& change) {
    if (experts_) experts_->on_peer_change(change);
  }
  // A migration step from the controller: a commit switches the experts' placement.
  void on_placement(const received<schemas::PlacementUpdate>& m) { experts_->on_placement(m); }

 private:
  struct Reservation {
    std::uint64_t id = 0;  // KvGrant.reservationId
    std::string prefill;   // node that asked (and will put)
    std::string router;
    tr::PeerId prefill_peer = tr::invalid_peer;
  };
  struct Live {
    std::string router;
    std::uint32_t prompt_tokens = 0;
    std::uint32_t next_index = 1;  // completion index of the next token (prefill sent index 0)
  };

  void on_peer_change(const node::PeerChange& change);
  void kick();
  void run_step();
  void report_load();  // send_load now and again after the report interval
  void send_load();    // WorkerLoad to every router
  void update_gauges();  // running/waiting requests and KV pages into the metrics
  void expire(std::uint64_t request, std::uint64_t reservation);
  void refuse(tr::PeerId to, std::uint64_t request, schemas::KvRefusalReason reason, const std::string& why);
  void send_failed(const std::string& router, std::uint64_t request, schemas::FailureCode code, bool retryable,
                   const std::string& why);
  void unknown(const char* kind, std::uint64_t request);
  // engine_options() plus the KV arena from the transport (arena_region_).
  model::EngineOptions engine_options_with_arena();
  void log(const std::string& line) const {
    std::fprintf(stderr, "switchyard node %s: decode: %s\n", me_.name.c_str(), line.c_str());
  }

  const config::NodeConfig& me_;
  node::TransportBridge& bridge_;
  node::PeerDirectory& peers_;
  DecodeRoleOptions options_;
  // The whole KV arena, allocated by the transport (the fastest target for the prefill puts) and
  // registered; before model_, so it outlives the cache that uses it.
  std::unique_ptr<tr::MemoryRegion> arena_region_;
  std::unique_ptr<dispatch::RemoteExpertExecutor> experts_;  // null: experts run in this process
  model::ServingModel model_;
  model::DecodeBatcher batcher_;
  node::LogitDump dump_;
  const DecodeMetrics metrics_;
  caf::actor actor_;
  std::uint64_t subscription_ = 0;

  // Worker thread only.
  std::unordered_map<std::uint64_t, Reservation> reservations_;  // by request id
  std::unordered_map<std::uint64_t, Live> live_;                 // adopted, by request id
  std::uint64_t next_reservation_ = 1;
  bool step_posted_ = false;
  std::atomic<std::uint64_t> unknown_messages_{0};
  std::atomic<bool> stopped_{false};

  tr::TaskThread worker_;  // last: stopped first, while everything it touches is alive
};

model::EngineOptions engine_options(const DecodeRoleOptions& o) {
  model::EngineOptions e;
  e.numerics = o.numerics;
  e.kv_pages = o.kv_pages;
  e.max_seqs = o.max_batch + o.max_waiting;
  e.mtp = o.mtp;
  e.two_micro_batches = o.two_micro_batches;
  e.max_seq_len = o.max_seq_len;
  return e;
}

model::BatcherOptions batcher_options(const DecodeRoleOptions& o) {
  model::BatcherOptions b;
  b.max_running = o.max_batch;
  b.max_waiting = o.max_waiting;
  b.mtp = o.mtp;
  b.keep_logits = !o.dump_logits_dir.empty();
  return b;
}

DecodeRoleOptions checked(DecodeRoleOptions o) {
  if (o.backend == nullptr) throw std::invalid_argument("decode role: no kernel backend given");
  return o;
}

DecodeRole::DecodeRole(node::RoleContext& context, DecodeRoleOptions options)
    : me_(context.me),
      bridge_(context.bridge),
      peers_(context.peers),
      options_(checked(std::move(options))),
      experts_(dispatch::make_remote_experts(context, options_.expert_placement, options_.backend, options_.numerics)),
      model_(options_.model_dir, *options_.backend, engine_options_with_arena(), experts_.get()),
      batcher_(model_.engine(), batcher_options(options_)),
      dump_(options_.dump_logits_dir, model_.config().vocab_size),
      metrics_(context.metrics) {
  const std::span<std::byte> arena = model_.engine().kv_arena();
  DecodeRole* role = this;
  actor_ = context.system.spawn([role](caf::event_based_actor*) -> caf::behavior {
    return {
        [role](const received<schemas::KvReserveRequest>& m) { role->post([role, m] { role->on_reserve(m); }); },
        [role](const received<schemas::KvHandOff>& m) { role->post([role, m] { role->on_hand_off(m); }); },
        [role](const received<schemas::KvRelease>& m) { role->post([role, m] { role->on_release(m); }); },
        [role](const received<schemas::CancelRequest>& m) { role->post([role, m] { role->on_cancel(m); }); },
        // Not posted: the worker thread is blocked inside the engine step waiting for it.
        [role](const received<schemas::ExpertCombine>& m) { role->on_combine(m); },
        // Not posted either: a new placement applies from the next layer call on.
        [role](const received<schemas::PlacementUpdate>& m) { role->on_placement(m); },
    };
  });
  for (MessageKind kind :
       {MessageKind::kv_reserve_request, MessageKind::kv_hand_off, MessageKind::kv_release, MessageKind::cancel_request}) {
    bridge_.route(kind, actor_);
  }
  if (experts_) {
    bridge_.route(MessageKind::expert_combine, actor_);
    bridge_.route(MessageKind::placement_update, actor_);
  }
  subscription_ =
      peers_.subscribe([role](const node::PeerChange& change) {
        role->experts_peer_change(change);  // at once: a layer call may be waiting on that host
        role->post([role, change] { role->on_peer_change(change); });
      });
  worker_.post_after(options_.load_report_interval, [role] { role->report_load(); });
  log(fmt::format("{} KV pages per layer ({} MiB registered), batch {}, MTP {}", options_.kv_pages,
                  arena.size() >> 20, options_.max_batch, options_.mtp ? "on" : "off"));
}

model::EngineOptions DecodeRole::engine_options_with_arena() {
  model::EngineOptions e = engine_options(options_);
  e.kv_arena_provider = [this](std::size_t bytes) {
    arena_region_ = bridge_.transport().allocate_memory(bytes);
    return arena_region_->data();
  };
  return e;
}

void DecodeRole::stop() {
  if (stopped_.exchange(true)) return;
  peers_.unsubscribe(subscription_);
  if (experts_) experts_->close();  // a step waiting on expert hosts ends now
  worker_.stop();
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  if (unknown_messages_ > 0) log(fmt::format("{} messages for unknown requests were ignored", unknown_messages_.load()));
}

void DecodeRole::unknown(const char* kind, std::uint64_t request) {
  const std::uint64_t n = ++unknown_messages_;
  if (n <= 10 || n % 1000 == 0) log(fmt::format("{} for unknown request {} ignored ({} so far)", kind, request, n));
}

void DecodeRole::refuse(tr::PeerId to, std::uint64_t request, schemas::KvRefusalReason reason, const std::string& why) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<schemas::KvReservation>();
  r.setRequestId(request);
  auto refused = r.initRefused();
  refused.setReason(reason);
  refused.setMessage(fmt::format("decode node {}: {}", me_.name, why).substr(0, schemas::limits::max_message_bytes));
  refused.setFreePages(static_cast<std::uint32_t>(model_.engine().kv_cache().free_pages()));
  bridge_.send<schemas::KvReservation>(to, message);
}

void DecodeRole::send_failed(const std::string& router, std::uint64_t request, schemas::FailureCode code,
                             bool retryable, const std::string& why) {
  const auto peer = peers_.find(router);
  if (!peer) return;
  capnp::MallocMessageBuilder message;
  auto f = message.initRoot<schemas::RequestFailed>();
  f.setRequestId(request);
  f.setCode(code);
  f.setMessage(why.substr(0, schemas::limits::max_message_bytes));
  f.setRetryable(retryable);
  f.setNode(me_.name);
  bridge_.send<schemas::RequestFailed>(*peer, message);
}

void DecodeRole::on_reserve(const received<schemas::KvReserveRequest>& m) {
  const auto req = m.reader();
  const std::uint64_t id = req.getRequestId();
  if (reservations_.count(id) != 0 || live_.count(id) != 0) {
    return refuse(m.from, id, schemas::KvRefusalReason::BAD_REQUEST, fmt::format("request {} already holds pages here", id));
  }
  model::AdmitResult r;
  try {
    r = batcher_.reserve(id, req.getPromptTokens(), req.getMaxTokens());
  } catch (const std::invalid_argument& e) {
    return refuse(m.from, id, schemas::KvRefusalReason::TOO_LONG, e.what());
  }
  if (!r.admitted()) return refuse(m.from, id, schemas::KvRefusalReason::KV_EXHAUSTED, r.message);

  const model::KvCache& cache = model_.engine().kv_cache();
  const model::ModelConfig& config = model_.config();
  Reservation reservation{next_reservation_++, peers_.name_of(m.from), req.getRouter().getName(), m.from};
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<schemas::KvReservation>();
  out.setRequestId(id);
  auto grant = out.initGranted();
  grant.setReservationId(reservation.id);
  auto pages = grant.initPageIds(static_cast<unsigned>(r.pages.size()));
  for (unsigned i = 0; i < r.pages.size(); ++i) pages.set(i, r.pages[i]);
  grant.setPoolPages(static_cast<std::uint32_t>(cache.num_pages()));
  grant.setPageTokens(static_cast<std::uint32_t>(gpu::kMlaPageSize));
  grant.setLatentDim(static_cast<std::uint32_t>(config.kv_lora_rank));
  grant.setRopeDim(static_cast<std::uint32_t>(config.qk_rope_head_dim));
  grant.setDtype(cache.options().dtype == gpu::KvCacheDtype::bf16 ? schemas::KvDtype::BF16 : schemas::KvDtype::FP32);
  grant.setTokenBytes(static_cast<std::uint32_t>(cache.token_bytes()));
  grant.setMainLayers(static_cast<std::uint16_t>(config.num_hidden_layers));
  grant.setMtpLayers(static_cast<std::uint16_t>(cache.num_layers() - config.num_hidden_layers));
  auto pools = grant.initPools(static_cast<unsigned>(cache.num_layers()));
  for (unsigned l = 0; l < pools.size(); ++l) {
    pools[l].setRemoteBase(arena_region_->remote_address() + l * static_cast<std::uint64_t>(cache.layer_bytes()));
    pools[l].setKeyIndex(0);
  }
  const tr::Bytes key = arena_region_->packed_key();
  grant.initRemoteKeys(1).set(0, capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
  grant.setExpiresInMs(static_cast<std::uint32_t>(options_.reservation_expiry.count()));
  bridge_.send<schemas::KvReservation>(m.from, message);

  const std::uint64_t reservation_id = reservation.id;
  reservations_.emplace(id, std::move(reservation));
  worker_.post_after(options_.reservation_expiry, [this, id, reservation_id] { expire(id, reservation_id); });
}

void DecodeRole::expire(std::uint64_t request, std::uint64_t reservation) {
  const auto it = reservations_.find(request);
  if (it == reservations_.end() || it->second.id != reservation) return;
  batcher_.release(request);
  log(fmt::format("reservation {} of request {} expired without a hand-off; pages freed", reservation, request));
  node::send_kv_release(bridge_, it->second.prefill_peer, request, reservation, schemas::KvReleaseReason::EXPIRED,
               fmt::format("decode node {}: no hand-off within {} ms", me_.name, options_.reservation_expiry.count()));
  reservations_.erase(it);
}

void DecodeRole::on_hand_off(const received<schemas::KvHandOff>& m) {
  const auto h = m.reader();
  const std::uint64_t id = h.getRequestId();
  const auto it = reservations_.find(id);
  if (it == reservations_.end() || it->second.id != h.getReservationId()) {
    unknown("KvHandOff", id);
    // The pages may already belong to another request: the late hand-off cannot be continued.
    send_failed(h.getRouter().getName(), id, schemas::FailureCode::KV_EXHAUSTED, true,
                fmt::format("decode node {}: hand-off for reservation {} arrived after it was released", me_.name,
                            h.getReservationId()));
    return;
  }
  Reservation reservation = std::move(it->second);
  reservations_.erase(it);

  const model::KvCache& cache = model_.engine().kv_cache();
  model::KvHandoff handoff;
  handoff.prompt_tokens = h.getPromptTokens();
  handoff.layers = cache.num_layers();
  handoff.token_bytes = cache.token_bytes();
  handoff.bytes_written = static_cast<std::int64_t>(h.getBytesWritten());
  handoff.checksum = h.getChecksum();
  handoff.first_token = h.getFirstToken();
  handoff.mtp_length = h.getMtpLength();
  for (const float v : h.getLastHidden()) handoff.last_hidden.push_back(v);
  const auto sampling = h.getSampling();
  model::ContinuationParams params;
  params.max_tokens = sampling.getMaxTokens();
  params.sampler = node::sampler_of(sampling);
  params.stop_at_eos = sampling.getStopAtEos();
  try {
    batcher_.adopt(id, handoff, params);
  } catch (const std::exception& e) {
    // adopt released the reservation's pages.
    log(fmt::format("request {}: hand-off refused: {}", id, e.what()));
    send_failed(h.getRouter().getName(), id, schemas::FailureCode::INTERNAL, false,
                fmt::format("decode node {}: KV hand-off refused: {}", me_.name, e.what()));
    node::send_kv_release(bridge_, m.from, id, reservation.id, schemas::KvReleaseReason::DECODE_FAILED, e.what());
    return;
  }
  live_.emplace(id, Live{h.getRouter().getName(), h.getPromptTokens(), 1});
  send_load();  // routers see the pages taken at once, not at the next report
  kick();
}

void DecodeRole::on_release(const received<schemas::KvRelease>& m) {
  const auto r = m.reader();
  const auto it = reservations_.find(r.getRequestId());
  if (it == reservations_.end() || it->second.id != r.getReservationId()) return;  // idempotent
  batcher_.release(r.getRequestId());
  reservations_.erase(it);
}

void DecodeRole::on_cancel(const received<schemas::CancelRequest>& m) {
  const std::uint64_t id = m.reader().getRequestId();
  if (const auto it = reservations_.find(id); it != reservations_.end()) {
    batcher_.release(id);
    node::send_kv_release(bridge_, it->second.prefill_peer, id, it->second.id, schemas::KvReleaseReason::CANCELLED, "cancelled");
    reservations_.erase(it);
    return;
  }
  if (live_.count(id) != 0) {
    batcher_.cancel(id);  // the next step reports it cancelled
    kick();
    return;
  }
  // Nothing held: a cancel that crossed the request's end, or one for a request never seen.
}

void DecodeRole::on_peer_change(const node::PeerChange& change) {
  if (change.up) return;
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    Reservation& r = it->second;
    if (r.prefill == change.name || r.router == change.name) {
      batcher_.release(it->first);
      if (r.prefill != change.name) {
        node::send_kv_release(bridge_, r.prefill_peer, it->first, r.id, schemas::KvReleaseReason::CANCELLED, "router lost");
      }
      it = reservations_.erase(it);
    } else {
      ++it;
    }
  }
  bool cancelled = false;
  for (const auto& [id, l] : live_) {
    if (l.router == change.name) {
      batcher_.cancel(id);
      cancelled = true;
    }
  }
  if (cancelled) {
    log(fmt::format("router {} lost: cancelling its requests", change.name));
    kick();
  }
}

void DecodeRole::kick() {
  if (step_posted_) return;
  step_posted_ = worker_.post([this] {
    step_posted_ = false;
    run_step();
  });
}

void DecodeRole::run_step() {
  if (batcher_.idle()) return;
  bool ended = false;
  for (model::RequestEvent& e : batcher_.step()) {
    if (e.mtp_drafts > 0 && metrics_.enabled()) {
      metrics_.mtp_drafts->Increment(static_cast<double>(e.mtp_drafts));
      metrics_.mtp_accepted->Increment(static_cast<double>(e.mtp_accepted));
    }
    const auto it = live_.find(e.id);
    if (it == live_.end()) continue;
    Live& l = it->second;
    if (dump_.enabled() && !e.logits.empty()) {
      dump_.write(e.id, l.next_index, e.logits);
    }
    if (e.finish == model::FinishReason::failed) {
      send_failed(l.router, e.id, schemas::FailureCode::INTERNAL, false,
                  fmt::format("decode node {}: {}", me_.name, e.error));
      live_.erase(it);
      continue;
    }
    const auto router = peers_.find(l.router);
    if (!router) {
      // The router is gone: nobody reads the tokens. Stop spending steps on the request.
      if (e.finish == model::FinishReason::none) batcher_.cancel(e.id);
      if (e.finish != model::FinishReason::none) live_.erase(it);
      continue;
    }
    capnp::MallocMessageBuilder message;
    auto batch = message.initRoot<schemas::TokenBatch>();
    batch.setRequestId(e.id);
    batch.setFirstIndex(l.next_index);
    auto tokens = batch.initTokens(static_cast<unsigned>(e.tokens.size()));
    for (unsigned i = 0; i < e.tokens.size(); ++i) tokens.set(i, e.tokens[i]);
    l.next_index += static_cast<std::uint32_t>(e.tokens.size());
    switch (e.finish) {
      case model::FinishReason::none: batch.setFinishReason(schemas::FinishReason::NONE); break;
      case model::FinishReason::stop: batch.setFinishReason(schemas::FinishReason::STOP); break;
      case model::FinishReason::length: batch.setFinishReason(schemas::FinishReason::LENGTH); break;
      default: batch.setFinishReason(schemas::FinishReason::CANCELLED); break;
    }
    auto usage = batch.initUsage();
    usage.setPromptTokens(l.prompt_tokens);
    usage.setCompletionTokens(l.next_index);
    bridge_.send<schemas::TokenBatch>(*router, message);
    if (e.finish != model::FinishReason::none) {
      live_.erase(it);
      ended = true;
    }
  }
  if (ended) send_load();  // freed pages count at once for the routers' choices and status
  update_gauges();
  if (!batcher_.idle()) kick();
}

void DecodeRole::report_load() {
  send_load();
  worker_.post_after(options_.load_report_interval, [this] { report_load(); });
}

void DecodeRole::update_gauges() {
  if (!metrics_.enabled()) return;
  const model::KvCache& cache = model_.engine().kv_cache();
  metrics_.running->Set(static_cast<double>(batcher_.running()));
  metrics_.waiting->Set(static_cast<double>(batcher_.waiting()));
  metrics_.pages_free->Set(static_cast<double>(cache.free_pages()));
  metrics_.pages_used->Set(static_cast<double>(cache.num_pages() - cache.free_pages()));
}

void DecodeRole::send_load() {
  update_gauges();
  const model::KvCache& cache = model_.engine().kv_cache();
  for (const std::string& router : peers_.with_role(config::Role::router)) {
    const auto peer = peers_.find(router);
    if (!peer) continue;
    capnp::MallocMessageBuilder message;
    auto load = message.initRoot<schemas::WorkerLoad>();
    load.setMonotonicMs(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count()));
    load.setFreeKvPages(static_cast<std::uint32_t>(cache.free_pages()));
    load.setTotalKvPages(static_cast<std::uint32_t>(cache.num_pages()));
    load.setRunningRequests(static_cast<std::uint32_t>(batcher_.running()));
    load.setWaitingRequests(static_cast<std::uint32_t>(batcher_.waiting()));
    load.setQueueDepth(0);
    bridge_.send<schemas::WorkerLoad>(*peer, message);
  }
}

}  // namespace

std::unique_ptr<node::NodeRole> make_decode_role(node::RoleContext& context, DecodeRoleOptions options) {
  return std::make_unique<DecodeRole>(context, std::move(options));
}

}  // namespace sy::actors::decode
