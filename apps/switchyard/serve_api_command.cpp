// switchyard serve-api --model DIR: the cluster API (schemas/cluster.capnp) served by one process
// that runs every role (actors/cluster_api LocalGenerationService + RpcServer), and with --http
// the OpenAI-compatible HTTP API too (actors/http_api OpenAiServer, same service). Prints one line
// to stdout when ready, "api listening on ADDR", then with --http "http listening on ADDR"
// (scripts wait for them); the rest goes to stderr. SIGINT/SIGTERM: stop accepting, let requests
// in flight finish for --grace seconds, cancel the rest, exit 0.
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "actors/cluster_api/local_generation_service.hpp"
#include "actors/cluster_api/rpc_server.hpp"
#include "actors/http_api/openai_server.hpp"
#include "apps/switchyard/backends.hpp"
#include "apps/switchyard/commands.hpp"
#include "model/config.hpp"
#include "model/linear.hpp"
#include "model/tokenizer.hpp"

namespace sy::apps {
namespace {

struct ServeApiArgs {
  std::string model_dir;
  std::string listen = "127.0.0.1:7433";
  std::string tls_cert;
  std::string tls_key;
  std::string backend = backend_names().back();  // the fastest linked in
  std::string numerics = "fp8act";
  std::int64_t kv_pages = 256;
  std::int64_t max_batch = 8;
  std::int64_t max_waiting = 32;
  bool mtp = false;
  std::int64_t max_seq_len = 0;
  double grace_s = 5.0;
  std::string http;               // empty: no HTTP API
  std::string api_key;            // empty: $SY_API_KEY, else none
  std::string served_model_name;  // empty: the model folder's name
  std::size_t http_max_body = 1 << 20;
  int http_max_in_flight = 64;
};

int run_serve_api(const ServeApiArgs& a) {
  if (a.grace_s < 0) throw std::invalid_argument(fmt::format("--grace must be >= 0 (got {})", a.grace_s));
  // SIGINT/SIGTERM are blocked before any thread starts (threads inherit the mask), and this
  // thread collects them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  actors::cluster_api::LocalServiceOptions options;
  options.model_dir = a.model_dir;
  options.backend = &find_backend(a.backend);
  options.numerics = model::parse_numerics(a.numerics);
  options.kv_pages = a.kv_pages;
  options.max_batch = a.max_batch;
  options.max_waiting = a.max_waiting;
  options.mtp = a.mtp;
  options.max_seq_len = a.max_seq_len;
  actors::cluster_api::LocalGenerationService service(options);
  actors::cluster_api::RpcServerOptions rpc;
  rpc.listen = a.listen;
  rpc.tls_cert_file = a.tls_cert;
  rpc.tls_key_file = a.tls_key;
  actors::cluster_api::RpcServer server(service, rpc);
  std::printf("api listening on %s\n", server.address().c_str());
  std::fflush(stdout);
  std::optional<actors::http_api::OpenAiServer> http;
  if (!a.http.empty()) {
    actors::http_api::OpenAiServerOptions h;
    h.listen = a.http;
    h.model_id = a.served_model_name.empty() ? service.status().model_name : a.served_model_name;
    h.api_key = a.api_key;
    if (const char* env = std::getenv("SY_API_KEY"); h.api_key.empty() && env != nullptr) h.api_key = env;
    h.max_body_bytes = a.http_max_body;
    h.max_in_flight = a.http_max_in_flight;
    h.threads = a.http_max_in_flight + 16;  // refusals and /health still find a worker
    const auto config = model::ModelConfig::from_file(std::filesystem::path(a.model_dir) / "config.json");
    h.context_tokens = a.max_seq_len > 0 ? a.max_seq_len : config.max_position_embeddings;
    http.emplace(service, model::Tokenizer::load(a.model_dir), h);
    std::printf("http listening on %s\n", http->address().c_str());
    std::fflush(stdout);
  }

  int signal = 0;
  sigwait(&signals, &signal);
  fmt::print(stderr, "serve-api: {}: stopping (grace {} s)\n", signal == SIGINT ? "SIGINT" : "SIGTERM", a.grace_s);
  server.stop_accepting();
  if (http) http->stop_accepting();
  service.stop(std::chrono::milliseconds(static_cast<std::int64_t>(a.grace_s * 1000.0)));
  // Every request has ended; give the loop and the HTTP workers a moment to deliver the last replies.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while ((server.active_calls() > 0 || (http && http->active_requests() > 0)) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (http) http->stop();
  server.stop();
  fmt::print(stderr, "serve-api: stopped\n");
  return 0;
}

}  // namespace

void add_serve_api_command(CLI::App& app, CommandTable& commands) {
  auto args = std::make_shared<ServeApiArgs>();
  auto* cmd = app.add_subcommand("serve-api", "Serve the cluster API from this one process (every role co-located)");
  cmd->add_option("--model", args->model_dir, "Hugging Face DeepSeek-V3 model folder")->required();
  cmd->add_option("--listen", args->listen, "HOST:PORT (port 0: any free one) or unix:/path")->capture_default_str();
  cmd->add_option("--tls-cert", args->tls_cert, "TLS for the RPC API: PEM certificate chain file (with --tls-key)");
  cmd->add_option("--tls-key", args->tls_key, "TLS for the RPC API: PEM private key file");
  cmd->add_option("--backend", args->backend, "Kernel backend: " + fmt::format("{}", fmt::join(backend_names(), " | ")))
      ->capture_default_str();
  cmd->add_option("--numerics", args->numerics, "fp8act (FP8 activations, BF16 KV cache) | dequant (fp32)")
      ->capture_default_str();
  cmd->add_option("--kv-pages", args->kv_pages, "KV pool size in 64-token pages")->capture_default_str();
  cmd->add_option("--max-batch", args->max_batch, "Requests one step runs at most")->capture_default_str();
  cmd->add_option("--max-waiting", args->max_waiting, "Admitted requests queued beyond the batch (then refused)")
      ->capture_default_str();
  cmd->add_flag("--mtp", args->mtp, "Self-speculative decoding with the MTP module (greedy requests)");
  cmd->add_option("--max-seq-len", args->max_seq_len, "Context length per request (default: max_position_embeddings)");
  cmd->add_option("--grace", args->grace_s, "Seconds requests in flight may finish after SIGTERM before cancellation")
      ->capture_default_str();
  cmd->add_option("--http", args->http,
                  "Also serve the OpenAI-compatible HTTP API on HOST:PORT (port 0: any free one)");
  cmd->add_option("--api-key", args->api_key,
                  "HTTP: require 'Authorization: Bearer KEY' on /v1/ (default: $SY_API_KEY)");
  cmd->add_option("--served-model-name", args->served_model_name,
                  "HTTP: the model id clients name (default: the model folder's name)");
  cmd->add_option("--http-max-body", args->http_max_body, "HTTP: largest request body in bytes (larger: 413)")
      ->capture_default_str();
  cmd->add_option("--http-max-in-flight", args->http_max_in_flight,
                  "HTTP: generation requests served at once (more: 429 with Retry-After)")
      ->capture_default_str();
  commands.add(cmd, [args] { return run_serve_api(*args); });
}

}  // namespace sy::apps
