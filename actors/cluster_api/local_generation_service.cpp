#include "actors/cluster_api/local_generation_service.hpp"

#include <fmt/format.h>

#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <variant>

#include "actors/cluster_api/prompt.hpp"
#include "model/config.hpp"
#include "model/decode_batcher.hpp"
#include "model/engine.hpp"
#include "model/serving_model.hpp"
#include "model/tokenizer.hpp"

namespace sy::actors::cluster_api {
namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

const char* refusal_name(model::AdmitRefusal r) {
  switch (r) {
    case model::AdmitRefusal::kv_exhausted: return "kv_exhausted";
    case model::AdmitRefusal::queue_full: return "queue_full";
    case model::AdmitRefusal::none: break;
  }
  return "none";
}

}  // namespace

// Everything loaded from the model folder: the engine's model and the tokenizer.
struct LocalGenerationService::Model {
  explicit Model(const LocalServiceOptions& o)
      : serving(o.model_dir, *o.backend, engine_options(o)), tokenizer(model::Tokenizer::load(o.model_dir)) {}

  static model::EngineOptions engine_options(const LocalServiceOptions& o) {
    model::EngineOptions e;
    e.numerics = o.numerics;
    e.kv_pages = o.kv_pages;
    e.max_seqs = o.max_batch + o.max_waiting;  // every admitted request holds a sequence
    e.max_seq_len = o.max_seq_len;
    e.max_chunk_tokens = o.max_chunk_tokens;
    e.mtp = o.mtp;
    return e;
  }

  model::ServingModel serving;
  model::Tokenizer tokenizer;
};

// A request the batcher holds, with what its sink and summary need.
struct LocalGenerationService::Live {
  std::shared_ptr<GenerationSink> sink;
  model::StreamDecoder decoder;
  std::string client_request_id;
  Clock::time_point received;
  Clock::time_point admitted;
  Clock::time_point first_token{};
  bool has_first_token = false;
  bool cancel_requested = false;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t mtp_drafts = 0;
  std::int64_t mtp_accepted = 0;
};

LocalGenerationService::LocalGenerationService(LocalServiceOptions options) : options_(std::move(options)) {
  if (options_.backend == nullptr) throw std::invalid_argument("local generation service: no kernel backend given");
  if (options_.kv_pages < 1 || options_.max_batch < 1 || options_.max_waiting < 0 || options_.max_inbox < 1) {
    throw std::invalid_argument(
        fmt::format("local generation service: kv pages ({}), max batch ({}) and the inbox ({}) must be >= 1, max "
                    "waiting ({}) >= 0",
                    options_.kv_pages, options_.max_batch, options_.max_inbox, options_.max_waiting));
  }
  model_ = std::make_unique<Model>(options_);
  model::BatcherOptions b;
  b.max_running = options_.max_batch;
  b.max_waiting = options_.max_waiting;
  b.mtp = options_.mtp;
  batcher_ = std::make_unique<model::DecodeBatcher>(model_->serving.engine(), b);
  {
    std::lock_guard lock(mutex_);
    snapshot_.model_name = options_.model_dir.filename().string();
    if (snapshot_.model_name.empty()) snapshot_.model_name = options_.model_dir.parent_path().filename().string();
    snapshot_.backend = options_.backend->name;
    snapshot_.numerics = model::numerics_name(options_.numerics);
    snapshot_.nodes.push_back(NodeInfo{options_.node_name,
                                       {"router", "prefill", "decode", "expert_host"},
                                       NodeInfo::Health::healthy,
                                       ""});
    snapshot_.max_batch = options_.max_batch;
    snapshot_.mtp = options_.mtp;
    refresh_snapshot();
  }
  worker_ = std::thread([this] { run(); });
}

LocalGenerationService::~LocalGenerationService() { stop(std::chrono::milliseconds(0)); }

