// The migration planner: from the placement being served and a new one (e.g. from EPLB), which
// expert weights have to be loaded into which slots, how many bytes that is, and how balanced the
// expert hosts will be before and after. Used by the rebalancing controller (dry-run and rounds)
// and the simulator. Pure functions, no shared state: safe to call from any thread. No CAF.
//
// A placement is phy2log [layers][slots] (EplbPlacement::phy2log). Host h holds the consecutive
// slots [h * slots_per_host, (h + 1) * slots_per_host) of every layer; which of its own slots
// holds an expert does not matter to a host (serving and balance are per host), so permutations
// within a host are free. Pass the slots of one GPU as slots_per_host to plan at GPU granularity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace sy::balance {

// [layers][slots]: the logical expert each physical slot holds.
using Phy2Log = std::vector<std::vector<int>>;
// [layers][experts]: predicted load per logical expert (e.g. tokens per window), >= 0. An
// expert's load is split equally over its replicas.
using ExpertLoad = std::vector<std::vector<double>>;

struct MigrationOptions {
  int slots_per_host = 0;              // >= 1; divides the slots per layer
  std::uint64_t bytes_per_expert = 0;  // bytes of one expert's weights (all three projections)
};

// One expert's weights loaded into one slot. The receiving host stages them from source_slot,
// a slot that holds the expert in the current placement (and keeps holding it until the round's
// release), so every move of a round can be staged at once.
struct ExpertMove {
  int layer = 0;
  int slot = 0;            // the slot loaded
  int host = 0;            // slot / slots_per_host
  int evicted_expert = 0;  // what the slot held before
  int expert = 0;          // what it holds after
  int source_slot = 0;     // on the receiving host when it already holds the expert (local copy),
  int source_host = 0;     // else on the host that has sent the fewest bytes so far this round
};

// mean / max host load per layer: 1 is perfect balance; a layer without load counts as 1.
struct Balancedness {
  std::vector<double> per_layer;  // [layers]
  double mean = 1.0;              // over layers
};

struct MigrationPlan {
  std::vector<ExpertMove> moves;
  std::uint64_t bytes = 0;  // moves.size() * bytes_per_expert
  Phy2Log result;           // the placement once every move is applied
  Balancedness before;      // of the current placement
  Balancedness after;       // of result
};

// Load per host of one layer: the sum over its slots of load[expert] / replicas of that expert.
// REQUIRES: a valid layer (see plan_migration).
std::vector<double> host_loads(std::span<const int> phy2log, std::span<const double> load, int slots_per_host);

// Balancedness of a placement under a load. Throws std::invalid_argument as plan_migration does.
Balancedness predict_balancedness(const Phy2Log& phy2log, const ExpertLoad& load, int slots_per_host);

// The fewest moves that turn current into target up to permutations within hosts: per host and
// layer, a slot keeps its expert while the target still wants that many copies of it on the
// host; only the copies the host lacks are loaded, each into a slot whose expert the host no
// longer needs (lowest slot first). result equals target up to such permutations, so
// moves.size() is the least possible. Moves are ordered by layer, then slot.
// Throws std::invalid_argument naming the problem when the layer counts or slot counts differ,
// slots_per_host does not divide the slots, an expert id is outside [0, experts of load), a load
// is negative or not finite, or some expert has no replica in current or target.
MigrationPlan plan_migration(const Phy2Log& current, const Phy2Log& target, const ExpertLoad& load,
                             const MigrationOptions& options);

// The migration-aware mode: at most max_moves of plan_migration's moves, the ones with the most
// gain per byte, so that a round is cheap and the placement converges on target over rounds.
// Greedy over units: a unit is one move, or, when that move evicts the last replica of an
// expert, the move plus the pending moves that load that expert elsewhere (lowest slot first,
// repeated while the added moves evict a last replica in turn; a swap of two single-replica
// experts is a unit of two). Every unit leaves each expert at least one replica, so result is a
// valid placement after every step. A unit's gain is the increase of its layer's balancedness,
// and among units that leave the layer's max host load unchanged, the decrease of the sum of
// squared host loads over the total squared (the loads below the max getting more even). The
// greedy repeatedly takes the unit with the most gain per byte (gain / (moves x
// bytes_per_expert)) that fits in what is left of max_moves, while that gain is positive; ties
// go to the lowest layer, then slot. Gains are recomputed after each unit, since a new replica
// changes the per-replica load of its expert everywhere. Moves are listed in the order taken
// (most gain first). Throws as plan_migration. Cost grows with moves taken x pending moves
// per layer: a full reshuffle of 58 layers x 288 slots on 32 hosts capped at 1670 moves takes
// about 0.2 s on the 2-core dev machine (plan_migration: a few ms).
MigrationPlan plan_capped_migration(const Phy2Log& current, const Phy2Log& target, const ExpertLoad& load,
                                    const MigrationOptions& options, std::size_t max_moves);

// A target for the migration-aware mode that stays close to `current`: every expert gets the
// replica count of `counts` ([layers][experts], e.g. EPLB's logcnt for the same load, each row
// summing to the slots), changing only what the counts require, then the hosts are evened by
// swaps. Per layer: surplus replicas leave the most loaded hosts first; the missing ones, heaviest
// per-replica load first, go to the least loaded host with a freed slot (one not already holding
// the expert when there is one); then, while some swap of two slots between the most loaded host
// and another lowers the larger of their loads, the best such swap is made (at most `max_swaps`
// per layer). Loads count an expert's load split over its `counts` replicas. Ignores groups and
// nodes: use it where the placement has no group-to-node constraint (EPLB's global policy).
// Throws std::invalid_argument as plan_migration, or when a counts row does not sum to the slots
// or gives an expert no replica.
Phy2Log migration_aware_target(const Phy2Log& current, const ExpertLoad& load,
                               const std::vector<std::vector<int>>& counts, int slots_per_host, int max_swaps);

}  // namespace sy::balance
