// Small pieces every serving role shares: the wire form of sampling parameters and node
// references (schemas/serving.capnp, common.capnp) and the logit dump the determinism tests read.
// CAF-free; no state but the dump's folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "gpu/sampling.hpp"
#include "actors/node/transport_bridge.hpp"
#include "schemas/common.capnp.h"
#include "schemas/kv.capnp.h"
#include "schemas/serving.capnp.h"

namespace sy::actors::node {

void set_sampling(schemas::SamplingParams::Builder out, const gpu::SamplerConfig& sampler, std::int64_t max_tokens,
                  bool stop_at_eos);
gpu::SamplerConfig sampler_of(schemas::SamplingParams::Reader in);
void set_node_ref(schemas::NodeRef::Builder out, const std::string& name, const std::string& address);
// Sends KvRelease (kv.capnp) to `to`; nothing when `to` is invalid_peer. `why` is cut to the
// message limit. What prefill and decode both send to give a reservation up.
void send_kv_release(TransportBridge& bridge, transport::PeerId to, std::uint64_t request, std::uint64_t reservation,
                     schemas::KvReleaseReason reason, const std::string& why);
// A Cap'n Proto list of ids as a vector (capnp's iterators are not standard iterators).
std::vector<std::int32_t> to_vector(capnp::List<std::int32_t>::Reader list);

// Writes the logits of every generated token to DIR/request-ID.f32 (raw little-endian float32,
// one vocab-size row per completion index, the layout of `switchyard generate --dump-logits`).
// Prefill writes row 0 and decode the rest, each at its own offset, so the rows of one request
// from two processes land in one file. The system tests compare it with the single-process dump.
// Disabled (write() does nothing) when constructed with an empty folder.
class LogitDump {
 public:
  LogitDump(std::filesystem::path dir, std::int64_t vocab_size);
  bool enabled() const { return !dir_.empty(); }
  // rows: [n, vocab_size] for completion indices first_index .. first_index + n - 1. Errors are
  // logged, never thrown (a dump must not fail a request).
  void write(std::uint64_t request_id, std::int64_t first_index, std::span<const float> rows) const;

 private:
  std::filesystem::path dir_;
  std::int64_t vocab_size_ = 0;
};

}  // namespace sy::actors::node
