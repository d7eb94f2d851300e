// Continuous batching over one Engine: the CAF-free core of the decode worker (and of the prefill
// worker, through prefill_only requests), and what generate() runs on. Requests join and leave
// between steps; each step() runs one engine step for every running request (decode tokens
// first, MTP verification pairs included, then prompt chunks with the step's remaining token
// budget) and one MTP step for the drafts, and returns per-request events. A request's tokens do
// not depend on what else is in the batch or when it joined (DESIGN.md "Determinism contract":
// bitwise on the ref backend). Not thread-safe: one owner (an actor, or generate()) calls
// everything. Borrows the Engine, which must outlive it; owns the sequences it creates and frees
// them when requests end and when it is destroyed.
//
// A request's KV pages (prompt + max_tokens) are reserved when it is admitted, so an admitted
// request never fails for lack of KV. Lifecycles:
//   admit ─► waiting ─► running (prefill, then decode) ─► finished / failed / cancelled
//   admit(prefill_only) ─► ... ─► prefilled (pages held for the hand-off) ─► release
//   reserve ─► (pages filled from outside) ─► adopt ─► waiting ─► running (decode) ─► ...
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/engine.hpp"
#include "model/generator.hpp"
#include "model/kv_transfer.hpp"

namespace sy::model {

using RequestId = std::uint64_t;

struct BatcherOptions {
  std::int64_t max_running = 16;  // requests in each step (prefilling or decoding), >= 1
  // Requests holding pages but not running: admitted and queued, or reserved for a hand-off that
  // has not arrived. Admission beyond max_running + max_waiting is refused (queue_full). >= 0.
  std::int64_t max_waiting = 64;
  // MTP drafts (spec §1.8) for greedy requests, as in generate(). REQUIRES: engine.has_mtp().
  bool mtp = false;
  bool keep_logits = false;  // RequestEvent::logits: one row per new token
  // Test seam, as GenerationOptions::draft_override: request id, index in the request's tokens of
  // the token the draft guesses, the MTP module's draft.
  std::function<std::int32_t(RequestId, std::size_t, std::int32_t)> draft_override = nullptr;
};

// Why admit() or reserve() refused. Both are retryable: later, or on another worker.
enum class AdmitRefusal {
  none,          // admitted
  kv_exhausted,  // too few free KV pages (or no free sequence slot) now
  queue_full,    // max_running + max_waiting requests already hold pages
};

struct AdmitResult {
  AdmitRefusal refusal = AdmitRefusal::none;
  std::string message;            // for people, when refused
  std::int64_t pages_needed = 0;  // kv_exhausted: pages the request needs
  std::int64_t free_pages = 0;    // kv_exhausted: pages free when refused
  // reserve() only: the sequence and its page ids in logical order (what a KvGrant carries).
  SequenceId seq = -1;
  std::vector<std::int32_t> pages;

  bool admitted() const { return refusal == AdmitRefusal::none; }
};

enum class FinishReason {
  none,       // still running
  stop,       // emitted eos_token_id (stop_at_eos)
  length,     // reached max_tokens
  prefilled,  // prefill_only: first token chosen, pages held for the hand-off until release()
  cancelled,  // cancel(): pages freed
  failed,     // the engine failed the step: pages freed, `error` says why
};

// What happened to one request in one step (or at its boundary).
struct RequestEvent {
  RequestId id = 0;
  std::vector<std::int32_t> tokens;  // new tokens, in order (0, 1 or 2 with an accepted draft)
  std::vector<float> logits;         // [tokens, vocab] when keep_logits
  FinishReason finish = FinishReason::none;
  std::string error;                 // failed
  std::int64_t mtp_drafts = 0;       // drafts verified this step
  std::int64_t mtp_accepted = 0;     // of which the main model agreed with
  std::optional<KvHandoff> handoff;  // prefilled
};

// A handed-off request's sampling and stops: GenerationRequest without the prompt.
struct ContinuationParams {
  std::int64_t max_tokens = 16;  // counts the first token (prefill's); REQUIRES: >= 2
  gpu::SamplerConfig sampler{};
  bool stop_at_eos = true;
};

class DecodeBatcher {
 public:
  // Throws std::invalid_argument on bad options (or mtp on an engine without MTP).
  DecodeBatcher(Engine& engine, BatcherOptions options);
  ~DecodeBatcher();  // frees every sequence it holds
  DecodeBatcher(const DecodeBatcher&) = delete;
  DecodeBatcher& operator=(const DecodeBatcher&) = delete;