RequestId LocalGenerationService::submit(GenerateInput input, std::shared_ptr<GenerationSink> sink) {
  RequestId id = 0;
  std::optional<GenerationError> refusal;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    if (stopping_) {
      refusal = GenerationError{ErrorKind::unavailable, "the server is shutting down"};
    } else if (static_cast<std::int64_t>(inbox_.size()) >= options_.max_inbox) {
      refusal = GenerationError{ErrorKind::overloaded,
                                fmt::format("queue_full: {} submissions are waiting to be admitted; retry later",
                                            inbox_.size())};
      ++refused_now_;
    } else {
      inbox_.push_back(Submission{id, std::move(input), std::move(sink), Clock::now()});
    }
  }
  if (refusal) {
    sink->on_error(*refusal);
  } else {
    wake_.notify_one();
  }
  return id;
}

void LocalGenerationService::cancel(RequestId id) {
  {
    std::lock_guard lock(mutex_);
    cancels_.push_back(id);
  }
  wake_.notify_one();
}

StatusSnapshot LocalGenerationService::status() {
  std::lock_guard lock(mutex_);
  StatusSnapshot s = snapshot_;
  s.uptime_s = std::chrono::duration<double>(Clock::now() - started_).count();
  s.waiting += static_cast<std::int64_t>(inbox_.size());
  s.refused += refused_now_;
  return s;
}

void LocalGenerationService::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mutex_);
    const Clock::time_point deadline = Clock::now() + grace;
    if (!deadline_set_ || deadline < deadline_) deadline_ = deadline;
    deadline_set_ = true;
    stopping_ = true;
  }
  wake_.notify_one();
  if (worker_.joinable()) worker_.join();
}

void LocalGenerationService::refresh_snapshot() {
  const model::KvCache& cache = model_->serving.engine().kv_cache();
  snapshot_.running = batcher_->running();
  snapshot_.waiting = batcher_->waiting();
  snapshot_.kv_pages_total = cache.num_pages();
  snapshot_.kv_pages_free = cache.free_pages();
  snapshot_.kv_pages_used = cache.num_pages() - cache.free_pages();
  snapshot_.completed = completed_;
  snapshot_.cancelled = cancelled_;
  snapshot_.failed = failed_;
  snapshot_.refused = refused_;
}

void LocalGenerationService::run() {
  for (;;) {
    std::vector<Submission> submissions;
    std::vector<RequestId> cancels;
    bool stopping = false;
    bool expired = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !inbox_.empty() || !cancels_.empty() || stopping_ || !batcher_->idle(); });
      submissions.swap(inbox_);
      cancels.swap(cancels_);
      stopping = stopping_;
      expired = deadline_set_ && Clock::now() >= deadline_;
    }
    for (Submission& s : submissions) start(std::move(s));
    for (const RequestId id : cancels) {
      const auto it = live_.find(id);
      if (it != live_.end() && !it->second->cancel_requested) {
        it->second->cancel_requested = true;
        batcher_->cancel(id);
      }
    }
    if (expired) {
      for (auto& [id, live] : live_) {
        if (!live->cancel_requested) {
          live->cancel_requested = true;
          batcher_->cancel(id);
        }
      }
    }
    if (!batcher_->idle()) {
      {
        // Admissions are visible before the step's first tokens reach any client.
        std::lock_guard lock(mutex_);
        refresh_snapshot();
      }
      for (const model::RequestEvent& e : batcher_->step()) deliver(e);
    }
    {
      std::lock_guard lock(mutex_);
      refresh_snapshot();
    }
    if (stopping && batcher_->idle()) {
      // Every request has reported its end (an idle batcher holds no queued, running or
      // cancelled-but-unreported request); anything left would be a bug: fail it, do not hang.
      for (auto& [id, live] : live_) {
        live->sink->on_error(GenerationError{ErrorKind::unavailable, "the server stopped before the request ended"});
      }
      live_.clear();
      std::lock_guard lock(mutex_);
      if (inbox_.empty()) break;
    }
  }
}

