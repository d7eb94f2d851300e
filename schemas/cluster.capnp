# The cluster API (DESIGN.md "Interfaces and defaults"): what clients (yardctl, SDKs, the HTTP
# front end) call over Cap'n Proto RPC, by default at 127.0.0.1:7433. It exists so a client never
# needs to know which processes serve it: the same interface is answered today by one process
# running every role (`switchyard serve-api`, actors/cluster_api/local_generation_service) and
# later by the router actor of a cluster. The bootstrap capability of the connection is a Cluster.
#
# This first slice has generate (streaming) and status; load, placement, rebalance, balancing
# control and drain take the next ordinals.
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
}

enum Health {
  healthy @0;
  degraded @1;   # serving, but something needs attention (detail says what)
  down @2;       # not serving (lost, stopped)
}
