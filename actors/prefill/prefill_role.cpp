#include "actors/prefill/prefill_role.hpp"

#include <capnp/message.h>
#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "actors/dispatch/remote_experts.hpp"
#include "actors/messages.hpp"
#include "actors/node/serving_wire.hpp"
#include "model/decode_batcher.hpp"
#include "model/kv_transfer.hpp"
#include "model/serving_model.hpp"
#include "transport/task_thread.hpp"

namespace sy::actors::prefill {
namespace {

namespace tr = sy::transport;
using schemas::MessageKind;

// Where the granted pages are in the decode worker's memory (kv.capnp KvGrant), kept alive by
// the put completions that use its keys.
struct Grant {
  std::uint64_t reservation = 0;
  std::vector<std::int32_t> pages;
  std::int64_t pool_pages = 0;
  std::vector<std::uint64_t> pool_bases;  // [layer]
  std::vector<std::uint16_t> key_index;   // [layer]
  std::vector<std::vector<std::byte>> keys;
};

// The first failure among a transfer's puts (they complete on the transport's thread).
struct TransferErrors {
  std::mutex mutex;
  std::optional<tr::Status> first;
  void record(const tr::Status& s) {
    std::lock_guard lock(mutex);
    if (!first) first = s;
  }
  std::optional<tr::Status> get() {
    std::lock_guard lock(mutex);
    return first;
  }
};

struct Job {
  tr::PeerId router_peer = tr::invalid_peer;
  std::string router;
  std::string router_address;
  std::string decode;
  tr::PeerId decode_peer = tr::invalid_peer;
  std::uint32_t prompt_tokens = 0;
  std::int64_t max_tokens = 0;
  gpu::SamplerConfig sampler;
  bool stop_at_eos = true;
  std::shared_ptr<const Grant> grant;
  std::optional<model::KvHandoff> handoff;  // once prefilled
  bool transferring = false;
  std::uint64_t generation = 0;  // of the current timer / transfer
};

class PrefillRole final : public node::NodeRole {
 public:
  PrefillRole(node::RoleContext& context, PrefillRoleOptions options);
  ~PrefillRole() override { stop(); }

  std::string name() const override { return "prefill"; }
  void stop() override;
  void post(std::function<void()> task) { worker_.post(std::move(task)); }

  // ---- Worker thread only.
  void on_job(const received<schemas::PrefillJob>& m);
  void on_reservation(const received<schemas::KvReservation>& m);
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
  void on_peer_change(const node::PeerChange& change);
  void kick();
  void run_step();
  void prefilled(std::uint64_t id, Job& job);
  void start_transfer(std::uint64_t id, Job& job);
  void finish_transfer(std::uint64_t id, std::uint64_t generation, const tr::Status& status);
  void arm_timeout(std::uint64_t id, Job& job, const char* waiting_for);
  // Ends a job: frees its prefill pages and gives its reservation back (now, or when the grant
  // arrives). `failure` set: the router is told (RequestFailed).
  struct Failure {
    schemas::FailureCode code;
    bool retryable;
    std::string message;
  };
  void end_job(std::uint64_t id, schemas::KvReleaseReason release_reason, const std::optional<Failure>& failure);
  void send_failed(tr::PeerId router, std::uint64_t request, const Failure& failure);
  void send_first_token(std::uint64_t id, const Job& job, schemas::FinishReason finish);
  void log(const std::string& line) const {
    std::fprintf(stderr, "switchyard node %s: prefill: %s\n", me_.name.c_str(), line.c_str());
  }

  const config::NodeConfig& me_;
  node::TransportBridge& bridge_;
  node::PeerDirectory& peers_;
  PrefillRoleOptions options_;
  std::unique_ptr<dispatch::RemoteExpertExecutor> experts_;  // null: experts run in this process
  model::ServingModel model_;
  model::DecodeBatcher batcher_;
  node::LogitDump dump_;
  caf::actor actor_;
  std::uint64_t subscription_ = 0;

