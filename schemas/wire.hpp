// The wire format of every cross-process message: the table of message kinds (one transport AM id
// per kind), framing (encode), checked decoding, and per-message validation. Used by every role's
// transport glue: a sender builds a Cap'n Proto message and encode()s it; a receiver's AM handler
// decode()s the frame (copying it, so the handler may return at once) and hands the result over.
// Stateless and thread-safe; a Decoded<> owns its bytes and is read by one thread at a time.
//
// Frame: 8-byte prefix, then the message as a Cap'n Proto flat array (capnp::messageToFlatArray:
// segment table, then segments):
//   bytes 0-1  magic 0x5359 little-endian (the bytes 'Y' 'S')
//   bytes 2-3  wire_version (little-endian); a different version is refused, never guessed at
//   bytes 4-5  MessageKind (little-endian); must equal the AM id it arrived under
//   bytes 6-7  zero (reserved)
// The prefix keeps the Cap'n Proto words 8-byte aligned within the frame, lets a receiver refuse a
// frame sent under the wrong AM id by name, and lets a newer build change the encoding.
//
// Envelope (how a frame rides a transport AM): the AM id is the MessageKind. Each kind's carriage
// (kind_table) says where the frame goes: `header` kinds (small, bounded by limits::max_header_
// bytes, which stays under UCX's max AM header) put the frame in the AM header and leave the
// payload empty; `payload` kinds (those whose lists can be large: a 262144-token prompt is 1 MiB)
// put the frame in the AM payload with an empty header, so UCX may use rendezvous. Bulk data (KV
// pages, expert weights) never travels in a frame: it moves by RMA put/get into keyed regions.
// Expert dispatch/combine carry their activations inside the frame as Data (carriage `payload`);
// `header_and_bulk` (a header frame beside a raw AM payload, saving a copy) is reserved for when
// that copy shows up in the dispatch benchmark.
#pragma once

#include <capnp/message.h>
#include <capnp/schema.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "schemas/control.capnp.h"
#include "schemas/expert.capnp.h"
#include "schemas/kv.capnp.h"
#include "schemas/serving.capnp.h"

