#include "balance/eplb.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <stdexcept>

namespace sy::balance {
namespace {

// Rejects every shape the reference would assert on (and a few it would crash on), naming the
// value; returns the loads as float32, as the reference's weight.float().
std::vector<std::vector<float>> validated_loads(const std::vector<std::vector<double>>& weight,
                                                const EplbShape& shape) {
  if (weight.empty()) throw std::invalid_argument("weight has no layers");
  const std::size_t experts = weight.front().size();
  if (experts == 0) throw std::invalid_argument("weight has no experts (row 0 is empty)");
  const auto positive = [](const char* name, int value) {
    if (value < 1) throw std::invalid_argument(fmt::format("{} must be >= 1 (got {})", name, value));
  };
  positive("num_replicas", shape.num_replicas);
  positive("num_groups", shape.num_groups);
  positive("num_nodes", shape.num_nodes);
  positive("num_gpus", shape.num_gpus);
  if (experts % static_cast<std::size_t>(shape.num_groups) != 0) {
    throw std::invalid_argument(
        fmt::format("num_groups ({}) does not divide the number of experts ({})", shape.num_groups, experts));
  }
  if (shape.num_gpus % shape.num_nodes != 0) {
    throw std::invalid_argument(
        fmt::format("num_nodes ({}) does not divide num_gpus ({})", shape.num_nodes, shape.num_gpus));
  }
  if (shape.num_replicas % shape.num_gpus != 0) {
    throw std::invalid_argument(
        fmt::format("num_replicas ({}) is not a multiple of num_gpus ({})", shape.num_replicas, shape.num_gpus));
  }
  if (static_cast<std::size_t>(shape.num_replicas) < experts) {
    throw std::invalid_argument(fmt::format("num_replicas ({}) is less than the number of experts ({})",
                                            shape.num_replicas, experts));
  }
  std::vector<std::vector<float>> loads(weight.size());
  for (std::size_t layer = 0; layer < weight.size(); ++layer) {
    if (weight[layer].size() != experts) {
      throw std::invalid_argument(fmt::format("weight row {} has {} experts, row 0 has {}", layer,
                                              weight[layer].size(), experts));
    }
    loads[layer].reserve(experts);
    for (std::size_t e = 0; e < experts; ++e) {
      const auto load = static_cast<float>(weight[layer][e]);
      if (!std::isfinite(load) || load < 0.0f) {
        throw std::invalid_argument(fmt::format(
            "weight[{}][{}] is {} (loads must be finite in float32 and non-negative)", layer, e, weight[layer][e]));
      }
      loads[layer].push_back(load);
    }
  }
  return loads;
}

struct LayerResult {
  std::vector<int> phy2log;  // [num_replicas]
  std::vector<int> rank;     // [num_replicas]
  std::vector<int> logcnt;   // [experts]
};

// rebalance_experts_hierarchical of the reference for one layer (its tensors are per layer, and
// per layer and node after step 1). "mlog" numbers the experts node-major after step 1.
LayerResult rebalance_layer(std::span<const float> load, int num_replicas, int num_groups, int num_nodes,
                            int num_gpus) {
  const int experts = static_cast<int>(load.size());
  const int group_size = experts / num_groups;
  const int groups_per_node = num_groups / num_nodes;
  const int slots_per_gpu = num_replicas / num_gpus;
  const int experts_per_node = experts / num_nodes;
  const int slots_per_node = num_replicas / num_nodes;
  const int gpus_per_node = num_gpus / num_nodes;

  // 1. Groups to nodes.
  std::vector<float> group_load(static_cast<std::size_t>(num_groups));
  for (int g = 0; g < num_groups; ++g) {
    double sum = 0.0;  // summed in double, rounded once to float32 (see eplb.hpp)
    for (int i = 0; i < group_size; ++i) sum += load[static_cast<std::size_t>(g * group_size + i)];
    group_load[static_cast<std::size_t>(g)] = static_cast<float>(sum);
  }
  const Packing group_packing = balanced_packing(group_load, num_nodes);
  std::vector<int> mlog2log(static_cast<std::size_t>(experts));
  for (int e = 0; e < experts; ++e) {
    const auto g = static_cast<std::size_t>(e / group_size);
    const int mlog =
        (group_packing.pack_of_item[g] * groups_per_node + group_packing.rank_in_pack[g]) * group_size + e % group_size;
    mlog2log[static_cast<std::size_t>(mlog)] = e;
  }

  LayerResult result;
  result.phy2log.assign(static_cast<std::size_t>(num_replicas), -1);
  result.rank.assign(static_cast<std::size_t>(num_replicas), -1);
  result.logcnt.assign(static_cast<std::size_t>(experts), 0);
  std::vector<float> node_load(static_cast<std::size_t>(experts_per_node));
  std::vector<float> replica_load(static_cast<std::size_t>(slots_per_node));
  for (int node = 0; node < num_nodes; ++node) {
    const std::size_t mlog_base = static_cast<std::size_t>(node) * static_cast<std::size_t>(experts_per_node);
    // 2. Replicas within the node.
    for (std::size_t j = 0; j < node_load.size(); ++j) {
      node_load[j] = load[static_cast<std::size_t>(mlog2log[mlog_base + j])];
    }
    const Replication replication = replicate_experts(node_load, slots_per_node);
    for (std::size_t j = 0; j < node_load.size(); ++j) {
      result.logcnt[static_cast<std::size_t>(mlog2log[mlog_base + j])] = replication.logcnt[j];
    }
    // 3. Replicas to the node's GPUs, by load per replica.
    for (std::size_t p = 0; p < replica_load.size(); ++p) {
      const auto mlog = static_cast<std::size_t>(replication.phy2log[p]);
      replica_load[p] = node_load[mlog] / static_cast<float>(replication.logcnt[mlog]);
    }
    const Packing gpu_packing = balanced_packing(replica_load, gpus_per_node);
    for (std::size_t p = 0; p < replica_load.size(); ++p) {
      const int slot_in_node = gpu_packing.pack_of_item[p] * slots_per_gpu + gpu_packing.rank_in_pack[p];
      const std::size_t slot = static_cast<std::size_t>(node * slots_per_node + slot_in_node);
      result.phy2log[slot] = mlog2log[mlog_base + static_cast<std::size_t>(replication.phy2log[p])];
      result.rank[slot] = replication.rank[p];
    }
  }
  return result;
}

}  // namespace

EplbPolicy eplb_policy_for(int num_groups, int num_nodes) {
  return num_nodes >= 1 && num_groups % num_nodes == 0 ? EplbPolicy::hierarchical : EplbPolicy::global;
}

const char* to_string(EplbPolicy policy) {
  switch (policy) {
    case EplbPolicy::hierarchical:
      return "hierarchical";
    case EplbPolicy::global:
      return "global";
  }
  return "unknown";
}

Packing balanced_packing(std::span<const float> weight, int num_packs) {
  const int items = static_cast<int>(weight.size());
  if (num_packs < 1 || items % num_packs != 0) {
    throw std::invalid_argument(
        fmt::format("balanced_packing: {} packs do not split {} items evenly", num_packs, items));
  }
  const int items_per_pack = items / num_packs;
  Packing packing;
  packing.pack_of_item.assign(weight.size(), -1);
  packing.rank_in_pack.assign(weight.size(), -1);
  if (items_per_pack == 1) {
    std::iota(packing.pack_of_item.begin(), packing.pack_of_item.end(), 0);
    std::fill(packing.rank_in_pack.begin(), packing.rank_in_pack.end(), 0);
    return packing;
  }
  std::vector<int> order(weight.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return weight[static_cast<std::size_t>(a)] > weight[static_cast<std::size_t>(b)];
  });
  std::vector<float> pack_weight(static_cast<std::size_t>(num_packs), 0.0f);
  std::vector<int> pack_items(static_cast<std::size_t>(num_packs), 0);
  for (const int item : order) {
    int lightest = -1;
    for (int pack = 0; pack < num_packs; ++pack) {
      const auto p = static_cast<std::size_t>(pack);
      if (pack_items[p] < items_per_pack &&
          (lightest < 0 || pack_weight[p] < pack_weight[static_cast<std::size_t>(lightest)])) {
        lightest = pack;
      }
    }
    const auto p = static_cast<std::size_t>(lightest);
    packing.pack_of_item[static_cast<std::size_t>(item)] = lightest;
    packing.rank_in_pack[static_cast<std::size_t>(item)] = pack_items[p];
    pack_weight[p] += weight[static_cast<std::size_t>(item)];
    ++pack_items[p];
  }
  return packing;
}

