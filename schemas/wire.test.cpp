// The wire format: the kind table, round trips of every kind, the field rules, and hostile input
// (truncation at every length, bit flips, misalignment, wrong kind, oversized lists) that must end
// in a WireError naming the kind, never a crash. Also checks the checked-in fuzz corpus
// (tests/fuzz/corpus/wire) still decodes, and rewrites it when SY_WRITE_WIRE_CORPUS names a folder.
#include "schemas/wire.hpp"

#include <capnp/message.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <kj/string.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "schemas/wire_samples.hpp"

namespace sy::schemas {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::Sample;
using testing::wire_samples;

// Decodes `frame` as `kind` and returns the reader's text form ("(requestId = 1, ...)").
std::string decode_to_text(MessageKind kind, std::span<const std::byte> frame) {
  return visit_kind(kind, [&](auto schema) {
    using Schema = typename decltype(schema)::type;
    return std::string(kj::str(decode<Schema>(frame).reader()).cStr());
  });
}

// Expects decoding `frame` as `kind` to throw a WireError naming the kind; returns its message.
std::string expect_rejected(MessageKind kind, std::span<const std::byte> frame) {
  try {
    check_frame(kind, frame);
  } catch (const WireError& e) {
    EXPECT_EQ(e.kind(), kind);
    EXPECT_THAT(e.what(), StartsWith(kind_name(kind) + ": "));
    return e.what();
  }
  ADD_FAILURE() << kind_name(kind) << ": accepted a frame that should be rejected";
  return {};
}

// Builds a message of Schema with `fill`, frames it without validation, and expects decode to
// reject it with `needle` in the message (and encode() to refuse it too).
template <class Schema, class Fill>
void expect_invalid(Fill fill, const std::string& needle) {
  capnp::MallocMessageBuilder message;
  fill(message.initRoot<Schema>());
  const Frame frame = encode_unchecked(kind_of<Schema>, message);
  EXPECT_THAT(expect_rejected(kind_of<Schema>, frame), HasSubstr(needle));
  EXPECT_THROW(encode<Schema>(message), WireError);
}

Sample sample_named(const std::string& name) {
  for (Sample& s : wire_samples()) {
    if (s.name == name) return s;
  }
  throw std::logic_error("no sample " + name);
}

void set_node(NodeRef::Builder ref, const char* name, const char* address) {
  ref.setName(name);
  ref.setAddress(address);
}

void fill_job(PrefillJob::Builder m, std::uint32_t prompt_len = 5) {
  m.setRequestId(11);
  auto prompt = m.initPromptTokens(prompt_len);
  for (unsigned i = 0; i < prompt_len; ++i) prompt.set(i, static_cast<std::int32_t>(i % 1000));
  auto s = m.initSampling();
  s.setMaxTokens(8);
  set_node(m.initDecode(), "decode-0", "127.0.0.1:5000");
  set_node(m.initRouter(), "router-0", "127.0.0.1:5001");
}

void fill_grant(KvReservation::Builder m) {
  m.setRequestId(11);
  auto g = m.initGranted();
  g.setReservationId(5);
  auto pages = g.initPageIds(3);
  pages.set(0, 4);
  pages.set(1, 0);
  pages.set(2, 7);
  g.setPoolPages(8);
  g.setLatentDim(512);
  g.setRopeDim(64);
  g.setDtype(KvDtype::FP32);
  g.setTokenBytes(576 * 4);
  g.setMainLayers(2);
  g.setMtpLayers(1);
  auto pools = g.initPools(3);
  for (unsigned l = 0; l < 3; ++l) pools[l].setRemoteBase(0x10000 * (l + 1));
  g.initRemoteKeys(1).init(0, 16);
  g.setExpiresInMs(1000);
}

void fill_hand_off(KvHandOff::Builder m) {
  m.setRequestId(11);
  m.setReservationId(5);
  m.setPromptTokens(4);
  m.setBytesWritten(4 * 2304 * 3);
  m.setFirstToken(9);
  m.initSampling().setMaxTokens(8);
  set_node(m.initRouter(), "router-0", "127.0.0.1:5001");
}

// ---- The kind table.

TEST(KindTable, EveryKindHasAUniqueNameMatchingItsSchema) {
  std::set<std::string_view> names;
  for (std::uint16_t raw = 1; raw <= message_kind_count; ++raw) {
    const auto kind = static_cast<MessageKind>(raw);
    const KindInfo& info = kind_info(kind);
    EXPECT_EQ(info.kind, kind);
    EXPECT_FALSE(info.name.empty());
    EXPECT_TRUE(names.insert(info.name).second) << "duplicate name " << info.name;
    const std::string schema_name = visit_kind(kind, [](auto schema) {
      using Schema = typename decltype(schema)::type;
      return std::string(capnp::Schema::from<Schema>().getShortDisplayName().cStr());
    });
    EXPECT_EQ(info.name, schema_name);
    EXPECT_EQ(kind_name(kind), info.name);
    EXPECT_GT(info.max_frame_bytes, frame_prefix_bytes);
  }
  EXPECT_EQ(names.size(), message_kind_count);
}

TEST(KindTable, NumbersOutsideTheTableAreNotKinds) {
  EXPECT_FALSE(is_message_kind(0));
  EXPECT_TRUE(is_message_kind(1));
  EXPECT_TRUE(is_message_kind(static_cast<std::uint16_t>(message_kind_count)));
  EXPECT_FALSE(is_message_kind(static_cast<std::uint16_t>(message_kind_count + 1)));
  EXPECT_EQ(kind_name(static_cast<MessageKind>(999)), "kind 999");
  EXPECT_THROW(kind_info(MessageKind{}), std::out_of_range);
  EXPECT_THROW(visit_kind(MessageKind::end_, [](auto) {}), WireError);
}

TEST(KindTable, EnumerantNamesComeFromTheSchema) {
  EXPECT_EQ(enumerant_name(FailureCode::KV_EXHAUSTED), "kvExhausted");
  EXPECT_EQ(enumerant_name(Role::EXPERT_HOST), "expertHost");
  EXPECT_EQ(enumerant_name(static_cast<FinishReason>(77)), "#77");
}

// ---- Round trips.

TEST(WireRoundTrip, SamplesCoverEveryKind) {
  std::set<MessageKind> kinds;
  for (const Sample& s : wire_samples()) {
    kinds.insert(s.kind);
    EXPECT_LT(s.frame.size(), 4096u) << s.name;
    EXPECT_EQ(peek_kind(s.frame), s.kind) << s.name;
  }
  EXPECT_EQ(kinds.size(), message_kind_count);
}

TEST(WireRoundTrip, EverySampleDecodesToWhatWasBuilt) {
  for (const Sample& s : wire_samples()) {
    SCOPED_TRACE(s.name);
    // Rebuild the message by copying the decoded reader: re-encoding gives the same content.
    visit_kind(s.kind, [&](auto schema) {
      using Schema = typename decltype(schema)::type;
      const Decoded<Schema> decoded = decode<Schema>(s.frame);
      capnp::MallocMessageBuilder copy;
      copy.setRoot(decoded.reader());
      const Frame again = encode<Schema>(copy);
      EXPECT_EQ(decode_to_text(s.kind, again), std::string(kj::str(decoded.reader()).cStr()));
      EXPECT_EQ(again.size(), s.frame.size());
    });
  }
}

TEST(WireRoundTrip, FieldsSurviveWithTheirValues) {
  const Sample job = sample_named("prefill_job");
  const auto decoded = decode<PrefillJob>(job.frame);
  EXPECT_EQ(decoded->getRequestId(), 0x00c0ffee00000001ull);
  ASSERT_EQ(decoded->getPromptTokens().size(), 37u);
  EXPECT_EQ(decoded->getPromptTokens()[0], 0);
  EXPECT_EQ(decoded->getPromptTokens()[36], static_cast<std::int32_t>((36 * 7919u) % 129280u));
  EXPECT_FLOAT_EQ(decoded->getSampling().getTemperature(), 0.7f);
  EXPECT_FLOAT_EQ(decoded->getSampling().getTopP(), 0.95f);
  EXPECT_EQ(decoded->getSampling().getTopK(), 50u);
  EXPECT_EQ(decoded->getSampling().getSeed(), 0x5eed5eed12345678ull);
  EXPECT_EQ(decoded->getSampling().getMaxTokens(), 256u);
  EXPECT_TRUE(decoded->getSampling().getStopAtEos());
  EXPECT_EQ(std::string(decoded->getDecode().getName().cStr()), "decode-0");
  EXPECT_EQ(std::string(decoded->getRouter().getAddress().cStr()), "10.0.0.2:13337");
  EXPECT_EQ(decoded->getTimeoutMs(), 30000u);

  const auto grant_frame = sample_named("kv_reservation_granted").frame;
  const auto reservation = decode<KvReservation>(grant_frame);
  ASSERT_EQ(reservation->which(), KvReservation::GRANTED);
  const auto g = reservation->getGranted();
  EXPECT_EQ(g.getPageIds().size(), 5u);
  EXPECT_EQ(g.getPageIds()[4], 120);
  EXPECT_EQ(g.getPageTokens(), 64u);
  EXPECT_EQ(g.getTokenBytes(), 1152u);
  EXPECT_EQ(g.getDtype(), KvDtype::BF16);
  EXPECT_EQ(g.getPools().size(), 62u);
  EXPECT_EQ(g.getPools()[61].getRemoteBase(), 0x7f3a00000000ull + 61ull * 4096 * 64 * 1152);
  EXPECT_EQ(g.getRemoteKeys()[0].size(), 96u);

  const auto hand_off = decode<KvHandOff>(sample_named("kv_hand_off").frame);
  EXPECT_EQ(hand_off->getLastHidden().size(), 256u);
  EXPECT_EQ(hand_off->getMtpLength(), 36u);
  EXPECT_EQ(hand_off->getFirstToken(), 4853);
}

TEST(WireRoundTrip, DefaultsAreThoseTheSchemaDocuments) {
  capnp::MallocMessageBuilder message;
  auto s = message.initRoot<SamplingParams>();
  EXPECT_EQ(s.getTemperature(), 0.0f);
  EXPECT_EQ(s.getTopP(), 1.0f);
  EXPECT_EQ(s.getTopK(), 0u);
  EXPECT_EQ(s.getMaxTokens(), 0u);  // no default: must be set
  EXPECT_TRUE(s.getStopAtEos());
  capnp::MallocMessageBuilder grant;
  EXPECT_EQ(grant.initRoot<KvGrant>().getPageTokens(), 64u);
}

TEST(WireRoundTrip, TheDecodedMessageOwnsItsBytes) {
  auto frame = std::make_unique<Frame>(sample_named("token_batch_last").frame);
  const auto decoded = decode<TokenBatch>(*frame);
  std::fill(frame->begin(), frame->end(), std::byte{0xAB});
  frame.reset();
  EXPECT_EQ(decoded->getTokens().size(), 2u);
  EXPECT_EQ(decoded->getFinishReason(), FinishReason::STOP);
  EXPECT_EQ(decoded->getUsage().getCompletionTokens(), 42u);
}

TEST(WireRoundTrip, MisalignedSpansDecodeTheSame) {
  for (const Sample& s : wire_samples()) {
    const std::string expected = decode_to_text(s.kind, s.frame);
    std::vector<std::byte> buffer(s.frame.size() + 8);
    for (std::size_t offset = 1; offset < 8; ++offset) {
      std::copy(s.frame.begin(), s.frame.end(), buffer.begin() + static_cast<std::ptrdiff_t>(offset));
      EXPECT_EQ(decode_to_text(s.kind, std::span(buffer).subspan(offset, s.frame.size())), expected)
          << s.name << " at offset " << offset;
    }
  }
}

TEST(WireRoundTrip, ListsAtTheirLimitsFitTheirKinds) {
  {  // the longest prompt
    capnp::MallocMessageBuilder message;
    fill_job(message.initRoot<PrefillJob>(), limits::max_sequence_tokens - 1);
    message.getRoot<PrefillJob>().getSampling().setMaxTokens(1);
    const Frame frame = encode<PrefillJob>(message);
    EXPECT_EQ(decode<PrefillJob>(frame)->getPromptTokens().size(), limits::max_sequence_tokens - 1);
  }
  {  // the widest grant: every page, every layer, a key per layer
    capnp::MallocMessageBuilder message;
    auto m = message.initRoot<KvReservation>();
    fill_grant(m);
    auto g = m.getGranted();
    g.setPoolPages(limits::max_pages);
    auto pages = g.initPageIds(limits::max_pages);
    for (unsigned i = 0; i < limits::max_pages; ++i) pages.set(i, static_cast<std::int32_t>(limits::max_pages - 1 - i));
    g.setMainLayers(limits::max_layers - 1);
    g.setMtpLayers(1);
    auto pools = g.initPools(limits::max_layers);
    auto keys = g.initRemoteKeys(limits::max_remote_keys);
    for (unsigned l = 0; l < limits::max_layers; ++l) {
      pools[l].setRemoteBase(0x1000000000ull * (l + 1));
      pools[l].setKeyIndex(static_cast<std::uint16_t>(l));
      keys.init(l, limits::max_remote_key_bytes);
    }
    const Frame frame = encode<KvReservation>(message);
    EXPECT_EQ(decode<KvReservation>(frame)->getGranted().getPools().size(), limits::max_layers);
  }
  {  // V3's hidden state, and the largest allowed
    for (const std::uint32_t width : {7168u, limits::max_hidden_size}) {
      capnp::MallocMessageBuilder message;
      auto m = message.initRoot<KvHandOff>();
      fill_hand_off(m);
      m.setMtpLength(3);
      auto hidden = m.initLastHidden(width);
      for (unsigned i = 0; i < width; ++i) hidden.set(i, static_cast<float>(i) * 0.5f);
      const Frame frame = encode<KvHandOff>(message);
      EXPECT_EQ(decode<KvHandOff>(frame)->getLastHidden()[width - 1], static_cast<float>(width - 1) * 0.5f);
    }
  }
  {  // a full token batch still fits the AM header
    capnp::MallocMessageBuilder message;
    auto m = message.initRoot<TokenBatch>();
    m.setRequestId(3);
    m.setFirstIndex(limits::max_sequence_tokens - 1 - limits::max_tokens_per_batch);
    m.initTokens(limits::max_tokens_per_batch);
    auto usage = m.initUsage();
    usage.setPromptTokens(1);
    usage.setCompletionTokens(limits::max_sequence_tokens - 1);
    const Frame frame = encode<TokenBatch>(message);
    EXPECT_LE(frame.size(), limits::max_header_bytes);
  }
}

// ---- The field rules.

TEST(WireRules, PrefillJob) {
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.setRequestId(0); }, "requestId: must be non-zero");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getPromptTokens().set(3, -1); },
                             "promptTokens[3]: -1: token ids are >= 0");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m, 0); }, "promptTokens length: 0 is outside");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getSampling().setMaxTokens(0); }, "sampling.maxTokens");
  expect_invalid<PrefillJob>(
      [](auto m) { fill_job(m); m.getSampling().setTemperature(std::numeric_limits<float>::quiet_NaN()); },
      "sampling.temperature");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getSampling().setTemperature(-0.5f); },
                             "sampling.temperature");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getSampling().setTopP(0.0f); }, "sampling.topP");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getSampling().setTopP(1.5f); }, "sampling.topP");
  expect_invalid<PrefillJob>(
      [](auto m) { fill_job(m); m.getSampling().setMaxTokens(limits::max_sequence_tokens); },
      "promptTokens + sampling.maxTokens");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.disownSampling(); }, "sampling: is required");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getDecode().setName("decode 0"); },
                             "decode.name: may hold only");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.getRouter().setAddress(""); }, "router.address length");
  expect_invalid<PrefillJob>([](auto m) { fill_job(m); m.disownRouter(); }, "router: is required");
}

