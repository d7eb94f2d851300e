#include "actors/dispatch/placement_wire.hpp"

#include <cstdint>
#include <string>

namespace sy::actors::dispatch {

void set_placement(schemas::PlacementUpdate::Builder out, const balance::ExpertPlacement& p,
                   schemas::PlacementPhase phase) {
  out.setEpoch(p.epoch);
  out.setPhase(phase);
  out.setExperts(static_cast<std::uint32_t>(p.experts));
  out.setSlots(static_cast<std::uint32_t>(p.slots));
  auto hosts = out.initHosts(static_cast<unsigned>(p.hosts.size()));
  for (unsigned i = 0; i < p.hosts.size(); ++i) hosts.set(i, p.hosts[i]);
  auto host_of_slot = out.initHostOfSlot(static_cast<unsigned>(p.host_of_slot.size()));
  for (unsigned i = 0; i < p.host_of_slot.size(); ++i) host_of_slot.set(i, static_cast<std::uint16_t>(p.host_of_slot[i]));
  out.setLayers(static_cast<std::uint16_t>(p.phy2log.size()));
  auto table = out.initPhy2log(static_cast<unsigned>(p.phy2log.size() * static_cast<std::size_t>(p.slots)));
  for (std::size_t l = 0; l < p.phy2log.size(); ++l) {
    for (int s = 0; s < p.slots; ++s) {
      const auto i = static_cast<unsigned>(l * static_cast<std::size_t>(p.slots) + static_cast<std::size_t>(s));
      table.set(i, p.phy2log[l].empty() ? -1 : p.phy2log[l][static_cast<std::size_t>(s)]);
    }
  }
}

balance::ExpertPlacement placement_of(schemas::PlacementUpdate::Reader in) {
  balance::ExpertPlacement p;
  p.epoch = in.getEpoch();
  p.experts = static_cast<int>(in.getExperts());
  p.slots = static_cast<int>(in.getSlots());
  for (const auto host : in.getHosts()) p.hosts.emplace_back(host.cStr());
  for (const std::uint16_t h : in.getHostOfSlot()) p.host_of_slot.push_back(h);
  const auto table = in.getPhy2log();
  for (unsigned l = 0; l < in.getLayers(); ++l) {
    std::vector<int> row;
    for (int s = 0; s < p.slots; ++s) row.push_back(table[l * static_cast<unsigned>(p.slots) + static_cast<unsigned>(s)]);
    const bool moe = !row.empty() && row[0] >= 0;
    p.phy2log.push_back(moe ? std::move(row) : std::vector<int>{});
  }
  return p;
}

}  // namespace sy::actors::dispatch
