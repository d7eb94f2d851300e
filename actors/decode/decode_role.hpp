// The decode role (DESIGN.md "Roles", "One request's life" steps 2-4): owns the paged latent KV
// cache and the running batch of one node. For each request a prefill worker asks it for pages
// (KvReserveRequest); it reserves prompt + maxTokens pages in every layer's pool, all or nothing,
// and grants them with the remote address of each pool and the packed key of its registered KV
// arena (or refuses: kvExhausted, retryable). Prefill RMA-puts the prompt's KV entries straight
// into those pages and hands off (KvHandOff); decode checks length and checksum, adopts the
// sequence and decodes it with continuous batching (requests join and leave between steps, MTP
// drafts for greedy requests when enabled), streaming TokenBatches to the router. A reservation
// without a hand-off within the expiry is released (and prefill told, KvRelease expired).
// Messages for requests it does not hold are dropped and counted, never an error of the node.
// It reports WorkerLoad (free pages, running, waiting) to every router a few times a second.
// Threading: a thin CAF actor takes the wire kinds from the transport bridge and posts them to
// the role's worker thread, which alone touches the engine, the batcher and the request tables.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include "actors/node/node_role.hpp"
#include "balance/placement.hpp"
#include "gpu/backend.hpp"
#include "model/linear.hpp"

namespace sy::actors::decode {

struct DecodeRoleOptions {
  std::filesystem::path model_dir;
  const gpu::Backend* backend = nullptr;  // REQUIRES: non-null, host memory (ref, cpu)
  model::Numerics numerics = model::Numerics::fp8act;
  std::int64_t kv_pages = 4096;  // pages per layer pool
  std::int64_t max_batch = 64;   // running requests per step
  std::int64_t max_waiting = 64; // reservations and queued requests beyond the batch
  bool mtp = false;              // MTP drafts for greedy requests (needs an MTP model)
  std::chrono::milliseconds reservation_expiry{10000};
  std::chrono::milliseconds load_report_interval{200};
  std::filesystem::path dump_logits_dir;  // empty: no dump (node::LogitDump)
  // Set: routed experts run on the expert hosts this placement names (dispatch::
  // RemoteExpertExecutor); unset: in this process.
  std::optional<balance::ExpertPlacement> expert_placement;
  // Two-micro-batch overlap of expert communication with attention (EngineOptions); only pays
  // with expert hosts.
  bool two_micro_batches = false;
  std::int64_t max_seq_len = 0;  // context per request; 0: the model's
};

// Loads the model, registers the KV arena with the transport and routes KvReserveRequest,
// KvHandOff, KvRelease and CancelRequest to the role. Throws on a bad model or options.
std::unique_ptr<node::NodeRole> make_decode_role(node::RoleContext& context, DecodeRoleOptions options);

}  // namespace sy::actors::decode
