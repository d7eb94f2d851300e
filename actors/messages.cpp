#include "actors/messages.hpp"

namespace sy::actors {

std::string_view peer_state_name(PeerState state) {
  switch (state) {
    case PeerState::waiting: return "waiting";
    case PeerState::connected: return "connected";
    case PeerState::hello: return "hello";
    case PeerState::ready: return "ready";
    case PeerState::left: return "left";
    case PeerState::lost: return "lost";
  }
  return "unknown";
}

}  // namespace sy::actors