TEST(WireRules, TokenBatch) {
  const auto fill = [](TokenBatch::Builder m) {
    m.setRequestId(1);
    m.setFirstIndex(4);
    m.initTokens(2).set(1, 77);
    auto usage = m.initUsage();
    usage.setPromptTokens(10);
    usage.setCompletionTokens(6);
  };
  capnp::MallocMessageBuilder ok;
  fill(ok.initRoot<TokenBatch>());
  EXPECT_NO_THROW(encode<TokenBatch>(ok));
  expect_invalid<TokenBatch>([&](auto m) { fill(m); m.getUsage().setCompletionTokens(7); },
                             "usage.completionTokens: 7, but firstIndex + tokens is 6");
  expect_invalid<TokenBatch>([&](auto m) { fill(m); m.initTokens(0); m.getUsage().setCompletionTokens(4); },
                             "only a final batch may be empty");
  expect_invalid<TokenBatch>([&](auto m) { fill(m); m.setFinishReason(static_cast<FinishReason>(99)); },
                             "finishReason: unknown enumerant 99");
  expect_invalid<TokenBatch>(
      [&](auto m) {
        fill(m);
        m.initTokens(limits::max_tokens_per_batch + 1);
        m.getUsage().setCompletionTokens(4 + limits::max_tokens_per_batch + 1);
      },
      "tokens length: 257 is outside [0, 256]");
  expect_invalid<TokenBatch>([&](auto m) { fill(m); m.disownUsage(); }, "usage: is required");
}

