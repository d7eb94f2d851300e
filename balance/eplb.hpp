// EPLB, DeepSeek's expert-parallel load balancer (spec/deepseek-v3.md §3), as plain C++: from a
// per-layer load per logical expert, choose how many replicas each expert gets and which physical
// slot (and so which GPU and node) holds each replica. Used by the rebalancing controller, the
// migration planner's callers, the simulator and `switchyard eplb`. Pure functions, no shared
// state: safe to call from any thread. No CAF (tests/layering_test.sh).
//
// Results equal the reference eplb.py (deepseek-ai/EPLB d52c72d) index for index, ties included:
// loads are cast to float32 as the reference does and every sum, quotient and comparison is done
// in float32 in the reference's order. The one exception is a group's load (step 1), which the
// reference sums with torch's vectorized reduction; here it is summed exactly and rounded once to
// float32. The two agree whenever the sums are exact in float32, e.g. integer token counts whose
// group sums stay below 2^24.
#pragma once

#include <span>
#include <vector>

namespace sy::balance {

// The cluster shape EPLB places onto. Slot p lives on GPU p / (num_replicas / num_gpus), and GPU
// g on node g / (num_gpus / num_nodes).
struct EplbShape {
  int num_replicas = 0;  // physical expert slots per layer, over all GPUs; a multiple of num_gpus
  int num_groups = 0;    // expert groups of group-limited routing (n_group); divides the experts
  int num_nodes = 0;     // server nodes (NVLink domains); divides num_gpus
  int num_gpus = 0;      // GPUs holding expert slots
};

enum class EplbPolicy {
  hierarchical,  // groups packed onto nodes, replicas chosen per node, then packed onto GPUs
  global,        // the reference's global policy: hierarchical with one group and one node
};

// The reference's choice: hierarchical when the groups split evenly over the nodes.
EplbPolicy eplb_policy_for(int num_groups, int num_nodes);
const char* to_string(EplbPolicy policy);

// The output of rebalance_experts, shaped as the reference's three tensors.
struct EplbPlacement {
  // [layers][num_replicas]: the logical expert each physical slot holds.
  std::vector<std::vector<int>> phy2log;
  // [layers][experts][max_replicas]: the slots holding each expert's replicas in replica-rank
  // order, -1 past the expert's count. max_replicas is the largest logcnt over all layers.
  std::vector<std::vector<std::vector<int>>> log2phy;
  // [layers][experts]: replicas per logical expert; each row sums to num_replicas.
  std::vector<std::vector<int>> logcnt;
};

// Runs EPLB on weight [layers][experts] (load per logical expert, e.g. tokens routed in a
// window) with the policy eplb_policy_for picks. Throws std::invalid_argument naming the
// offending value when: there are no layers or no experts, rows differ in length, a load is
// negative or not finite in float32, a shape field is < 1, num_groups does not divide the
// experts, num_nodes does not divide num_gpus, num_gpus does not divide num_replicas, or
// num_replicas < experts. (The reference skips the group and node checks under the global
// policy; a cluster that fails them cannot be built, so they hold here under both.)
EplbPlacement rebalance_experts(const std::vector<std::vector<double>>& weight, const EplbShape& shape);

// The checks rebalance_experts starts with, for other placement policies (placement_policy.hpp):
// throws the same std::invalid_argument for the same inputs, returns when they are valid.
void check_eplb_input(const std::vector<std::vector<double>>& weight, const EplbShape& shape);

// The building blocks, one row at a time, exposed for tests and for placement policies that
// reuse them.

// Packs weight.size() items into num_packs packs of exactly weight.size() / num_packs items each:
// items in descending weight (stable: equal weights keep index order) each go to the lightest
// pack that is not full (lowest index on ties). With one item per pack, item i goes to pack i.
// REQUIRES: num_packs >= 1 and divides weight.size().
struct Packing {
  std::vector<int> pack_of_item;  // [items]
  std::vector<int> rank_in_pack;  // [items]: how many items the pack held before this one
};
Packing balanced_packing(std::span<const float> weight, int num_packs);

// Replicates weight.size() logical experts onto num_physical slots: slot i < experts holds expert
// i; every further slot holds a new replica of the expert with the largest load per replica
// (lowest index on ties). REQUIRES: num_physical >= weight.size().
struct Replication {
  std::vector<int> phy2log;  // [num_physical]
  std::vector<int> rank;     // [num_physical]: replica rank of the slot within its expert
  std::vector<int> logcnt;   // [experts]
};
Replication replicate_experts(std::span<const float> weight, int num_physical);

}  // namespace sy::balance
