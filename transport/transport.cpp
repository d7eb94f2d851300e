#include "transport/transport.hpp"

#include <array>

namespace sy::transport {

namespace {
constexpr std::array<std::string_view, errc_count> errc_names = {
    "ok", "peer_failed", "closed", "timed_out", "invalid_argument", "unreachable", "internal",
};
static_assert(static_cast<int>(Errc::internal) + 1 == errc_count,
              "errc_names must name every Errc");
}  // namespace

std::string_view to_string(Errc code) {
  const auto index = static_cast<std::size_t>(code);
  return index < errc_names.size() ? errc_names[index] : "unknown";
}

}  // namespace sy::transport