TEST(WireRules, RequestFailedAndCancel) {
  const auto fill = [](RequestFailed::Builder m) {
    m.setRequestId(1);
    m.setCode(FailureCode::OVERLOADED);
    m.setMessage("queue full");
  };
  expect_invalid<RequestFailed>([&](auto m) { fill(m); m.setCode(static_cast<FailureCode>(6)); },
                                "code: unknown enumerant 6");
  expect_invalid<RequestFailed>(
      [&](auto m) {
        fill(m);
        const char bad[] = {'o', 'k', '\xC0', '\xAF', 0};  // overlong '/'
        m.setMessage(bad);
      },
      "message: is not valid UTF-8");
  expect_invalid<RequestFailed>([&](auto m) { fill(m); m.setMessage(std::string(limits::max_message_bytes + 1, 'x')); },
                                "message: 1025 bytes");
  expect_invalid<RequestFailed>([&](auto m) { fill(m); m.setNode("bad/name"); }, "node: may hold only");
  capnp::MallocMessageBuilder utf8;
  fill(utf8.initRoot<RequestFailed>());
  utf8.getRoot<RequestFailed>().setMessage("décodeur épuisé: 3 pages ✓ 🚀");
  EXPECT_NO_THROW(encode<RequestFailed>(utf8));
  expect_invalid<CancelRequest>([](auto m) { m.setRequestId(1); m.setReason(static_cast<CancelReason>(4)); },
                                "reason: unknown enumerant 4");
  expect_invalid<CancelRequest>([](auto m) { m.setRequestId(0); }, "requestId");
}

