// The load_stats role (DESIGN.md "Roles"): aggregates the expert hosts' token counts per
// (layer, logical expert). Every ExpertLoadReport adds to the running totals, exported as
// switchyard_expert_tokens_total{layer, expert} on this node's /metrics, and is kept in a sliding
// window (the last `window` of reports by their end time, at most `max_reports`, so history is
// bounded) that snapshot() sums: what the rebalancing controller reads to run EPLB.
// Threading: reports arrive on the role's actor; snapshot() and the metrics scrape read under the
// role's mutex from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/node/node_role.hpp"

namespace sy::actors::load_stats {

struct LoadStatsOptions {
  std::chrono::milliseconds window{60000};  // sliding window of snapshot()
  std::size_t max_reports = 4096;           // history bound, whatever the window
};

// Tokens per (layer, logical expert) over the window: [layers][experts].
struct LoadSnapshot {
  std::int64_t layers = 0;
  std::int64_t experts = 0;
  std::vector<std::vector<std::uint64_t>> tokens;
  std::size_t reports = 0;  // reports in the window
  double window_s = 0;      // the window's length
  std::map<std::string, std::uint64_t> host_tokens;  // token rows each reporting host ran in it
};

class LoadStatsRole : public node::NodeRole {
 public:
  virtual LoadSnapshot snapshot() const = 0;
};

std::unique_ptr<LoadStatsRole> make_load_stats_role(node::RoleContext& context, LoadStatsOptions options);

}  // namespace sy::actors::load_stats