  // Queues a request and reserves its pages: prompt + max_tokens, or only the prompt when
  // prefill_only (a prefill worker's request: it ends `prefilled` after the first token, with the
  // hand-off description, and keeps its pages until release()). Refusals are values (retryable);
  // an invalid request or a reused live id throws std::invalid_argument naming the problem, as
  // does a request that could never fit the pool.
  AdmitResult admit(RequestId id, GenerationRequest request, bool prefill_only = false);

  // Decode side of a hand-off, step 1: reserves pages for prompt_tokens + max_tokens and returns
  // the sequence and its page ids (the remote side writes positions [0, prompt_tokens) of every
  // layer into them). Refusals as admit().
  AdmitResult reserve(RequestId id, std::int64_t prompt_tokens, std::int64_t max_tokens);
  // Step 2, once the pages are written: checks the hand-off against the reservation
  // (verify_kv_handoff, checksum included when verify_checksum), adopts the sequence, runs the
  // MTP continuation when the request drafts (greedy, mtp on, handoff.last_hidden given), and
  // queues the request; its next token is decoded after handoff.first_token. Throws
  // KvHandoffError (mismatch, reservation too small) or std::invalid_argument (unknown
  // reservation, bad params); on any error the reservation is released (its pages are free).
  void adopt(RequestId id, const KvHandoff& handoff, const ContinuationParams& params, bool verify_checksum = true);

  // Frees a reservation or a prefilled request's pages now (after the hand-off's puts completed,
  // or when it is given up). False when the id holds neither (idempotent, like KvRelease).
  bool release(RequestId id);
  // Ends a queued or running request (or a reservation) at the next step boundary: its pages
  // are freed and the next step() reports it cancelled. False for an unknown id.
  bool cancel(RequestId id);

  // One step at a boundary: cancellations first, waiting requests join while fewer than
  // max_running run, then one engine step (and one MTP step) for all running requests. Events
  // come in processing order. An engine failure fails the requests of that step, not the batcher.
  std::vector<RequestEvent> step();

  // The sequence holding a request's pages (prefilled: what kv_page_spans exports). -1: unknown.
  SequenceId sequence(RequestId id) const;
  std::int64_t running() const { return static_cast<std::int64_t>(running_.size()); }
  std::int64_t waiting() const;  // queued + reserved
  // Nothing to step: no request is queued, running or waiting to be reported cancelled
  // (reservations and prefilled requests wait for calls, not steps).
  bool idle() const;
  Engine& engine() { return engine_; }

 private:
  struct Request;
  enum class Phase { reserved, waiting, running, prefilled };

  AdmitResult check_capacity(RequestId id, std::int64_t reserve_tokens) const;
  Request& add(RequestId id, std::int64_t reserve_tokens, Phase phase);
  void forget(Request& r);  // frees the sequence, drops the request
  RequestEvent& event_for(Request& r, std::vector<RequestEvent>& events);
  void emit(Request& r, std::int32_t token, std::span<const float> logits, std::vector<RequestEvent>& events);
  std::int32_t draft(const Request& r, std::span<const float> mtp_logits) const;

  Engine& engine_;
  BatcherOptions options_;
  std::unordered_map<RequestId, std::unique_ptr<Request>> requests_;
  std::vector<Request*> running_;  // in the order they joined: the order of each step's inputs
  std::deque<Request*> waiting_;
  std::int64_t reserved_ = 0;            // requests in Phase::reserved
  std::vector<RequestId> cancel_order_;  // cancel() calls since the last step
};

}  // namespace sy::model