TEST(WireRules, KvReserveRequest) {
  const auto fill = [](KvReserveRequest::Builder m) {
    m.setRequestId(1);
    m.setPromptTokens(100);
    m.setMaxTokens(50);
    set_node(m.initRouter(), "r", "a:1");
  };
  expect_invalid<KvReserveRequest>([&](auto m) { fill(m); m.setPromptTokens(0); }, "promptTokens: 0 is outside");
  expect_invalid<KvReserveRequest>([&](auto m) { fill(m); m.setMaxTokens(limits::max_sequence_tokens); },
                                   "promptTokens + maxTokens");
  expect_invalid<KvReserveRequest>([&](auto m) { fill(m); m.disownRouter(); }, "router: is required");
}

TEST(WireRules, KvReservation) {
  capnp::MallocMessageBuilder ok;
  fill_grant(ok.initRoot<KvReservation>());
  EXPECT_NO_THROW(encode<KvReservation>(ok));
  using B = KvReservation::Builder;
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().setPageTokens(32); },
                                "granted.pageTokens: 32: only 64-token pages");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().getPageIds().set(2, 4); },
                                "granted.pageIds: page 4 appears twice");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().getPageIds().set(1, 8); },
                                "granted.pageIds[1]: 8 is outside [0, poolPages = 8)");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().getPageIds().set(0, -2); },
                                "granted.pageIds[0]: -2");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().setTokenBytes(576 * 2); },
                                "granted.tokenBytes: 1152: (latentDim + ropeDim) * size(fp32) is 2304");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().setDtype(static_cast<KvDtype>(2)); },
                                "granted.dtype: unknown enumerant 2");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().setMtpLayers(2); },
                                "granted.pools: 3 pools for mainLayers + mtpLayers = 4");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().getPools()[2].setKeyIndex(1); },
                                "granted.pools[2].keyIndex: 1 but there are 1 remoteKeys");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().getPools()[0].setRemoteBase(0); },
                                "granted.pools[0].remoteBase: must be non-zero");
  expect_invalid<KvReservation>(
      [](B m) { fill_grant(m); m.getGranted().getPools()[1].setRemoteBase(~std::uint64_t{0} - 100); },
      "overflow the address space");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().initRemoteKeys(0); },
                                "granted.remoteKeys length: 0");
  expect_invalid<KvReservation>(
      [](B m) { fill_grant(m); m.getGranted().getRemoteKeys().init(0, limits::max_remote_key_bytes + 1); },
      "granted.remoteKeys[0] bytes");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().setExpiresInMs(0); },
                                "granted.expiresInMs");
  expect_invalid<KvReservation>([](B m) { fill_grant(m); m.getGranted().initPageIds(limits::max_pages + 1); },
                                "granted.pageIds length: 4097");
  expect_invalid<KvReservation>(
      [](B m) {
        m.setRequestId(1);
        m.initRefused().setReason(static_cast<KvRefusalReason>(9));
      },
      "refused.reason: unknown enumerant 9");
}

