#include "balance/load_trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <stdexcept>

namespace sy::balance {
namespace {

// splitmix64 with its own uniform and normal, so traces do not depend on the standard library's
// distributions.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
  double normal() {  // Box-Muller
    const double u = 1.0 - uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * std::numbers::pi * uniform());
  }

 private:
  std::uint64_t state_;
};

// log-popularity of Zipf(s) ranks in a random order: log(r^-s).
std::vector<double> zipf_log_popularity(int experts, double s, Rng& rng) {
  std::vector<int> rank(static_cast<std::size_t>(experts));
  std::iota(rank.begin(), rank.end(), 1);
  for (int i = experts - 1; i > 0; --i) std::swap(rank[static_cast<std::size_t>(i)], rank[static_cast<std::size_t>(rng.below(i + 1))]);
  std::vector<double> log_pop(rank.size());
  for (std::size_t e = 0; e < rank.size(); ++e) log_pop[e] = -s * std::log(static_cast<double>(rank[e]));
  return log_pop;
}

// tokens spread over experts in proportion to exp(log_pop).
void normalize_into(const std::vector<double>& log_pop, double tokens, std::vector<double>& out) {
  const double top = *std::max_element(log_pop.begin(), log_pop.end());
  out.resize(log_pop.size());
  double sum = 0.0;
  for (std::size_t e = 0; e < log_pop.size(); ++e) sum += out[e] = std::exp(log_pop[e] - top);
  for (double& v : out) v *= tokens / sum;
}

void check(const char* name, int value) {
  if (value < 1) throw std::invalid_argument(fmt::format("{} must be >= 1 (got {})", name, value));
}

}  // namespace

const char* to_string(TraceKind kind) {
  switch (kind) {
    case TraceKind::drift:
      return "drift";
    case TraceKind::bursts:
      return "bursts";
    case TraceKind::day_night:
      return "day-night";
  }
  return "unknown";
}

std::optional<TraceKind> trace_kind_from_name(std::string_view name) {
  for (const TraceKind kind : kTraceKinds) {
    if (name == to_string(kind)) return kind;
  }
  return std::nullopt;
}

ExpertLoad zipf_load(int layers, int experts, double s, std::uint64_t seed, double tokens_per_layer) {
  check("layers", layers);
  check("experts", experts);
  if (!(s >= 0.0)) throw std::invalid_argument(fmt::format("zipf s must be >= 0 (got {})", s));
  Rng rng(seed);
  ExpertLoad load(static_cast<std::size_t>(layers));
  for (auto& row : load) normalize_into(zipf_log_popularity(experts, s, rng), tokens_per_layer, row);
  return load;
}

LoadTrace make_trace(const TraceOptions& o) {
  check("rounds", o.rounds);
  check("layers", o.layers);
  check("experts", o.experts);
  check("rounds_per_day", o.rounds_per_day);
  if (!(o.zipf_s >= 0.0)) throw std::invalid_argument(fmt::format("zipf s must be >= 0 (got {})", o.zipf_s));
  Rng rng(o.seed * 0x2545F4914F6CDD1Dull + static_cast<std::uint64_t>(o.kind));
  const auto layers = static_cast<std::size_t>(o.layers);
  const auto experts = static_cast<std::size_t>(o.experts);

  // Per layer: the starting (day) popularity, the night one, and the walking one.
  std::vector<std::vector<double>> base(layers), night(layers), walk(layers);
  for (std::size_t l = 0; l < layers; ++l) {
    base[l] = zipf_log_popularity(o.experts, o.zipf_s, rng);
    night[l] = zipf_log_popularity(o.experts, o.zipf_s, rng);
    walk[l] = base[l];
  }
  // bursts: [layer] -> (expert, rounds left, multiplier)
  struct Burst {
    int expert = -1;
    int rounds_left = 0;
    double share = 0.0;  // of the layer's tokens while it lasts
  };
  std::vector<Burst> bursts(layers);

  const double sigma = o.kind == TraceKind::drift ? 0.1 : 0.03;  // per round, in log-popularity
  const double pull = 0.01;                                     // towards the start: stationary sd 0.7
  LoadTrace trace(static_cast<std::size_t>(o.rounds), ExpertLoad(layers));
  std::vector<double> mix(experts), day_load, night_load;
  for (int round = 0; round < o.rounds; ++round) {
    const double phase = 2.0 * std::numbers::pi * round / o.rounds_per_day;
    const double night_share = (1.0 - std::cos(phase)) / 2.0;  // 0 at round 0 (day), 1 half a day on
    for (std::size_t l = 0; l < layers; ++l) {
      std::vector<double>& out = trace[static_cast<std::size_t>(round)][l];
      if (round > 0) {
        for (std::size_t e = 0; e < experts; ++e) walk[l][e] += pull * (base[l][e] - walk[l][e]) + sigma * rng.normal();
      }
      switch (o.kind) {
        case TraceKind::drift:
          normalize_into(walk[l], o.tokens_per_round, out);
          break;
        case TraceKind::bursts: {
          normalize_into(walk[l], o.tokens_per_round, out);
          Burst& burst = bursts[l];
          if (burst.rounds_left == 0 && rng.uniform() < 0.05) {
            burst = Burst{.expert = rng.below(o.experts), .rounds_left = 1 + rng.below(6),
                          .share = 0.10 + 0.15 * rng.uniform()};
          }
          if (burst.rounds_left > 0) {
            // The hot expert takes `share` of the tokens; the others keep their proportions.
            const auto hot = static_cast<std::size_t>(burst.expert);
            const double rest = o.tokens_per_round - out[hot];
            for (double& v : out) v *= (1.0 - burst.share) * o.tokens_per_round / rest;
            out[hot] = burst.share * o.tokens_per_round;
            --burst.rounds_left;
          }
          break;
        }
        case TraceKind::day_night: {
          const double tokens = o.tokens_per_round * (0.65 + 0.35 * std::cos(phase));
          for (std::size_t e = 0; e < experts; ++e) mix[e] = walk[l][e] - base[l][e] + night[l][e];
          normalize_into(walk[l], 1.0, day_load);
          normalize_into(mix, 1.0, night_load);
          out.resize(experts);
          for (std::size_t e = 0; e < experts; ++e) {
            out[e] = tokens * ((1.0 - night_share) * day_load[e] + night_share * night_load[e]);
          }
          break;
        }
      }
    }
  }
  return trace;
}

}  // namespace sy::balance
