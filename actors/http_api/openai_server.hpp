// The OpenAI-compatible HTTP front end: /v1/completions, /v1/chat/completions (SSE streaming),
// /v1/models and /health over a GenerationService (the same seam as the Cap'n Proto server).
// Chat messages are formatted (model/chat_format) and tokenized here, so the service gets ids.
// Threading: cpp-httplib's pool runs the handlers; the service calls a per-request sink from its
// own thread, which only appends under a mutex and signals a condition variable the handler waits
// on, so the service never blocks on a client. A client that drops a stream cancels its request.
// Borrows the service, which must outlive the server. Public methods: any one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "actors/cluster_api/generation_service.hpp"
#include "model/tokenizer.hpp"

namespace sy::actors::http_api {

struct OpenAiServerOptions {
  // "HOST:PORT" (port 0: any free one) or "[IPv6]:PORT". Loopback by default (DESIGN.md).
  std::string listen = "127.0.0.1:8000";
  // What /v1/models lists and what requests must name in "model" (else 404). REQUIRES: non-empty.
  std::string model_id;
  // When non-empty, every /v1/ request needs "Authorization: Bearer <api_key>" (else 401).
  // /health stays open so probes need no secret.
  std::string api_key;
  // Request bodies above this are refused with 413 before they are read in full.
  std::size_t max_body_bytes = 1 << 20;
  // Tokens per request (prompt + completion) the service allows; 0 when unknown. Only used to
  // default a chat request's max_tokens to what fits.
  std::int64_t context_tokens = 0;
  // max_tokens when a request gives none: OpenAI's 16 for completions; for chat, this value
  // (clipped to the context left after the prompt).
  std::int64_t default_chat_max_tokens = 512;
  // Generation requests served at once (streams included). Beyond it a request is answered at
  // once with 429 and Retry-After instead of queueing. The pool has `threads` workers; keep it
  // above max_in_flight so refusals (and /health) still find a free worker.
  int max_in_flight = 64;
  int threads = 80;
};

class OpenAiServer {
 public:
  // Binds and starts serving before it returns. Throws std::invalid_argument for bad options and
  // std::runtime_error naming the address when it cannot be parsed or bound; no thread is left
  // running then. `tokenizer` is the model's (chat formatting, default max_tokens).
  OpenAiServer(cluster_api::GenerationService& service, model::Tokenizer tokenizer, OpenAiServerOptions options);
  ~OpenAiServer();  // stop()
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  // "HOST:PORT" with the port actually bound.
  const std::string& address() const { return address_; }

  // First step of a shutdown: new generation requests get 503 (retryable) and /health reports
  // "stopping"; requests in flight go on. Idempotent.
  void stop_accepting();
  // Generation requests in flight (admitted and not yet fully answered).
  std::int64_t active_requests() const;
  // Closes the listening socket, abandons requests still waiting (each is cancelled in the
  // service and answered 503 if nothing was sent yet) and joins every thread. Idempotent.
  void stop();

  struct Impl;  // openai_server.cpp

 private:
  std::unique_ptr<Impl> impl_;
  std::string address_;
  std::thread listener_;
};

}  // namespace sy::actors::http_api