TEST(WireRules, KvReservationWithAnUnknownUnionMember) {
  Frame frame = sample_named("kv_reservation_refused").frame;
  // Prefix (8), segment table (8), root pointer (8), requestId (8): the discriminant is next.
  constexpr std::size_t discriminant = 32;
  ASSERT_EQ(frame[discriminant], std::byte{1}) << "layout assumption: refused is member 1";
  frame[discriminant] = std::byte{7};
  EXPECT_THAT(expect_rejected(MessageKind::kv_reservation, frame), HasSubstr("(union): unknown member 7"));
  frame[discriminant] = std::byte{0};  // claims granted: the refusal's struct read as a grant
  expect_rejected(MessageKind::kv_reservation, frame);
}

TEST(WireRules, KvHandOff) {
  capnp::MallocMessageBuilder ok;
  fill_hand_off(ok.initRoot<KvHandOff>());
  EXPECT_NO_THROW(encode<KvHandOff>(ok));
  using B = KvHandOff::Builder;
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.setReservationId(0); }, "reservationId");
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.setBytesWritten(0); }, "bytesWritten: 0");
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.setBytesWritten(4 * 2304 + 1); }, "bytesWritten");
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.setFirstToken(-7); }, "firstToken: -7");
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.setMtpLength(5); }, "mtpLength: 5 is outside [0, 4]");
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.setMtpLength(1); m.initLastHidden(4); },
                            "mtpLength: 1: with lastHidden it must be promptTokens - 1 = 3");
  expect_invalid<KvHandOff>(
      [](B m) {
        fill_hand_off(m);
        m.setMtpLength(3);
        m.initLastHidden(4).set(2, std::numeric_limits<float>::infinity());
      },
      "lastHidden[2]: is not finite");
  expect_invalid<KvHandOff>(
      [](B m) {
        fill_hand_off(m);
        m.setMtpLength(3);
        m.initLastHidden(limits::max_hidden_size + 1);
      },
      "lastHidden length");
  expect_invalid<KvHandOff>([](B m) { fill_hand_off(m); m.disownSampling(); }, "sampling: is required");
}

