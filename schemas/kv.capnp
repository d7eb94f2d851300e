# The prefill → decode hand-off of the latent KV cache (DESIGN.md steps 2–3). The decode worker
# owns the paged latent cache (model/kv_cache.hpp: one pool of 64-token pages per layer, main and
# MTP layers, one page id valid in every layer's pool). For each request:
#
#   prefill ── KvReserveRequest ──► decode   (pages for prompt + maxTokens, please)
#   decode  ── KvReservation ─────► prefill  (granted: page ids, remote addresses and keys;
#                                             or refused, with a reason)
#   prefill ══ RMA put of the written pages ══► decode's registered pool memory, then flush
#   prefill ── KvHandOff ─────────► decode   (pages are in place: first token, sampling, checksum)
#   either  ── KvRelease ─────────► the other (give the reservation up: cancelled, failed, expired)
#
# Bulk KV bytes never travel in a message: they move by Transport::put into the keyed regions a
# KvReservation names. A reservation that sees no KvHandOff within its expiry is released by the
# decode worker on its own (and a late hand-off is refused with RequestFailed kvExhausted).
@0xe407b1b7b70675f2;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sy::schemas");

using Common = import "common.capnp";
using Serving = import "serving.capnp";

# Ask a decode worker to hold pages for one request. Sent by the prefill worker that got the
# PrefillJob (or by the router, ahead of time, for the same purpose). The decode worker reserves
# ceil((promptTokens + maxTokens) / pageTokens) pages in every layer's pool, all or nothing.
# Header-borne.
struct KvReserveRequest {
  requestId @0 :UInt64;     # the router's request id, non-zero
  promptTokens @1 :UInt32;  # tokens prefill will write; 1..limits::max_sequence_tokens
  maxTokens @2 :UInt32;     # SamplingParams.maxTokens; promptTokens + maxTokens <= max_sequence_tokens
  router @3 :Common.NodeRef;
  # Where the decode worker will stream tokens; required (copied from PrefillJob.router).
}

# Element type of the latent cache pools (gpu/mla.hpp KvCacheDtype).
enum KvDtype {
  fp32 @0;  # 4 bytes per value
  bf16 @1;  # 2 bytes per value (production: FlashMLA reads a BF16 cache)
}

# One layer's page pool as a peer can write it: token slot t of page p of this layer lives at
# remoteBase + (p * KvGrant.pageTokens + t) * KvGrant.tokenBytes in the decode worker's memory,
# inside the region that remoteKeys[keyIndex] unlocks.
struct KvLayerPool {
  remoteBase @0 :UInt64;
  # Address of page 0 of this layer's pool in the decode process (MemoryRegion::remote_address()
  # plus the pool's offset in the region). Non-zero.

  keyIndex @1 :UInt16;
  # Index into KvGrant.remoteKeys of the packed key of the region holding this pool. Pools that
  # share one registered region share one key, so the key is not repeated per layer.
}

# The pages granted and everything prefill needs to put its KV bytes into them.
struct KvGrant {
  reservationId @0 :UInt64;
  # Chosen by the decode worker, non-zero, unique for its lifetime; echoed in KvHandOff and
  # KvRelease so a stale message for an older reservation of the same request is recognised.

  pageIds @1 :List(Int32);
  # [n] physical page ids in logical order: token position q lives in page pageIds[q / pageTokens],
  # slot q % pageTokens. n = ceil((promptTokens + maxTokens) / pageTokens), 1..limits::max_pages;
  # each id in [0, poolPages), no id twice. The same ids hold in every layer's pool.

  poolPages @2 :UInt32;
  # Pages in each layer's pool (the bound on page ids and on remote addresses), >= 1.

  pageTokens @3 :UInt32 = 64;
  # Tokens per page (gpu::kMlaPageSize, 64: FlashMLA's block size). Must be 64 today; a field so a
  # future cache layout is refused by name rather than corrupted.

  latentDim @4 :UInt32;
  # Width of the compressed KV latent c_KV per token per layer (config kv_lora_rank; 512 at V3).

  ropeDim @5 :UInt32;
  # Width of the decoupled RoPE key k_pe (config qk_rope_head_dim; 64 at V3).

  dtype @6 :KvDtype;

  tokenBytes @7 :UInt32;
  # Bytes of one token's entry [c_KV ‖ k_pe] in one layer: (latentDim + ropeDim) * size(dtype),
  # checked (1152 at V3 with BF16). A page is pageTokens * tokenBytes bytes.

  mainLayers @8 :UInt16;
  # Main transformer layers (config num_hidden_layers; 61 at V3), >= 1.

  mtpLayers @9 :UInt16;
  # MTP layers after them (config num_nextn_predict_layers; 1 at V3); may be 0.

  pools @10 :List(KvLayerPool);
  # [mainLayers + mtpLayers] in layer order: main layers 0.., then MTP layers.

  remoteKeys @11 :List(Data);
  # [k] packed remote keys (MemoryRegion::packed_key()), 1..limits::max_remote_keys, each
  # 1..limits::max_remote_key_bytes. Opaque: pass to Transport::put unchanged.

