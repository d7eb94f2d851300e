#include "model/decode_batcher.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace sy::model {

struct DecodeBatcher::Request {
  RequestId id = 0;
  GenerationRequest request;  // adopted requests: no prompt (its KV arrived instead)
  Phase phase = Phase::waiting;
  SequenceId seq = -1;
  bool prefill_only = false;
  std::int64_t prompt_len = 0;
  std::int64_t prompt_pos = 0;  // prompt tokens already in the cache
  bool prefill = true;
  bool use_mtp = false;
  bool done = false;
  bool cancel_pending = false;
  FinishReason finish = FinishReason::none;
  std::string error;
  std::int64_t generated = 0;  // tokens emitted (the sampler's draw counter)
  std::int32_t next = -1;      // the last emitted token: not yet in the cache
  std::optional<std::int32_t> draft;
  // h of position prompt_pos - 1 (pre-norm): the MTP's input for the next prompt chunk; for a
  // prefilled request, the hand-off's last_hidden.
  std::vector<float> carry_hidden;
  std::vector<std::int32_t> step_tokens;
  std::vector<std::int32_t> mtp_tokens;
  std::vector<float> mtp_hidden;
  std::ptrdiff_t event = -1;  // index of its event in the current step's events, or -1
};

DecodeBatcher::DecodeBatcher(Engine& engine, BatcherOptions options) : engine_(engine), options_(std::move(options)) {
  if (options_.max_running < 1 || options_.max_waiting < 0) {
    throw std::invalid_argument(fmt::format("batcher: max_running must be >= 1 and max_waiting >= 0 (got {}, {})",
                                            options_.max_running, options_.max_waiting));
  }
  if (options_.mtp && !engine.has_mtp()) {
    throw std::invalid_argument("MTP requested but the model has no MTP module (or the engine was built without it)");
  }
}

DecodeBatcher::~DecodeBatcher() {
  for (const auto& [id, r] : requests_) engine_.remove_sequence(r->seq);
}

std::int64_t DecodeBatcher::waiting() const { return static_cast<std::int64_t>(waiting_.size()) + reserved_; }

bool DecodeBatcher::idle() const {
  return running_.empty() && waiting_.empty() &&
         std::none_of(requests_.begin(), requests_.end(), [](const auto& kv) { return kv.second->cancel_pending; });
}

SequenceId DecodeBatcher::sequence(RequestId id) const {
  const auto it = requests_.find(id);
  return it == requests_.end() ? -1 : it->second->seq;
}

AdmitResult DecodeBatcher::check_capacity(RequestId id, std::int64_t reserve_tokens) const {
  if (requests_.contains(id)) throw std::invalid_argument(fmt::format("request {}: the id is already in use", id));
  const KvCache& cache = engine_.kv_cache();
  const std::int64_t pages = KvCache::pages_for(reserve_tokens);
  if (pages > cache.num_pages()) {
    throw std::invalid_argument(fmt::format("request {}: {} tokens need {} KV pages, more than the pool's {}", id,
                                            reserve_tokens, pages, cache.num_pages()));
  }
  AdmitResult r;
  if (running() + waiting() >= options_.max_running + options_.max_waiting) {
    r.refusal = AdmitRefusal::queue_full;
    r.message = fmt::format("request {}: {} requests running and {} waiting (the most this worker holds); retry later",
                            id, running(), waiting());
  } else if (pages > cache.free_pages()) {
    r.refusal = AdmitRefusal::kv_exhausted;
    r.pages_needed = pages;
    r.free_pages = cache.free_pages();
    r.message = fmt::format("request {}: KV cache pool exhausted: need {} pages, {} of {} free; retry later", id, pages,
                            cache.free_pages(), cache.num_pages());
  } else if (cache.live_sequences() >= cache.options().max_seqs) {
    r.refusal = AdmitRefusal::kv_exhausted;
    r.message = fmt::format("request {}: all {} sequence slots are in use; retry later", id, cache.options().max_seqs);
  }
  return r;
}

