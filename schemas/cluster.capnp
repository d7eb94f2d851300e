# The cluster API (DESIGN.md "Interfaces and defaults"): what clients (yardctl, SDKs, the HTTP
# front end) call over Cap'n Proto RPC, by default at 127.0.0.1:7433. It exists so a client never
# needs to know which processes serve it: the same interface is answered today by one process
# running every role (`switchyard serve-api`, actors/cluster_api/local_generation_service) and
# later by the router actor of a cluster. The bootstrap capability of the connection is a Cluster.
#
# Read-only calls (generate, status, expertLoad, placement, history, balancing, planRebalance)
# need nothing but the connection. Calls that change the cluster (rebalance, importPlacement,
# pause/resume, interval/threshold, pin, drain) live on Admin, a capability that admin(token)
# hands out only for the server's admin token ([cluster] admin_token or SY_ADMIN_TOKEN): a client
# without the token cannot even name them. Expert-parallel calls need a cluster with expert hosts
# and the controller (and load_stats) on the router's node; elsewhere they fail with
# "unavailable: ...".
#
# Errors are Cap'n Proto exceptions; the type says what a client should do, the description
# (for people) names the problem:
#   FAILED        the request is invalid ("bad request: ...", e.g. a token id outside the
#                 vocabulary, temperature -1, an empty prompt, a request larger than the whole KV
#                 pool) or failed inside the server ("internal: ..."). Not retryable as is.
#   OVERLOADED    refused for now, nothing was kept: "overloaded: kv_exhausted: ..." (too few free
#                 KV pages), "overloaded: queue_full: ..." (too many requests held). Retry later
#                 or elsewhere.
#   DISCONNECTED  the server is shutting down or the connection broke. Retry elsewhere.
#
# Conventions as in common.capnp: ordinals are never reused; units are in the field names.
@0xb524787184a1ef2a;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sy::schemas");

using Serving = import "serving.capnp";

interface Cluster {
  generate @0 (request :GenerateRequest, sink :TokenSink) -> (summary :GenerateSummary);
  # Generates a completion for one prompt. Tokens stream to `sink` (push, in order, then done)
  # as the server produces them; the call returns the same summary once done() has returned.
  # Cancel by canceling this call (drop its promise) or by failing a push or done (throw from the
  # sink); the server then stops the request at its next step and frees its KV pages. A broken
  # connection cancels every call on it.

  status @1 () -> (status :ClusterStatus);
  # A snapshot of the cluster for operators (yardctl status). Cheap: never waits for a step.

  expertLoad @2 () -> (load :ExpertLoad);
  # Tokens per (MoE layer, logical expert) over load_stats' sliding window, and per expert host.

  placement @3 () -> (placement :Placement);
  # The placement being served (the controller's current epoch). Export = this, as JSON.

  history @4 () -> (rounds :List(RebalanceRound));
  # Rebalancing rounds, oldest first (the last 256).

  balancing @5 () -> (settings :BalancingSettings);
  # Automatic rounds: paused or not, interval, threshold, policy, pins.

  planRebalance @6 () -> (plan :RebalancePlan);
  # Dry run: the round the controller would run now (policy, pins, fewest moves) with its moves,
  # bytes and predicted balancedness, without running it. plan.round.outcome is "planned".

  admin @7 (token :Text) -> (admin :Admin);
  # The mutating calls, for the server's admin token. A wrong token, or a server with none
  # configured, fails (FAILED, "permission denied: ..."); compared in constant time.
}

# Calls that change the cluster. Obtained from Cluster.admin(token); valid for the connection.
interface Admin {
  rebalance @0 () -> (plan :RebalancePlan);
  # Runs a round now, paused or not, whatever the threshold (a plan without moves is skipped),
  # and returns when it ended: outcome "completed", "skipped" or "failed" (rolled back; detail
  # says which step and host). Fails (OVERLOADED) while another round runs.

  importPlacement @1 (placement :Placement) -> (plan :RebalancePlan);
  # Installs `placement` (e.g. an exported one) through a round, as given (pins are not applied).
  # It must match the served placement's hosts, slots, experts and MoE layers, and hold every
  # expert at least once per MoE layer (FAILED "bad request: ..." naming the first problem).

  pause @2 () -> (settings :BalancingSettings);
  # No automatic rounds until resume; rebalance and importPlacement still run.
  resume @3 () -> (settings :BalancingSettings);

  setInterval @4 (seconds :Float64) -> (settings :BalancingSettings);
  # Seconds between automatic rounds, 1..86400; the next round is due `seconds` from now.
  setThreshold @5 (threshold :Float64) -> (settings :BalancingSettings);
  # Least predicted gain of mean balancedness for an automatic round to migrate, 0..1.

