#include "balance/migration.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace sy::balance {
namespace {

// Gains below this are rounding noise (balancedness and the normalized spread are both in [0, 1]).
constexpr double kGainTolerance = 1e-12;

std::size_t at(int index) { return static_cast<std::size_t>(index); }

void validate_loads(const ExpertLoad& load) {
  for (std::size_t layer = 0; layer < load.size(); ++layer) {
    if (load[layer].empty()) throw std::invalid_argument(fmt::format("load row {} has no experts", layer));
    for (std::size_t e = 0; e < load[layer].size(); ++e) {
      if (!std::isfinite(load[layer][e]) || load[layer][e] < 0.0) {
        throw std::invalid_argument(
            fmt::format("load[{}][{}] is {} (loads must be finite and non-negative)", layer, e, load[layer][e]));
      }
    }
  }
}

// Checks one placement against the load: shape, expert ids, and a replica for every expert.
void validate_placement(std::string_view name, const Phy2Log& phy2log, const ExpertLoad& load, int slots_per_host) {
  if (slots_per_host < 1) {
    throw std::invalid_argument(fmt::format("slots_per_host must be >= 1 (got {})", slots_per_host));
  }
  if (phy2log.size() != load.size()) {
    throw std::invalid_argument(
        fmt::format("{} has {} layers but the load has {}", name, phy2log.size(), load.size()));
  }
  for (std::size_t layer = 0; layer < phy2log.size(); ++layer) {
    const std::vector<int>& slots = phy2log[layer];
    if (slots.size() != phy2log.front().size()) {
      throw std::invalid_argument(fmt::format("{} layer {} has {} slots, layer 0 has {}", name, layer, slots.size(),
                                              phy2log.front().size()));
    }
    if (slots.empty() || slots.size() % at(slots_per_host) != 0) {
      throw std::invalid_argument(fmt::format("slots_per_host ({}) does not divide the {} slots of {}",
                                              slots_per_host, slots.size(), name));
    }
    std::vector<int> replicas(load[layer].size(), 0);
    for (std::size_t slot = 0; slot < slots.size(); ++slot) {
      if (slots[slot] < 0 || at(slots[slot]) >= replicas.size()) {
        throw std::invalid_argument(fmt::format("{}[{}][{}] is expert {}, outside [0, {})", name, layer, slot,
                                                slots[slot], replicas.size()));
      }
      ++replicas[at(slots[slot])];
    }
    const auto missing = std::find(replicas.begin(), replicas.end(), 0);
    if (missing != replicas.end()) {
      throw std::invalid_argument(fmt::format("{} layer {} has no replica of expert {}", name, layer,
                                              missing - replicas.begin()));
    }
  }
}

void validate(const Phy2Log& current, const Phy2Log& target, const ExpertLoad& load, const MigrationOptions& options) {
  validate_loads(load);
  validate_placement("current", current, load, options.slots_per_host);
  if (!current.empty() && !target.empty() && current.front().size() != target.front().size()) {
    throw std::invalid_argument(fmt::format("current has {} slots per layer but target has {}",
                                            current.front().size(), target.front().size()));
  }
  validate_placement("target", target, load, options.slots_per_host);
}

double balancedness_of(const std::vector<double>& loads) {
  const double total = std::accumulate(loads.begin(), loads.end(), 0.0);
  const double max = *std::max_element(loads.begin(), loads.end());
  return max > 0.0 ? total / static_cast<double>(loads.size()) / max : 1.0;
}

// Picks each move's source among the current placement's slots holding its expert: one on the
// receiving host when there is one, else on the host that has sent the fewest experts so far
// (lowest slot on ties), so a round's transfers spread over the holders.
void assign_sources(std::vector<ExpertMove>& moves, const Phy2Log& current, int slots_per_host) {
  if (current.empty()) return;
  const std::size_t hosts = current.front().size() / at(slots_per_host);
  std::vector<std::size_t> sent(hosts, 0);
  for (ExpertMove& move : moves) {
    const std::vector<int>& slots = current[at(move.layer)];
    int chosen = -1;
    for (std::size_t slot = 0; slot < slots.size(); ++slot) {
      if (slots[slot] != move.expert) continue;
      const int host = static_cast<int>(slot / at(slots_per_host));
      if (host == move.host) {
        chosen = static_cast<int>(slot);
        break;
      }
      if (chosen < 0 || sent[at(host)] < sent[at(chosen / slots_per_host)]) chosen = static_cast<int>(slot);
    }
    move.source_slot = chosen;
    move.source_host = chosen / slots_per_host;
    if (move.source_host != move.host) ++sent[at(move.source_host)];
  }
}

// plan_migration for one layer: appends its moves and returns the resulting slots.
std::vector<int> plan_layer(int layer, const std::vector<int>& current, const std::vector<int>& target,
                            std::size_t experts, int slots_per_host, std::vector<ExpertMove>& moves) {
  std::vector<int> result(current.size(), -1);
  std::vector<int> wanted(experts, 0);  // copies the host still lacks; back to all zero per host
  std::vector<int> free_slots;
  const std::size_t hosts = current.size() / at(slots_per_host);
  for (std::size_t host = 0; host < hosts; ++host) {
    const std::size_t begin = host * at(slots_per_host);
    const std::size_t end = begin + at(slots_per_host);
    for (std::size_t slot = begin; slot < end; ++slot) ++wanted[at(target[slot])];
    free_slots.clear();
    for (std::size_t slot = begin; slot < end; ++slot) {
      if (wanted[at(current[slot])] > 0) {
        --wanted[at(current[slot])];
        result[slot] = current[slot];
      } else {
        free_slots.push_back(static_cast<int>(slot));
      }
    }
    std::size_t next_free = 0;
    for (std::size_t slot = begin; slot < end; ++slot) {
      const int expert = target[slot];
      if (wanted[at(expert)] == 0) continue;
      --wanted[at(expert)];
      const int into = free_slots[next_free++];
      result[at(into)] = expert;
      moves.push_back(ExpertMove{.layer = layer,
                                 .slot = into,
                                 .host = static_cast<int>(host),
                                 .evicted_expert = current[at(into)],
                                 .expert = expert,
                                 .source_slot = -1,
                                 .source_host = -1});
    }
  }
  return result;
}

// What a unit of moves buys per move, compared lexicographically: balancedness first, then
// evenness. Every move costs bytes_per_expert, so the gain per move ranks as the gain per byte.
struct Gain {
  double balance = 0.0;  // increase of the layer's mean/max host load
  double spread = 0.0;   // decrease of the sum of squared host loads, over the layer's total load squared

