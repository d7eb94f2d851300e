#include "balance/placement_policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <queue>
#include <stdexcept>
#include <utility>

#include "balance/migration.hpp"

namespace sy::balance {
namespace {

std::size_t at(int index) { return static_cast<std::size_t>(index); }

// A swap or move has to beat the current max by more than rounding.
constexpr double kRelativeTolerance = 1e-12;

struct Layout {
  int experts = 0;
  int slots = 0;
  int gpus = 0;
  int nodes = 0;  // 1 under the global policy
  int groups = 0;
  int slots_per_gpu = 0;
  int gpus_per_node = 0;
  int slots_per_node = 0;
  bool strict = false;  // every replica on its group's node, not just the first
};

// Step 1: groups to nodes, groups/nodes each: LPT (heaviest first onto the lightest node that
// is not full, lowest index on ties), then the best swap of two groups between the busiest node
// and another while it lowers the busier of the two.
std::vector<int> home_nodes(std::span<const double> load, const Layout& layout) {
  const int group_size = layout.experts / layout.groups;
  const int per_node = layout.groups / layout.nodes;
  std::vector<double> group_load(at(layout.groups), 0.0);
  for (int e = 0; e < layout.experts; ++e) group_load[at(e / group_size)] += load[at(e)];
  std::vector<int> node_of_group(at(layout.groups), 0);
  if (layout.nodes > 1) {
    std::vector<int> order(at(layout.groups));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return group_load[at(a)] > group_load[at(b)]; });
    std::vector<double> node_load(at(layout.nodes), 0.0);
    std::vector<int> node_groups(at(layout.nodes), 0);
    for (const int g : order) {
      int best = -1;
      for (int n = 0; n < layout.nodes; ++n) {
        if (node_groups[at(n)] < per_node && (best < 0 || node_load[at(n)] < node_load[at(best)])) best = n;
      }
      node_of_group[at(g)] = best;
      node_load[at(best)] += group_load[at(g)];
      ++node_groups[at(best)];
    }
    for (int iteration = 0; iteration < 4 * layout.groups * layout.groups; ++iteration) {
      const int busiest = static_cast<int>(std::max_element(node_load.begin(), node_load.end()) - node_load.begin());
      const double top = node_load[at(busiest)];
      double best_max = top * (1.0 - kRelativeTolerance);
      std::pair<int, int> best_swap{-1, -1};
      for (int x = 0; x < layout.groups; ++x) {
        if (node_of_group[at(x)] != busiest) continue;
        for (int y = 0; y < layout.groups; ++y) {
          const int other = node_of_group[at(y)];
          if (other == busiest || group_load[at(y)] >= group_load[at(x)]) continue;
          const double delta = group_load[at(x)] - group_load[at(y)];
          const double new_max = std::max(top - delta, node_load[at(other)] + delta);
          if (new_max < best_max) {
            best_max = new_max;
            best_swap = {x, y};
          }
        }
      }
      if (best_swap.first < 0) break;
      const auto [x, y] = best_swap;
      const double delta = group_load[at(x)] - group_load[at(y)];
      node_load[at(busiest)] -= delta;
      node_load[at(node_of_group[at(y)])] += delta;
      std::swap(node_of_group[at(x)], node_of_group[at(y)]);
    }
  }
  std::vector<int> home(at(layout.experts));
  for (int e = 0; e < layout.experts; ++e) home[at(e)] = node_of_group[at(e / group_size)];
  return home;
}

// Step 2, for the experts listed: one replica each, then each of the extra slots to the expert
// with the most load per replica (lowest index on ties) that has fewer than cap replicas.
void replicate(std::span<const double> load, const std::vector<int>& experts, int slots, int cap,
               std::vector<int>& count) {
  // (load per replica, -expert): the top is the most loaded, lowest index on ties.
  std::priority_queue<std::pair<double, int>> queue;
  for (const int e : experts) {
    count[at(e)] = 1;
    queue.emplace(load[at(e)], -e);
  }
  for (int extra = slots - static_cast<int>(experts.size()); extra > 0 && !queue.empty();) {
    const int e = -queue.top().second;
    queue.pop();
    if (count[at(e)] >= cap) continue;
    ++count[at(e)];
    --extra;
    queue.emplace(load[at(e)] / count[at(e)], -e);
  }
}