  // Worker thread only.
  std::unordered_map<std::uint64_t, Job> jobs_;
  // Jobs that ended before decode answered their KvReserveRequest: a grant that still arrives is
  // given back at once.
  struct PendingRelease {
    schemas::KvReleaseReason reason;
    std::string decode;
  };
  std::unordered_map<std::uint64_t, PendingRelease> release_on_grant_;
  bool step_posted_ = false;
  std::uint64_t unknown_messages_ = 0;
  std::atomic<bool> stopped_{false};

  tr::TaskThread worker_;  // last: stopped first, while everything it touches is alive
};

PrefillRoleOptions checked(PrefillRoleOptions o) {
  if (o.backend == nullptr) throw std::invalid_argument("prefill role: no kernel backend given");
  return o;
}

model::EngineOptions engine_options(const PrefillRoleOptions& o) {
  model::EngineOptions e;
  e.numerics = o.numerics;
  e.kv_pages = o.kv_pages;
  e.max_seqs = o.max_batch + o.max_waiting;
  e.mtp = o.mtp;
  e.two_micro_batches = o.two_micro_batches;
  e.max_seq_len = o.max_seq_len;
  return e;
}

model::BatcherOptions batcher_options(const PrefillRoleOptions& o) {
  model::BatcherOptions b;
  b.max_running = o.max_batch;
  b.max_waiting = o.max_waiting;
  b.mtp = o.mtp;
  b.keep_logits = !o.dump_logits_dir.empty();
  return b;
}

PrefillRole::PrefillRole(node::RoleContext& context, PrefillRoleOptions options)
    : me_(context.me),
      bridge_(context.bridge),
      peers_(context.peers),
      options_(checked(std::move(options))),
      experts_(dispatch::make_remote_experts(context, options_.expert_placement, options_.backend, options_.numerics)),
      model_(options_.model_dir, *options_.backend, engine_options(options_), experts_.get()),
      batcher_(model_.engine(), batcher_options(options_)),
      dump_(options_.dump_logits_dir, model_.config().vocab_size) {
  PrefillRole* role = this;
  actor_ = context.system.spawn([role](caf::event_based_actor*) -> caf::behavior {
    return {
        [role](const received<schemas::PrefillJob>& m) { role->post([role, m] { role->on_job(m); }); },
        [role](const received<schemas::KvReservation>& m) { role->post([role, m] { role->on_reservation(m); }); },
        [role](const received<schemas::KvRelease>& m) { role->post([role, m] { role->on_release(m); }); },
        [role](const received<schemas::CancelRequest>& m) { role->post([role, m] { role->on_cancel(m); }); },
        // Not posted: the worker thread is blocked inside the engine step waiting for it.
        [role](const received<schemas::ExpertCombine>& m) { role->on_combine(m); },
        // Not posted either: a new placement applies from the next layer call on.
        [role](const received<schemas::PlacementUpdate>& m) { role->on_placement(m); },
    };
  });
  for (MessageKind kind :
       {MessageKind::prefill_job, MessageKind::kv_reservation, MessageKind::kv_release, MessageKind::cancel_request}) {
    bridge_.route(kind, actor_);
  }
  if (experts_) {
    bridge_.route(MessageKind::expert_combine, actor_);
    bridge_.route(MessageKind::placement_update, actor_);
  }
  subscription_ = peers_.subscribe(
      [role](const node::PeerChange& change) {
        role->experts_peer_change(change);  // at once: a layer call may be waiting on that host
        role->post([role, change] { role->on_peer_change(change); });
      });
  log(fmt::format("{} KV pages per layer, batch {}, MTP {}", options_.kv_pages, options_.max_batch,
                  options_.mtp ? "on" : "off"));
}

void PrefillRole::stop() {
  if (stopped_.exchange(true)) return;
  peers_.unsubscribe(subscription_);
  if (experts_) experts_->close();  // a step waiting on expert hosts ends now
  worker_.stop();
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

void PrefillRole::send_failed(tr::PeerId router, std::uint64_t request, const Failure& failure) {
  capnp::MallocMessageBuilder message;
  auto f = message.initRoot<schemas::RequestFailed>();
  f.setRequestId(request);
  f.setCode(failure.code);
  f.setMessage(failure.message.substr(0, schemas::limits::max_message_bytes));
  f.setRetryable(failure.retryable);
  f.setNode(me_.name);
  bridge_.send<schemas::RequestFailed>(router, message);
}

void PrefillRole::on_job(const received<schemas::PrefillJob>& m) {
  const auto job = m.reader();
  const std::uint64_t id = job.getRequestId();
  if (jobs_.count(id) != 0) {
    ++unknown_messages_;
    return log(fmt::format("a second PrefillJob for request {} ignored", id));
  }
  auto fail_now = [&](schemas::FailureCode code, bool retryable, std::string why) {
    send_failed(m.from, id, Failure{code, retryable, fmt::format("prefill node {}: {}", me_.name, why)});
  };
  const std::string decode = job.getDecode().getName();
  const auto decode_peer = peers_.find(decode);
  if (!decode_peer) return fail_now(schemas::FailureCode::WORKER_LOST, true, fmt::format("decode node {} is not connected", decode));

  const auto sampling = job.getSampling();
  model::GenerationRequest request;
  request.prompt = node::to_vector(job.getPromptTokens());
  request.max_tokens = sampling.getMaxTokens();
  request.sampler = node::sampler_of(sampling);
  request.stop_at_eos = sampling.getStopAtEos();
  Job j;
  j.router_peer = m.from;
  j.router = job.getRouter().getName();
  j.router_address = job.getRouter().getAddress();
  j.decode = decode;
  j.decode_peer = *decode_peer;
  j.prompt_tokens = static_cast<std::uint32_t>(request.prompt.size());
  j.max_tokens = request.max_tokens;
  j.sampler = request.sampler;
  j.stop_at_eos = request.stop_at_eos;
  try {
    const model::AdmitResult admitted = batcher_.admit(id, std::move(request), /*prefill_only=*/true);
    if (!admitted.admitted()) return fail_now(schemas::FailureCode::OVERLOADED, true, admitted.message);
  } catch (const std::invalid_argument& e) {
    return fail_now(schemas::FailureCode::BAD_REQUEST, false, e.what());
  }

  capnp::MallocMessageBuilder message;
  auto reserve = message.initRoot<schemas::KvReserveRequest>();
  reserve.setRequestId(id);
  reserve.setPromptTokens(j.prompt_tokens);
  reserve.setMaxTokens(static_cast<std::uint32_t>(j.max_tokens));
  node::set_node_ref(reserve.initRouter(), j.router, j.router_address);
  bridge_.send<schemas::KvReserveRequest>(j.decode_peer, message);

  Job& stored = jobs_.emplace(id, std::move(j)).first->second;
  arm_timeout(id, stored, "decode's KvReservation");
  kick();
}

void PrefillRole::arm_timeout(std::uint64_t id, Job& job, const char* waiting_for) {
  const std::uint64_t generation = ++job.generation;
  const std::string what = waiting_for;
  worker_.post_after(options_.transfer_timeout, [this, id, generation, what] {
    const auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.generation != generation) return;
    const Job& j = it->second;
    // Still prefilling is not a timeout: the prompt is long or the batch busy; the grant's own
    // expiry on the decode side bounds how long its pages wait.
    if (!j.transferring && j.grant) return;
    end_job(id, schemas::KvReleaseReason::PREFILL_FAILED,
            Failure{schemas::FailureCode::WORKER_LOST, true,
                    fmt::format("prefill node {}: no {} from decode node {} within {} ms", me_.name, what, j.decode,
                                options_.transfer_timeout.count())});
  });
}

void PrefillRole::on_reservation(const received<schemas::KvReservation>& m) {
  const auto r = m.reader();
  const std::uint64_t id = r.getRequestId();
  if (const auto late = release_on_grant_.find(id); late != release_on_grant_.end()) {
    if (r.isGranted()) node::send_kv_release(bridge_, m.from, id, r.getGranted().getReservationId(), late->second.reason, "request ended");
    release_on_grant_.erase(late);
    return;
  }
  const auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.grant) {
    ++unknown_messages_;
    if (r.isGranted()) node::send_kv_release(bridge_, m.from, id, r.getGranted().getReservationId(), schemas::KvReleaseReason::CANCELLED,
                                    "no such prefill job");
    return;
  }
  Job& job = it->second;
  if (r.isRefused()) {
    const auto refusal = r.getRefused();
    const bool retryable = refusal.getReason() != schemas::KvRefusalReason::TOO_LONG &&
                           refusal.getReason() != schemas::KvRefusalReason::BAD_REQUEST;
    const schemas::FailureCode code = refusal.getReason() == schemas::KvRefusalReason::TOO_LONG
                                          ? schemas::FailureCode::BAD_REQUEST
                                          : schemas::FailureCode::KV_EXHAUSTED;
    return end_job(id, schemas::KvReleaseReason::CANCELLED, Failure{code, retryable, refusal.getMessage()});
  }
  const auto g = r.getGranted();
  const model::KvCache& cache = model_.engine().kv_cache();
  auto grant = std::make_shared<Grant>();
  grant->reservation = g.getReservationId();
  grant->pages = node::to_vector(g.getPageIds());
  grant->pool_pages = g.getPoolPages();
  for (const auto pool : g.getPools()) {
    grant->pool_bases.push_back(pool.getRemoteBase());
    grant->key_index.push_back(pool.getKeyIndex());
  }
  for (const auto key : g.getRemoteKeys()) {
    grant->keys.emplace_back(reinterpret_cast<const std::byte*>(key.begin()),
                             reinterpret_cast<const std::byte*>(key.end()));
  }
  job.grant = grant;
  // The decode cache must have exactly this cache's layout: the bytes move unchanged.
  std::string mismatch;
  if (g.getTokenBytes() != cache.token_bytes()) {
    mismatch = fmt::format("token bytes {} (here {})", g.getTokenBytes(), cache.token_bytes());
  } else if (std::int64_t{g.getMainLayers()} + g.getMtpLayers() != cache.num_layers()) {
    mismatch = fmt::format("{} + {} layers (here {})", g.getMainLayers(), g.getMtpLayers(), cache.num_layers());
  } else if (g.getPageTokens() != gpu::kMlaPageSize) {
    mismatch = fmt::format("{} tokens per page (here {})", g.getPageTokens(), gpu::kMlaPageSize);
  }
  if (!mismatch.empty()) {
    return end_job(id, schemas::KvReleaseReason::PREFILL_FAILED,
                   Failure{schemas::FailureCode::INTERNAL, false,
                           fmt::format("prefill node {}: decode node {} grants a different KV layout: {}", me_.name,
                                       job.decode, mismatch)});
  }
  if (job.handoff) start_transfer(id, job);
}

void PrefillRole::on_release(const received<schemas::KvRelease>& m) {
  const auto r = m.reader();
  const auto it = jobs_.find(r.getRequestId());
  if (it == jobs_.end() || !it->second.grant || it->second.grant->reservation != r.getReservationId()) return;
  // Decode gave the reservation up (expired, failed): the pages are no longer ours to write.
  Job& job = it->second;
  job.grant.reset();
  end_job(r.getRequestId(), schemas::KvReleaseReason::CANCELLED,
          Failure{schemas::FailureCode::KV_EXHAUSTED, true,
                  fmt::format("decode node {} released the reservation: {}", job.decode, std::string(r.getMessage()))});
}

void PrefillRole::on_cancel(const received<schemas::CancelRequest>& m) {
  const std::uint64_t id = m.reader().getRequestId();
  if (jobs_.count(id) == 0) return;  // finished, or never seen: idempotent
  end_job(id, schemas::KvReleaseReason::CANCELLED, std::nullopt);
}

void PrefillRole::on_peer_change(const node::PeerChange& change) {
  if (change.up) return;
  std::vector<std::uint64_t> lost_decode, lost_router;
  for (const auto& [id, job] : jobs_) {
    if (job.decode == change.name) lost_decode.push_back(id);
    if (job.router == change.name) lost_router.push_back(id);
  }
  for (const std::uint64_t id : lost_decode) {
    jobs_.at(id).grant.reset();  // nothing to give back to a dead node
    end_job(id, schemas::KvReleaseReason::PREFILL_FAILED,
            Failure{schemas::FailureCode::WORKER_LOST, true,
                    fmt::format("decode node {} was lost: {}", change.name, change.reason)});
  }
  for (const std::uint64_t id : lost_router) {
    if (jobs_.count(id) != 0) end_job(id, schemas::KvReleaseReason::CANCELLED, std::nullopt);
  }
  // A dead decode node grants nothing more.
  std::erase_if(release_on_grant_, [&](const auto& entry) { return entry.second.decode == change.name; });
}

void PrefillRole::end_job(std::uint64_t id, schemas::KvReleaseReason release_reason,
                          const std::optional<Failure>& failure) {
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  if (failure) {
    log(fmt::format("request {} failed: {}", id, failure->message));
    send_failed(job.router_peer, id, *failure);
  }
  if (job.grant) {
    node::send_kv_release(bridge_, job.decode_peer, id, job.grant->reservation, release_reason,
                 failure ? failure->message : std::string("request ended"));
  } else if (peers_.find(job.decode)) {
    release_on_grant_[id] = PendingRelease{release_reason, job.decode};  // the answer to our KvReserveRequest is still out
  }
  if (job.handoff) {
    batcher_.release(id);
  } else {
    batcher_.cancel(id);
    kick();
  }
  jobs_.erase(it);
}

void PrefillRole::kick() {
  if (step_posted_) return;
  step_posted_ = worker_.post([this] {
    step_posted_ = false;
    run_step();
  });
}

void PrefillRole::run_step() {
  if (batcher_.idle()) return;
  for (model::RequestEvent& e : batcher_.step()) {
    const auto it = jobs_.find(e.id);
    if (it == jobs_.end()) {
      if (e.finish == model::FinishReason::prefilled) batcher_.release(e.id);
      continue;
    }
    if (e.finish == model::FinishReason::failed) {
      end_job(e.id, schemas::KvReleaseReason::PREFILL_FAILED,
              Failure{schemas::FailureCode::INTERNAL, false, fmt::format("prefill node {}: {}", me_.name, e.error)});
      continue;
    }
    if (e.finish != model::FinishReason::prefilled || !e.handoff) continue;
    if (dump_.enabled() && !e.logits.empty()) dump_.write(e.id, 0, e.logits);
    it->second.handoff = std::move(*e.handoff);
    prefilled(e.id, it->second);
  }
  if (!batcher_.idle()) kick();
}

void PrefillRole::prefilled(std::uint64_t id, Job& job) {
  const std::int32_t first = job.handoff->first_token;
  const bool eos = job.stop_at_eos && first == model_.config().eos_token_id;
  if (eos || job.max_tokens == 1) {
    // The request ends at its first token: nothing to hand off.
    send_first_token(id, job, eos ? schemas::FinishReason::STOP : schemas::FinishReason::LENGTH);
    end_job(id, schemas::KvReleaseReason::FINISHED, std::nullopt);
    return;
  }
  if (job.grant) {
    start_transfer(id, job);
  } else {
    arm_timeout(id, job, "KvReservation");
  }
}

void PrefillRole::start_transfer(std::uint64_t id, Job& job) {
  job.transferring = true;
  arm_timeout(id, job, "completion of the KV puts");
  const std::uint64_t generation = job.generation;
  const model::KvCache& cache = model_.engine().kv_cache();
  const std::shared_ptr<const Grant> grant = job.grant;
  std::vector<model::KvSpan> src, dst;
  model::KvLayout dst_layout = model::kv_layout(cache);
  dst_layout.pages = grant->pool_pages;
  try {
    src = model::kv_page_spans(cache, batcher_.sequence(id), job.prompt_tokens);
    dst = model::kv_page_spans(dst_layout, grant->pages, job.prompt_tokens);
    if (src.size() != dst.size() || grant->pool_bases.size() != static_cast<std::size_t>(cache.num_layers())) {
      throw std::invalid_argument(fmt::format("{} source spans, {} target spans, {} pools", src.size(), dst.size(),
                                              grant->pool_bases.size()));
    }
    for (const std::uint16_t k : grant->key_index) {
      if (k >= grant->keys.size()) throw std::invalid_argument(fmt::format("key index {} of {} keys", k, grant->keys.size()));
    }
  } catch (const std::exception& e) {
    return end_job(id, schemas::KvReleaseReason::PREFILL_FAILED,
                   Failure{schemas::FailureCode::INTERNAL, false,
                           fmt::format("prefill node {}: cannot map the granted pages: {}", me_.name, e.what())});
  }
  tr::Transport& transport = bridge_.transport();
  const std::byte* arena = model_.engine().kv_arena().data();
  auto errors = std::make_shared<TransferErrors>();
  for (std::size_t i = 0; i < src.size(); ++i) {
    const auto layer = static_cast<std::size_t>(dst[i].layer);
    const std::uint64_t remote = grant->pool_bases[layer] +
                                 static_cast<std::uint64_t>(dst[i].offset - dst[i].layer * dst_layout.layer_bytes());
    const std::vector<std::byte>& key = grant->keys[grant->key_index[layer]];
    transport.put(job.decode_peer, arena + src[i].offset, static_cast<std::size_t>(src[i].bytes), remote, key,
                  [errors, grant](const tr::Status& s) {
                    if (!s.ok()) errors->record(s);
                  });
  }
  transport.flush(job.decode_peer, [this, id, generation, errors, grant](const tr::Status& s) {
    tr::Status outcome = s;
    if (const auto first = errors->get()) outcome = *first;
    post([this, id, generation, outcome] { finish_transfer(id, generation, outcome); });
  });
}

void PrefillRole::finish_transfer(std::uint64_t id, std::uint64_t generation, const tr::Status& status) {
  const auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.generation != generation || !it->second.transferring) return;
  Job& job = it->second;
  if (!status.ok()) {
    const bool lost = status.code == tr::Errc::peer_failed;
    return end_job(id, schemas::KvReleaseReason::PREFILL_FAILED,
                   Failure{lost ? schemas::FailureCode::WORKER_LOST : schemas::FailureCode::INTERNAL, lost,
                           fmt::format("prefill node {}: KV put to decode node {} failed: {}", me_.name, job.decode,
                                       status.message)});
  }
  send_first_token(id, job, schemas::FinishReason::NONE);
  const model::KvHandoff& h = *job.handoff;
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<schemas::KvHandOff>();
  out.setRequestId(id);
  out.setReservationId(job.grant->reservation);
  out.setPromptTokens(job.prompt_tokens);
  out.setBytesWritten(static_cast<std::uint64_t>(h.bytes_written));
  out.setChecksum(h.checksum);
  out.setFirstToken(h.first_token);
  node::set_sampling(out.initSampling(), job.sampler, job.max_tokens, job.stop_at_eos);
  node::set_node_ref(out.initRouter(), job.router, job.router_address);
  out.setTimeoutMs(0);
  out.setMtpLength(static_cast<std::uint32_t>(h.mtp_length));
  auto hidden = out.initLastHidden(static_cast<unsigned>(h.last_hidden.size()));
  for (unsigned i = 0; i < h.last_hidden.size(); ++i) hidden.set(i, h.last_hidden[i]);
  bridge_.send<schemas::KvHandOff>(job.decode_peer, message);
  batcher_.release(id);
  jobs_.erase(it);
}

void PrefillRole::send_first_token(std::uint64_t id, const Job& job, schemas::FinishReason finish) {
  capnp::MallocMessageBuilder message;
  auto batch = message.initRoot<schemas::TokenBatch>();
  batch.setRequestId(id);
  batch.setFirstIndex(0);
  batch.initTokens(1).set(0, job.handoff->first_token);
  batch.setFinishReason(finish);
  auto usage = batch.initUsage();
  usage.setPromptTokens(job.prompt_tokens);
  usage.setCompletionTokens(1);
  bridge_.send<schemas::TokenBatch>(job.router_peer, message);
}

}  // namespace

std::unique_ptr<node::NodeRole> make_prefill_role(node::RoleContext& context, PrefillRoleOptions options) {
  return std::make_unique<PrefillRole>(context, std::move(options));
}

}  // namespace sy::actors::prefill
