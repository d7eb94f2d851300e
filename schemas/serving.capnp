# The request path (DESIGN.md "One request's life"): what the router, prefill workers and decode
# workers say to each other about one request. The KV hand-off between prefill and decode is in
# kv.capnp; node lifecycle and load reports in control.capnp.
#
#   router  ── PrefillJob ─────► prefill        (admitted request: prompt ids, sampling, decode peer)
#   prefill ── TokenBatch ─────► router         (the first generated token)
#   decode  ── TokenBatch ─────► router         (the following tokens, streamed; the last one has
#                                                a finish reason and usage)
#   any     ── RequestFailed ──► router         (the request cannot finish; retryable or not)
#   router  ── CancelRequest ──► prefill/decode (client went away, deadline passed, shutdown)
#
# Every message names its request by the router's request id (common.capnp). A worker that gets a
# message for a request it does not know (already finished, released or never seen) drops it and
# counts it; it never fails the node.
@0x9e02116348bf2716;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sy::schemas");

using Common = import "common.capnp";

# How to pick each next token and when to stop: the wire form of gpu::SamplerConfig plus the
# stop rules of model::GenerationRequest. Set by the router from the client's request (after
# checking it); copied unchanged into PrefillJob and KvHandOff so prefill and decode sample the
# same stream. Receivers check it again (wire.cpp) before using it.
struct SamplingParams {
  temperature @0 :Float32;
  # Softmax temperature. 0 means greedy (argmax); otherwise finite and > 0.

  topP @1 :Float32 = 1.0;
  # Nucleus sampling: keep the shortest prefix of tokens (by probability, descending) whose mass
  # reaches topP. In (0, 1]; 1 means no limit. Ignored when temperature is 0.

  topK @2 :UInt32;
  # Keep only the topK most likely tokens before topP; 0 means no limit.

  seed @3 :UInt64;
  # The splitmix64 stream of gpu/sampling.hpp: generated token n (0 = the first) draws
  # sampling_uniform(seed, n), so output does not depend on batching or on which node samples.

  maxTokens @4 :UInt32;
  # Completion tokens at most, the first (prefill's) token included. 1..limits::max_sequence_tokens.
  # No default: a sender that forgets to set it is rejected, not silently capped.

  stopAtEos @5 :Bool = true;
  # Stop after emitting the model's eos_token_id (which is then part of the completion).
}

# An admitted request, handed to the prefill worker the router chose. The router has tokenized the
# prompt, checked it against the model (ids < vocab, prompt + maxTokens <= context) and picked the
# decode worker whose KV pages will hold the sequence (DESIGN step 1). Prefill then asks that
# decode worker for pages (kv.capnp KvReserveRequest), runs the prompt, puts the KV pages and
# hands off. Owner: router (sender); prefill (receiver). Travels as the AM payload: a prompt may
# be up to limits::max_sequence_tokens ids (1 MiB), far over the AM header limit.
struct PrefillJob {
  requestId @0 :UInt64;
  # The router's id for this request (non-zero); every later message about it carries it.

  promptTokens @1 :List(Int32);
  # The tokenized prompt, BOS included when the model's template adds one.
  # [prompt_len], 1..limits::max_sequence_tokens ids, each >= 0.

  sampling @2 :SamplingParams;
  # Required (an absent struct is rejected, not defaulted).

  decode @3 :Common.NodeRef;
  # The decode worker chosen for this request. Required.

  router @4 :Common.NodeRef;
  # Where TokenBatch and RequestFailed go (the router that admitted the request). Required.

  timeoutMs @5 :UInt32;
  # Time left for the whole request when the router sent this, in milliseconds (0 = no deadline).
  # A duration, not a clock reading: receivers add it to their own monotonic clock on receipt.
}

# Why a completion ended; the wire form of the reason a client sees.
enum FinishReason {
  none @0;       # not finished: more TokenBatches follow
  stop @1;       # EOS emitted (stopAtEos)
  length @2;     # maxTokens reached (or the model's context filled)
  cancelled @3;  # CancelRequest honoured; tokens sent so far stand
  error @4;      # the request failed after streaming began; a RequestFailed says why
}

# Token counts of one request, as the OpenAI-style `usage` block reports them.
struct Usage {
  promptTokens @0 :UInt32;      # prompt ids prefilled (== PrefillJob.promptTokens length)
  completionTokens @1 :UInt32;  # tokens generated so far, this batch included
}

# Generated tokens of one request, streamed to the router in order. Prefill sends the first token
# (firstIndex 0) as soon as it is sampled; the decode worker sends the rest, usually one or two per
# step (two when an MTP draft is accepted). The last batch of a request has finishReason != none
# and may carry no tokens (e.g. cancelled between steps). Owner: prefill or decode (sender);
# router (receiver). Header-borne (limits::max_tokens_per_batch keeps it under the header limit).
struct TokenBatch {
  requestId @0 :UInt64;   # non-zero

  firstIndex @1 :UInt32;
  # Position of tokens[0] in the completion (0 = the first generated token). Lets the router drop
  # duplicates and notice gaps without trusting arrival order across senders.

  tokens @2 :List(Int32);
  # [n] generated ids, n in 0..limits::max_tokens_per_batch, each >= 0; n == 0 only when
  # finishReason != none.

  finishReason @3 :FinishReason;

  usage @4 :Usage;
  # Required. usage.completionTokens == firstIndex + tokens length (checked).
}

# Why a request could not be served. Each code says what the router should do next.
enum FailureCode {
  overloaded @0;    # a queue is full; retry later or elsewhere (retryable)
  kvExhausted @1;   # the decode worker has too few free KV pages (retryable, other worker)
  timeout @2;       # the request's deadline passed (not retryable: the budget is spent)
  workerLost @3;    # a prefill or decode worker died with the request (retryable)
  badRequest @4;    # the request itself is invalid, e.g. prompt too long (never retryable)
  internal @5;      # a bug or unexpected state; the message says where (not retryable)
}

# A request cannot finish. Sent by whoever finds out (prefill, decode, or the router itself when
# a peer fails) to the router that admitted it; the router answers the client and releases what
# the request held. At most one per request reaches the client (the router keeps the first).
# Header-borne.
struct RequestFailed {
  requestId @0 :UInt64;   # non-zero
  code @1 :FailureCode;

  message @2 :Text;
  # For people: what failed and where, e.g. "decode node d1: 3 free KV pages, 40 needed".
  # Valid UTF-8, at most limits::max_message_bytes. May be empty.

  retryable @3 :Bool;
  # True when resubmitting the same request may succeed (the code's note gives the usual value;
  # the sender decides).

  node @4 :Text;
  # Name of the node that failed the request (NodeRef.name rules); empty when the router itself.
}

# Why the router stops a request early.
enum CancelReason {
  clientGone @0;        # the client disconnected or cancelled
  deadlineExceeded @1;  # PrefillJob.timeoutMs ran out
  shutdown @2;          # the router or the cluster is shutting down
  operator @3;          # an operator asked (yardctl)
}

# Stop work on a request. Router → prefill and/or decode. Idempotent: a worker that does not know
# the request (finished, never arrived) ignores it. The worker frees the request's pages and
# answers with a final TokenBatch (finishReason cancelled) when it was streaming. Header-borne.
struct CancelRequest {
  requestId @0 :UInt64;  # non-zero
  reason @1 :CancelReason;
}
