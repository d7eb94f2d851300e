// Token generation on an Engine: prompts prefilled in chunks, then decode steps, for a batch of
// requests that share every step; per-request sampling, EOS and max-token stops, and optional
// MTP self-speculative decoding (greedy requests only). Used by `switchyard generate` and tests;
// built on DecodeBatcher, which serving workers drive directly. Runs on the caller's thread;
// borrows the Engine.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "gpu/sampling.hpp"
#include "model/engine.hpp"

namespace sy::model {

struct GenerationRequest {
  std::vector<std::int32_t> prompt;  // REQUIRES: non-empty, ids in [0, vocab_size)
  std::int64_t max_tokens = 16;      // REQUIRES: >= 1; prompt + max_tokens <= max_seq_len
  gpu::SamplerConfig sampler{};      // temperature 0: greedy
  bool stop_at_eos = true;           // stop after emitting eos_token_id
};

struct GenerationOptions {
  // MTP drafts (spec §1.8) for greedy requests. Sampled requests (temperature > 0) decode one
  // token per step: we do not implement speculative acceptance for sampling.
  bool mtp = false;
  bool keep_logits = false;  // GenerationResult::logits: one row per generated token
  // Test seam: replaces each MTP draft. Random tiny weights almost never draft right, so tests
  // substitute known continuations to drive the accept path. Arguments: request index, index in
  // GenerationResult::tokens of the token the draft guesses, the MTP module's draft.
  std::function<std::int32_t(std::size_t, std::size_t, std::int32_t)> draft_override;
};

struct GenerationResult {
  std::vector<std::int32_t> tokens;  // generated ids (the prompt excluded), EOS included if hit
  std::vector<float> logits;         // [tokens, vocab] when keep_logits: row i produced tokens[i]
  bool stopped_at_eos = false;
  std::int64_t mtp_drafts = 0;    // drafts verified
  std::int64_t mtp_accepted = 0;  // drafts the main model agreed with
  double prefill_seconds = 0.0;   // from start to the first generated token
  double decode_seconds = 0.0;    // from the first to the last generated token
};

// Checks one request against the engine (prompt ids, max_tokens, context length, sampler);
// throws std::invalid_argument starting with `where` (e.g. "request 3") and naming the problem.
void validate_request(const Engine& engine, const GenerationRequest& request, const std::string& where);

// Called once per generated token, in order, as soon as it is known.
using TokenSink = std::function<void(std::size_t request, std::int32_t token)>;

// Validates every request first (std::invalid_argument naming the request and the problem),
// admits all of them (KvPoolExhausted, retryable, when the pool cannot hold prompt + max_tokens
// for each), runs to completion and frees their sequences. Runs a DecodeBatcher with every
// request running from the first step (model/decode_batcher.hpp holds the step logic).
std::vector<GenerationResult> generate(Engine& engine, std::span<const GenerationRequest> requests,
                                       const GenerationOptions& options, const TokenSink& sink = nullptr);

}  // namespace sy::model