DecodeBatcher::Request& DecodeBatcher::add(RequestId id, std::int64_t reserve_tokens, Phase phase) {
  auto r = std::make_unique<Request>();
  r->id = id;
  r->phase = phase;
  r->seq = engine_.add_sequence(reserve_tokens);  // check_capacity made sure it fits
  Request& ref = *r;
  requests_.emplace(id, std::move(r));
  if (phase == Phase::reserved) ++reserved_;
  if (phase == Phase::waiting) waiting_.push_back(&ref);
  return ref;
}

void DecodeBatcher::forget(Request& r) {
  const RequestId id = r.id;  // not a reference into the node erase() destroys
  if (r.phase == Phase::reserved) --reserved_;
  std::erase(running_, &r);
  std::erase(waiting_, &r);
  engine_.remove_sequence(r.seq);
  requests_.erase(id);  // destroys r
}

AdmitResult DecodeBatcher::admit(RequestId id, GenerationRequest request, bool prefill_only) {
  validate_request(engine_, request, fmt::format("request {}", id));
  const auto prompt = static_cast<std::int64_t>(request.prompt.size());
  const std::int64_t tokens = prefill_only ? prompt : prompt + request.max_tokens;
  AdmitResult result = check_capacity(id, tokens);
  if (!result.admitted()) return result;
  Request& r = add(id, tokens, Phase::waiting);
  r.request = std::move(request);
  r.prefill_only = prefill_only;
  r.prompt_len = prompt;
  r.use_mtp = options_.mtp && r.request.sampler.temperature == 0.0f;
  result.seq = r.seq;
  return result;
}

AdmitResult DecodeBatcher::reserve(RequestId id, std::int64_t prompt_tokens, std::int64_t max_tokens) {
  if (prompt_tokens < 1 || max_tokens < 1 || prompt_tokens + max_tokens > engine_.options().max_seq_len) {
    throw std::invalid_argument(fmt::format(
        "request {}: cannot reserve {} prompt tokens + {} max_tokens (each >= 1, together at most the context "
        "length {})",
        id, prompt_tokens, max_tokens, engine_.options().max_seq_len));
  }
  AdmitResult result = check_capacity(id, prompt_tokens + max_tokens);
  if (!result.admitted()) return result;
  Request& r = add(id, prompt_tokens + max_tokens, Phase::reserved);
  r.prompt_len = prompt_tokens;
  result.seq = r.seq;
  result.pages = engine_.kv_cache().pages(r.seq);
  return result;
}

void DecodeBatcher::adopt(RequestId id, const KvHandoff& h, const ContinuationParams& params, bool verify_checksum) {
  const auto it = requests_.find(id);
  if (it == requests_.end() || it->second->phase != Phase::reserved) {
    throw std::invalid_argument(fmt::format("request {}: no KV reservation to hand off into", id));
  }
  Request& r = *it->second;
  const ModelConfig& config = engine_.config();
  try {
    const std::string where = fmt::format("request {}", id);
    if (params.max_tokens < 2) {
      throw std::invalid_argument(fmt::format(
          "{}: max_tokens {} leaves nothing to decode after the first token (prefill finishes such requests)", where,
          params.max_tokens));
    }
    try {
      gpu::validate(params.sampler);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("{}: {}", where, e.what()));
    }
    if (h.first_token < 0 || h.first_token >= config.vocab_size) {
      throw std::invalid_argument(
          fmt::format("{}: first token {} is outside the vocabulary [0, {})", where, h.first_token, config.vocab_size));
    }
    if (params.stop_at_eos && h.first_token == config.eos_token_id) {
      throw std::invalid_argument(
          fmt::format("{}: the first token is EOS: nothing to decode (prefill finishes such requests)", where));
    }
    if (h.prompt_tokens != r.prompt_len) {
      throw KvHandoffError(fmt::format("{}: the hand-off carries {} prompt tokens, the reservation was for {}", where,
                                       h.prompt_tokens, r.prompt_len));
    }
    const std::int64_t need = h.prompt_tokens + params.max_tokens;
    const std::int64_t held = engine_.kv_cache().reserved(r.seq);
    if (need > held || need > engine_.options().max_seq_len) {
      throw KvHandoffError(fmt::format(
          "{}: the reservation is too small: {} prompt tokens + max_tokens {} need {} tokens, its pages hold {} "
          "(context length {})",
          where, h.prompt_tokens, params.max_tokens, need, held, engine_.options().max_seq_len));
    }
    verify_kv_handoff(engine_.kv_cache(), r.seq, h, config.hidden_size, verify_checksum);
    const bool mtp = options_.mtp && params.sampler.temperature == 0.0f && !h.last_hidden.empty();
    engine_.adopt_sequence(r.seq, h.prompt_tokens, mtp ? h.mtp_length : 0);
    r.request.max_tokens = params.max_tokens;
    r.request.sampler = params.sampler;
    r.request.stop_at_eos = params.stop_at_eos;
    r.prompt_pos = h.prompt_tokens;
    r.prefill = false;
    r.next = h.first_token;
    r.generated = 1;
    r.use_mtp = mtp;
    if (mtp) {
      // The MTP position prefill left for us: h of the prompt's last position with the first
      // token, as the prompt's last MTP chunk in generate() (a prompt-kind input); its logits
      // draft the token after the first one.
      const MtpInput in{r.seq, std::span(&h.first_token, 1), h.last_hidden.data(), InputKind::prompt, LogitRows::last};
      const StepOutput out = engine_.mtp_step(std::span(&in, 1));
      r.draft = draft(r, out.logits_row(0));
    }
  } catch (...) {
    forget(r);
    throw;
  }
  --reserved_;
  r.phase = Phase::waiting;
  waiting_.push_back(&r);
}

