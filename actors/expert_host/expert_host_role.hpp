// The expert_host role (DESIGN.md "Roles", issue "Expert parallelism"): holds the routed-expert
// weights of its physical slots and runs them for every worker that dispatches to it. For each
// ExpertDispatch it checks the epoch and that every slot is its own in that placement, runs each
// slot's SwiGLU expert as one GEMM over that slot's rows (FP8 rows straight into the FP8 GEMM under
// fp8act, the same path the single-process engine takes), rounds outputs to the combine dtype
// (BF16 under fp8act) and answers with one ExpertCombine in the dispatch's row order. It counts
// token rows per (layer, logical expert) and sends them to every load_stats node once per report
// interval (ExpertLoadReport).
// Migration (PlacementUpdate from the controller): stage reads in the weights of experts a new
// placement gives it (the checkpoint is mapped: staging touches their pages, so the switch finds
// them resident) and acks; commit makes it serve the new epoch beside the old one; release drops
// the old; abort forgets a staged epoch. Dispatches name their epoch, and any epoch it serves is
// answered, so workers may switch at their own pace.
// Weights: the checkpoint is mapped, not read; only the tensors of the experts this host runs are
// ever touched, so only they become resident (the rest of a 671B checkpoint stays on disk).
// Threading: a thin CAF actor posts dispatches to the role's worker thread, which alone runs the
// experts and owns the counts.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>

#include "actors/node/node_role.hpp"
#include "balance/placement.hpp"
#include "gpu/backend.hpp"
#include "model/linear.hpp"

namespace sy::actors::expert_host {

struct ExpertHostOptions {
  std::filesystem::path model_dir;
  const gpu::Backend* backend = nullptr;  // REQUIRES: non-null, host memory (ref, cpu)
  model::Numerics numerics = model::Numerics::fp8act;
  balance::ExpertPlacement placement;     // must name this node among its hosts
  std::chrono::milliseconds report_interval{1000};
  // Test seam: hold every stage ack back this long (a migration in progress that a test can
  // interrupt). Zero in production.
  std::chrono::milliseconds stage_delay{0};
};

std::unique_ptr<node::NodeRole> make_expert_host_role(node::RoleContext& context, ExpertHostOptions options);

}  // namespace sy::actors::expert_host
