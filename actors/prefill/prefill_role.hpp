// The prefill role (DESIGN.md "One request's life" steps 1-3): runs admitted prompts and hands
// their latent KV cache to a decode worker. For each PrefillJob from the router it asks the named
// decode worker for pages (KvReserveRequest) while it runs the prompt in its own engine (chunked,
// continuously batched with other jobs). Once both the first token and the grant are in, it
// RMA-puts the prompt's KV entries (every layer, one put per page) straight into the granted
// pages, flushes, and then sends the first token to the router (TokenBatch index 0) and the
// hand-off to decode (KvHandOff: first token, checksum, MTP continuation). A request that ends
// at its first token (EOS, or maxTokens 1) finishes here and gives the reservation back. Puts
// that fail or do not complete within the transfer timeout fail the request cleanly: the
// router gets RequestFailed, decode a KvRelease, and the prefill pages are freed either way.
// Threading: a thin CAF actor posts the wire kinds to the role's worker thread, which alone
// touches the engine and the job table; put completions come back from the transport's thread as
// posted tasks.
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

namespace sy::actors::prefill {

struct PrefillRoleOptions {
  std::filesystem::path model_dir;
  const gpu::Backend* backend = nullptr;  // REQUIRES: non-null, host memory (ref, cpu)
  model::Numerics numerics = model::Numerics::fp8act;
  std::int64_t kv_pages = 1024;  // prompt pages per layer pool (scratch: freed after each hand-off)
  std::int64_t max_batch = 8;    // prompts prefilled together
  std::int64_t max_waiting = 64; // admitted prompts queued beyond the batch
  bool mtp = false;              // run the MTP module over the prompt for decode's drafts
  std::chrono::milliseconds transfer_timeout{10000};  // grant wait + puts + flush
  std::filesystem::path dump_logits_dir;  // empty: no dump (node::LogitDump)
  // Set: routed experts run on the expert hosts this placement names (dispatch::
  // RemoteExpertExecutor); unset: in this process.
  std::optional<balance::ExpertPlacement> expert_placement;
  // Two-micro-batch overlap of expert communication with attention (EngineOptions); only pays
  // with expert hosts.
  bool two_micro_batches = false;
  std::int64_t max_seq_len = 0;  // context per request; 0: the model's
};

// Loads the model and routes PrefillJob, KvReservation, KvRelease and CancelRequest to the role.
std::unique_ptr<node::NodeRole> make_prefill_role(node::RoleContext& context, PrefillRoleOptions options);

}  // namespace sy::actors::prefill