struct Replica {
  int expert = 0;
  bool home = false;  // the replica on the group's node
};

// Steps 3 and 4 for one layer.
class LayerPacker {
 public:
  LayerPacker(std::span<const double> load, const Layout& layout, std::vector<int> home, std::vector<int> count)
      : load_(load),
        layout_(layout),
        home_(std::move(home)),
        count_(std::move(count)),
        items_(at(layout.gpus)),
        gpu_load_(at(layout.gpus), 0.0),
        holds_(at(layout.experts) * at(layout.gpus), 0) {}

  void pack() {
    std::vector<int> order(at(layout_.experts));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return share(a) > share(b); });
    std::vector<int> node_free(at(layout_.nodes), layout_.slots_per_node);
    std::vector<int> node_need(at(layout_.nodes), 0);  // constrained replicas still to place there
    for (int e = 0; e < layout_.experts; ++e) node_need[at(home_[at(e)])] += layout_.strict ? count_[at(e)] : 1;
    for (const int e : order) {
      for (int r = 0; r < count_[at(e)]; ++r) {
        const Replica replica{.expert = e, .home = r == 0};
        const int node = place(replica, node_free, node_need);
        --node_free[at(node)];
        if (constrained(replica)) --node_need[at(node)];
      }
    }
  }

  void improve() {
    const int limit = 20 * layout_.slots;
    for (int iteration = 0; iteration < limit && swap_from_busiest(); ++iteration) {
    }
  }

  // phy2log and replica ranks (home replica first, then by slot).
  void write(std::vector<int>& phy2log, std::vector<int>& rank) const {
    phy2log.assign(at(layout_.slots), -1);
    rank.assign(at(layout_.slots), -1);
    std::vector<int> next_rank(at(layout_.experts), 1);
    for (int g = 0; g < layout_.gpus; ++g) {
      for (std::size_t i = 0; i < items_[at(g)].size(); ++i) {
        const Replica& replica = items_[at(g)][i];
        const std::size_t slot = at(g * layout_.slots_per_gpu) + i;
        phy2log[slot] = replica.expert;
        rank[slot] = replica.home ? 0 : next_rank[at(replica.expert)]++;
      }
    }
  }

 private:
  double share(int expert) const { return load_[at(expert)] / count_[at(expert)]; }
  bool constrained(const Replica& replica) const { return replica.home || layout_.strict; }
  int node_of(int gpu) const { return gpu / layout_.gpus_per_node; }
  bool holds(int expert, int gpu) const { return holds_[at(expert) * at(layout_.gpus) + at(gpu)] != 0; }
  // Whether replica may sit on gpu as far as its node goes.
  bool node_allows(const Replica& replica, int gpu) const {
    return !constrained(replica) || node_of(gpu) == home_[at(replica.expert)];
  }

  void put(int gpu, const Replica& replica) {
    items_[at(gpu)].push_back(replica);
    gpu_load_[at(gpu)] += share(replica.expert);
    ++holds_[at(replica.expert) * at(layout_.gpus) + at(gpu)];
  }

  // Puts replica on the lightest GPU that has a free slot, may take it (node rule, and a node
  // keeps the slots its constrained replicas still need), and does not hold its expert; returns
  // the GPU's node. When none qualifies, frees one by a swap, else accepts a duplicate.
  int place(const Replica& replica, const std::vector<int>& node_free, const std::vector<int>& node_need) {
    const auto allowed = [&](int gpu) {
      if (std::ssize(items_[at(gpu)]) >= layout_.slots_per_gpu) return false;
      const int node = node_of(gpu);
      return constrained(replica) ? node == home_[at(replica.expert)] : node_free[at(node)] > node_need[at(node)];
    };
    int best = -1;
    int any = -1;  // best ignoring the one-replica-per-GPU rule
    for (int g = 0; g < layout_.gpus; ++g) {
      if (!allowed(g)) continue;
      if (any < 0 || gpu_load_[at(g)] < gpu_load_[at(any)]) any = g;
      if (!holds(replica.expert, g) && (best < 0 || gpu_load_[at(g)] < gpu_load_[at(best)])) best = g;
    }
    if (best >= 0) {
      put(best, replica);
      return node_of(best);
    }
    // Every GPU that may take it holds the expert: move some replica x from a GPU h that does not
    // into the free slot of `any`, and put this replica in x's place on h.
    const double s = share(replica.expert);
    double best_max = std::numeric_limits<double>::infinity();
    std::pair<int, std::size_t> best_swap{-1, 0};
    for (int h = 0; h < layout_.gpus; ++h) {
      if (h == any || holds(replica.expert, h) || !node_allows(replica, h)) continue;
      for (std::size_t i = 0; i < items_[at(h)].size(); ++i) {
        const Replica& x = items_[at(h)][i];
        if (holds(x.expert, any) || !node_allows(x, any)) continue;
        const double sx = share(x.expert);
        const double new_max = std::max(gpu_load_[at(any)] + sx, gpu_load_[at(h)] - sx + s);
        if (new_max < best_max) {
          best_max = new_max;
          best_swap = {h, i};
        }
      }
    }
    if (best_swap.first < 0) {
      put(any, replica);  // no swap exists: a duplicate (see place_experts)
      return node_of(any);
    }
    const auto [h, i] = best_swap;
    const Replica x = items_[at(h)][i];
    remove(h, i);
    put(any, x);
    put(h, replica);
    return node_of(any);
  }

  void remove(int gpu, std::size_t index) {
    const Replica replica = items_[at(gpu)][index];
    items_[at(gpu)].erase(items_[at(gpu)].begin() + static_cast<std::ptrdiff_t>(index));
    gpu_load_[at(gpu)] -= share(replica.expert);
    --holds_[at(replica.expert) * at(layout_.gpus) + at(gpu)];
  }

  // Step 4: for the busiest GPU a that has one, the swap of a replica x on a with a lighter
  // replica y on another GPU b that most lowers max(load a, load b) below load a; keeps the node
  // rules and one replica per expert per GPU. Trying the next busiest GPU when the busiest
  // cannot improve (e.g. it holds one very hot replica) evens out the rest too, which keeps the
  // placement good when the actual load differs from the predicted one. Every swap lowers the
  // loads sorted in descending order, so the search ends. Returns whether it swapped.
  bool swap_from_busiest() {
    order_.resize(gpu_load_.size());
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(), [&](int x, int y) { return gpu_load_[at(x)] > gpu_load_[at(y)]; });
    for (const int a : order_) {
      if (try_swap(a)) return true;
    }
    return false;
  }

  bool try_swap(int a) {
    const double top = gpu_load_[at(a)];
    double best_max = top * (1.0 - kRelativeTolerance);
    int best_b = -1;
    std::size_t best_x = 0, best_y = 0;
    for (std::size_t xi = 0; xi < items_[at(a)].size(); ++xi) {
      const Replica& x = items_[at(a)][xi];
      const double sx = share(x.expert);
      for (int b = 0; b < layout_.gpus; ++b) {
        if (b == a || holds(x.expert, b) || !node_allows(x, b)) continue;
        const double lb = gpu_load_[at(b)];
        if (lb >= best_max) continue;  // b would end above best_max whatever y is
        for (std::size_t yi = 0; yi < items_[at(b)].size(); ++yi) {
          const Replica& y = items_[at(b)][yi];
          const double sy = share(y.expert);
          if (sy >= sx || holds(y.expert, a) || !node_allows(y, a)) continue;
          const double new_max = std::max(top - sx + sy, lb + sx - sy);
          if (new_max < best_max) {
            best_max = new_max;
            best_b = b;
            best_x = xi;
            best_y = yi;
          }
        }
      }
    }
    if (best_b < 0) return false;
    const Replica x = items_[at(a)][best_x];
    const Replica y = items_[at(best_b)][best_y];
    // Swap in place so the other slots of both GPUs keep their order.
    items_[at(a)][best_x] = y;
    items_[at(best_b)][best_y] = x;
    gpu_load_[at(a)] += share(y.expert) - share(x.expert);
    gpu_load_[at(best_b)] += share(x.expert) - share(y.expert);
    --holds_[at(x.expert) * at(layout_.gpus) + at(a)];
    ++holds_[at(x.expert) * at(layout_.gpus) + at(best_b)];
    --holds_[at(y.expert) * at(layout_.gpus) + at(best_b)];
    ++holds_[at(y.expert) * at(layout_.gpus) + at(a)];
    return true;
  }

  std::span<const double> load_;
  Layout layout_;
  std::vector<int> home_;                 // [experts]: node of the expert's group
  std::vector<int> count_;                // [experts]: replicas
  std::vector<std::vector<Replica>> items_;  // [gpus]: the replicas in slot order
  std::vector<double> gpu_load_;          // [gpus]
  std::vector<std::uint8_t> holds_;       // [experts x gpus]: replicas of the expert on the GPU
  std::vector<int> order_;                // scratch of swap_from_busiest
};

