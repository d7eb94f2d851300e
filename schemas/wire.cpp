// Framing, checked decoding and the field rules of every message (the comments in the .capnp files
// are the specification; each check below cites the rule it enforces in its error text).
#include "schemas/wire.hpp"

#include <capnp/any.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace sy::schemas {

namespace {

// Decode limits. A legitimate message is read once by its validator, so its traversal is about its
// size in words; 4x plus slack allows for readers that fetch a struct twice and still bounds
// amplification by pointer aliasing. Our deepest nesting is 4 (KvReservation → KvGrant → pools →
// KvLayerPool).
capnp::ReaderOptions validation_options(std::size_t words) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * words + 256;
  options.nestingLimit = 8;
  return options;
}

// After validation the message is known sane; the caller may read it as often as it likes.
capnp::ReaderOptions access_options() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = std::numeric_limits<std::uint64_t>::max() / 2;
  options.nestingLimit = 8;
  return options;
}

std::uint16_t read_u16(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<std::uint16_t>(p[0]) |
                                    (std::to_integer<std::uint16_t>(p[1]) << 8));
}

void write_u16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xff);
  p[1] = static_cast<std::byte>(v >> 8);
}

// Well-formed UTF-8 (Unicode 15, table 3-7: no overlong forms, no surrogates, <= U+10FFFF).
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < s.size()) {
    const unsigned char c = byte(i);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    if (byte(i + 1) < lo || byte(i + 1) > hi) return false;
    for (std::size_t k = 2; k <= n; ++k) {
      if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return false;
    }
    i += n + 1;
  }
  return true;
}

// Collects the kind so every failure names it; each method checks one rule of the schema comments.
class Check {
 public:
  explicit Check(MessageKind kind) : kind_(kind) {}

  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    throw WireError(kind_, field + ": " + problem);
  }

  void non_zero(const std::string& field, std::uint64_t value) const {
    if (value == 0) fail(field, "must be non-zero");
  }

  void in_range(const std::string& field, std::uint64_t value, std::uint64_t lo, std::uint64_t hi) const {
    if (value < lo || value > hi) {
      fail(field, std::to_string(value) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  }

  template <class Enum>
  void known(const std::string& field, Enum value) const {
    const auto raw = static_cast<std::uint16_t>(value);
    if (raw >= capnp::Schema::from<Enum>().getEnumerants().size()) {
      fail(field, "unknown enumerant " + std::to_string(raw));
    }
  }

  void text(const std::string& field, capnp::Text::Reader t, std::size_t max_bytes) const {
    if (t.size() > max_bytes) {
      fail(field, std::to_string(t.size()) + " bytes, more than " + std::to_string(max_bytes));
    }
    if (!valid_utf8({t.begin(), t.size()})) fail(field, "is not valid UTF-8");
  }

  void node_name(const std::string& field, capnp::Text::Reader t) const {
    in_range(field + " length", t.size(), 1, limits::max_node_name_bytes);
    for (const char c : std::string_view(t.begin(), t.size())) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
      if (!ok) fail(field, "may hold only [A-Za-z0-9._-]");
    }
  }

  void node_ref(const std::string& field, bool present, NodeRef::Reader ref) const {
    if (!present) fail(field, "is required");
    node_name(field + ".name", ref.getName());
    const capnp::Text::Reader address = ref.getAddress();
    in_range(field + ".address length", address.size(), 1, limits::max_address_bytes);
    for (const char c : std::string_view(address.begin(), address.size())) {
      if (c < 0x21 || c > 0x7e) fail(field + ".address", "may hold only printable ASCII without spaces");
    }
  }

  void tokens(const std::string& field, capnp::List<std::int32_t>::Reader list, std::size_t min,
              std::size_t max) const {
    in_range(field + " length", list.size(), min, max);
    for (unsigned i = 0; i < list.size(); ++i) {
      if (list[i] < 0) fail(field + "[" + std::to_string(i) + "]", std::to_string(list[i]) + ": token ids are >= 0");
    }
  }

  void sampling(const std::string& field, bool present, SamplingParams::Reader s) const {
    if (!present) fail(field, "is required");
    const float t = s.getTemperature();
    if (!std::isfinite(t) || t < 0.0f) fail(field + ".temperature", std::to_string(t) + ": must be finite and >= 0");
    const float p = s.getTopP();
    if (!(p > 0.0f && p <= 1.0f)) fail(field + ".topP", std::to_string(p) + ": must be in (0, 1]");
    in_range(field + ".maxTokens", s.getMaxTokens(), 1, limits::max_sequence_tokens);
  }

  void roles(const std::string& field, capnp::List<Role>::Reader roles) const {
    in_range(field + " length", roles.size(), 1, limits::max_roles);
    std::uint32_t seen = 0;
    for (unsigned i = 0; i < roles.size(); ++i) {
      const std::string at = field + "[" + std::to_string(i) + "]";
      known(at, roles[i]);
      const std::uint32_t bit = 1u << static_cast<unsigned>(roles[i]);
      if (seen & bit) fail(at, enumerant_name(roles[i]) + " listed twice");
      seen |= bit;
    }
  }

 private:
  MessageKind kind_;
};

