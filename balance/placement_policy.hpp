// Placement policies: EPLB (eplb.hpp, the reference) and "balanced", which places the same slot
// count on the same cluster shape with a lower max GPU load. Used by the simulator
// (`switchyard simulate-balance`) and, through its name, by whoever picks a policy from config.
// Pure functions, no shared state: safe from any thread. No CAF.
//
// Why EPLB leaves load on the table: its hierarchical policy gives every node exactly
// slots/nodes slots for the replicas of its own groups, whatever the node's load, so the node
// holding a hot group stays hot; and its GPU packing may put two replicas of one expert on the
// same GPU. "balanced" fixes both:
//   1. home nodes: groups go to nodes as EPLB does (same count per node), LPT plus pairwise
//      swaps to even the node loads;
//   2. replica counts over the whole cluster: each extra slot goes to the expert with the most
//      load per replica (at most one replica per GPU);
//   3. replica-aware packing: replicas in descending load per replica, each on the lightest GPU
//      with a free slot that does not hold that expert yet; an expert's first (home) replica on
//      a GPU of its group's node, its extra replicas wherever load is lowest (the node slots
//      stay equal; what changes is which node's experts the spare slots serve);
//   4. local search: swap a replica on the busiest GPU (else the next busiest that can improve)
//      with a lighter one elsewhere while that lowers the busier of the two, keeping step 3's
//      constraints;
//   5. a layer predicted no better than EPLB's (max GPU load) is EPLB's layer, when that has
//      every replica of an expert on its own GPU: never predicted worse than EPLB.
// The group-to-node rule is relaxed to "every expert has a replica on its group's node", so a
// token can still be served entirely by the nodes of its top groups; "balanced-strict" keeps
// every replica of a group on its node, as EPLB does (steps 2-4 then run per node).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "balance/eplb.hpp"

namespace sy::balance {

enum class PlacementPolicy {
  eplb,             // rebalance_experts, the reference
  balanced,         // as above, home replica of each expert on its group's node
  balanced_strict,  // as above, every replica of a group on its node (EPLB's constraint)
};
inline constexpr PlacementPolicy kPlacementPolicies[] = {PlacementPolicy::eplb, PlacementPolicy::balanced,
                                                         PlacementPolicy::balanced_strict};
// "eplb" | "balanced" | "balanced-strict"
const char* to_string(PlacementPolicy policy);
std::optional<PlacementPolicy> placement_policy_from_name(std::string_view name);

// Places weight [layers][experts] onto shape with the policy, in EplbPlacement's shapes (slot p
// on GPU p / (num_replicas / num_gpus), GPU g on node g / (num_gpus / num_nodes); log2phy lists
// the home replica first). The group-to-node rules apply when eplb_policy_for picks the
// hierarchical policy; otherwise the cluster is one node. Throws std::invalid_argument as
// rebalance_experts does. The balanced policies put the replicas of an expert on distinct GPUs
// unless the packing finds no free slot or swap that allows it, which cannot happen with a GPU
// holding at most half as many slots as a node has experts (every DeepSeek shape); the tests
// check this on thousands of random shapes.
EplbPlacement place_experts(PlacementPolicy policy, const std::vector<std::vector<double>>& weight,
                            const EplbShape& shape);

// Per layer, max GPU load / mean GPU load of a placement under a load (1 is perfect; a layer
// without load counts as 1). An expert's load is split equally over its replicas.
std::vector<double> max_over_mean_gpu_load(const std::vector<std::vector<int>>& phy2log,
                                           const std::vector<std::vector<double>>& weight, int num_gpus);

}  // namespace sy::balance
