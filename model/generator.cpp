#include "model/generator.hpp"

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>

#include "model/decode_batcher.hpp"

namespace sy::model {

void validate_request(const Engine& engine, const GenerationRequest& r, const std::string& where) {
  const ModelConfig& c = engine.config();
  if (r.prompt.empty()) throw std::invalid_argument(where + ": the prompt is empty");
  for (const std::int32_t t : r.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      throw std::invalid_argument(
          fmt::format("{}: token id {} is outside the vocabulary [0, {})", where, t, c.vocab_size));
    }
  }
  if (r.max_tokens < 1)
    throw std::invalid_argument(fmt::format("{}: max_tokens must be >= 1 (got {})", where, r.max_tokens));
  const auto prompt = static_cast<std::int64_t>(r.prompt.size());
  if (prompt + r.max_tokens > engine.options().max_seq_len) {
    throw std::invalid_argument(fmt::format("{}: prompt ({} tokens) + max_tokens ({}) exceeds the context length {}",
                                            where, prompt, r.max_tokens, engine.options().max_seq_len));
  }
  try {
    gpu::validate(r.sampler);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", where, e.what()));
  }
}

std::vector<GenerationResult> generate(Engine& engine, std::span<const GenerationRequest> requests,
                                       const GenerationOptions& options, const TokenSink& sink) {
  using Clock = std::chrono::steady_clock;
  for (std::size_t i = 0; i < requests.size(); ++i) validate_request(engine, requests[i], fmt::format("request {}", i));
  if (options.mtp && !engine.has_mtp()) {
    throw std::invalid_argument("MTP requested but the model has no MTP module (or the engine was built without it)");
  }
  std::vector<GenerationResult> results(requests.size());
  if (requests.empty()) return results;

  // Every request runs from the first step, in request order (request i has id i).
  BatcherOptions bo;
  bo.max_running = static_cast<std::int64_t>(requests.size());
  bo.max_waiting = 0;
  bo.mtp = options.mtp;
  bo.keep_logits = options.keep_logits;
  if (options.draft_override) {
    bo.draft_override = [&options](RequestId id, std::size_t index, std::int32_t draft) {
      return options.draft_override(static_cast<std::size_t>(id), index, draft);
    };
  }
  DecodeBatcher batcher(engine, std::move(bo));  // frees every admitted sequence however we leave
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const AdmitResult admitted = batcher.admit(i, requests[i]);
    if (admitted.admitted()) continue;
    if (admitted.refusal == AdmitRefusal::kv_exhausted && admitted.pages_needed > 0) {
      throw KvPoolExhausted(admitted.pages_needed, admitted.free_pages, engine.kv_cache().num_pages());
    }
    throw std::runtime_error(admitted.message);
  }

  const auto start = Clock::now();
  std::vector<Clock::time_point> first(requests.size(), start);
  std::vector<Clock::time_point> last(requests.size(), start);
  while (!batcher.idle()) {
    for (const RequestEvent& ev : batcher.step()) {
      const auto i = static_cast<std::size_t>(ev.id);
      GenerationResult& r = results[i];
      if (ev.finish == FinishReason::failed) throw std::runtime_error(fmt::format("request {}: {}", i, ev.error));
      for (const std::int32_t token : ev.tokens) {
        r.tokens.push_back(token);
        if (sink) sink(i, token);
      }
      r.logits.insert(r.logits.end(), ev.logits.begin(), ev.logits.end());
      r.mtp_drafts += ev.mtp_drafts;
      r.mtp_accepted += ev.mtp_accepted;
      if (ev.finish == FinishReason::stop) r.stopped_at_eos = true;
      if (!ev.tokens.empty()) {
        last[i] = Clock::now();
        if (r.tokens.size() == ev.tokens.size()) first[i] = last[i];
      }
    }
  }
  for (std::size_t i = 0; i < requests.size(); ++i) {
    results[i].prefill_seconds = std::chrono::duration<double>(first[i] - start).count();
    results[i].decode_seconds = std::chrono::duration<double>(last[i] - first[i]).count();
  }
  return results;
}

}  // namespace sy::model