namespace sy::schemas {

inline constexpr std::uint16_t wire_version = 1;
inline constexpr std::uint16_t frame_magic = 0x5359;
inline constexpr std::size_t frame_prefix_bytes = 8;

// One per root struct that travels alone; the value is its transport AM id. Values are never
// reused or renumbered (a retired kind keeps its number, commented out); 0 is never a kind.
enum class MessageKind : std::uint16_t {
  // control.capnp
  node_hello = 1,
  node_ready = 2,
  heartbeat = 3,
  worker_load = 4,
  drain = 5,
  shutdown = 6,
  ack = 7,
  // serving.capnp
  prefill_job = 8,
  token_batch = 9,
  request_failed = 10,
  cancel_request = 11,
  // kv.capnp
  kv_reserve_request = 12,
  kv_reservation = 13,
  kv_hand_off = 14,
  kv_release = 15,
  // expert.capnp
  expert_dispatch = 16,
  expert_combine = 17,
  expert_load_report = 18,
  placement_update = 19,
  placement_ack = 20,
  end_,  // one past the last kind; not a kind. Adding a kind breaks the build until every table
         // below (kind_table, the schema bindings, the switches in wire.cpp) knows it.
};
inline constexpr std::size_t message_kind_count = static_cast<std::size_t>(MessageKind::end_) - 1;

// Bounds on every variable-size field: the largest legitimate value with headroom, so a hostile or
// corrupt message is refused before anyone allocates for it. The receiver that knows the model
// checks tighter bounds (vocabulary, context length, cache shape).
namespace limits {
inline constexpr std::uint32_t max_sequence_tokens = 1u << 18;  // prompt + completion (V3: 163840)
inline constexpr std::uint32_t max_tokens_per_batch = 256;      // TokenBatch.tokens
inline constexpr std::uint32_t page_tokens = 64;                // the only page size today
inline constexpr std::uint32_t max_pages = max_sequence_tokens / page_tokens;  // 4096 per request
inline constexpr std::uint32_t max_layers = 256;                // main + MTP (V3: 61 + 1)
inline constexpr std::uint32_t max_cache_dim = 8192;            // latentDim, ropeDim each (V3: 512, 64)
inline constexpr std::uint32_t max_remote_keys = max_layers;    // KvGrant.remoteKeys
inline constexpr std::uint32_t max_remote_key_bytes = 1024;     // one packed key (UCX: ~100-300 B)
inline constexpr std::uint32_t max_hidden_size = 16384;         // KvHandOff.lastHidden (V3: 7168)
inline constexpr std::uint32_t max_expert_slots = 4096;         // physical slots per layer (V3: 256 + R)
inline constexpr std::uint32_t max_dispatch_rows = 1u << 16;    // rows of one ExpertDispatch
inline constexpr std::uint32_t max_message_bytes = 1024;        // free text for people
inline constexpr std::uint32_t max_node_name_bytes = 64;
inline constexpr std::uint32_t max_address_bytes = 256;
inline constexpr std::uint32_t max_roles = 6;                   // every Role at most once
inline constexpr std::size_t max_header_bytes = 2048;           // a `header` kind's whole frame
}  // namespace limits

enum class Carriage : std::uint8_t {
  header,           // the frame is the AM header; the AM payload is empty
  payload,          // the frame is the AM payload; the AM header is empty
  header_and_bulk,  // the frame is the AM header; the payload is bulk the kind describes (none yet)
};

struct KindInfo {
  MessageKind kind;
  std::string_view name;  // the root struct's name in its .capnp file
  Carriage carriage;
  std::size_t max_frame_bytes;  // prefix included; larger frames are refused before parsing
};

// Parallel to MessageKind, in its order.
inline constexpr KindInfo kind_table[] = {
    {MessageKind::node_hello, "NodeHello", Carriage::header, limits::max_header_bytes},
    {MessageKind::node_ready, "NodeReady", Carriage::header, limits::max_header_bytes},
    {MessageKind::heartbeat, "Heartbeat", Carriage::header, limits::max_header_bytes},
    {MessageKind::worker_load, "WorkerLoad", Carriage::header, limits::max_header_bytes},
    {MessageKind::drain, "Drain", Carriage::header, limits::max_header_bytes},
    {MessageKind::shutdown, "Shutdown", Carriage::header, limits::max_header_bytes},
    {MessageKind::ack, "Ack", Carriage::header, limits::max_header_bytes},
    {MessageKind::prefill_job, "PrefillJob", Carriage::payload, std::size_t{4} * limits::max_sequence_tokens + 4096},
    {MessageKind::token_batch, "TokenBatch", Carriage::header, limits::max_header_bytes},
    {MessageKind::request_failed, "RequestFailed", Carriage::header, limits::max_header_bytes},
    {MessageKind::cancel_request, "CancelRequest", Carriage::header, limits::max_header_bytes},
    {MessageKind::kv_reserve_request, "KvReserveRequest", Carriage::header, limits::max_header_bytes},
    {MessageKind::kv_reservation, "KvReservation", Carriage::payload,
     std::size_t{4} * limits::max_pages + std::size_t{24} * limits::max_layers +
         std::size_t{limits::max_remote_keys} * (limits::max_remote_key_bytes + 16) + 4096},
    {MessageKind::kv_hand_off, "KvHandOff", Carriage::payload, std::size_t{4} * limits::max_hidden_size + 4096},
    {MessageKind::kv_release, "KvRelease", Carriage::header, limits::max_header_bytes},
    {MessageKind::expert_dispatch, "ExpertDispatch", Carriage::payload,
     std::size_t{limits::max_dispatch_rows} * limits::max_hidden_size * 4 + std::size_t{8} * limits::max_expert_slots +
         4096},
    {MessageKind::expert_combine, "ExpertCombine", Carriage::payload,
     std::size_t{limits::max_dispatch_rows} * limits::max_hidden_size * 4 + 4096},
    {MessageKind::expert_load_report, "ExpertLoadReport", Carriage::payload,
     std::size_t{8} * limits::max_layers * limits::max_expert_slots + 4096},
    {MessageKind::placement_update, "PlacementUpdate", Carriage::payload,
     std::size_t{4} * limits::max_layers * limits::max_expert_slots + std::size_t{4} * limits::max_expert_slots +
         std::size_t{80} * limits::max_expert_slots + 4096},
    {MessageKind::placement_ack, "PlacementAck", Carriage::header, limits::max_header_bytes},
};
static_assert(std::size(kind_table) == message_kind_count, "kind_table must list every MessageKind");

consteval bool kind_table_is_in_order() {
  for (std::size_t i = 0; i < std::size(kind_table); ++i) {
    if (static_cast<std::size_t>(kind_table[i].kind) != i + 1) return false;
    if (kind_table[i].name.empty()) return false;
    if (kind_table[i].carriage != Carriage::payload && kind_table[i].max_frame_bytes > limits::max_header_bytes) {
      return false;
    }
  }
  return true;
}
static_assert(kind_table_is_in_order(), "kind_table rows must follow MessageKind order, named, header kinds small");

// True when `am_id` names a kind of this build.
constexpr bool is_message_kind(std::uint16_t am_id) { return am_id >= 1 && am_id <= message_kind_count; }
// REQUIRES: is_message_kind(kind) (std::out_of_range otherwise).
const KindInfo& kind_info(MessageKind kind);
// The kind's name, or "kind N" for a number that is not a kind (never throws).
std::string kind_name(MessageKind kind);

// Every failure to encode or decode a frame: what() is "<KindName>: <problem>".
class WireError : public std::runtime_error {
 public:
  WireError(MessageKind kind, const std::string& problem);
  MessageKind kind() const { return kind_; }