Replication replicate_experts(std::span<const float> weight, int num_physical) {
  const int experts = static_cast<int>(weight.size());
  if (experts < 1 || num_physical < experts) {
    throw std::invalid_argument(
        fmt::format("replicate_experts: {} slots cannot hold {} experts", num_physical, experts));
  }
  Replication replication;
  replication.phy2log.resize(static_cast<std::size_t>(num_physical));
  std::iota(replication.phy2log.begin(), replication.phy2log.begin() + experts, 0);
  replication.rank.assign(static_cast<std::size_t>(num_physical), 0);
  replication.logcnt.assign(weight.size(), 1);
  for (int slot = experts; slot < num_physical; ++slot) {
    std::size_t busiest = 0;
    float busiest_load = weight[0] / static_cast<float>(replication.logcnt[0]);
    for (std::size_t e = 1; e < weight.size(); ++e) {
      const float per_replica = weight[e] / static_cast<float>(replication.logcnt[e]);
      if (per_replica > busiest_load) {  // strict: the first index wins ties, as torch's max
        busiest = e;
        busiest_load = per_replica;
      }
    }
    const auto s = static_cast<std::size_t>(slot);
    replication.phy2log[s] = static_cast<int>(busiest);
    replication.rank[s] = replication.logcnt[busiest];
    ++replication.logcnt[busiest];
  }
  return replication;
}