void validate_grant(const Check& c, KvGrant::Reader g) {
  c.non_zero("granted.reservationId", g.getReservationId());
  c.in_range("granted.poolPages", g.getPoolPages(), 1, std::numeric_limits<std::int32_t>::max());
  if (g.getPageTokens() != limits::page_tokens) {
    c.fail("granted.pageTokens", std::to_string(g.getPageTokens()) + ": only " +
                                     std::to_string(limits::page_tokens) + "-token pages are supported");
  }
  const auto pages = g.getPageIds();
  c.in_range("granted.pageIds length", pages.size(), 1, limits::max_pages);
  std::vector<std::int32_t> sorted;
  sorted.reserve(pages.size());
  for (const std::int32_t id : pages) sorted.push_back(id);
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] < 0 || static_cast<std::uint32_t>(sorted[i]) >= g.getPoolPages()) {
      c.fail("granted.pageIds[" + std::to_string(i) + "]",
             std::to_string(sorted[i]) + " is outside [0, poolPages = " + std::to_string(g.getPoolPages()) + ")");
    }
  }
  std::sort(sorted.begin(), sorted.end());
  if (const auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end()) {
    c.fail("granted.pageIds", "page " + std::to_string(*dup) + " appears twice");
  }
  c.in_range("granted.latentDim", g.getLatentDim(), 1, limits::max_cache_dim);
  c.in_range("granted.ropeDim", g.getRopeDim(), 0, limits::max_cache_dim);
  c.known("granted.dtype", g.getDtype());
  const std::uint64_t token_bytes =
      (std::uint64_t{g.getLatentDim()} + g.getRopeDim()) * kv_dtype_bytes(g.getDtype());
  if (g.getTokenBytes() != token_bytes) {
    c.fail("granted.tokenBytes", std::to_string(g.getTokenBytes()) + ": (latentDim + ropeDim) * size(" +
                                     enumerant_name(g.getDtype()) + ") is " + std::to_string(token_bytes));
  }
  c.in_range("granted.mainLayers", g.getMainLayers(), 1, limits::max_layers);
  const std::uint32_t layers = std::uint32_t{g.getMainLayers()} + g.getMtpLayers();
  c.in_range("granted.mainLayers + mtpLayers", layers, 1, limits::max_layers);
  const auto keys = g.getRemoteKeys();
  c.in_range("granted.remoteKeys length", keys.size(), 1, limits::max_remote_keys);
  for (unsigned i = 0; i < keys.size(); ++i) {
    c.in_range("granted.remoteKeys[" + std::to_string(i) + "] bytes", keys[i].size(), 1,
               limits::max_remote_key_bytes);
  }
  const auto pools = g.getPools();
  if (pools.size() != layers) {
    c.fail("granted.pools", std::to_string(pools.size()) + " pools for mainLayers + mtpLayers = " +
                                std::to_string(layers));
  }
  const std::uint64_t pool_bytes = std::uint64_t{g.getPoolPages()} * g.getPageTokens() * g.getTokenBytes();
  for (unsigned i = 0; i < pools.size(); ++i) {
    const std::string at = "granted.pools[" + std::to_string(i) + "]";
    const auto pool = pools[i];
    c.non_zero(at + ".remoteBase", pool.getRemoteBase());
    if (pool.getRemoteBase() > std::numeric_limits<std::uint64_t>::max() - pool_bytes) {
      c.fail(at + ".remoteBase", "the pool's " + std::to_string(pool_bytes) + " bytes overflow the address space");
    }
    if (pool.getKeyIndex() >= keys.size()) {
      c.fail(at + ".keyIndex",
             std::to_string(pool.getKeyIndex()) + " but there are " + std::to_string(keys.size()) + " remoteKeys");
    }
  }
  c.non_zero("granted.expiresInMs", g.getExpiresInMs());
}

