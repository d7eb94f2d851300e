// Synthetic expert-load traces: Zipf-skewed loads per MoE layer and three ways they change over
// time (drift, hot-expert bursts, day/night shifts). Used by `switchyard simulate-balance`, the
// placement-policy tests and bench/eplb_bench. Pure functions of their options and seed, the
// same on every machine and standard library (own generator and distributions). No CAF.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "balance/migration.hpp"

namespace sy::balance {

// [rounds][layers][experts]: tokens routed to each logical expert in each round.
using LoadTrace = std::vector<ExpertLoad>;

// Zipf(s) loads: in each layer the experts take the ranks 1..experts in a random order (seeded
// per layer) and expert of rank r gets tokens_per_layer * r^-s / sum_k k^-s.
// REQUIRES: layers >= 1, experts >= 1, s >= 0.
ExpertLoad zipf_load(int layers, int experts, double s, std::uint64_t seed, double tokens_per_layer = 1e6);

enum class TraceKind {
  drift,      // Zipf start; every expert's log-popularity walks (sigma 0.1 per round, weak pull back)
  bursts,     // Zipf with slow drift; now and then one expert turns hot (~10-25% of its layer)
              // for 1-6 rounds
  day_night,  // two Zipf mixes (day and night traffic) blended along a 24-hour cosine; total
              // tokens follow the same cycle
};
inline constexpr TraceKind kTraceKinds[] = {TraceKind::drift, TraceKind::bursts, TraceKind::day_night};
const char* to_string(TraceKind kind);
// "drift" | "bursts" | "day-night"; nothing for any other name.
std::optional<TraceKind> trace_kind_from_name(std::string_view name);

struct TraceOptions {
  TraceKind kind = TraceKind::drift;
  int layers = 58;
  int experts = 256;
  int rounds = 144;               // one per rebalancing interval; 144 x 10 min = one day
  int rounds_per_day = 144;       // period of the day/night cycle
  double zipf_s = 1.0;            // skew of the starting popularity
  double tokens_per_round = 1e6;  // per layer, at the daily peak
  std::uint64_t seed = 1;
};

// The trace, [rounds][layers][experts]. Throws std::invalid_argument for rounds, layers or
// experts < 1, rounds_per_day < 1 or zipf_s < 0.
LoadTrace make_trace(const TraceOptions& options);

}  // namespace sy::balance
