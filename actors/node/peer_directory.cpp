#include "actors/node/peer_directory.hpp"

#include <algorithm>

namespace sy::actors::node {

void PeerDirectory::up(const std::string& name, transport::PeerId peer, std::vector<config::Role> roles) {
  {
    std::lock_guard lock(mutex_);
    up_[name] = Entry{peer, std::move(roles)};
  }
  notify(PeerChange{name, peer, true, false, ""});
}

bool PeerDirectory::down(transport::PeerId peer, bool graceful, const std::string& reason) {
  std::string name;
  {
    std::lock_guard lock(mutex_);
    const auto it = std::find_if(up_.begin(), up_.end(), [&](const auto& e) { return e.second.peer == peer; });
    if (it == up_.end()) return false;
    name = it->first;
    up_.erase(it);
  }
  notify(PeerChange{name, peer, false, graceful, reason});
  return true;
}

std::optional<transport::PeerId> PeerDirectory::find(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto it = up_.find(name);
  if (it == up_.end()) return std::nullopt;
  return it->second.peer;
}

std::string PeerDirectory::name_of(transport::PeerId peer) const {
  std::lock_guard lock(mutex_);
  for (const auto& [name, e] : up_) {
    if (e.peer == peer) return name;
  }
  return "";
}

std::vector<std::string> PeerDirectory::with_role(config::Role role) const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, e] : up_) {
    if (std::find(e.roles.begin(), e.roles.end(), role) != e.roles.end()) out.push_back(name);
  }
  return out;
}

std::uint64_t PeerDirectory::subscribe(Subscriber subscriber) {
  std::lock_guard lock(notify_mutex_);
  const std::uint64_t handle = next_handle_++;
  subscribers_.emplace(handle, std::move(subscriber));
  return handle;
}

void PeerDirectory::unsubscribe(std::uint64_t handle) {
  std::lock_guard lock(notify_mutex_);
  subscribers_.erase(handle);
}

void PeerDirectory::notify(const PeerChange& change) {
  std::lock_guard lock(notify_mutex_);
  for (const auto& [handle, s] : subscribers_) s(change);
}

}  // namespace sy::actors::node
