// The router role (DESIGN.md "One request's life" step 1, "Roles"): the cluster's front door.
// It implements the cluster API's GenerationService: tokenizes and checks each request against
// the model (ids, context length, sampling), picks a decode worker (most free KV pages by its
// last WorkerLoad, then fewest requests this router gave it, then round robin) and a prefill
// worker (round robin), and sends the PrefillJob. TokenBatches from prefill (index 0) and decode
// (the rest) are put back in order by their firstIndex and streamed to the client's sink as ids
// and text; RequestFailed becomes the sink's error (retryable or not, as the worker said). When a
// worker is lost, every request it held fails at once with a retryable error, and new requests
// go to the workers that are left. The role also serves the Cap'n Proto cluster API
// (actors/cluster_api/rpc_server.hpp) at the config's api.rpc address and the OpenAI-compatible
// HTTP API (actors/http_api/openai_server.hpp) at api.http. It answers the API's operator calls
// (cluster_api/operator_service.hpp) through the controller and load_stats roles of its node, and
// drains prefill/decode nodes itself: a drained node gets no new requests, and the drain call
// returns once the node holds none of the router's requests.
// Threading: submit/cancel/status from any thread (the RPC loop) and the wire kinds from a thin
// CAF actor are all posted to the router's own thread, which alone touches the request table and
// calls the sinks; status reads a snapshot under a mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "actors/controller/controller_role.hpp"
#include "actors/load_stats/load_stats_role.hpp"
#include "actors/node/node_role.hpp"

namespace sy::actors::router {

struct RouterRoleOptions {
  std::filesystem::path model_dir;   // config.json and the tokenizer (no weights are loaded)
  std::string backend_name;          // for status only: what the workers run
  std::string numerics = "fp8act";   // for status only
  std::string rpc_listen;            // "HOST:PORT" of the cluster API; empty: no RPC server
  std::string http_listen;           // "HOST:PORT" of the OpenAI-compatible HTTP API; empty: none
  std::string api_key;               // HTTP Bearer key; empty: none required
  std::int64_t max_seq_len = 0;      // context per request the workers run; 0: the model's
  // A request that makes no progress (no token, no failure) for this long fails (unavailable):
  // the last guard against a worker that went silent without the transport noticing.
  std::chrono::milliseconds stall_timeout{60000};
  std::string admin_token;           // for the cluster API's Admin calls; empty: refused
  std::string rpc_tls_cert;          // PEM files for TLS on the cluster API; empty: plain TCP
  std::string rpc_tls_key;
  // The operator calls' back ends on this node (both or neither; null: those calls answer
  // "unavailable"). Borrowed; the node stops the router first.
  controller::ControllerRole* controller = nullptr;
  load_stats::LoadStatsRole* stats = nullptr;
};

// Loads the tokenizer and config, routes TokenBatch, RequestFailed and WorkerLoad to the role and
// starts the RPC server. Throws on a bad model folder or an address it cannot bind.
std::unique_ptr<node::NodeRole> make_router_role(node::RoleContext& context, RouterRoleOptions options);

}  // namespace sy::actors::router