struct LayerResult {
  std::vector<int> phy2log;
  std::vector<int> rank;
  std::vector<int> logcnt;
};

LayerResult balanced_layer(std::span<const double> load, const Layout& layout) {
  std::vector<int> home = home_nodes(load, layout);
  std::vector<int> count(at(layout.experts), 0);
  if (layout.strict) {
    const int experts_per_node = layout.experts / layout.nodes;
    const bool spread = experts_per_node * layout.gpus_per_node >= layout.slots_per_node;
    for (int n = 0; n < layout.nodes; ++n) {
      std::vector<int> experts;
      for (int e = 0; e < layout.experts; ++e) {
        if (home[at(e)] == n) experts.push_back(e);
      }
      replicate(load, experts, layout.slots_per_node, spread ? layout.gpus_per_node : layout.slots, count);
    }
  } else {
    std::vector<int> experts(at(layout.experts));
    std::iota(experts.begin(), experts.end(), 0);
    const bool spread = layout.experts * layout.gpus >= layout.slots;
    replicate(load, experts, layout.slots, spread ? layout.gpus : layout.slots, count);
  }
  LayerPacker packer(load, layout, std::move(home), count);
  packer.pack();
  packer.improve();
  LayerResult result;
  packer.write(result.phy2log, result.rank);
  result.logcnt = std::move(count);
  return result;
}

