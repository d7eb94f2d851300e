// The worker side of expert parallelism (DESIGN.md "One request's life", spec §5 DeepEP): a
// model::ExpertExecutor that runs a MoE layer's routed experts on the expert hosts the current
// placement names. For each layer call it picks, for every (token, rank) slot, one replica of the
// routed expert (spread by token over the replicas on live hosts), sends one ExpertDispatch per
// host (FP8 e4m3 rows + fp32 1x128 scales under numerics fp8act, exactly what act_quant gives the
// local GEMM; fp32 rows under dequant), waits for every host's ExpertCombine (BF16 / fp32) and
// writes each slot's output where the engine expects it. The engine combines in top-k rank order,
// so the result never depends on which replica ran a row or when it answered: greedy output and
// logits equal the single-process engine's bit for bit.
// Failure: a host that is lost (the transport says so) or answers with an error has its rows
// re-sent to other replicas within the same call; an expert with no live replica, or no answer
// within the timeout, fails the step (std::runtime_error naming layer, expert or host), which
// fails that step's requests with a clear error, never a hang.
// The shared expert is not here: it runs with attention on the worker (model/moe.hpp), as in
// DeepSeek's prefill layout; only routed experts cross the network.
// Threading: run() on the engine's thread (it blocks until the layer's combines are in);
// on_combine, on_peer_change and install from any thread (the role's actor, the node actor).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include "actors/node/node_role.hpp"
#include "actors/node/peer_directory.hpp"
#include "actors/node/transport_bridge.hpp"
#include "balance/placement.hpp"
#include "gpu/backend.hpp"
#include "model/linear.hpp"
#include "model/moe.hpp"
#include "transport/thread_annotations.hpp"

namespace prometheus {
class Histogram;
}
namespace sy::monitoring {
class Registry;
}

namespace sy::actors::dispatch {

struct RemoteExpertOptions {
  const gpu::Backend* backend = nullptr;  // for act_quant; REQUIRES non-null
  model::Numerics numerics = model::Numerics::fp8act;
  std::chrono::milliseconds timeout{4000};  // per layer call, re-sends included
  std::string node_name;                     // this worker, for messages
  // switchyard_moe_dispatch_seconds (start: quantize, route, send) and _combine_seconds (finish:
  // waiting for and unpacking the answers) per layer call; null: not measured.
  monitoring::Registry* metrics = nullptr;
};

class RemoteExpertExecutor final : public model::ExpertExecutor {
 public:
  RemoteExpertExecutor(node::TransportBridge& bridge, node::PeerDirectory& peers, balance::ExpertPlacement placement,
                       RemoteExpertOptions options);

  void run(const model::ExpertBatch& batch) override;
  // start() routes, quantizes and sends one layer call's dispatches; finish() waits for the
  // combines (re-sending a failed host's rows to other replicas) and writes expert_out. Several
  // calls may be in flight (the engine's two micro-batches). Engine thread only.
  Ticket start(const model::ExpertBatch& batch) override;
  void finish(Ticket ticket) override;
  void cancel(Ticket ticket) override;

  // An ExpertCombine from a host (routed by the role's actor).
  void on_combine(const received<schemas::ExpertCombine>& m);
  // Hosts going away (and coming back) change where rows go from now on.
  void on_peer_change(const node::PeerChange& change);
  // A new placement (higher epoch): layer calls after this return use it.
  void install(balance::ExpertPlacement placement);
  // A migration step from the controller (any thread): a commit installs the placement; every
  // phase is acknowledged to the sender (a worker has nothing to stage or release). A commit's
  // ack waits until no layer call started with an older epoch is in flight: the controller
  // releases the old epoch on the hosts once every worker acked, so rows routed with it (first
  // sends and re-sends alike) must all have been answered by then.
  void on_placement(const received<schemas::PlacementUpdate>& m);
  std::uint64_t epoch() const;
  // The node is stopping: calls in progress and later ones fail at once instead of waiting.
  void close();

 private:
  struct Row {
    std::int64_t token = 0;  // row of the batch's x
    std::int64_t out = 0;    // slot index t * K + k into expert_out
    int expert = 0;
    int slot = 0;
  };
  struct Pending {
    std::string host;
    std::vector<Row> rows;  // in dispatch order (grouped by slot, ascending)
    bool done = false;
    std::string error;       // set with done when the host refused or was lost
    std::vector<std::byte> outputs;
    schemas::OutputDtype dtype = schemas::OutputDtype::BF16;
  };

  // One layer call between start() and finish() (engine thread only).
  struct Call {
    model::ExpertBatch batch;
    int layer = 0;
    std::chrono::steady_clock::time_point deadline;
    std::shared_ptr<const balance::ExpertPlacement> placement;
    std::set<std::string> excluded;  // hosts lost or failed for this call
    std::vector<gpu::fp8_e4m3> xq;   // fp8act: the quantized rows [tokens, hidden]
    std::vector<float> scales;       // and their scales [tokens, hidden / 128]
    std::vector<std::uint64_t> batches;  // dispatches of the current round
  };
  // Routes `rows` to live replicas and sends one dispatch per host (a round).
  void send_round(Call& call, std::vector<Row> rows);
  // A call that routed with `epoch` ended: sends the commit acks that waited for it.
  void call_ended(std::uint64_t epoch);
  void send_ack(transport::PeerId to, std::uint64_t epoch, schemas::PlacementPhase phase);

  node::TransportBridge& bridge_;
  node::PeerDirectory& peers_;
  const RemoteExpertOptions options_;
  std::map<Ticket, Call> calls_;  // engine thread only
  Ticket next_ticket_ = 1;        // engine thread only
  prometheus::Histogram* dispatch_seconds_ = nullptr;
  prometheus::Histogram* combine_seconds_ = nullptr;

  mutable std::mutex mutex_;
  std::condition_variable answered_;
  std::shared_ptr<const balance::ExpertPlacement> placement_ SY_GUARDED_BY(mutex_);
  std::set<std::string> lost_ SY_GUARDED_BY(mutex_);
  std::map<std::uint64_t, Pending> pending_ SY_GUARDED_BY(mutex_);
  std::uint64_t next_batch_ SY_GUARDED_BY(mutex_) = 1;
  bool closed_ SY_GUARDED_BY(mutex_) = false;
  std::map<std::uint64_t, int> in_flight_ SY_GUARDED_BY(mutex_);  // layer calls by the epoch they route with
  std::vector<std::pair<std::uint64_t, transport::PeerId>> held_acks_ SY_GUARDED_BY(mutex_);  // commits (epoch, from)
};

// The executor a prefill or decode role runs its engine with: remote when the cluster has expert
// hosts (`placement` set), null (experts in the process) otherwise.
std::unique_ptr<RemoteExpertExecutor> make_remote_experts(node::RoleContext& context,
                                                          const std::optional<balance::ExpertPlacement>& placement,
                                                          const gpu::Backend* backend, model::Numerics numerics);

}  // namespace sy::actors::dispatch