 private:
  MessageKind kind_;
};

// ---- Which schema each kind carries. Every kind binds exactly one root struct.
template <class Schema>
struct KindOf;  // no definition: a schema without a kind does not compile
template <MessageKind K>
struct SchemaOf;

#define SY_WIRE_BIND(Schema, Kind)                          \
  template <>                                               \
  struct KindOf<Schema> {                                   \
    static constexpr MessageKind value = MessageKind::Kind; \
  };                                                        \
  template <>                                               \
  struct SchemaOf<MessageKind::Kind> {                      \
    using type = Schema;                                    \
  }
SY_WIRE_BIND(NodeHello, node_hello);
SY_WIRE_BIND(NodeReady, node_ready);
SY_WIRE_BIND(Heartbeat, heartbeat);
SY_WIRE_BIND(WorkerLoad, worker_load);
SY_WIRE_BIND(Drain, drain);
SY_WIRE_BIND(Shutdown, shutdown);
SY_WIRE_BIND(Ack, ack);
SY_WIRE_BIND(PrefillJob, prefill_job);
SY_WIRE_BIND(TokenBatch, token_batch);
SY_WIRE_BIND(RequestFailed, request_failed);
SY_WIRE_BIND(CancelRequest, cancel_request);
SY_WIRE_BIND(KvReserveRequest, kv_reserve_request);
SY_WIRE_BIND(KvReservation, kv_reservation);
SY_WIRE_BIND(KvHandOff, kv_hand_off);
SY_WIRE_BIND(KvRelease, kv_release);
SY_WIRE_BIND(ExpertDispatch, expert_dispatch);
SY_WIRE_BIND(ExpertCombine, expert_combine);
SY_WIRE_BIND(ExpertLoadReport, expert_load_report);
SY_WIRE_BIND(PlacementUpdate, placement_update);
SY_WIRE_BIND(PlacementAck, placement_ack);
#undef SY_WIRE_BIND

template <class Schema>
inline constexpr MessageKind kind_of = KindOf<Schema>::value;

namespace detail {
template <std::size_t... I>
constexpr bool every_kind_bound(std::index_sequence<I...>) {
  return ((kind_of<typename SchemaOf<static_cast<MessageKind>(I + 1)>::type> == static_cast<MessageKind>(I + 1)) &&
          ...);
}
}  // namespace detail
static_assert(detail::every_kind_bound(std::make_index_sequence<message_kind_count>{}),
              "every MessageKind binds a schema that binds it back");

// Calls f(std::type_identity<Schema>{}) for the schema of `kind` and returns its result.
// Throws WireError when `kind` is not a kind of this build.
template <class F>
decltype(auto) visit_kind(MessageKind kind, F&& f) {
  switch (kind) {
    case MessageKind::node_hello: return f(std::type_identity<NodeHello>{});
    case MessageKind::node_ready: return f(std::type_identity<NodeReady>{});
    case MessageKind::heartbeat: return f(std::type_identity<Heartbeat>{});
    case MessageKind::worker_load: return f(std::type_identity<WorkerLoad>{});
    case MessageKind::drain: return f(std::type_identity<Drain>{});
    case MessageKind::shutdown: return f(std::type_identity<Shutdown>{});
    case MessageKind::ack: return f(std::type_identity<Ack>{});
    case MessageKind::prefill_job: return f(std::type_identity<PrefillJob>{});
    case MessageKind::token_batch: return f(std::type_identity<TokenBatch>{});
    case MessageKind::request_failed: return f(std::type_identity<RequestFailed>{});
    case MessageKind::cancel_request: return f(std::type_identity<CancelRequest>{});
    case MessageKind::kv_reserve_request: return f(std::type_identity<KvReserveRequest>{});
    case MessageKind::kv_reservation: return f(std::type_identity<KvReservation>{});
    case MessageKind::kv_hand_off: return f(std::type_identity<KvHandOff>{});
    case MessageKind::kv_release: return f(std::type_identity<KvRelease>{});
    case MessageKind::expert_dispatch: return f(std::type_identity<ExpertDispatch>{});
    case MessageKind::expert_combine: return f(std::type_identity<ExpertCombine>{});
    case MessageKind::expert_load_report: return f(std::type_identity<ExpertLoadReport>{});
    case MessageKind::placement_update: return f(std::type_identity<PlacementUpdate>{});
    case MessageKind::placement_ack: return f(std::type_identity<PlacementAck>{});
    case MessageKind::end_: break;
  }
  throw WireError(kind, "not a message kind of this build");
}

// ---- Validation: each throws WireError naming the kind, the field and the rule it breaks.
// decode() runs them on every frame; encode() on every message before framing it. The nested
// structs' checks (SamplingParams, NodeRef, KvGrant) are part of their parents'.
void validate(NodeHello::Reader m);
void validate(NodeReady::Reader m);
void validate(Heartbeat::Reader m);
void validate(WorkerLoad::Reader m);
void validate(Drain::Reader m);
void validate(Shutdown::Reader m);
void validate(Ack::Reader m);
void validate(PrefillJob::Reader m);
void validate(TokenBatch::Reader m);
void validate(RequestFailed::Reader m);
void validate(CancelRequest::Reader m);
void validate(KvReserveRequest::Reader m);
void validate(KvReservation::Reader m);
void validate(KvHandOff::Reader m);
void validate(KvRelease::Reader m);
void validate(ExpertDispatch::Reader m);
void validate(ExpertCombine::Reader m);
void validate(ExpertLoadReport::Reader m);
void validate(PlacementUpdate::Reader m);
void validate(PlacementAck::Reader m);

// Bytes per value of a cache dtype (fp32 4, bf16 2). REQUIRES: a known enumerant.
std::uint32_t kv_dtype_bytes(KvDtype dtype);

// The name of an enumerant as written in its .capnp file ("kvExhausted"), or "#N" when N is not
// an enumerant of this build. Never throws.
template <class Enum>
std::string enumerant_name(Enum value) {
  const auto enumerants = capnp::Schema::from<Enum>().getEnumerants();
  const auto raw = static_cast<std::uint16_t>(value);
  if (raw < enumerants.size()) return std::string(enumerants[raw].getProto().getName().cStr());
  return "#" + std::to_string(raw);
}

// ---- Encoding.
using Frame = std::vector<std::byte>;

// Validates the message's root as Schema and frames it. Throws WireError (invalid message, or a
// frame over the kind's max_frame_bytes).
template <class Schema>
Frame encode(capnp::MessageBuilder& message);
// Frames without validating. For tests that need invalid frames; production code uses encode().
Frame encode_unchecked(MessageKind kind, capnp::MessageBuilder& message);

// What to hand Transport::send for a frame of `kind` (see "Envelope" above): {header, payload}.
struct AmParts {
  std::span<const std::byte> header;
  std::span<const std::byte> payload;
};
AmParts am_parts(MessageKind kind, const Frame& frame);
// The frame inside a received AM (the header or the payload, as the kind's carriage says).
// Throws WireError when am_id is not a kind or the part that must be empty is not.
std::span<const std::byte> frame_of_am(std::uint16_t am_id, std::span<const std::byte> header,
                                       std::span<const std::byte> payload);

// ---- Decoding.
namespace detail {
// An owned, 8-byte-aligned copy of a checked frame and a reader over it. Defined in wire.cpp.
class OpenFrame;
struct OpenFrameDeleter {
  void operator()(OpenFrame* frame) const;
};
using OpenFramePtr = std::unique_ptr<OpenFrame, OpenFrameDeleter>;
// Checks the prefix (magic, version, kind == expected), size and Cap'n Proto structure, then runs
// the kind's validate() under tight reader limits. Throws WireError.
OpenFramePtr open_frame(MessageKind expected, std::span<const std::byte> frame);
capnp::MessageReader& reader_of(OpenFrame& frame);
}  // namespace detail

// A validated message of one schema, owning its bytes (independent of the span it came from).
// Move-only. Reading it never throws: every field was read once under the decode limits.
template <class Schema>
class Decoded {
 public:
  typename Schema::Reader reader() const { return root_; }
  typename Schema::Reader operator*() const { return root_; }
  const typename Schema::Reader* operator->() const { return &root_; }
  static constexpr MessageKind kind() { return kind_of<Schema>; }