  bool positive() const {
    return balance > kGainTolerance || (balance >= -kGainTolerance && spread > kGainTolerance);
  }
  bool better_than(const Gain& other) const {
    if (balance > other.balance + kGainTolerance) return true;
    if (balance < other.balance - kGainTolerance) return false;
    return spread > other.spread + kGainTolerance;
  }
};

// One layer during the capped greedy: its slots as moved so far, and what the gain of a unit
// needs. Rebuilt after every unit taken in the layer (O(slots + hosts log hosts)), so evaluating
// a unit costs only the replicas of the experts it touches.
class LayerState {
 public:
  LayerState(std::vector<int> phy2log, std::span<const double> load, int slots_per_host)
      : phy2log_(std::move(phy2log)),
        load_(load),
        slots_per_host_(slots_per_host),
        replica_delta_(load.size(), 0),
        in_unit_(phy2log_.size(), 0) {
    rebuild();
  }

  const std::vector<int>& phy2log() const { return phy2log_; }

  // Fills unit with pending[first] and, while some expert it evicts is left without a replica,
  // the lowest-slot pending move that loads that expert; leaves it empty when pending cannot
  // (not for a pending list from plan_layer). loading[e] lists the pending moves that load
  // expert e, by slot; unit is the caller's buffer, reused across calls.
  void unit_from(std::size_t first, const std::vector<ExpertMove>& pending,
                 const std::vector<std::vector<std::size_t>>& loading, std::vector<ExpertMove>& unit) const {
    unit.assign(1, pending[first]);
    count_changes(unit);
    // Homes are appended; unit[next] is the first move whose eviction is not yet covered.
    std::size_t next = 0;
    while (next < unit.size()) {
      const int expert = unit[next].evicted_expert;
      if (replicas_after(expert) > 0) {
        ++next;
        continue;
      }
      const std::vector<std::size_t>& homes = loading[at(expert)];
      const auto home =
          std::find_if(homes.begin(), homes.end(), [&](std::size_t i) { return in_unit_[at(pending[i].slot)] == 0; });
      if (home == homes.end()) {
        clear_changes(unit);
        unit.clear();
        return;
      }
      unit.push_back(pending[*home]);
      in_unit_[at(unit.back().slot)] = 1;
      ++replica_delta_[at(unit.back().expert)];
      --replica_delta_[at(unit.back().evicted_expert)];
    }
    clear_changes(unit);
  }