bool DecodeBatcher::release(RequestId id) {
  const auto it = requests_.find(id);
  if (it == requests_.end() || (it->second->phase != Phase::reserved && it->second->phase != Phase::prefilled)) {
    return false;
  }
  forget(*it->second);
  return true;
}

bool DecodeBatcher::cancel(RequestId id) {
  const auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  it->second->cancel_pending = true;
  cancel_order_.push_back(id);
  return true;
}

RequestEvent& DecodeBatcher::event_for(Request& r, std::vector<RequestEvent>& events) {
  if (r.event < 0) {
    r.event = static_cast<std::ptrdiff_t>(events.size());
    events.push_back({});
    events.back().id = r.id;
  }
  return events[static_cast<std::size_t>(r.event)];
}

void DecodeBatcher::emit(Request& r, std::int32_t token, std::span<const float> logits,
                         std::vector<RequestEvent>& events) {
  RequestEvent& ev = event_for(r, events);
  ev.tokens.push_back(token);
  if (options_.keep_logits) ev.logits.insert(ev.logits.end(), logits.begin(), logits.end());
  ++r.generated;
  if (r.request.stop_at_eos && token == engine_.config().eos_token_id) {
    r.done = true;
    r.finish = FinishReason::stop;
  }
  if (r.generated >= r.request.max_tokens) {
    r.done = true;
    if (r.finish == FinishReason::none) r.finish = FinishReason::length;
  }
}

std::int32_t DecodeBatcher::draft(const Request& r, std::span<const float> mtp_logits) const {
  // Drafts are greedy: MTP runs for greedy requests only.
  const std::int32_t d = choose_token(engine_.backend(), mtp_logits, gpu::SamplerConfig{}, 0);
  return options_.draft_override ? options_.draft_override(r.id, static_cast<std::size_t>(r.generated), d) : d;
}