 private:
  template <class S>
  friend Decoded<S> decode(std::span<const std::byte> frame);
  explicit Decoded(detail::OpenFramePtr frame)
      : frame_(std::move(frame)), root_(detail::reader_of(*frame_).getRoot<Schema>()) {}

  detail::OpenFramePtr frame_;
  typename Schema::Reader root_;
};

// Decodes and validates a frame of Schema's kind. Throws WireError naming the kind and the problem
// for anything else: empty, truncated, misaligned-and-corrupt, another kind, another wire version,
// malformed Cap'n Proto, trailing bytes, a field breaking its rule. Never crashes on any input.
template <class Schema>
Decoded<Schema> decode(std::span<const std::byte> frame) {
  return Decoded<Schema>(detail::open_frame(kind_of<Schema>, frame));
}

// Decodes and validates a frame of any known kind without keeping it (the fuzzer's entry, and a
// cheap check for relays). Throws WireError like decode().
void check_frame(MessageKind expected, std::span<const std::byte> frame);

// The kind a frame's prefix names, after checking magic and version. Throws WireError.
MessageKind peek_kind(std::span<const std::byte> frame);

namespace detail {
Frame encode_checked(MessageKind kind, capnp::MessageBuilder& message);
}  // namespace detail

template <class Schema>
Frame encode(capnp::MessageBuilder& message) {
  return detail::encode_checked(kind_of<Schema>, message);
}

}  // namespace sy::schemas