// Visits every object the message holds, fields this build does not know included (a newer
// sender's additions), so that whatever a receiver later does with the message (read it, copy it,
// forward it) meets only bounds-checked, depth-limited structure. Runs under the validation
// reader's limits: the traversal limit stops pointer aliasing from amplifying the work, the
// nesting limit stops cycles.
void walk_struct(capnp::AnyStruct::Reader s);

void walk_pointer(capnp::AnyPointer::Reader p) {
  switch (p.getPointerType()) {
    case capnp::PointerType::NULL_:
      return;
    case capnp::PointerType::STRUCT:
      walk_struct(p.getAs<capnp::AnyStruct>());
      return;
    case capnp::PointerType::LIST: {
      const capnp::AnyList::Reader list = p.getAs<capnp::AnyList>();
      if (list.getElementSize() == capnp::ElementSize::INLINE_COMPOSITE) {
        for (const capnp::AnyStruct::Reader element : list.as<capnp::List<capnp::AnyStruct>>()) walk_struct(element);
      } else if (list.getElementSize() == capnp::ElementSize::POINTER) {
        for (const capnp::AnyPointer::Reader element : list.as<capnp::List<capnp::AnyPointer>>()) {
          walk_pointer(element);
        }
      }
      return;
    }
    case capnp::PointerType::CAPABILITY:
      break;
  }
  KJ_FAIL_REQUIRE("capability pointers never travel in frames");
}

void walk_struct(capnp::AnyStruct::Reader s) {
  for (const capnp::AnyPointer::Reader p : s.getPointerSection()) walk_pointer(p);
}

// Runs validate() on the root of `message` read as `kind`'s schema.
void validate_root(MessageKind kind, capnp::MessageReader& message) {
  visit_kind(kind, [&](auto schema) {
    using Schema = typename decltype(schema)::type;
    validate(message.getRoot<Schema>());
  });
}

std::string describe(const kj::Exception& e) {
  return std::string("malformed Cap'n Proto message (") + e.getDescription().cStr() + ")";
}

}  // namespace

// ---- Kind table.

const KindInfo& kind_info(MessageKind kind) {
  const auto raw = static_cast<std::uint16_t>(kind);
  if (!is_message_kind(raw)) throw std::out_of_range("kind_info: " + std::to_string(raw) + " is not a message kind");
  return kind_table[raw - 1];
}

std::string kind_name(MessageKind kind) {
  const auto raw = static_cast<std::uint16_t>(kind);
  if (is_message_kind(raw)) return std::string(kind_table[raw - 1].name);
  return "kind " + std::to_string(raw);
}

WireError::WireError(MessageKind kind, const std::string& problem)
    : std::runtime_error(kind_name(kind) + ": " + problem), kind_(kind) {}

std::uint32_t kv_dtype_bytes(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::FP32: return 4;
    case KvDtype::BF16: return 2;
  }
  throw std::invalid_argument("kv_dtype_bytes: unknown KvDtype " + std::to_string(static_cast<unsigned>(dtype)));
}

// ---- Validation, one function per message (rules: the .capnp comments).