std::vector<RequestEvent> DecodeBatcher::step() {
  std::vector<RequestEvent> events;
  // Cancellations, in the order they were asked for.
  for (const RequestId id : cancel_order_) {
    const auto it = requests_.find(id);
    if (it == requests_.end() || !it->second->cancel_pending) continue;
    events.push_back({});
    events.back().id = id;
    events.back().finish = FinishReason::cancelled;
    forget(*it->second);
  }
  cancel_order_.clear();
  while (static_cast<std::int64_t>(running_.size()) < options_.max_running && !waiting_.empty()) {
    Request* r = waiting_.front();
    waiting_.pop_front();
    r->phase = Phase::running;
    running_.push_back(r);
  }
  if (running_.empty()) return events;
  for (Request* r : running_) r->event = -1;

  const gpu::Backend& backend = engine_.backend();
  const std::int64_t max_len = engine_.options().max_seq_len;
  std::vector<SequenceInput> inputs;
  std::vector<Request*> owner;
  std::int64_t budget = engine_.options().max_chunk_tokens;
  // Decode tokens first (latency), then prompt chunks with what the step has left.
  for (Request* r : running_) {
    Request& a = *r;
    if (a.prefill) continue;
    a.step_tokens.assign(1, a.next);
    const std::int64_t remaining = a.request.max_tokens - a.generated;
    if (a.draft && remaining >= 2 && engine_.length(a.seq) + 2 <= max_len && budget >= 2) {
      a.step_tokens.push_back(*a.draft);
    } else {
      a.draft.reset();
    }
    if (budget < static_cast<std::int64_t>(a.step_tokens.size())) continue;
    budget -= static_cast<std::int64_t>(a.step_tokens.size());
    inputs.push_back({a.seq, a.step_tokens, InputKind::decode, LogitRows::all});
    owner.push_back(&a);
  }
  for (Request* r : running_) {
    Request& a = *r;
    if (budget <= 0) break;
    if (!a.prefill) continue;
    const std::int64_t n = std::min(a.prompt_len - a.prompt_pos, budget);
    budget -= n;
    const bool last = a.prompt_pos + n == a.prompt_len;
    inputs.push_back(
        {a.seq,
         std::span(a.request.prompt).subspan(static_cast<std::size_t>(a.prompt_pos), static_cast<std::size_t>(n)),
         InputKind::prompt, last ? LogitRows::last : LogitRows::none});
    owner.push_back(&a);
  }
  auto fail = [&](std::span<Request* const> who, const std::exception& e) {
    for (Request* r : who) {
      RequestEvent& ev = event_for(*r, events);
      ev.finish = FinishReason::failed;
      ev.error = e.what();
      r->done = true;
      r->finish = FinishReason::failed;
    }
  };

  StepOutput out;
  if (!inputs.empty()) {
    try {
      out = engine_.step(inputs);
    } catch (const std::exception& e) {
      fail(owner, e);
      owner.clear();
    }
  }

  std::vector<MtpInput> mtp_inputs;
  std::vector<Request*> mtp_owner;
  for (std::size_t k = 0; k < owner.size(); ++k) {
    Request& a = *owner[k];
    const GenerationRequest& req = a.request;
    if (a.prefill) {
      const std::int64_t begin = a.prompt_pos;
      const auto n = static_cast<std::int64_t>(inputs[k].tokens.size());
      a.prompt_pos += n;
      const bool last = a.prompt_pos == a.prompt_len;
      if (last) {
        a.prefill = false;
        a.next = choose_token(backend, out.logits_row(k), req.sampler, static_cast<std::uint64_t>(a.generated));
        emit(a, a.next, out.logits_row(k), events);
      }
      if (!a.use_mtp || a.done) continue;
      // MTP position p pairs h_p with the token at p + 1: prompt tokens inside the prompt, the
      // first generated token for the prompt's last position (so that one waits for it). A
      // prefill_only request leaves the last position to the decode side (KvHandoff).
      const std::int64_t from = engine_.mtp_length(a.seq);
      const std::int64_t to = !last ? a.prompt_pos - 1 : a.prefill_only ? a.prompt_len - 1 : a.prompt_len;
      a.mtp_tokens.clear();
      a.mtp_hidden.clear();
      for (std::int64_t p = from; p < to; ++p) {
        a.mtp_tokens.push_back(p + 1 < a.prompt_len ? req.prompt[static_cast<std::size_t>(p + 1)] : a.next);
        const std::span<const float> h =
            p == begin - 1 ? std::span<const float>(a.carry_hidden) : out.hidden_row(k, p - begin);
        a.mtp_hidden.insert(a.mtp_hidden.end(), h.begin(), h.end());
      }
      if (!last || a.prefill_only) {
        const auto h = out.hidden_row(k, n - 1);
        a.carry_hidden.assign(h.begin(), h.end());
      }
      if (a.mtp_tokens.empty()) continue;
      const bool drafts = last && !a.prefill_only;
      mtp_inputs.push_back(
          {a.seq, a.mtp_tokens, a.mtp_hidden.data(), InputKind::prompt, drafts ? LogitRows::last : LogitRows::none});
      mtp_owner.push_back(&a);
      continue;
    }
    // Decode: row 0 is the prediction after `next`; with a draft d, row 1 the one after d.
    const bool verifying = a.step_tokens.size() == 2;
    const std::int32_t y1 =
        choose_token(backend, out.logits_row(k, 0), req.sampler, static_cast<std::uint64_t>(a.generated));
    a.mtp_tokens.clear();
    a.mtp_hidden.clear();
    auto add_mtp = [&](std::int32_t token, std::int64_t row) {
      a.mtp_tokens.push_back(token);
      const auto h = out.hidden_row(k, row);
      a.mtp_hidden.insert(a.mtp_hidden.end(), h.begin(), h.end());
    };
    if (verifying) {
      RequestEvent& ev = event_for(a, events);
      ++ev.mtp_drafts;
      const std::int32_t d = *a.draft;
      if (y1 == d) {
        ++ev.mtp_accepted;
        emit(a, d, out.logits_row(k, 0), events);
        if (!a.done) {
          const std::int32_t y2 =
              choose_token(backend, out.logits_row(k, 1), req.sampler, static_cast<std::uint64_t>(a.generated));
          emit(a, y2, out.logits_row(k, 1), events);
          a.next = y2;
          add_mtp(d, 0);
          add_mtp(y2, 1);
        }
      } else {
        // The draft's cache entry is dropped; the next step overwrites it.
        engine_.truncate(a.seq, engine_.length(a.seq) - 1);
        emit(a, y1, out.logits_row(k, 0), events);
        a.next = y1;
        add_mtp(y1, 0);
      }
    } else {
      emit(a, y1, out.logits_row(k, 0), events);
      a.next = y1;
      add_mtp(y1, 0);
    }
    a.draft.reset();
    if (a.use_mtp && !a.done) {
      mtp_inputs.push_back({a.seq, a.mtp_tokens, a.mtp_hidden.data(), InputKind::decode, LogitRows::last});
      mtp_owner.push_back(&a);
    }
  }
  if (!mtp_inputs.empty()) {
    try {
      const StepOutput drafts = engine_.mtp_step(mtp_inputs);
      for (std::size_t k = 0; k < mtp_inputs.size(); ++k) {
        if (mtp_inputs[k].logits != LogitRows::none) mtp_owner[k]->draft = draft(*mtp_owner[k], drafts.logits_row(k));
      }
    } catch (const std::exception& e) {
      fail(mtp_owner, e);
    }
  }

  // Boundary: finished requests leave (pages freed); prefilled ones wait for release().
  for (Request* r : std::vector<Request*>(running_)) {
    if (r->done) {
      if (r->finish != FinishReason::failed) event_for(*r, events).finish = r->finish;
      forget(*r);
    } else if (r->prefill_only && !r->prefill) {
      KvHandoff h;
      const KvCache& cache = engine_.kv_cache();
      h.prompt_tokens = r->prompt_len;
      h.layers = cache.num_layers();
      h.token_bytes = cache.token_bytes();
      h.bytes_written = h.prompt_tokens * h.token_bytes * h.layers;
      h.checksum = kv_checksum(cache, r->seq, h.prompt_tokens);
      h.first_token = r->next;
      if (r->use_mtp) {
        h.mtp_length = engine_.mtp_length(r->seq);
        h.last_hidden = std::move(r->carry_hidden);
      }
      RequestEvent& ev = event_for(*r, events);
      ev.finish = FinishReason::prefilled;
      ev.handoff = std::move(h);
      std::erase(running_, r);
      r->phase = Phase::prefilled;
    }
  }
  return events;
}

}  // namespace sy::model
