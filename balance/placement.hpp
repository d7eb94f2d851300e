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

// One operator pin: `slot` of a layer holds `expert` whatever the policy placed there.
struct SlotPin {
  int slot = 0;
  int expert = 0;
};

// Makes one layer's phy2log honour `pins` while keeping every expert's replica count where it
// can: for each pin in order, the slot gets its expert by swapping with a slot that holds it and
// is not pinned (one on the same host first: free for serving, see balance/migration.hpp); when
// every copy of the expert sits on pinned slots, the slot is overwritten, which needs the expert it
// held to keep another replica. Throws std::invalid_argument naming the pin when a slot or expert
// is out of range, two pins name one slot, or a pin cannot be met without leaving an expert with
// no replica. slots_per_host >= 1 divides the row.
void apply_pins(std::vector<int>& phy2log, const std::vector<SlotPin>& pins, int slots_per_host);

// Whether `candidate` may replace `served` (an imported placement): the same hosts in the same
// order, slots, experts, host of every slot and MoE layers, every slot's expert in [0, experts),
// and every expert held at least once in every MoE layer. Returns the first problem, or "" when
// there is none.
std::string incompatibility(const ExpertPlacement& served, const ExpertPlacement& candidate);

}  // namespace sy::balance
