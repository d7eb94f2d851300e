#include "model/generator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>

namespace sy::model {
namespace {

using Clock = std::chrono::steady_clock;

struct Active {
  const GenerationRequest* request = nullptr;
  GenerationResult* result = nullptr;
  SequenceId seq = -1;
  std::int64_t prompt_pos = 0;  // prompt tokens already in the cache
  bool prefill = true;
  bool done = false;
  bool use_mtp = false;
  std::int32_t next = -1;  // the last emitted token: not yet in the cache
  std::optional<std::int32_t> draft;
  std::vector<float> carry_hidden;  // h of position prompt_pos - 1, for the MTP's next prompt chunk
  std::vector<std::int32_t> step_tokens;
  std::vector<std::int32_t> mtp_tokens;
  std::vector<float> mtp_hidden;
  Clock::time_point first_token{};
  Clock::time_point last_token{};
};

void validate_request(const Engine& engine, const GenerationRequest& r, std::size_t index) {
  const ModelConfig& c = engine.config();
  const std::string where = fmt::format("request {}", index);
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

}  // namespace

std::vector<GenerationResult> generate(Engine& engine, std::span<const GenerationRequest> requests,
                                       const GenerationOptions& options, const TokenSink& sink) {
  for (std::size_t i = 0; i < requests.size(); ++i) validate_request(engine, requests[i], i);
  if (options.mtp && !engine.has_mtp()) {
    throw std::invalid_argument("MTP requested but the model has no MTP module (or the engine was built without it)");
  }
  const ModelConfig& config = engine.config();
  const gpu::Backend& backend = engine.backend();
  const std::int64_t max_len = engine.options().max_seq_len;

  std::vector<GenerationResult> results(requests.size());
  std::vector<Active> actives(requests.size());
  // Free every admitted sequence however we leave.
  struct Release {
    Engine& engine;
    std::vector<Active>& actives;
    ~Release() {
      for (const Active& a : actives) {
        if (a.seq >= 0) engine.remove_sequence(a.seq);
      }
    }
  } release{engine, actives};
  for (std::size_t i = 0; i < requests.size(); ++i) {
    Active& a = actives[i];
    a.request = &requests[i];
    a.result = &results[i];
    a.use_mtp = options.mtp && requests[i].sampler.temperature == 0.0f;
    a.seq = engine.add_sequence(static_cast<std::int64_t>(requests[i].prompt.size()) + requests[i].max_tokens);
  }
  const auto start = Clock::now();

  auto emit = [&](std::size_t i, std::int32_t token, std::span<const float> logits) {
    Active& a = actives[i];
    GenerationResult& r = *a.result;
    r.tokens.push_back(token);
    if (options.keep_logits) r.logits.insert(r.logits.end(), logits.begin(), logits.end());
    a.last_token = Clock::now();
    if (r.tokens.size() == 1) a.first_token = a.last_token;
    if (sink) sink(i, token);
    if (a.request->stop_at_eos && token == config.eos_token_id) {
      r.stopped_at_eos = true;
      a.done = true;
    }
    if (static_cast<std::int64_t>(r.tokens.size()) >= a.request->max_tokens) a.done = true;
  };
  auto counter = [&](std::size_t i) { return static_cast<std::uint64_t>(actives[i].result->tokens.size()); };

  std::vector<SequenceInput> inputs;
  std::vector<std::size_t> owner;
  std::vector<MtpInput> mtp_inputs;
  std::vector<std::size_t> mtp_owner;
  while (std::any_of(actives.begin(), actives.end(), [](const Active& a) { return !a.done; })) {
    inputs.clear();
    owner.clear();
    std::int64_t budget = engine.options().max_chunk_tokens;
    // Decode tokens first (latency), then prompt chunks with what the step has left.
    for (std::size_t i = 0; i < actives.size(); ++i) {
      Active& a = actives[i];
      if (a.done || a.prefill) continue;
      a.step_tokens.assign(1, a.next);
      const std::int64_t remaining = a.request->max_tokens - static_cast<std::int64_t>(a.result->tokens.size());
      if (a.draft && remaining >= 2 && engine.length(a.seq) + 2 <= max_len && budget >= 2) {
        a.step_tokens.push_back(*a.draft);
      } else {
        a.draft.reset();
      }
      if (budget < static_cast<std::int64_t>(a.step_tokens.size())) continue;
      budget -= static_cast<std::int64_t>(a.step_tokens.size());
      inputs.push_back({a.seq, a.step_tokens, InputKind::decode, LogitRows::all});
      owner.push_back(i);
    }
    for (std::size_t i = 0; i < actives.size() && budget > 0; ++i) {
      Active& a = actives[i];
      if (a.done || !a.prefill) continue;
      const auto prompt_len = static_cast<std::int64_t>(a.request->prompt.size());
      const std::int64_t n = std::min(prompt_len - a.prompt_pos, budget);
      budget -= n;
      const bool last = a.prompt_pos + n == prompt_len;
      inputs.push_back(
          {a.seq,
           std::span(a.request->prompt).subspan(static_cast<std::size_t>(a.prompt_pos), static_cast<std::size_t>(n)),
           InputKind::prompt, last ? LogitRows::last : LogitRows::none});
      owner.push_back(i);
    }
    const StepOutput out = engine.step(inputs);

    mtp_inputs.clear();
    mtp_owner.clear();
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      const std::size_t i = owner[k];
      Active& a = actives[i];
      const GenerationRequest& req = *a.request;
      if (a.prefill) {
        const std::int64_t begin = a.prompt_pos;
        const auto n = static_cast<std::int64_t>(inputs[k].tokens.size());
        const auto prompt_len = static_cast<std::int64_t>(req.prompt.size());
        a.prompt_pos += n;
        const bool last = a.prompt_pos == prompt_len;
        if (last) {
          a.prefill = false;
          a.next = choose_token(backend, out.logits_row(k), req.sampler, counter(i));
          emit(i, a.next, out.logits_row(k));
        }
        if (!a.use_mtp || a.done) continue;
        // MTP position p pairs h_p with the token at p + 1: prompt tokens inside the prompt, the
        // first generated token for the prompt's last position (so that one waits for it).
        const std::int64_t from = engine.mtp_length(a.seq);
        const std::int64_t to = last ? prompt_len : a.prompt_pos - 1;
        a.mtp_tokens.clear();
        a.mtp_hidden.clear();
        for (std::int64_t p = from; p < to; ++p) {
          a.mtp_tokens.push_back(p + 1 < prompt_len ? req.prompt[static_cast<std::size_t>(p + 1)] : a.next);
          const std::span<const float> h =
              p == begin - 1 ? std::span<const float>(a.carry_hidden) : out.hidden_row(k, p - begin);
          a.mtp_hidden.insert(a.mtp_hidden.end(), h.begin(), h.end());
        }
        if (!last) {
          const auto h = out.hidden_row(k, n - 1);
          a.carry_hidden.assign(h.begin(), h.end());
        }
        if (a.mtp_tokens.empty()) continue;
        mtp_inputs.push_back(
            {a.seq, a.mtp_tokens, a.mtp_hidden.data(), InputKind::prompt, last ? LogitRows::last : LogitRows::none});
        mtp_owner.push_back(i);
        continue;
      }
      // Decode: row 0 is the prediction after `next`; with a draft d, row 1 the one after d.
      const bool verifying = a.step_tokens.size() == 2;
      const std::int32_t y1 = choose_token(backend, out.logits_row(k, 0), req.sampler, counter(i));
      a.mtp_tokens.clear();
      a.mtp_hidden.clear();
      auto add_mtp = [&](std::int32_t token, std::int64_t row) {
        a.mtp_tokens.push_back(token);
        const auto h = out.hidden_row(k, row);
        a.mtp_hidden.insert(a.mtp_hidden.end(), h.begin(), h.end());
      };
      if (verifying) {
        GenerationResult& r = *a.result;
        ++r.mtp_drafts;
        const std::int32_t d = *a.draft;
        if (y1 == d) {
          ++r.mtp_accepted;
          emit(i, d, out.logits_row(k, 0));
          if (!a.done) {
            const std::int32_t y2 = choose_token(backend, out.logits_row(k, 1), req.sampler, counter(i));
            emit(i, y2, out.logits_row(k, 1));
            a.next = y2;
            add_mtp(d, 0);
            add_mtp(y2, 1);
          }
        } else {
          // The draft's cache entry is dropped; the next step overwrites it.
          engine.truncate(a.seq, engine.length(a.seq) - 1);
          emit(i, y1, out.logits_row(k, 0));
          a.next = y1;
          add_mtp(y1, 0);
        }
      } else {
        emit(i, y1, out.logits_row(k, 0));
        a.next = y1;
        add_mtp(y1, 0);
      }
      a.draft.reset();
      if (a.use_mtp && !a.done) {
        mtp_inputs.push_back({a.seq, a.mtp_tokens, a.mtp_hidden.data(), InputKind::decode, LogitRows::last});
        mtp_owner.push_back(i);
      }
    }
    if (!mtp_inputs.empty()) {
      const StepOutput drafts = engine.mtp_step(mtp_inputs);
      for (std::size_t k = 0; k < mtp_inputs.size(); ++k) {
        if (mtp_inputs[k].logits == LogitRows::none) continue;
        // Drafts are greedy: MTP runs for greedy requests only.
        Active& a = actives[mtp_owner[k]];
        a.draft = choose_token(backend, drafts.logits_row(k), gpu::SamplerConfig{}, 0);
        if (options.draft_override) a.draft = options.draft_override(mtp_owner[k], a.result->tokens.size(), *a.draft);
      }
    }
  }
  for (const Active& a : actives) {
    a.result->prefill_seconds = std::chrono::duration<double>(a.first_token - start).count();
    a.result->decode_seconds = std::chrono::duration<double>(a.last_token - a.first_token).count();
  }
  return results;
}

}  // namespace sy::model