  // The gain per move of applying every move of unit, or nothing when the unit would leave an
  // expert without a replica or the layer has no load. REQUIRES: each move's slot holds its
  // evicted expert.
  std::optional<Gain> evaluate(const std::vector<ExpertMove>& unit) const {
    if (total_ <= 0.0) return std::nullopt;
    count_changes(unit);
    touched_.clear();
    for (const ExpertMove& move : unit) {
      for (const int expert : {move.evicted_expert, move.expert}) {
        if (std::find(touched_.begin(), touched_.end(), expert) == touched_.end()) touched_.push_back(expert);
      }
    }
    changes_.clear();
    bool orphaned = false;
    for (const int expert : touched_) {
      const int after = replicas_after(expert);
      if (after == 0) {
        orphaned = true;
        break;
      }
      const double share_before = load_[at(expert)] / static_cast<double>(replicas_[at(expert)]);
      const double share_after = load_[at(expert)] / static_cast<double>(after);
      for (const int slot : slots_of_expert_[at(expert)]) {
        add_change(slot / slots_per_host_, in_unit_[at(slot)] ? -share_before : share_after - share_before);
      }
      for (const ExpertMove& move : unit) {
        if (move.expert == expert) add_change(move.host, share_after);
      }
    }
    clear_changes(unit);
    if (orphaned) return std::nullopt;

    double max_after = 0.0;
    double squares_after = squares_;
    for (const auto& [host, delta] : changes_) {
      const double before = host_load_[at(host)];
      const double after = before + delta;
      max_after = std::max(max_after, after);
      squares_after += after * after - before * before;
    }
    for (const int host : hosts_by_load_) {  // the busiest host the unit leaves alone
      if (!changed(host)) {
        max_after = std::max(max_after, host_load_[at(host)]);
        break;
      }
    }
    const double mean = total_ / static_cast<double>(host_load_.size());
    const double balance_after = max_after > 0.0 ? mean / max_after : 1.0;
    const auto moves = static_cast<double>(unit.size());
    return Gain{.balance = (balance_after - mean / max_) / moves,
                .spread = (squares_ - squares_after) / (total_ * total_) / moves};
  }

  void apply(const std::vector<ExpertMove>& unit) {
    for (const ExpertMove& move : unit) phy2log_[at(move.slot)] = move.expert;
    rebuild();
  }

 private:
  // Marks unit's slots and counts its replica changes per expert in the scratch arrays;
  // clear_changes undoes exactly that, so both stay all zero between calls.
  void count_changes(const std::vector<ExpertMove>& unit) const {
    for (const ExpertMove& move : unit) {
      in_unit_[at(move.slot)] = 1;
      ++replica_delta_[at(move.expert)];
      --replica_delta_[at(move.evicted_expert)];
    }
  }
  void clear_changes(const std::vector<ExpertMove>& unit) const {
    for (const ExpertMove& move : unit) {
      in_unit_[at(move.slot)] = 0;
      replica_delta_[at(move.expert)] = 0;
      replica_delta_[at(move.evicted_expert)] = 0;
    }
  }
  int replicas_after(int expert) const { return replicas_[at(expert)] + replica_delta_[at(expert)]; }

  void rebuild() {
    replicas_.assign(load_.size(), 0);
    slots_of_expert_.assign(load_.size(), {});
    for (std::size_t slot = 0; slot < phy2log_.size(); ++slot) {
      ++replicas_[at(phy2log_[slot])];
      slots_of_expert_[at(phy2log_[slot])].push_back(static_cast<int>(slot));
    }
    host_load_ = host_loads(phy2log_, load_, slots_per_host_);
    hosts_by_load_.resize(host_load_.size());
    std::iota(hosts_by_load_.begin(), hosts_by_load_.end(), 0);
    std::stable_sort(hosts_by_load_.begin(), hosts_by_load_.end(),
                     [&](int a, int b) { return host_load_[at(a)] > host_load_[at(b)]; });
    total_ = std::accumulate(host_load_.begin(), host_load_.end(), 0.0);
    max_ = host_load_[at(hosts_by_load_.front())];
    squares_ = 0.0;
    for (const double l : host_load_) squares_ += l * l;
  }

