#include "balance/placement.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace sy::balance {

std::vector<int> ExpertPlacement::replicas(int layer, int expert) const {
  std::vector<int> out;
  if (layer < 0 || static_cast<std::size_t>(layer) >= phy2log.size()) return out;
  const std::vector<int>& row = phy2log[static_cast<std::size_t>(layer)];
  for (int s = 0; s < static_cast<int>(row.size()); ++s) {
    if (row[static_cast<std::size_t>(s)] == expert) out.push_back(s);
  }
  return out;
}

bool ExpertPlacement::is_moe_layer(int layer) const {
  return layer >= 0 && static_cast<std::size_t>(layer) < phy2log.size() && !phy2log[static_cast<std::size_t>(layer)].empty();
}

ExpertPlacement initial_placement(int experts, int redundant, const std::vector<std::string>& hosts,
                                  const std::vector<bool>& moe_layers) {
  if (hosts.empty()) throw std::invalid_argument("initial placement: no expert hosts");
  if (experts < 1) throw std::invalid_argument("initial placement: " + std::to_string(experts) + " routed experts");
  if (redundant < 0) throw std::invalid_argument("initial placement: redundant experts must be >= 0");
  const int h = static_cast<int>(hosts.size());
  const int slots = experts + redundant;
  if (slots % h != 0) {
    throw std::invalid_argument("initial placement: " + std::to_string(experts) + " experts + " +
                                std::to_string(redundant) + " redundant = " + std::to_string(slots) +
                                " slots do not split evenly over " + std::to_string(h) +
                                " expert hosts; choose the redundant count so that they do");
  }
  const int per_host = slots / h;
  std::vector<int> used(static_cast<std::size_t>(h), 0);              // slots filled per host
  std::vector<std::vector<bool>> holds(static_cast<std::size_t>(h), std::vector<bool>(static_cast<std::size_t>(experts)));
  std::vector<int> row(static_cast<std::size_t>(slots), -1);
  for (int r = 0; r < slots; ++r) {
    const int expert = r < experts ? r : (r - experts) % experts;
    int best = -1;
    for (int pass = 0; pass < 2 && best < 0; ++pass) {
      // First pass: hosts without this expert; second (one host, or no choice left): any.
      for (int i = 0; i < h; ++i) {
        const auto hi = static_cast<std::size_t>(i);
        if (used[hi] == per_host || (pass == 0 && holds[hi][static_cast<std::size_t>(expert)])) continue;
        if (best < 0 || used[hi] < used[static_cast<std::size_t>(best)]) best = i;
      }
    }
    const auto bi = static_cast<std::size_t>(best);
    row[static_cast<std::size_t>(best * per_host + used[bi])] = expert;
    ++used[bi];
    holds[bi][static_cast<std::size_t>(expert)] = true;
  }
  ExpertPlacement p;
  p.epoch = 1;
  p.experts = experts;
  p.slots = slots;
  p.hosts = hosts;
  for (int s = 0; s < slots; ++s) p.host_of_slot.push_back(s / per_host);
  for (const bool moe : moe_layers) p.phy2log.push_back(moe ? row : std::vector<int>{});
  return p;
}

void apply_pins(std::vector<int>& phy2log, const std::vector<SlotPin>& pins, int slots_per_host) {
  const int slots = static_cast<int>(phy2log.size());
  if (slots_per_host < 1 || slots % slots_per_host != 0) {
    throw std::invalid_argument("pins: " + std::to_string(slots_per_host) + " slots per host do not divide " +
                                std::to_string(slots) + " slots");
  }
  int experts = 0;
  for (const int e : phy2log) experts = std::max(experts, e + 1);
  std::vector<bool> pinned(static_cast<std::size_t>(slots), false);
  for (const SlotPin& p : pins) {
    const std::string name = "pin slot " + std::to_string(p.slot) + " -> expert " + std::to_string(p.expert);
    if (p.slot < 0 || p.slot >= slots) {
      throw std::invalid_argument(name + ": slot outside [0, " + std::to_string(slots) + ")");
    }
    if (p.expert < 0 || p.expert >= experts) {
      throw std::invalid_argument(name + ": expert outside [0, " + std::to_string(experts) + ")");
    }
    if (pinned[static_cast<std::size_t>(p.slot)]) throw std::invalid_argument(name + ": the slot is pinned twice");
    pinned[static_cast<std::size_t>(p.slot)] = true;
    int& here = phy2log[static_cast<std::size_t>(p.slot)];
    if (here == p.expert) continue;
    // A free copy of the expert to swap with: same host first, then the lowest slot.
    const int host = p.slot / slots_per_host;
    int other = -1;
    for (int s = 0; s < slots; ++s) {
      if (pinned[static_cast<std::size_t>(s)] || phy2log[static_cast<std::size_t>(s)] != p.expert) continue;
      if (other < 0 || (s / slots_per_host == host && other / slots_per_host != host)) other = s;
    }
    if (other >= 0) {
      std::swap(here, phy2log[static_cast<std::size_t>(other)]);
      continue;
    }
    if (std::count(phy2log.begin(), phy2log.end(), here) < 2) {
      throw std::invalid_argument(name + ": expert " + std::to_string(here) +
                                  " would lose its last replica (every copy of expert " + std::to_string(p.expert) +
                                  " is pinned elsewhere)");
    }
    here = p.expert;
  }
}

std::string incompatibility(const ExpertPlacement& served, const ExpertPlacement& candidate) {
  if (candidate.hosts != served.hosts) return "its expert hosts differ from the served placement's";
  if (candidate.experts != served.experts) {
    return "it has " + std::to_string(candidate.experts) + " experts per layer, the model " +
           std::to_string(served.experts);
  }
  if (candidate.slots != served.slots) {
    return "it has " + std::to_string(candidate.slots) + " slots per layer, the cluster " +
           std::to_string(served.slots);
  }
  if (candidate.host_of_slot != served.host_of_slot) return "its host of each slot differs from the cluster's";
  if (candidate.phy2log.size() != served.phy2log.size()) {
    return "it has " + std::to_string(candidate.phy2log.size()) + " layers, the model " +
           std::to_string(served.phy2log.size());
  }
  for (int l = 0; l < static_cast<int>(served.phy2log.size()); ++l) {
    const std::vector<int>& row = candidate.phy2log[static_cast<std::size_t>(l)];
    if (served.is_moe_layer(l) != !row.empty()) {
      return "layer " + std::to_string(l) + (row.empty() ? " has no slots, but it is" : " has slots, but it is not") +
             " a MoE layer";
    }
    if (row.empty()) continue;
    if (static_cast<int>(row.size()) != served.slots) {
      return "layer " + std::to_string(l) + " lists " + std::to_string(row.size()) + " slots, not " +
             std::to_string(served.slots);
    }
    std::vector<int> copies(static_cast<std::size_t>(served.experts), 0);
    for (int s = 0; s < served.slots; ++s) {
      const int e = row[static_cast<std::size_t>(s)];
      if (e < 0 || e >= served.experts) {
        return "layer " + std::to_string(l) + " slot " + std::to_string(s) + ": expert " + std::to_string(e) +
               " outside [0, " + std::to_string(served.experts) + ")";
      }
      ++copies[static_cast<std::size_t>(e)];
    }
    for (int e = 0; e < served.experts; ++e) {
      if (copies[static_cast<std::size_t>(e)] == 0) {
        return "layer " + std::to_string(l) + ": expert " + std::to_string(e) + " has no slot";
      }
    }
  }
  return "";
}

}  // namespace sy::balance
