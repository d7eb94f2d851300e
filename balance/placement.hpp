// Where every replica of every routed expert lives (DESIGN.md "Placement, epochs, migration"): per
// MoE layer, physical slot -> logical expert, and slot -> expert host. Workers route each token's
// top-k to slots through it (model/moe.hpp's executor seam), expert hosts check the slots of a
// dispatch against it, and the controller replaces it with a higher epoch. initial_placement()
// is what every node computes at start-up from the cluster config, so all agree on epoch 1
// without a message. Pure data and functions; no CAF (tests/layering_test.sh).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::balance {

struct ExpertPlacement {
  std::uint64_t epoch = 1;
  int experts = 0;                 // logical routed experts per MoE layer
  int slots = 0;                   // physical slots per MoE layer: experts + redundant
  std::vector<std::string> hosts;  // expert host names; a host's index is its id
  std::vector<int> host_of_slot;   // [slots]: the same for every layer
  // [layers][slots]: logical expert of each slot; an empty row is a layer without routed experts.
  std::vector<std::vector<int>> phy2log;

  // Slots holding logical `expert` in `layer`, ascending. Empty for a layer without experts.
  std::vector<int> replicas(int layer, int expert) const;
  bool is_moe_layer(int layer) const;
};

// The start-up placement: slots [h*P, (h+1)*P) on host h (P = slots / hosts); each expert gets one
// slot, then `redundant` extra replicas go to experts 0, 1, ... (wrapping), every replica on the
// host with the most free slots that does not hold that expert yet (lowest index on ties), so
// replicas of one expert sit on different hosts whenever there are two or more. The same for
// every MoE layer. Throws std::invalid_argument naming the problem: no hosts, experts < 1,
// redundant < 0, or experts + redundant not a multiple of the host count.
ExpertPlacement initial_placement(int experts, int redundant, const std::vector<std::string>& hosts,
                                  const std::vector<bool>& moe_layers);

}  // namespace sy::balance