TEST(WireRules, Control) {
  const auto hello = [](NodeHello::Builder m) {
    set_node(m.initNode(), "prefill-1", "[::1]:7000");
    m.initRoles(1).set(0, Role::PREFILL);
    m.setPid(10);
    m.setProtocolVersion(1);
    m.setIncarnation(99);
  };
  capnp::MallocMessageBuilder ok;
  hello(ok.initRoot<NodeHello>());
  EXPECT_NO_THROW(encode<NodeHello>(ok));
  expect_invalid<NodeHello>(
      [&](auto m) {
        hello(m);
        auto roles = m.initRoles(2);
        roles.set(0, Role::DECODE);
        roles.set(1, Role::DECODE);
      },
      "roles[1]: decode listed twice");
  expect_invalid<NodeHello>([&](auto m) { hello(m); m.initRoles(1).set(0, static_cast<Role>(6)); },
                            "roles[0]: unknown enumerant 6");
  expect_invalid<NodeHello>([&](auto m) { hello(m); m.initRoles(0); }, "roles length: 0");
  expect_invalid<NodeHello>([&](auto m) { hello(m); m.setIncarnation(0); }, "incarnation");
  expect_invalid<NodeHello>([&](auto m) { hello(m); m.setProtocolVersion(0); }, "protocolVersion");
  expect_invalid<NodeHello>([&](auto m) { hello(m); m.getNode().setName(std::string(65, 'n')); },
                            "node.name length: 65");
  expect_invalid<NodeReady>([](auto m) { m.setIncarnation(1); }, "roles length: 0");
  expect_invalid<Heartbeat>([](auto m) { m.setMonotonicMs(5); }, "sequence: must be non-zero");
  expect_invalid<WorkerLoad>([](auto m) { m.setFreeKvPages(5); m.setTotalKvPages(4); },
                             "freeKvPages: 5 > totalKvPages 4");
  expect_invalid<Drain>([](auto m) { m.setSequence(0); }, "sequence");
  expect_invalid<Shutdown>([](auto m) { m.setSequence(1); m.setReason("\xff"); }, "reason: is not valid UTF-8");
  expect_invalid<Ack>([](auto m) { m.setKind(0); }, "kind: 0 is not a message kind");
  expect_invalid<Ack>([](auto m) { m.setKind(static_cast<std::uint16_t>(message_kind_count + 1)); },
                      "is not a message kind");
  expect_invalid<KvRelease>([](auto m) { m.setRequestId(1); m.setReservationId(2);
                                         m.setReason(static_cast<KvReleaseReason>(6)); },
                            "reason: unknown enumerant 6");
}

// ---- Hostile frames.

TEST(WireHostile, EmptyAndTinyFramesAreRejected) {
  for (std::uint16_t raw = 1; raw <= message_kind_count; ++raw) {
    const auto kind = static_cast<MessageKind>(raw);
    EXPECT_THAT(expect_rejected(kind, {}), HasSubstr("empty frame"));
    const std::byte one[1] = {};
    EXPECT_THAT(expect_rejected(kind, one), HasSubstr("shorter than its 8-byte prefix"));
  }
}

TEST(WireHostile, EveryTruncationIsRejected) {
  for (const Sample& s : wire_samples()) {
    for (std::size_t n = 0; n < s.frame.size(); ++n) {
      expect_rejected(s.kind, std::span(s.frame).first(n));
    }
  }
}

TEST(WireHostile, TrailingBytesAreRejected) {
  for (const Sample& s : wire_samples()) {
    Frame padded = s.frame;
    padded.resize(padded.size() + 8);
    EXPECT_THAT(expect_rejected(s.kind, padded), HasSubstr("8 bytes after the end of the message")) << s.name;
  }
}