void validate(NodeHello::Reader m) {
  const Check c(MessageKind::node_hello);
  c.node_ref("node", m.hasNode(), m.getNode());
  c.roles("roles", m.getRoles());
  c.non_zero("pid", m.getPid());
  c.non_zero("protocolVersion", m.getProtocolVersion());
  c.non_zero("incarnation", m.getIncarnation());
}

void validate(NodeReady::Reader m) {
  const Check c(MessageKind::node_ready);
  c.non_zero("incarnation", m.getIncarnation());
  c.roles("roles", m.getRoles());
}

void validate(Heartbeat::Reader m) {
  const Check c(MessageKind::heartbeat);
  c.non_zero("sequence", m.getSequence());
}

void validate(WorkerLoad::Reader m) {
  const Check c(MessageKind::worker_load);
  if (m.getFreeKvPages() > m.getTotalKvPages()) {
    c.fail("freeKvPages", std::to_string(m.getFreeKvPages()) + " > totalKvPages " + std::to_string(m.getTotalKvPages()));
  }
}

void validate(Drain::Reader m) {
  const Check c(MessageKind::drain);
  c.non_zero("sequence", m.getSequence());
  c.text("reason", m.getReason(), limits::max_message_bytes);
}

void validate(Shutdown::Reader m) {
  const Check c(MessageKind::shutdown);
  c.non_zero("sequence", m.getSequence());
  c.text("reason", m.getReason(), limits::max_message_bytes);
}

void validate(Ack::Reader m) {
  const Check c(MessageKind::ack);
  if (!is_message_kind(m.getKind())) c.fail("kind", std::to_string(m.getKind()) + " is not a message kind");
  c.text("message", m.getMessage(), limits::max_message_bytes);
}

void validate(PrefillJob::Reader m) {
  const Check c(MessageKind::prefill_job);
  c.non_zero("requestId", m.getRequestId());
  const auto prompt = m.getPromptTokens();
  c.tokens("promptTokens", prompt, 1, limits::max_sequence_tokens);
  c.sampling("sampling", m.hasSampling(), m.getSampling());
  c.in_range("promptTokens + sampling.maxTokens", std::uint64_t{prompt.size()} + m.getSampling().getMaxTokens(), 2,
             limits::max_sequence_tokens);
  c.node_ref("decode", m.hasDecode(), m.getDecode());
  c.node_ref("router", m.hasRouter(), m.getRouter());
}

void validate(TokenBatch::Reader m) {
  const Check c(MessageKind::token_batch);
  c.non_zero("requestId", m.getRequestId());
  const auto tokens = m.getTokens();
  c.tokens("tokens", tokens, 0, limits::max_tokens_per_batch);
  c.known("finishReason", m.getFinishReason());
  if (tokens.size() == 0 && m.getFinishReason() == FinishReason::NONE) {
    c.fail("tokens", "empty, but finishReason is none (only a final batch may be empty)");
  }
  if (!m.hasUsage()) c.fail("usage", "is required");
  const auto usage = m.getUsage();
  c.in_range("usage.promptTokens", usage.getPromptTokens(), 1, limits::max_sequence_tokens);
  const std::uint64_t generated = std::uint64_t{m.getFirstIndex()} + tokens.size();
  if (usage.getCompletionTokens() != generated) {
    c.fail("usage.completionTokens", std::to_string(usage.getCompletionTokens()) + ", but firstIndex + tokens is " +
                                         std::to_string(generated));
  }
  c.in_range("usage.promptTokens + completionTokens", std::uint64_t{usage.getPromptTokens()} + generated, 1,
             limits::max_sequence_tokens);
}

void validate(RequestFailed::Reader m) {
  const Check c(MessageKind::request_failed);
  c.non_zero("requestId", m.getRequestId());
  c.known("code", m.getCode());
  c.text("message", m.getMessage(), limits::max_message_bytes);
  if (m.getNode().size() > 0) c.node_name("node", m.getNode());
}

void validate(CancelRequest::Reader m) {
  const Check c(MessageKind::cancel_request);
  c.non_zero("requestId", m.getRequestId());
  c.known("reason", m.getReason());
}