void check_eplb_input(const std::vector<std::vector<double>>& weight, const EplbShape& shape) {
  validated_loads(weight, shape);
}

EplbPlacement rebalance_experts(const std::vector<std::vector<double>>& weight, const EplbShape& shape) {
  const std::vector<std::vector<float>> loads = validated_loads(weight, shape);
  const bool hierarchical = eplb_policy_for(shape.num_groups, shape.num_nodes) == EplbPolicy::hierarchical;
  const int groups = hierarchical ? shape.num_groups : 1;
  const int nodes = hierarchical ? shape.num_nodes : 1;

  std::vector<LayerResult> layers;
  layers.reserve(loads.size());
  int max_replicas = 0;
  for (const std::vector<float>& layer_load : loads) {
    layers.push_back(rebalance_layer(layer_load, shape.num_replicas, groups, nodes, shape.num_gpus));
    max_replicas = std::max(max_replicas, *std::max_element(layers.back().logcnt.begin(), layers.back().logcnt.end()));
  }

  EplbPlacement placement;
  const std::size_t experts = loads.front().size();
  for (LayerResult& layer : layers) {
    std::vector<std::vector<int>> log2phy(experts, std::vector<int>(static_cast<std::size_t>(max_replicas), -1));
    for (std::size_t slot = 0; slot < layer.phy2log.size(); ++slot) {
      log2phy[static_cast<std::size_t>(layer.phy2log[slot])][static_cast<std::size_t>(layer.rank[slot])] =
          static_cast<int>(slot);
    }
    placement.phy2log.push_back(std::move(layer.phy2log));
    placement.log2phy.push_back(std::move(log2phy));
    placement.logcnt.push_back(std::move(layer.logcnt));
  }
  return placement;
}

}  // namespace sy::balance