TEST(WireHostile, TheWrongKindIsRejectedByName) {
  const Sample job = sample_named("prefill_job");
  EXPECT_THAT(expect_rejected(MessageKind::cancel_request, job.frame),
              HasSubstr("frame holds a PrefillJob, expected a CancelRequest"));
  // Same bytes, prefix relabelled: the prefix matches but the content breaks CancelRequest's
  // rules or decodes as a different, still valid, message. Either way no crash.
  Frame relabelled = job.frame;
  relabelled[4] = static_cast<std::byte>(MessageKind::cancel_request);
  try {
    check_frame(MessageKind::cancel_request, relabelled);
  } catch (const WireError& e) {
    EXPECT_EQ(e.kind(), MessageKind::cancel_request);
  }
  Frame unknown = job.frame;
  unknown[4] = std::byte{200};
  EXPECT_THAT(expect_rejected(MessageKind::prefill_job, unknown), HasSubstr("frame holds a kind 200"));
}

TEST(WireHostile, PrefixFieldsAreChecked) {
  const Frame good = sample_named("heartbeat").frame;
  Frame bad = good;
  bad[0] = std::byte{0};
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, bad), HasSubstr("bad frame magic"));
  bad = good;
  bad[2] = std::byte{2};
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, bad), HasSubstr("wire version 2, this build speaks 1"));
  bad = good;
  bad[7] = std::byte{1};
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, bad), HasSubstr("reserved prefix bytes"));
  bad = good;
  bad.resize(frame_prefix_bytes);
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, bad), HasSubstr("no message after the prefix"));
}

TEST(WireHostile, FramesOverTheKindLimitAreRefusedBeforeParsing) {
  Frame big = sample_named("heartbeat").frame;
  big.resize(limits::max_header_bytes + 8);
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, big), HasSubstr("exceeds the kind's limit of 2048"));
  // And the encoder will not produce one: a request-failed message just over the header limit.
  capnp::MallocMessageBuilder message;
  auto m = message.initRoot<TokenBatch>();
  m.setRequestId(1);
  m.initTokens(limits::max_tokens_per_batch);
  auto usage = m.initUsage();
  usage.setPromptTokens(1);
  usage.setCompletionTokens(limits::max_tokens_per_batch);
  EXPECT_LE(encode<TokenBatch>(message).size(), limits::max_header_bytes);
}

TEST(WireHostile, RandomBitFlipsNeverCrash) {
  std::mt19937 rng(1234);
  std::size_t rejected = 0, accepted = 0;
  for (const Sample& s : wire_samples()) {
    for (int trial = 0; trial < 1500; ++trial) {
      Frame mutated = s.frame;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        mutated[rng() % mutated.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
      }
      try {
        // A flip may leave a valid message (e.g. inside a token id); it must then read cleanly.
        const std::string text = decode_to_text(s.kind, mutated);
        EXPECT_FALSE(text.empty());
        ++accepted;
      } catch (const WireError& e) {
        ASSERT_EQ(e.kind(), s.kind) << e.what();
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 1000u);
  EXPECT_GT(accepted, 1000u);
}

TEST(WireHostile, ASegmentTableThatOverstatesItsSizeIsRejected) {
  // A large valid frame decodes; the same frame whose segment table claims one word more than
  // the bytes hold is malformed (and does not read past the copy).
  capnp::MallocMessageBuilder message;
  fill_job(message.initRoot<PrefillJob>(), 32768);
  Frame frame = encode<PrefillJob>(message);
  EXPECT_NO_THROW(check_frame(MessageKind::prefill_job, frame));
  // Segment table: word 0 = (segment count - 1, size of segment 0 in words). Claim one more word.
  std::uint32_t words;
  std::memcpy(&words, frame.data() + frame_prefix_bytes + 4, 4);
  words += 1;
  std::memcpy(frame.data() + frame_prefix_bytes + 4, &words, 4);
  EXPECT_THAT(expect_rejected(MessageKind::prefill_job, frame), HasSubstr("malformed Cap'n Proto message"));
}

// A Heartbeat frame written word by word: root struct (2 data words, `pointers` pointer slots the
// schema does not know), then `tail` extra words; `pointer(i)` gives slot i's value.
template <class PointerOf>
Frame handmade_heartbeat(std::uint32_t pointers, std::uint32_t tail, PointerOf pointer) {
  const std::uint32_t words = 1 + 2 + pointers + tail;
  std::vector<std::uint64_t> segment(words, 0);
  segment[0] = (std::uint64_t{2} << 32) | (std::uint64_t{pointers} << 48);  // root: struct at offset 0
  segment[1] = 5;  // monotonicMs
  segment[2] = 1;  // sequence
  for (std::uint32_t i = 0; i < pointers; ++i) segment[3 + i] = pointer(i, 3 + i);
  Frame frame(frame_prefix_bytes + 8 + 8 * std::size_t{words});
  const Frame prefix = sample_named("heartbeat").frame;
  std::copy(prefix.begin(), prefix.begin() + frame_prefix_bytes, frame.begin());
  const std::uint32_t table[2] = {0, words};  // one segment of `words` words
  std::memcpy(frame.data() + frame_prefix_bytes, table, 8);
  std::memcpy(frame.data() + frame_prefix_bytes + 8, segment.data(), 8 * std::size_t{words});
  return frame;
}

TEST(WireHostile, AliasedPointersInUnknownFieldsCannotAmplifyWork) {
  // 150 unknown pointer slots all naming one 60-word list: 9000 words to traverse in a 1.7 KiB
  // frame. The decoder must stop at its traversal limit, not hand out a message whose copy or
  // walk costs 40x its size.
  constexpr std::uint32_t slots = 150, list_words = 60;
  const auto to_list = [&](std::uint32_t, std::uint32_t at) {
    const std::uint64_t offset = (3 + slots) - (at + 1);  // list starts after the pointer section
    return 1 | (offset << 2) | (std::uint64_t{5} << 32) | (std::uint64_t{list_words} << 35);
  };
  const Frame frame = handmade_heartbeat(slots, list_words, to_list);
  ASSERT_LE(frame.size(), limits::max_header_bytes);
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, frame), HasSubstr("traversal limit"));
  // The same shape with one slot is an ordinary message with an unknown field: accepted.
  const Frame one = handmade_heartbeat(1, list_words, [&](std::uint32_t, std::uint32_t) {
    return 1 | (std::uint64_t{0} << 2) | (std::uint64_t{5} << 32) | (std::uint64_t{list_words} << 35);
  });
  EXPECT_EQ(decode<Heartbeat>(one)->getSequence(), 1u);
}