void validate(KvReserveRequest::Reader m) {
  const Check c(MessageKind::kv_reserve_request);
  c.non_zero("requestId", m.getRequestId());
  c.in_range("promptTokens", m.getPromptTokens(), 1, limits::max_sequence_tokens);
  c.in_range("maxTokens", m.getMaxTokens(), 1, limits::max_sequence_tokens);
  c.in_range("promptTokens + maxTokens", std::uint64_t{m.getPromptTokens()} + m.getMaxTokens(), 2,
             limits::max_sequence_tokens);
  c.node_ref("router", m.hasRouter(), m.getRouter());
}

void validate(KvReservation::Reader m) {
  const Check c(MessageKind::kv_reservation);
  c.non_zero("requestId", m.getRequestId());
  switch (m.which()) {
    case KvReservation::GRANTED:
      if (!m.hasGranted()) c.fail("granted", "is required when the union says granted");
      validate_grant(c, m.getGranted());
      return;
    case KvReservation::REFUSED: {
      if (!m.hasRefused()) c.fail("refused", "is required when the union says refused");
      const auto refusal = m.getRefused();
      c.known("refused.reason", refusal.getReason());
      c.text("refused.message", refusal.getMessage(), limits::max_message_bytes);
      return;
    }
  }
  c.fail("(union)", "unknown member " + std::to_string(static_cast<unsigned>(m.which())));
}

void validate(KvHandOff::Reader m) {
  const Check c(MessageKind::kv_hand_off);
  c.non_zero("requestId", m.getRequestId());
  c.non_zero("reservationId", m.getReservationId());
  const std::uint32_t prompt = m.getPromptTokens();
  c.in_range("promptTokens", prompt, 1, limits::max_sequence_tokens);
  if (m.getBytesWritten() == 0 || m.getBytesWritten() % prompt != 0) {
    c.fail("bytesWritten", std::to_string(m.getBytesWritten()) +
                               ": must be promptTokens * tokenBytes * layers (a non-zero multiple of " +
                               std::to_string(prompt) + ")");
  }
  if (m.getFirstToken() < 0) c.fail("firstToken", std::to_string(m.getFirstToken()) + ": token ids are >= 0");
  c.sampling("sampling", m.hasSampling(), m.getSampling());
  c.in_range("promptTokens + sampling.maxTokens", std::uint64_t{prompt} + m.getSampling().getMaxTokens(), 2,
             limits::max_sequence_tokens);
  c.node_ref("router", m.hasRouter(), m.getRouter());
  c.in_range("mtpLength", m.getMtpLength(), 0, prompt);
  const auto hidden = m.getLastHidden();
  c.in_range("lastHidden length", hidden.size(), 0, limits::max_hidden_size);
  if (hidden.size() > 0) {
    if (m.getMtpLength() != prompt - 1) {
      c.fail("mtpLength", std::to_string(m.getMtpLength()) + ": with lastHidden it must be promptTokens - 1 = " +
                              std::to_string(prompt - 1));
    }
    for (unsigned i = 0; i < hidden.size(); ++i) {
      if (!std::isfinite(hidden[i])) c.fail("lastHidden[" + std::to_string(i) + "]", "is not finite");
    }
  }
}

void validate(KvRelease::Reader m) {
  const Check c(MessageKind::kv_release);
  c.non_zero("requestId", m.getRequestId());
  c.non_zero("reservationId", m.getReservationId());
  c.known("reason", m.getReason());
  c.text("message", m.getMessage(), limits::max_message_bytes);
}