  pin @6 (layer :UInt16, slot :UInt32, expert :UInt32) -> (settings :BalancingSettings);
  # From the next round on, `slot` of MoE layer `layer` holds logical `expert` whatever the
  # policy says (the policy's placement is adjusted by swapping replicas, so every expert keeps
  # its replica count). A slot has at most one pin; pinning it again replaces the pin.
  unpin @7 (layer :UInt16, slot :UInt32) -> (settings :BalancingSettings);
  # Removes the pin of that slot (FAILED when there is none).

  drain @8 (node :Text) -> (report :DrainReport);
  # Stops sending new requests to a prefill or decode node and returns once it holds none of
  # this router's requests (its running ones finish normally). The node stays out of routing
  # until undrain. Fails for an unknown node, a node without prefill or decode, or the last
  # undrained node of a role (nothing could serve).
  undrain @9 (node :Text) -> ();
  # Routes requests to the node again.
}

# Expert load over load_stats' window. Owner: the server.
struct ExpertLoad {
  windowS @0 :Float64;        # the window's length
  reports @1 :UInt32;         # expert-host reports in it
  experts @2 :UInt32;         # logical routed experts per MoE layer
  layers @3 :List(LayerLoad); # every MoE layer, ascending
  hosts @4 :List(HostLoad);   # every expert host of the placement, in placement order
}

struct LayerLoad {
  layer @0 :UInt16;           # checkpoint layer index
  tokens @1 :List(UInt64);    # [experts]: token rows run on each logical expert (all replicas)
  balancedness @2 :Float64;   # mean/max expert-host load under the served placement (1 = even)
}

struct HostLoad {
  name @0 :Text;
  tokens @1 :UInt64;          # token rows the host ran in the window, all layers
}

# Which logical expert every physical slot holds (balance/placement.hpp). Owner: the sender.
struct Placement {
  epoch @0 :UInt64;
  experts @1 :UInt32;           # logical routed experts per MoE layer
  slots @2 :UInt32;             # physical slots per MoE layer (experts + redundant)
  hosts @3 :List(Text);         # expert host names; index = host id
  hostOfSlot @4 :List(UInt16);  # [slots]: host id of each slot (the same for every layer)
  layers @5 :List(PlacementLayer);  # every MoE layer, ascending
  numLayers @6 :UInt16;         # checkpoint layers, dense ones included (they hold no slots)
}

struct PlacementLayer {
  layer @0 :UInt16;
  phy2log @1 :List(UInt32);     # [slots]: logical expert of each slot
}

# One rebalancing round, planned or run. Owner: the controller.
struct RebalanceRound {
  epoch @0 :UInt64;             # the epoch the round installs (or would)
  outcome @1 :Text;             # "completed", "skipped", "failed", or "planned" (dry run)
  detail @2 :Text;              # for people: why skipped or failed, or a summary
  trigger @3 :Text;             # "interval", "operator", "import" or "dry-run"
  moves @4 :UInt32;             # slots whose expert changes
  bytes @5 :UInt64;             # expert weight bytes the moves load
  balancednessBefore @6 :Float64;  # mean over MoE layers, under the window's load
  balancednessAfter @7 :Float64;   # predicted for the new placement
  seconds @8 :Float64;          # from stage to release (0 when nothing ran)
  startedUnixMs @9 :UInt64;     # wall clock when the round started
}

struct RebalancePlan {
  round @0 :RebalanceRound;
  moves @1 :List(ExpertMoveInfo);  # in the order the layers and slots go
  layers @2 :List(LayerBalance);
}

struct ExpertMoveInfo {
  layer @0 :UInt16;
  slot @1 :UInt32;
  host @2 :Text;           # the receiving expert host
  fromExpert @3 :UInt32;   # what the slot held
  toExpert @4 :UInt32;     # what it will hold
}

struct LayerBalance {
  layer @0 :UInt16;
  before @1 :Float64;
  after @2 :Float64;
}

struct BalancingSettings {
  paused @0 :Bool;
  intervalS @1 :Float64;
  threshold @2 :Float64;
  policy @3 :Text;              # "eplb", "balanced" or "balanced-strict"
  pins @4 :List(ExpertPin);
  epoch @5 :UInt64;             # of the placement being served
  roundRunning @6 :Bool;
  nextRoundInS @7 :Float64;     # until the next automatic round (0 when paused)
}

struct ExpertPin {
  layer @0 :UInt16;
  slot @1 :UInt32;
  expert @2 :UInt32;
}

struct DrainReport {
  node @0 :Text;
  requestsAtStart @1 :UInt32;   # this router's requests the node held when the drain began
  seconds @2 :Float64;          # until it held none
}

# One completion request, as the client states it. Owner: the client; the server checks every
# field (against the model it serves) before admitting it.
struct GenerateRequest {
  prompt :union {
    text @0 :Text;
    # UTF-8 text, encoded with the model's tokenizer (BOS added as tokenizer_config says, or by
    # the chat format when `chat`). Non-empty.

    tokenIds @1 :List(Int32);
    # [prompt_len] token ids, already tokenized (BOS included if wanted), each in [0, vocab).
    # Non-empty.
  }