  void add_change(int host, double delta) const {
    for (auto& [changed_host, changed_delta] : changes_) {
      if (changed_host == host) {
        changed_delta += delta;
        return;
      }
    }
    changes_.emplace_back(host, delta);
  }
  bool changed(int host) const {
    return std::any_of(changes_.begin(), changes_.end(), [&](const auto& change) { return change.first == host; });
  }

  std::vector<int> phy2log_;
  std::span<const double> load_;
  int slots_per_host_;
  std::vector<int> replicas_;                      // [experts]
  std::vector<std::vector<int>> slots_of_expert_;  // [experts] -> slots
  std::vector<double> host_load_;                  // [hosts]
  std::vector<int> hosts_by_load_;                 // busiest first
  double total_ = 0.0;
  double max_ = 0.0;
  double squares_ = 0.0;
  // Scratch of unit_from and evaluate, all zero between calls.
  mutable std::vector<int> replica_delta_;               // [experts]: replicas the unit adds (removes)
  mutable std::vector<char> in_unit_;                    // [slots]: 1 for the unit's slots
  mutable std::vector<int> touched_;                     // experts whose replicas change
  mutable std::vector<std::pair<int, double>> changes_;  // host -> load delta
};

}  // namespace

std::vector<double> host_loads(std::span<const int> phy2log, std::span<const double> load, int slots_per_host) {
  std::vector<int> replicas(load.size(), 0);
  for (const int expert : phy2log) ++replicas[at(expert)];
  std::vector<double> loads(phy2log.size() / at(slots_per_host), 0.0);
  for (std::size_t slot = 0; slot < phy2log.size(); ++slot) {
    const auto expert = at(phy2log[slot]);
    loads[slot / at(slots_per_host)] += load[expert] / static_cast<double>(replicas[expert]);
  }
  return loads;
}

Balancedness predict_balancedness(const Phy2Log& phy2log, const ExpertLoad& load, int slots_per_host) {
  validate_loads(load);
  validate_placement("placement", phy2log, load, slots_per_host);
  Balancedness result;
  for (std::size_t layer = 0; layer < phy2log.size(); ++layer) {
    result.per_layer.push_back(balancedness_of(host_loads(phy2log[layer], load[layer], slots_per_host)));
  }
  if (!result.per_layer.empty()) {
    result.mean = std::accumulate(result.per_layer.begin(), result.per_layer.end(), 0.0) /
                  static_cast<double>(result.per_layer.size());
  }
  return result;
}

MigrationPlan plan_migration(const Phy2Log& current, const Phy2Log& target, const ExpertLoad& load,
                             const MigrationOptions& options) {
  validate(current, target, load, options);
  MigrationPlan plan;
  for (std::size_t layer = 0; layer < current.size(); ++layer) {
    plan.result.push_back(plan_layer(static_cast<int>(layer), current[layer], target[layer], load[layer].size(),
                                     options.slots_per_host, plan.moves));
  }
  assign_sources(plan.moves, current, options.slots_per_host);
  plan.bytes = plan.moves.size() * options.bytes_per_expert;
  plan.before = predict_balancedness(current, load, options.slots_per_host);
  plan.after = predict_balancedness(plan.result, load, options.slots_per_host);
  return plan;
}