void validate(ExpertDispatch::Reader m) {
  const Check c(MessageKind::expert_dispatch);
  c.non_zero("batchId", m.getBatchId());
  c.in_range("layer", m.getLayer(), 0, limits::max_layers - 1);
  c.in_range("epoch", m.getEpoch(), 1, UINT64_MAX);
  const std::uint32_t hidden = m.getHidden();
  c.in_range("hidden", hidden, 128, limits::max_hidden_size);
  if (hidden % 128 != 0) c.fail("hidden", std::to_string(hidden) + ": must be a multiple of 128");
  const auto slots = m.getSlots();
  const auto slot_rows = m.getSlotRows();
  c.in_range("slots length", slots.size(), 1, limits::max_expert_slots);
  if (slot_rows.size() != slots.size()) {
    c.fail("slotRows", std::to_string(slot_rows.size()) + " entries for " + std::to_string(slots.size()) + " slots");
  }
  std::vector<bool> seen(limits::max_expert_slots, false);
  std::uint64_t rows = 0;
  for (unsigned i = 0; i < slots.size(); ++i) {
    const std::string at = "slots[" + std::to_string(i) + "]";
    c.in_range(at, slots[i], 0, limits::max_expert_slots - 1);
    if (seen[slots[i]]) c.fail(at, std::to_string(slots[i]) + " listed twice");
    seen[slots[i]] = true;
    c.in_range("slotRows[" + std::to_string(i) + "]", slot_rows[i], 1, limits::max_dispatch_rows);
    rows += slot_rows[i];
  }
  c.in_range("rows (sum of slotRows)", rows, 1, limits::max_dispatch_rows);
  c.known("dtype", m.getDtype());
  const bool fp8 = m.getDtype() == ActivationDtype::FP8E4M3;
  const std::uint64_t want = rows * hidden * (fp8 ? 1u : 4u);
  if (m.getActivations().size() != want) {
    c.fail("activations", std::to_string(m.getActivations().size()) + " bytes, " + std::to_string(want) +
                              " expected for " + std::to_string(rows) + " rows of " + std::to_string(hidden));
  }
  const std::uint64_t want_scales = fp8 ? rows * (hidden / 128) * 4 : 0;
  if (m.getScales().size() != want_scales) {
    c.fail("scales", std::to_string(m.getScales().size()) + " bytes, " + std::to_string(want_scales) + " expected");
  }
}

void validate(ExpertCombine::Reader m) {
  const Check c(MessageKind::expert_combine);
  c.non_zero("batchId", m.getBatchId());
  c.in_range("layer", m.getLayer(), 0, limits::max_layers - 1);
  c.in_range("epoch", m.getEpoch(), 1, UINT64_MAX);
  c.in_range("rows", m.getRows(), 0, limits::max_dispatch_rows);
  c.known("dtype", m.getDtype());
  c.text("error", m.getError(), limits::max_message_bytes);
  const std::uint64_t width = m.getDtype() == OutputDtype::BF16 ? 2 : 4;
  if (m.getError().size() > 0) {
    if (m.getOutputs().size() != 0) c.fail("outputs", "must be empty with an error");
  } else if (m.getRows() == 0 || m.getOutputs().size() % (m.getRows() * width) != 0) {
    c.fail("outputs", std::to_string(m.getOutputs().size()) + " bytes: not rows x hidden x " + std::to_string(width));
  }
}

void validate(ExpertLoadReport::Reader m) {
  const Check c(MessageKind::expert_load_report);
  c.node_name("host", m.getHost());
  if (m.getPeriodEndMs() < m.getPeriodStartMs()) c.fail("periodEndMs", "before periodStartMs");
  c.in_range("layers", m.getLayers(), 1, limits::max_layers);
  c.in_range("experts", m.getExperts(), 1, limits::max_expert_slots);
  const std::uint64_t want = std::uint64_t{m.getLayers()} * m.getExperts();
  if (m.getTokens().size() != want) {
    c.fail("tokens", std::to_string(m.getTokens().size()) + " entries, layers x experts = " + std::to_string(want));
  }
}