// Whether no GPU holds two replicas of one expert.
bool distinct_gpus(const std::vector<int>& phy2log, const Layout& layout) {
  for (int g = 0; g < layout.gpus; ++g) {
    const auto begin = phy2log.begin() + g * layout.slots_per_gpu;
    std::vector<int> experts(begin, begin + layout.slots_per_gpu);
    std::sort(experts.begin(), experts.end());
    if (std::adjacent_find(experts.begin(), experts.end()) != experts.end()) return false;
  }
  return true;
}

EplbPlacement balanced_placement(const std::vector<std::vector<double>>& weight, const EplbShape& shape, bool strict) {
  check_eplb_input(weight, shape);
  const bool hierarchical = eplb_policy_for(shape.num_groups, shape.num_nodes) == EplbPolicy::hierarchical;
  Layout layout;
  layout.experts = static_cast<int>(weight.front().size());
  layout.slots = shape.num_replicas;
  layout.gpus = shape.num_gpus;
  layout.nodes = hierarchical ? shape.num_nodes : 1;
  layout.groups = hierarchical ? shape.num_groups : 1;
  layout.slots_per_gpu = shape.num_replicas / shape.num_gpus;
  layout.gpus_per_node = shape.num_gpus / layout.nodes;
  layout.slots_per_node = shape.num_replicas / layout.nodes;
  layout.strict = strict;
  // A node must have room for its groups' experts (EPLB's replicate_experts requires the same).
  if (layout.experts / layout.nodes > layout.slots_per_node) {
    throw std::invalid_argument(fmt::format("a node's {} slots cannot hold its {} experts", layout.slots_per_node,
                                            layout.experts / layout.nodes));
  }

  // Where the balanced layer is predicted no better than EPLB's (e.g. one hot replica sets the
  // max on both, as in the decode shapes), EPLB's layer is kept when it also has every replica of
  // an expert on its own GPU, so the policy is never predicted worse than EPLB.
  const EplbPlacement eplb = rebalance_experts(weight, shape);
  std::vector<LayerResult> layers;
  int max_replicas = 0;
  for (std::size_t l = 0; l < weight.size(); ++l) {
    LayerResult ours = balanced_layer(weight[l], layout);
    const std::vector<double> our_loads = host_loads(ours.phy2log, weight[l], layout.slots_per_gpu);
    const std::vector<double> eplb_loads = host_loads(eplb.phy2log[l], weight[l], layout.slots_per_gpu);
    const double our_max = *std::max_element(our_loads.begin(), our_loads.end());
    const double eplb_max = *std::max_element(eplb_loads.begin(), eplb_loads.end());
    if (eplb_max <= our_max * (1.0 + kRelativeTolerance) && distinct_gpus(eplb.phy2log[l], layout)) {
      ours.phy2log = eplb.phy2log[l];
      ours.logcnt = eplb.logcnt[l];
      for (std::size_t e = 0; e < eplb.log2phy[l].size(); ++e) {
        for (std::size_t r = 0; r < eplb.log2phy[l][e].size(); ++r) {
          if (eplb.log2phy[l][e][r] >= 0) ours.rank[at(eplb.log2phy[l][e][r])] = static_cast<int>(r);
        }
      }
    }
    layers.push_back(std::move(ours));
    max_replicas = std::max(max_replicas, *std::max_element(layers.back().logcnt.begin(), layers.back().logcnt.end()));
  }
  EplbPlacement placement;
  for (LayerResult& layer : layers) {
    std::vector<std::vector<int>> log2phy(at(layout.experts), std::vector<int>(at(max_replicas), -1));
    for (std::size_t slot = 0; slot < layer.phy2log.size(); ++slot) {
      log2phy[at(layer.phy2log[slot])][at(layer.rank[slot])] = static_cast<int>(slot);
    }
    placement.phy2log.push_back(std::move(layer.phy2log));
    placement.log2phy.push_back(std::move(log2phy));
    placement.logcnt.push_back(std::move(layer.logcnt));
  }
  return placement;
}

}  // namespace

