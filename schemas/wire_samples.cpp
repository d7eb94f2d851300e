// Values mirror a DeepSeek-V3 deployment (61 + 1 layers, BF16 latent cache of 512 + 64, 64-token
// pages) except where the size would bloat the corpus (the MTP hidden state is 256 wide here).
#include "schemas/wire_samples.hpp"

#include <capnp/message.h>

#include <cstdint>

namespace sy::schemas::testing {

namespace {

void set_node(NodeRef::Builder ref, const char* name, const char* address) {
  ref.setName(name);
  ref.setAddress(address);
}

void set_sampling(SamplingParams::Builder s) {
  s.setTemperature(0.7f);
  s.setTopP(0.95f);
  s.setTopK(50);
  s.setSeed(0x5eed5eed12345678ull);
  s.setMaxTokens(256);
  s.setStopAtEos(true);
}

template <class Schema, class Fill>
Sample make(std::string name, Fill fill) {
  capnp::MallocMessageBuilder message;
  fill(message.initRoot<Schema>());
  return {std::move(name), kind_of<Schema>, encode<Schema>(message)};
}

constexpr std::uint64_t kRequest = 0x00c0ffee00000001ull;
constexpr std::uint64_t kReservation = 0x0000d0d000000007ull;
constexpr std::uint32_t kPrompt = 37;

}  // namespace

std::vector<Sample> wire_samples() {
  std::vector<Sample> out;
  out.push_back(make<NodeHello>("node_hello", [](NodeHello::Builder m) {
    set_node(m.initNode(), "decode-0", "10.0.0.12:13337");
    auto roles = m.initRoles(2);
    roles.set(0, Role::DECODE);
    roles.set(1, Role::EXPERT_HOST);
    m.setPid(41523);
    m.setProtocolVersion(wire_version);
    m.setIncarnation(0x9a3c5e7f10243b6dull);
  }));
  out.push_back(make<NodeReady>("node_ready", [](NodeReady::Builder m) {
    m.setIncarnation(0x9a3c5e7f10243b6dull);
    auto roles = m.initRoles(1);
    roles.set(0, Role::DECODE);
  }));
  out.push_back(make<Heartbeat>("heartbeat", [](Heartbeat::Builder m) {
    m.setMonotonicMs(183'402'117);
    m.setSequence(912);
  }));
  out.push_back(make<WorkerLoad>("worker_load", [](WorkerLoad::Builder m) {
    m.setMonotonicMs(183'402'120);
    m.setFreeKvPages(3120);
    m.setTotalKvPages(4096);
    m.setRunningRequests(61);
    m.setWaitingRequests(4);
    m.setQueueDepth(9);
  }));
  out.push_back(make<Drain>("drain", [](Drain::Builder m) {
    m.setSequence(3);
    m.setGraceMs(30'000);
    m.setReason("rolling restart of decode-0");
  }));
  out.push_back(make<Shutdown>("shutdown", [](Shutdown::Builder m) {
    m.setSequence(4);
    m.setGraceMs(5'000);
    m.setReason("operator: yardctl shutdown decode-0");
  }));
  out.push_back(make<Ack>("ack", [](Ack::Builder m) {
    m.setKind(static_cast<std::uint16_t>(MessageKind::drain));
    m.setSequence(3);
    m.setOk(true);
  }));
  out.push_back(make<PrefillJob>("prefill_job", [](PrefillJob::Builder m) {
    m.setRequestId(kRequest);
    auto prompt = m.initPromptTokens(kPrompt);
    prompt.set(0, 0);  // BOS
    for (unsigned i = 1; i < kPrompt; ++i) prompt.set(i, static_cast<std::int32_t>((i * 7919u) % 129280u));
    set_sampling(m.initSampling());
    set_node(m.initDecode(), "decode-0", "10.0.0.12:13337");
    set_node(m.initRouter(), "router-0", "10.0.0.2:13337");
    m.setTimeoutMs(30'000);
  }));
  out.push_back(make<TokenBatch>("token_batch_first", [](TokenBatch::Builder m) {
    m.setRequestId(kRequest);
    m.setFirstIndex(0);
    m.initTokens(1).set(0, 4853);
    m.setFinishReason(FinishReason::NONE);
    auto usage = m.initUsage();
    usage.setPromptTokens(kPrompt);
    usage.setCompletionTokens(1);
  }));
  out.push_back(make<TokenBatch>("token_batch_last", [](TokenBatch::Builder m) {
    m.setRequestId(kRequest);
    m.setFirstIndex(40);
    auto tokens = m.initTokens(2);
    tokens.set(0, 13);
    tokens.set(1, 1);  // EOS, accepted with an MTP draft
    m.setFinishReason(FinishReason::STOP);
    auto usage = m.initUsage();
    usage.setPromptTokens(kPrompt);
    usage.setCompletionTokens(42);
  }));
  out.push_back(make<RequestFailed>("request_failed", [](RequestFailed::Builder m) {
    m.setRequestId(kRequest);
    m.setCode(FailureCode::KV_EXHAUSTED);
    m.setMessage("decode node decode-0: 3 free KV pages, 5 needed");
    m.setRetryable(true);
    m.setNode("decode-0");
  }));
  out.push_back(make<CancelRequest>("cancel_request", [](CancelRequest::Builder m) {
    m.setRequestId(kRequest);
    m.setReason(CancelReason::CLIENT_GONE);
  }));
  out.push_back(make<KvReserveRequest>("kv_reserve_request", [](KvReserveRequest::Builder m) {
    m.setRequestId(kRequest);
    m.setPromptTokens(kPrompt);
    m.setMaxTokens(256);
    set_node(m.initRouter(), "router-0", "10.0.0.2:13337");
  }));
  out.push_back(make<KvReservation>("kv_reservation_granted", [](KvReservation::Builder m) {
    m.setRequestId(kRequest);
    auto g = m.initGranted();
    g.setReservationId(kReservation);
    const std::int32_t ids[] = {17, 3, 44, 9, 120};  // ceil((37 + 256) / 64) = 5 pages
    auto pages = g.initPageIds(5);
    for (unsigned i = 0; i < 5; ++i) pages.set(i, ids[i]);
    g.setPoolPages(4096);
    g.setPageTokens(64);
    g.setLatentDim(512);
    g.setRopeDim(64);
    g.setDtype(KvDtype::BF16);
    g.setTokenBytes((512 + 64) * 2);
    g.setMainLayers(61);
    g.setMtpLayers(1);
    const std::uint64_t pool_bytes = std::uint64_t{4096} * 64 * 1152;
    auto pools = g.initPools(62);
    for (unsigned l = 0; l < 62; ++l) {
      pools[l].setRemoteBase(0x7f3a00000000ull + l * pool_bytes);
      pools[l].setKeyIndex(0);
    }
    auto key = g.initRemoteKeys(1).init(0, 96);
    for (unsigned i = 0; i < key.size(); ++i) key[i] = static_cast<kj::byte>((i * 37u + 11u) & 0xff);
    g.setExpiresInMs(10'000);
  }));
  out.push_back(make<KvReservation>("kv_reservation_refused", [](KvReservation::Builder m) {
    m.setRequestId(kRequest);
    auto r = m.initRefused();
    r.setReason(KvRefusalReason::KV_EXHAUSTED);
    r.setMessage("3 free pages of 4096, 5 needed");
    r.setFreePages(3);
  }));
  out.push_back(make<KvHandOff>("kv_hand_off", [](KvHandOff::Builder m) {
    m.setRequestId(kRequest);
    m.setReservationId(kReservation);
    m.setPromptTokens(kPrompt);
    m.setBytesWritten(std::uint64_t{kPrompt} * 1152 * 62);
    m.setChecksum(0x8d2f6a1e4b7c9035ull);
    m.setFirstToken(4853);
    set_sampling(m.initSampling());
    set_node(m.initRouter(), "router-0", "10.0.0.2:13337");
    m.setTimeoutMs(29'100);
    m.setMtpLength(kPrompt - 1);
    auto hidden = m.initLastHidden(256);
    for (unsigned i = 0; i < hidden.size(); ++i) hidden.set(i, static_cast<float>(static_cast<int>(i % 17) - 8) * 0.125f);
  }));
  out.push_back(make<KvRelease>("kv_release", [](KvRelease::Builder m) {
    m.setRequestId(kRequest);
    m.setReservationId(kReservation);
    m.setReason(KvReleaseReason::FINISHED);
  }));
  out.push_back(make<ExpertDispatch>("expert_dispatch", [](ExpertDispatch::Builder m) {
    m.setBatchId(0x5eed000000000003ull);
    m.setLayer(3);
    m.setEpoch(1);
    m.setHidden(256);
    auto slots = m.initSlots(2);
    slots.set(0, 5);
    slots.set(1, 17);
    auto rows = m.initSlotRows(2);
    rows.set(0, 2);
    rows.set(1, 1);
    m.setDtype(ActivationDtype::FP8E4M3);
    auto act = m.initActivations(3 * 256);
    for (unsigned i = 0; i < act.size(); ++i) act[i] = static_cast<kj::byte>(i * 7);
    auto scales = m.initScales(3 * 2 * 4);
    for (unsigned i = 0; i < scales.size(); ++i) scales[i] = static_cast<kj::byte>(i % 4 == 3 ? 0x3c : 0);
  }));
  out.push_back(make<ExpertCombine>("expert_combine", [](ExpertCombine::Builder m) {
    m.setBatchId(0x5eed000000000003ull);
    m.setLayer(3);
    m.setEpoch(1);
    m.setRows(3);
    m.setDtype(OutputDtype::BF16);
    auto out_bytes = m.initOutputs(3 * 256 * 2);
    for (unsigned i = 0; i < out_bytes.size(); ++i) out_bytes[i] = static_cast<kj::byte>(i * 13);
  }));
  out.push_back(make<ExpertLoadReport>("expert_load_report", [](ExpertLoadReport::Builder m) {
    m.setHost("expert-1");
    m.setPeriodStartMs(183'401'000);
    m.setPeriodEndMs(183'402'000);
    m.setLayers(2);
    m.setExperts(4);
    auto tokens = m.initTokens(8);
    for (unsigned i = 0; i < tokens.size(); ++i) tokens.set(i, 10 * i);
  }));
  out.push_back(make<PlacementUpdate>("placement_update", [](PlacementUpdate::Builder m) {
    m.setEpoch(2);
    m.setPhase(PlacementPhase::COMMIT);
    m.setExperts(4);
    m.setSlots(6);
    auto hosts = m.initHosts(2);
    hosts.set(0, "expert-0");
    hosts.set(1, "expert-1");
    auto hos = m.initHostOfSlot(6);
    for (unsigned i = 0; i < 6; ++i) hos.set(i, static_cast<std::uint16_t>(i / 3));
    m.setLayers(2);
    auto p = m.initPhy2log(12);
    for (unsigned i = 0; i < 6; ++i) p.set(i, -1);
    const std::int32_t row[] = {0, 1, 3, 2, 0, 3};
    for (unsigned i = 0; i < 6; ++i) p.set(6 + i, row[i]);
  }));
  out.push_back(make<PlacementAck>("placement_ack", [](PlacementAck::Builder m) {
    m.setEpoch(2);
    m.setPhase(PlacementPhase::COMMIT);
    m.setOk(true);
  }));
  return out;
}

}  // namespace sy::schemas::testing
