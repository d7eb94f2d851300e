// The seam between the cluster API front ends (rpc_server: Cap'n Proto; later HTTP) and whatever
// generates tokens: today LocalGenerationService (one process, every role, a DecodeBatcher on
// its own thread), next the router actor of a cluster. Front ends only ever see this interface.
// CAF-free. Threading: submit, cancel and status are safe from any thread; a GenerationSink is
// called from the service's own thread (never concurrently for one request) and must not block.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "gpu/sampling.hpp"

namespace sy::actors::cluster_api {

using RequestId = std::uint64_t;  // assigned by the service; non-zero, unique for its lifetime

// One completion request as a client stated it; the service tokenizes and checks it.
struct GenerateInput {
  // Prompt text (tokenized by the service) or token ids; either must be non-empty.
  std::variant<std::string, std::vector<std::int32_t>> prompt;
  bool chat = false;              // text only: format it as one user turn of the chat format
  std::int64_t max_tokens = 16;   // completion tokens at most, >= 1
  gpu::SamplerConfig sampler{};   // temperature 0: greedy
  bool stop_at_eos = true;
  std::string client_request_id;  // the client's label, echoed; may be empty
};

enum class Finish { stop, length, cancelled };

// What a finished request cost. Durations are milliseconds from submit() on the service's
// steady clock.
struct GenerationSummary {
  RequestId id = 0;
  std::string client_request_id;
  Finish finish = Finish::length;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  double queue_ms = 0;  // until admitted (KV pages reserved)
  double ttft_ms = 0;   // until the first token was known; 0 when none was generated
  double total_ms = 0;  // until the last token (or the cancellation)
  std::int64_t mtp_drafts = 0;
  std::int64_t mtp_accepted = 0;
};

// Why a request could not be served. The kind tells a client what to do next.
enum class ErrorKind {
  bad_request,  // invalid input: never retryable as is
  overloaded,   // refused for now (KV pool or queue full): retryable
  unavailable,  // the service is stopping or lost a worker: retryable elsewhere
  internal,     // a bug or unexpected state: not retryable
};

struct GenerationError {
  ErrorKind kind = ErrorKind::internal;
  std::string message;  // for people: names the problem, e.g. "kv_exhausted: need 3 pages, 1 free"
  bool retryable() const { return kind == ErrorKind::overloaded || kind == ErrorKind::unavailable; }
};

// Receives one request's output: zero or more on_tokens, then exactly one of on_done and
// on_error. Called from the service's thread (or, for an immediate refusal, from submit's caller).
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // New tokens in order and the text they complete (special tokens skipped; a UTF-8 character is
  // never split across calls). `ids` may be empty when `text` is the tail held back at the end.
  virtual void on_tokens(std::span<const std::int32_t> ids, std::string_view text) = 0;
  virtual void on_done(const GenerationSummary& summary) = 0;
  virtual void on_error(const GenerationError& error) = 0;
};

struct NodeInfo {
  std::string name;
  std::vector<std::string> roles;
  enum class Health { healthy, degraded, down } health = Health::healthy;
  std::string detail;  // why not healthy, or that it is draining; may be empty
  bool draining = false;  // drained or draining: gets no new requests (OperatorService::drain)
};

// A snapshot for `status`; taken without waiting for a step.
struct StatusSnapshot {
  std::string model_name;
  std::string backend;
  std::string numerics;
  double uptime_s = 0;
  std::vector<NodeInfo> nodes;
  std::int64_t running = 0;
  std::int64_t waiting = 0;   // admitted (pages held) but not running, plus submissions not yet admitted
  std::int64_t max_batch = 0;
  std::int64_t kv_pages_used = 0;
  std::int64_t kv_pages_free = 0;
  std::int64_t kv_pages_total = 0;
  std::int64_t completed = 0;
  std::int64_t cancelled = 0;
  std::int64_t failed = 0;
  std::int64_t refused = 0;
  bool mtp = false;
};

class GenerationService {
 public:
  virtual ~GenerationService() = default;
  // Queues a request and returns its id at once; its outcome arrives at `sink`, which the
  // service holds until on_done/on_error has returned (or until cancel()).
  virtual RequestId submit(GenerateInput input, std::shared_ptr<GenerationSink> sink) = 0;
  // Stops a request at its next step boundary and frees its pages; its sink gets on_done with
  // Finish::cancelled (unless it already ended). Idempotent; unknown ids are ignored.
  virtual void cancel(RequestId id) = 0;
  virtual StatusSnapshot status() = 0;
};

}  // namespace sy::actors::cluster_api