const char* to_string(PlacementPolicy policy) {
  switch (policy) {
    case PlacementPolicy::eplb:
      return "eplb";
    case PlacementPolicy::balanced:
      return "balanced";
    case PlacementPolicy::balanced_strict:
      return "balanced-strict";
  }
  return "unknown";
}

std::optional<PlacementPolicy> placement_policy_from_name(std::string_view name) {
  for (const PlacementPolicy policy : kPlacementPolicies) {
    if (name == to_string(policy)) return policy;
  }
  return std::nullopt;
}

EplbPlacement place_experts(PlacementPolicy policy, const std::vector<std::vector<double>>& weight,
                            const EplbShape& shape) {
  switch (policy) {
    case PlacementPolicy::eplb:
      return rebalance_experts(weight, shape);
    case PlacementPolicy::balanced:
      return balanced_placement(weight, shape, /*strict=*/false);
    case PlacementPolicy::balanced_strict:
      return balanced_placement(weight, shape, /*strict=*/true);
  }
  throw std::invalid_argument("unknown placement policy");
}

std::vector<double> max_over_mean_gpu_load(const std::vector<std::vector<int>>& phy2log,
                                           const std::vector<std::vector<double>>& weight, int num_gpus) {
  std::vector<double> result;
  for (std::size_t layer = 0; layer < phy2log.size(); ++layer) {
    const std::vector<double> loads =
        host_loads(phy2log[layer], weight[layer], static_cast<int>(phy2log[layer].size()) / num_gpus);
    const double total = std::accumulate(loads.begin(), loads.end(), 0.0);
    const double max = *std::max_element(loads.begin(), loads.end());
    result.push_back(total > 0.0 ? max / (total / static_cast<double>(loads.size())) : 1.0);
  }
  return result;
}

}  // namespace sy::balance