MigrationPlan plan_capped_migration(const Phy2Log& current, const Phy2Log& target, const ExpertLoad& load,
                                    const MigrationOptions& options, std::size_t max_moves) {
  const MigrationPlan full = plan_migration(current, target, load, options);
  std::vector<LayerState> layers;
  std::vector<std::vector<ExpertMove>> pending(current.size());  // per layer, by slot
  for (std::size_t layer = 0; layer < current.size(); ++layer) {
    layers.emplace_back(current[layer], load[layer], options.slots_per_host);
  }
  for (const ExpertMove& move : full.moves) pending[at(move.layer)].push_back(move);

  // The best unit of each layer that fits the budget; recomputed when the layer changes or the
  // budget shrinks below it.
  struct Best {
    std::vector<ExpertMove> unit;
    std::optional<Gain> gain;
  };
  const auto best_of = [&](std::size_t layer, std::size_t budget) {
    Best best;
    std::vector<std::vector<std::size_t>> loading(load[layer].size());
    for (std::size_t i = 0; i < pending[layer].size(); ++i) loading[at(pending[layer][i].expert)].push_back(i);
    std::vector<ExpertMove> unit;
    for (std::size_t i = 0; i < pending[layer].size(); ++i) {
      layers[layer].unit_from(i, pending[layer], loading, unit);
      if (unit.empty() || unit.size() > budget) continue;
      const std::optional<Gain> gain = layers[layer].evaluate(unit);
      if (gain && gain->positive() && (!best.gain || gain->better_than(*best.gain))) best = Best{unit, gain};
    }
    return best;
  };
  std::vector<Best> best(current.size());
  for (std::size_t layer = 0; layer < current.size(); ++layer) best[layer] = best_of(layer, max_moves);

  MigrationPlan plan;
  for (;;) {
    const std::size_t budget = max_moves - plan.moves.size();
    if (budget == 0) break;
    std::optional<std::size_t> chosen;
    for (std::size_t layer = 0; layer < best.size(); ++layer) {
      if (best[layer].unit.size() > budget) best[layer] = best_of(layer, budget);
      if (best[layer].gain && (!chosen || best[layer].gain->better_than(*best[*chosen].gain))) chosen = layer;
    }
    if (!chosen) break;
    const std::size_t layer = *chosen;
    const std::vector<ExpertMove> unit = std::move(best[layer].unit);
    std::erase_if(pending[layer], [&](const ExpertMove& move) {
      return std::any_of(unit.begin(), unit.end(), [&](const ExpertMove& taken) { return taken.slot == move.slot; });
    });
    layers[layer].apply(unit);
    plan.moves.insert(plan.moves.end(), unit.begin(), unit.end());
    best[layer] = best_of(layer, max_moves - plan.moves.size());
  }
  for (const LayerState& layer : layers) plan.result.push_back(layer.phy2log());
  assign_sources(plan.moves, current, options.slots_per_host);
  plan.bytes = plan.moves.size() * options.bytes_per_expert;
  plan.before = full.before;
  plan.after = predict_balancedness(plan.result, load, options.slots_per_host);
  return plan;
}

