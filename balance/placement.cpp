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

}  // namespace sy::balance