void validate(PlacementUpdate::Reader m) {
  const Check c(MessageKind::placement_update);
  c.in_range("epoch", m.getEpoch(), 1, UINT64_MAX);
  c.known("phase", m.getPhase());
  c.in_range("experts", m.getExperts(), 1, limits::max_expert_slots);
  c.in_range("slots", m.getSlots(), m.getExperts(), limits::max_expert_slots);
  const auto hosts = m.getHosts();
  c.in_range("hosts length", hosts.size(), 1, limits::max_expert_slots);
  for (unsigned i = 0; i < hosts.size(); ++i) c.node_name("hosts[" + std::to_string(i) + "]", hosts[i]);
  const auto host_of_slot = m.getHostOfSlot();
  if (host_of_slot.size() != m.getSlots()) {
    c.fail("hostOfSlot", std::to_string(host_of_slot.size()) + " entries for " + std::to_string(m.getSlots()) + " slots");
  }
  for (unsigned i = 0; i < host_of_slot.size(); ++i) {
    if (host_of_slot[i] >= hosts.size()) c.fail("hostOfSlot[" + std::to_string(i) + "]", "names no host");
  }
  c.in_range("layers", m.getLayers(), 1, limits::max_layers);
  const auto phy2log = m.getPhy2log();
  if (phy2log.size() != std::uint64_t{m.getLayers()} * m.getSlots()) {
    c.fail("phy2log", std::to_string(phy2log.size()) + " entries, layers x slots expected");
  }
  for (unsigned i = 0; i < phy2log.size(); ++i) {
    if (phy2log[i] < -1 || phy2log[i] >= static_cast<std::int64_t>(m.getExperts())) {
      c.fail("phy2log[" + std::to_string(i) + "]", std::to_string(phy2log[i]) + " is not an expert (or -1)");
    }
  }
}

void validate(PlacementAck::Reader m) {
  const Check c(MessageKind::placement_ack);
  c.in_range("epoch", m.getEpoch(), 1, UINT64_MAX);
  c.known("phase", m.getPhase());
  c.text("message", m.getMessage(), limits::max_message_bytes);
}

// ---- Encoding.

Frame encode_unchecked(MessageKind kind, capnp::MessageBuilder& message) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  Frame frame(frame_prefix_bytes + bytes.size());
  write_u16(frame.data(), frame_magic);
  write_u16(frame.data() + 2, wire_version);
  write_u16(frame.data() + 4, static_cast<std::uint16_t>(kind));
  write_u16(frame.data() + 6, 0);
  std::memcpy(frame.data() + frame_prefix_bytes, bytes.begin(), bytes.size());
  return frame;
}

Frame detail::encode_checked(MessageKind kind, capnp::MessageBuilder& message) {
  if (!is_message_kind(static_cast<std::uint16_t>(kind))) throw WireError(kind, "not a message kind of this build");
  try {
    visit_kind(kind, [&](auto schema) {
      using Schema = typename decltype(schema)::type;
      validate(message.getRoot<Schema>().asReader());
    });
  } catch (const kj::Exception& e) {
    throw WireError(kind, "refusing to encode: " + describe(e));
  } catch (const WireError& e) {
    throw WireError(kind, std::string("refusing to encode an invalid message: ") + e.what());
  }
  Frame frame = encode_unchecked(kind, message);
  const std::size_t limit = kind_info(kind).max_frame_bytes;
  if (frame.size() > limit) {
    throw WireError(kind, "frame of " + std::to_string(frame.size()) + " bytes exceeds the kind's limit of " +
                              std::to_string(limit));
  }
  return frame;
}

AmParts am_parts(MessageKind kind, const Frame& frame) {
  const std::span<const std::byte> bytes(frame);
  if (kind_info(kind).carriage == Carriage::payload) return {{}, bytes};
  return {bytes, {}};
}

std::span<const std::byte> frame_of_am(std::uint16_t am_id, std::span<const std::byte> header,
                                       std::span<const std::byte> payload) {
  const auto kind = static_cast<MessageKind>(am_id);
  if (!is_message_kind(am_id)) throw WireError(kind, "AM id " + std::to_string(am_id) + " is not a message kind");
  switch (kind_info(kind).carriage) {
    case Carriage::header:
      if (!payload.empty()) throw WireError(kind, "unexpected AM payload of " + std::to_string(payload.size()) + " bytes");
      return header;
    case Carriage::payload:
      if (!header.empty()) throw WireError(kind, "unexpected AM header of " + std::to_string(header.size()) + " bytes");
      return payload;
    case Carriage::header_and_bulk:
      return header;
  }
  throw WireError(kind, "unknown carriage");
}