Phy2Log migration_aware_target(const Phy2Log& current, const ExpertLoad& load,
                               const std::vector<std::vector<int>>& counts, int slots_per_host, int max_swaps) {
  if (counts.size() != current.size() || load.size() != current.size()) {
    throw std::invalid_argument(fmt::format("migration-aware target: {} layers of placement, {} of load, {} of counts",
                                            current.size(), load.size(), counts.size()));
  }
  Phy2Log target = current;
  for (std::size_t l = 0; l < current.size(); ++l) {
    std::vector<int>& row = target[l];
    const int slots = static_cast<int>(row.size());
    const int experts = static_cast<int>(load[l].size());
    if (slots_per_host < 1 || slots % slots_per_host != 0) {
      throw std::invalid_argument(fmt::format("migration-aware target: {} slots per host do not divide {} slots",
                                              slots_per_host, slots));
    }
    if (static_cast<int>(counts[l].size()) != experts ||
        std::accumulate(counts[l].begin(), counts[l].end(), 0) != slots) {
      throw std::invalid_argument(fmt::format("migration-aware target: layer {}: counts must give {} experts {} slots", l,
                                              experts, slots));
    }
    std::vector<double> weight(static_cast<std::size_t>(experts));  // per replica, at the target counts
    for (int e = 0; e < experts; ++e) {
      const int c = counts[l][static_cast<std::size_t>(e)];
      if (c < 1) throw std::invalid_argument(fmt::format("migration-aware target: layer {}: expert {} has no replica", l, e));
      weight[static_cast<std::size_t>(e)] = load[l][static_cast<std::size_t>(e)] / c;
    }
    const int hosts = slots / slots_per_host;
    const auto w = [&](int slot) { return row[static_cast<std::size_t>(slot)] < 0 ? 0.0 : weight[static_cast<std::size_t>(row[static_cast<std::size_t>(slot)])]; };
    std::vector<double> host_load(static_cast<std::size_t>(hosts), 0.0);
    std::vector<int> have(static_cast<std::size_t>(experts), 0);
    for (int s = 0; s < slots; ++s) {
      const int e = row[static_cast<std::size_t>(s)];
      if (e < 0 || e >= experts) throw std::invalid_argument(fmt::format("migration-aware target: layer {} slot {}: expert {}", l, s, e));
      ++have[static_cast<std::size_t>(e)];
      host_load[static_cast<std::size_t>(s / slots_per_host)] += w(s);
    }
    // Surplus replicas leave the most loaded hosts.
    for (int e = 0; e < experts; ++e) {
      while (have[static_cast<std::size_t>(e)] > counts[l][static_cast<std::size_t>(e)]) {
        int drop = -1;
        for (int s = 0; s < slots; ++s) {
          if (row[static_cast<std::size_t>(s)] != e) continue;
          if (drop < 0 || host_load[static_cast<std::size_t>(s / slots_per_host)] > host_load[static_cast<std::size_t>(drop / slots_per_host)]) drop = s;
        }
        host_load[static_cast<std::size_t>(drop / slots_per_host)] -= weight[static_cast<std::size_t>(e)];
        row[static_cast<std::size_t>(drop)] = -1;
        --have[static_cast<std::size_t>(e)];
      }
    }
    // Missing replicas, heaviest first, into the least loaded host with a free slot.
    std::vector<int> missing;
    for (int e = 0; e < experts; ++e) {
      for (int k = have[static_cast<std::size_t>(e)]; k < counts[l][static_cast<std::size_t>(e)]; ++k) missing.push_back(e);
    }
    std::stable_sort(missing.begin(), missing.end(), [&](int a, int b) { return weight[static_cast<std::size_t>(a)] > weight[static_cast<std::size_t>(b)]; });
    for (const int e : missing) {
      int into = -1;
      bool into_holds = true;
      for (int s = 0; s < slots; ++s) {
        if (row[static_cast<std::size_t>(s)] >= 0) continue;
        const int h = s / slots_per_host;
        bool holds = false;
        for (int t = h * slots_per_host; t < (h + 1) * slots_per_host; ++t) holds |= row[static_cast<std::size_t>(t)] == e;
        if (into < 0 || (into_holds && !holds) ||
            (holds == into_holds && host_load[static_cast<std::size_t>(h)] < host_load[static_cast<std::size_t>(into / slots_per_host)])) {
          into = s;
          into_holds = holds;
        }
      }
      row[static_cast<std::size_t>(into)] = e;
      host_load[static_cast<std::size_t>(into / slots_per_host)] += weight[static_cast<std::size_t>(e)];
    }
    // Even the hosts: the best swap between the most loaded host and another, while one helps.
    for (int swaps = 0; swaps < max_swaps && hosts > 1; ++swaps) {
      const int top = static_cast<int>(std::max_element(host_load.begin(), host_load.end()) - host_load.begin());
      const double top_load = host_load[static_cast<std::size_t>(top)];
      double best = top_load;
      int best_a = -1, best_b = -1;
      for (int a = top * slots_per_host; a < (top + 1) * slots_per_host; ++a) {
        for (int b = 0; b < slots; ++b) {
          const int h = b / slots_per_host;
          if (h == top) continue;
          const double d = w(a) - w(b);
          if (d <= 0) continue;
          const double worse = std::max(top_load - d, host_load[static_cast<std::size_t>(h)] + d);
          if (worse < best - 1e-12 * std::max(1.0, top_load)) {
            best = worse;
            best_a = a;
            best_b = b;
          }
        }
      }
      if (best_a < 0) break;
      const double d = w(best_a) - w(best_b);
      host_load[static_cast<std::size_t>(top)] -= d;
      host_load[static_cast<std::size_t>(best_b / slots_per_host)] += d;
      std::swap(row[static_cast<std::size_t>(best_a)], row[static_cast<std::size_t>(best_b)]);
    }
  }
  return target;
}

}  // namespace sy::balance