  chat @2 :Bool;
  # Format `text` as one user turn of the model's chat format, followed by the assistant prompt.
  # Only with `text` (a FAILED bad request with tokenIds).

  sampling @3 :Serving.SamplingParams;
  # Required: temperature (0 = greedy), topP, topK, seed, maxTokens (>= 1; prompt + maxTokens
  # must fit the context) and stopAtEos. The same checks as everywhere else (gpu::validate).

  requestId @4 :Text;
  # Optional client-chosen label, at most 128 bytes, echoed in the summary and in server logs.
  # Not the server's request id (GenerateSummary.serverRequestId) and not required to be unique.
}

# Where the server streams one completion. Implemented by the client, called by the server.
# Flow control is Cap'n Proto streaming: the server sends a push only when the stream window
# allows, coalescing the tokens generated meanwhile, so a slow client slows only its own stream.
interface TokenSink {
  push @0 (tokens :List(Int32), text :Text) -> stream;
  # The next generated tokens, in order ([n], n >= 0; n == 0 only when `text` carries the text
  # held back at the end), and the text they complete. Text is decoded incrementally with special
  # tokens skipped: the concatenation of every push's text is the completion's text, and a UTF-8
  # character is never split across pushes (bytes of an unfinished one wait for the next token).

  done @1 (summary :GenerateSummary);
  # The completion ended (the last push has been delivered). Not called when the request fails:
  # generate then throws. Throwing here cancels nothing (the request already ended) but the
  # exception becomes generate's.
}

# How a completion ended and what it cost. Owner: the server.
struct GenerateSummary {
  finishReason @0 :Serving.FinishReason;
  # stop (EOS emitted), length (maxTokens reached) or cancelled (the server cancelled it, e.g.
  # on shutdown). Never none or error: failures are exceptions.

  usage @1 :Serving.Usage;
  # promptTokens: the prompt's ids after tokenization; completionTokens: tokens pushed.

  timings @2 :GenerateTimings;
  mtp @3 :MtpStats;

  requestId @4 :Text;
  # GenerateRequest.requestId, echoed.

  serverRequestId @5 :UInt64;
  # The id the server gave the request (non-zero, unique for the server's lifetime): what its
  # logs and, later, operator commands name.
}

# Durations measured by the server on its monotonic clock, in milliseconds from the moment the
# server received the request.
struct GenerateTimings {
  queueMs @0 :Float64;
  # Until the request was admitted into the running batch's queue (pages reserved).

  timeToFirstTokenMs @1 :Float64;
  # Until the first generated token was known (prefill included). 0 when none was generated.

  totalMs @2 :Float64;
  # Until the last token was known (or the request was cancelled).
}

# Multi-token prediction (self-speculative decoding, greedy requests only, when the server runs
# with MTP): drafts verified and of those accepted. Both 0 without MTP.
struct MtpStats {
  drafts @0 :UInt64;
  accepted @1 :UInt64;
}

# The state of the cluster as one server sees it. Owner: the server answering status().
struct ClusterStatus {
  modelName @0 :Text;     # the model folder's name (e.g. "DeepSeek-V3" or "tiny-seed7")
  backend @1 :Text;       # kernel backend, e.g. "cpu", "ref", "cuda"
  numerics @2 :Text;      # "fp8act" or "dequant" (model/linear.hpp)
  uptimeMs @3 :UInt64;    # since the server started serving

  nodes @4 :List(NodeStatus);
  # Every node of the cluster; one (all roles) for `switchyard serve-api`.

  running @5 :UInt32;     # requests in the running batch (prefilling or decoding), all nodes
  waiting @6 :UInt32;     # requests admitted (pages held) but not yet running, all nodes
  maxBatch @7 :UInt32;    # requests one step runs at most, summed over decode workers

  kvPagesUsed @8 :UInt64;   # KV pages (64 tokens each) reserved by requests, all decode workers
  kvPagesFree @9 :UInt64;   # free pages; used + free == total
  kvPagesTotal @10 :UInt64;

  completed @11 :UInt64;  # requests that ended with stop or length since start
  cancelled @12 :UInt64;  # requests cancelled (by clients or on shutdown)
  failed @13 :UInt64;     # requests rejected as bad or failed inside the server
  refused @14 :UInt64;    # OVERLOADED refusals (retryable)

  mtp @15 :Bool;          # MTP drafting is on (greedy requests)
}

# One node process of the cluster.
struct NodeStatus {
  name @0 :Text;
  # The node's configured name (common.capnp NodeRef.name rules); "local" for serve-api.

  roles @1 :List(Text);
  # Roles it runs: "router", "prefill", "decode", "expert_host", "load_stats", "controller".

  health @2 :Health;
  detail @3 :Text;        # for people: why it is not healthy; may be empty
  draining @4 :Bool;      # drained or draining (Admin.drain): gets no new requests
}

enum Health {
  healthy @0;
  degraded @1;   # serving, but something needs attention (detail says what)
  down @2;       # not serving (lost, stopped)
}