// ---- Decoding.

class detail::OpenFrame {
 public:
  kj::Array<capnp::word> words;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;  // access_options()
};

void detail::OpenFrameDeleter::operator()(OpenFrame* frame) const { delete frame; }

capnp::MessageReader& detail::reader_of(OpenFrame& frame) { return *frame.reader; }

MessageKind peek_kind(std::span<const std::byte> frame) {
  // Until the prefix is read the kind is unknown; errors name "kind 0".
  const MessageKind unknown{};
  if (frame.empty()) throw WireError(unknown, "empty frame");
  if (frame.size() < frame_prefix_bytes) {
    throw WireError(unknown, "frame of " + std::to_string(frame.size()) + " bytes is shorter than its " +
                                 std::to_string(frame_prefix_bytes) + "-byte prefix");
  }
  if (read_u16(frame.data()) != frame_magic) throw WireError(unknown, "bad frame magic (not a Switchyard frame)");
  if (const std::uint16_t version = read_u16(frame.data() + 2); version != wire_version) {
    throw WireError(unknown, "wire version " + std::to_string(version) + ", this build speaks " +
                                 std::to_string(wire_version));
  }
  if (read_u16(frame.data() + 6) != 0) throw WireError(unknown, "reserved prefix bytes are not zero");
  return static_cast<MessageKind>(read_u16(frame.data() + 4));
}

detail::OpenFramePtr detail::open_frame(MessageKind expected, std::span<const std::byte> frame) {
  if (!is_message_kind(static_cast<std::uint16_t>(expected))) {
    throw WireError(expected, "not a message kind of this build");
  }
  MessageKind actual;
  try {
    actual = peek_kind(frame);
  } catch (const WireError& e) {
    // Re-attribute to the kind the caller expected, keeping the problem text.
    const std::string what = e.what();
    throw WireError(expected, what.substr(what.find(": ") + 2));
  }
  if (actual != expected) {
    throw WireError(expected, "frame holds a " + kind_name(actual) + ", expected a " + kind_name(expected));
  }
  const std::size_t limit = kind_info(expected).max_frame_bytes;
  if (frame.size() > limit) {
    throw WireError(expected, "frame of " + std::to_string(frame.size()) + " bytes exceeds the kind's limit of " +
                                  std::to_string(limit));
  }
  const std::size_t body = frame.size() - frame_prefix_bytes;
  if (body == 0) throw WireError(expected, "no message after the prefix");
  if (body % sizeof(capnp::word) != 0) {
    throw WireError(expected, "message of " + std::to_string(body) +
                                  " bytes is not a whole number of 8-byte words (truncated or padded)");
  }
  // Always copy: the AM's spans die when the handler returns, and the copy is 8-byte aligned
  // whatever the transport handed us.
  auto open = OpenFramePtr(new OpenFrame);
  open->words = kj::heapArray<capnp::word>(body / sizeof(capnp::word));
  std::memcpy(open->words.begin(), frame.data() + frame_prefix_bytes, body);
  try {
    capnp::FlatArrayMessageReader checked(open->words, validation_options(open->words.size()));
    if (checked.getEnd() != open->words.end()) {
      const auto used = static_cast<std::size_t>(checked.getEnd() - open->words.begin());
      throw WireError(expected, std::to_string((open->words.size() - used) * sizeof(capnp::word)) +
                                    " bytes after the end of the message");
    }
    walk_pointer(checked.getRoot<capnp::AnyPointer>());
    validate_root(expected, checked);
    open->reader = std::make_unique<capnp::FlatArrayMessageReader>(open->words, access_options());
  } catch (const kj::Exception& e) {
    throw WireError(expected, describe(e));
  }
  return open;
}

void check_frame(MessageKind expected, std::span<const std::byte> frame) { (void)detail::open_frame(expected, frame); }

}  // namespace sy::schemas