  expiresInMs @12 :UInt32;
  # The decode worker releases the pages if no KvHandOff arrives within this many milliseconds of
  # sending the grant (by its own clock), >= 1. Prefill that cannot finish in time gives up and
  # fails the request (workerLost if the decode worker went silent, else timeout).
}

# Why a decode worker will not hold pages.
enum KvRefusalReason {
  kvExhausted @0;  # too few free pages now (retryable: another worker, or later)
  tooLong @1;      # promptTokens + maxTokens exceeds what this worker's cache can ever hold
  draining @2;     # the worker is draining or shutting down (retryable elsewhere)
  badRequest @3;   # the KvReserveRequest was invalid (e.g. unknown model shape)
}

struct KvRefusal {
  reason @0 :KvRefusalReason;

  message @1 :Text;
  # For people, e.g. "12 free pages of 4096, 40 needed". UTF-8, at most limits::max_message_bytes.

  freePages @2 :UInt32;
  # Free pages per layer pool when refused (a hint for the router's load table).
}

# The decode worker's answer to KvReserveRequest: pages granted, or refused. Owner: decode
# (sender); prefill (receiver). Travels as the AM payload: with page ids and one key per layer
# it can exceed the AM header limit.
struct KvReservation {
  requestId @0 :UInt64;  # echoes KvReserveRequest.requestId, non-zero
  union {
    granted @1 :KvGrant;
    refused @2 :KvRefusal;
  }
}

# The prompt's KV entries are in the decode worker's pages (every put to it was flushed): the
# decode worker may add the request to its running batch. Sent by prefill after
# Transport::flush completed. Carries what decode needs to continue exactly where prefill
# stopped. Travels as the AM payload (lastHidden is up to 64 KiB).
struct KvHandOff {
  requestId @0 :UInt64;      # non-zero
  reservationId @1 :UInt64;  # KvGrant.reservationId this hand-off fills, non-zero

  promptTokens @2 :UInt32;
  # Positions [0, promptTokens) of every layer are written; 1..limits::max_sequence_tokens and
  # equal to the reserved promptTokens.

  bytesWritten @3 :UInt64;
  # Bytes of KV entries written: promptTokens * tokenBytes * (mainLayers + mtpLayers) (checked by
  # the decode worker, which knows tokenBytes and the layer counts). Page tails past the last
  # prompt token are not counted (nor checksummed).

  checksum @4 :UInt64;
  # XXH64 (seed 0; schemas/checksum.hpp) over the written entries in this order: for each layer
  # (main layers, then MTP layers), for each position q in [0, promptTokens), the tokenBytes
  # bytes of that entry. Within a page the entries are contiguous, so a layer is hashed as
  # ceil(promptTokens / pageTokens) runs, one per page in pageIds order. The decode worker
  # recomputes it over its pages when verification is on (tests, canaries) to catch a put that
  # landed at the wrong address; a mismatch fails the request (internal).

  firstToken @5 :Int32;
  # The token prefill sampled after the prompt (completion index 0; already streamed to the
  # router in a TokenBatch). Decode feeds it at position promptTokens. >= 0.

  sampling @6 :Serving.SamplingParams;
  # Required; the request's parameters (decode continues the draw counter at 1).

  router @7 :Common.NodeRef;
  # Where decode streams the following TokenBatches. Required.

  timeoutMs @8 :UInt32;
  # Time left for the request when prefill sent this, milliseconds (0 = no deadline).

  mtpLength @9 :UInt32;
  # Optional MTP continuation: MTP cache positions [0, mtpLength) are written (the MTP layer's
  # pages). 0 when prefill ran no MTP; otherwise <= promptTokens.

  lastHidden @10 :List(Float32);
  # Optional MTP continuation: the main model's last hidden state (before the final norm, as
  # model::StepOutput::hidden gives it) at prompt position mtpLength, [hidden_size] fp32 (7168 at
  # V3), finite, at most limits::max_hidden_size values. Together with firstToken it lets decode run
  # the MTP module at position mtpLength without recomputing the prompt. Empty: decode drafts only
  # after its first step (or recomputes); never an error. Requires mtpLength == promptTokens - 1
  # when present (the MTP input at position i pairs h_i with token i+1, and token promptTokens is
  # firstToken).
}

# Why a reservation is given up.
enum KvReleaseReason {
  finished @0;      # decode: the request completed (the pages return to the pool)
  cancelled @1;     # CancelRequest, or the client went away before hand-off
  expired @2;       # decode: no hand-off within expiresInMs
  prefillFailed @3; # prefill could not run or put the prompt (a RequestFailed went to the router)
  decodeFailed @4;  # decode cannot continue (e.g. checksum mismatch)
  shutdown @5;      # the sender is shutting down
}

# Give a reservation up. Prefill → decode when it will not hand off (so the pages free now, not at
# expiry); decode → prefill when it dropped the reservation (so prefill stops putting into pages
# another request may own next). Idempotent; unknown reservations are ignored. Header-borne.
struct KvRelease {
  requestId @0 :UInt64;      # non-zero
  reservationId @1 :UInt64;  # the KvGrant.reservationId, non-zero
  reason @2 :KvReleaseReason;
  message @3 :Text;          # for people; UTF-8, at most limits::max_message_bytes; may be empty
}