void LocalGenerationService::start(Submission s) {
  auto fail = [&](ErrorKind kind, std::string message) {
    if (kind == ErrorKind::overloaded) {
      ++refused_;
    } else {
      ++failed_;
    }
    s.sink->on_error(GenerationError{kind, std::move(message)});
  };
  bool stopping = false;
  {
    std::lock_guard lock(mutex_);
    stopping = stopping_;
  }
  if (stopping) return fail(ErrorKind::unavailable, "the server is shutting down");

  const model::Tokenizer& tokenizer = model_->tokenizer;
  auto live = std::make_unique<Live>(Live{s.sink, model::StreamDecoder(tokenizer, /*skip_special_tokens=*/true),
                                          s.input.client_request_id, s.received, {}, {}, false, false, 0, 0, 0, 0});
  try {
    model::GenerationRequest request;
    request.prompt = prompt_token_ids(tokenizer, s.input);
    request.max_tokens = s.input.max_tokens;
    request.sampler = s.input.sampler;
    request.stop_at_eos = s.input.stop_at_eos;
    live->prompt_tokens = static_cast<std::int64_t>(request.prompt.size());
    const model::AdmitResult admitted = batcher_->admit(s.id, std::move(request));
    if (!admitted.admitted()) {
      return fail(ErrorKind::overloaded, fmt::format("{}: {}", refusal_name(admitted.refusal), admitted.message));
    }
  } catch (const std::invalid_argument& e) {
    return fail(ErrorKind::bad_request, e.what());
  } catch (const std::exception& e) {
    return fail(ErrorKind::internal, fmt::format("request {}: {}", s.id, e.what()));
  }
  live->admitted = Clock::now();
  live_.emplace(s.id, std::move(live));
}

void LocalGenerationService::deliver(const model::RequestEvent& e) {
  const auto it = live_.find(e.id);
  if (it == live_.end()) return;
  Live& l = *it->second;
  const Clock::time_point now = Clock::now();
  l.mtp_drafts += e.mtp_drafts;
  l.mtp_accepted += e.mtp_accepted;
  if (!e.tokens.empty()) {
    if (!l.has_first_token) {
      l.has_first_token = true;
      l.first_token = now;
    }
    std::string text;
    for (const std::int32_t token : e.tokens) {
      text += l.decoder.push_model_token(token);
    }
    l.completion_tokens += static_cast<std::int64_t>(e.tokens.size());
    l.sink->on_tokens(e.tokens, text);
  }
  switch (e.finish) {
    case model::FinishReason::none:
      return;
    case model::FinishReason::stop:
    case model::FinishReason::length:
    case model::FinishReason::cancelled: {
      const std::string tail = l.decoder.flush();
      if (!tail.empty()) l.sink->on_tokens({}, tail);
      GenerationSummary summary;
      summary.id = e.id;
      summary.client_request_id = l.client_request_id;
      summary.finish = e.finish == model::FinishReason::stop     ? Finish::stop
                       : e.finish == model::FinishReason::length ? Finish::length
                                                                 : Finish::cancelled;
      summary.prompt_tokens = l.prompt_tokens;
      summary.completion_tokens = l.completion_tokens;
      summary.queue_ms = ms_between(l.received, l.admitted);
      summary.ttft_ms = l.has_first_token ? ms_between(l.received, l.first_token) : 0.0;
      summary.total_ms = ms_between(l.received, now);
      summary.mtp_drafts = l.mtp_drafts;
      summary.mtp_accepted = l.mtp_accepted;
      if (summary.finish == Finish::cancelled) {
        ++cancelled_;
      } else {
        ++completed_;
      }
      l.sink->on_done(summary);
      break;
    }
    case model::FinishReason::failed:
      ++failed_;
      l.sink->on_error(GenerationError{ErrorKind::internal, fmt::format("request {}: {}", e.id, e.error)});
      break;
    case model::FinishReason::prefilled:
      // Only prefill_only requests end so, and this service never admits one.
      ++failed_;
      batcher_->release(e.id);
      l.sink->on_error(GenerationError{ErrorKind::internal, fmt::format("request {}: ended prefilled", e.id)});
      break;
  }
  live_.erase(it);
}

}  // namespace sy::actors::cluster_api