TEST(WireHostile, CyclicPointersAreRejected) {
  // One unknown pointer slot pointing back at its own struct.
  const Frame frame = handmade_heartbeat(1, 0, [](std::uint32_t, std::uint32_t at) {
    const auto offset = static_cast<std::uint64_t>(1 - static_cast<std::int64_t>(at) - 1) & 0x3fffffff;
    return (offset << 2) | (std::uint64_t{2} << 32) | (std::uint64_t{1} << 48);
  });
  EXPECT_THAT(expect_rejected(MessageKind::heartbeat, frame), HasSubstr("nested"));
}

// ---- The AM envelope.

TEST(WireEnvelope, EachKindRidesWhereItsCarriageSays) {
  for (const Sample& s : wire_samples()) {
    const AmParts parts = am_parts(s.kind, s.frame);
    const auto am_id = static_cast<std::uint16_t>(s.kind);
    const auto frame = frame_of_am(am_id, parts.header, parts.payload);
    EXPECT_EQ(frame.data(), s.frame.data()) << s.name;
    EXPECT_EQ(frame.size(), s.frame.size()) << s.name;
    if (kind_info(s.kind).carriage == Carriage::header) {
      EXPECT_TRUE(parts.payload.empty());
      EXPECT_LE(s.frame.size(), limits::max_header_bytes);
      EXPECT_THROW(frame_of_am(am_id, parts.header, parts.header), WireError);
    } else {
      EXPECT_TRUE(parts.header.empty());
      EXPECT_THROW(frame_of_am(am_id, parts.payload, parts.payload), WireError);
    }
  }
  EXPECT_THROW(frame_of_am(0, {}, {}), WireError);
  EXPECT_THROW(frame_of_am(static_cast<std::uint16_t>(message_kind_count + 1), {}, {}), WireError);
}

// ---- The fuzz corpus: first byte selects the kind ((byte % kinds) + 1), the rest is the frame.

TEST(WireCorpus, CheckedInCorpusStillDecodes) {
  const std::filesystem::path dir = std::filesystem::path(SY_SOURCE_DIR) / "tests/fuzz/corpus/wire";
  if (const char* out = std::getenv("SY_WRITE_WIRE_CORPUS")) {
    std::filesystem::create_directories(out);
    for (const Sample& s : wire_samples()) {
      std::ofstream file(std::filesystem::path(out) / s.name, std::ios::binary);
      const char selector = static_cast<char>(static_cast<std::uint16_t>(s.kind) - 1);
      file.write(&selector, 1);
      file.write(reinterpret_cast<const char*>(s.frame.data()), static_cast<std::streamsize>(s.frame.size()));
    }
  }
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    ASSERT_GE(bytes.size(), 2u) << entry.path();
    const auto kind = static_cast<MessageKind>(static_cast<unsigned char>(bytes[0]) % message_kind_count + 1);
    const auto frame = std::as_bytes(std::span(bytes).subspan(1));
    EXPECT_NO_THROW(check_frame(kind, frame)) << entry.path();
    names.insert(entry.path().filename().string());
  }
  for (const Sample& s : wire_samples()) EXPECT_TRUE(names.count(s.name)) << "corpus lacks " << s.name;
}

}  // namespace
}  // namespace sy::schemas
