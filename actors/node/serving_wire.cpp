#include "actors/node/serving_wire.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <capnp/message.h>
#include <fmt/format.h>

namespace sy::actors::node {

void set_sampling(schemas::SamplingParams::Builder out, const gpu::SamplerConfig& sampler, std::int64_t max_tokens,
                  bool stop_at_eos) {
  out.setTemperature(sampler.temperature);
  out.setTopP(sampler.top_p);
  out.setTopK(static_cast<std::uint32_t>(sampler.top_k));
  out.setSeed(sampler.seed);
  out.setMaxTokens(static_cast<std::uint32_t>(max_tokens));
  out.setStopAtEos(stop_at_eos);
}

gpu::SamplerConfig sampler_of(schemas::SamplingParams::Reader in) {
  gpu::SamplerConfig s;
  s.temperature = in.getTemperature();
  s.top_p = in.getTopP();
  s.top_k = in.getTopK();
  s.seed = in.getSeed();
  return s;
}

void set_node_ref(schemas::NodeRef::Builder out, const std::string& name, const std::string& address) {
  out.setName(name);
  out.setAddress(address);
}

void send_kv_release(TransportBridge& bridge, transport::PeerId to, std::uint64_t request, std::uint64_t reservation,
                     schemas::KvReleaseReason reason, const std::string& why) {
  if (to == transport::invalid_peer) return;
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<schemas::KvRelease>();
  r.setRequestId(request);
  r.setReservationId(reservation);
  r.setReason(reason);
  r.setMessage(why.substr(0, schemas::limits::max_message_bytes));
  bridge.send<schemas::KvRelease>(to, message);
}

std::vector<std::int32_t> to_vector(capnp::List<std::int32_t>::Reader list) {
  std::vector<std::int32_t> out;
  out.reserve(list.size());
  for (const std::int32_t v : list) out.push_back(v);
  return out;
}

LogitDump::LogitDump(std::filesystem::path dir, std::int64_t vocab_size) : dir_(std::move(dir)), vocab_size_(vocab_size) {
  if (!dir_.empty()) std::filesystem::create_directories(dir_);
}

void LogitDump::write(std::uint64_t request_id, std::int64_t first_index, std::span<const float> rows) const {
  if (dir_.empty() || rows.empty()) return;
  const std::filesystem::path path = dir_ / fmt::format("request-{}.f32", request_id);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "switchyard: cannot open logit dump %s: %s\n", path.c_str(), std::strerror(errno));
    return;
  }
  const auto bytes = static_cast<std::size_t>(rows.size_bytes());
  const auto offset = static_cast<off_t>(first_index * vocab_size_ * static_cast<std::int64_t>(sizeof(float)));
  if (::pwrite(fd, rows.data(), bytes, offset) != static_cast<ssize_t>(bytes)) {
    std::fprintf(stderr, "switchyard: cannot write logit dump %s: %s\n", path.c_str(), std::strerror(errno));
  }
  ::close(fd);
}

}  // namespace sy::actors::node
