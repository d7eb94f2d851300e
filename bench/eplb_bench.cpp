// Placement speed at DeepSeek scale: EPLB (balance/eplb.hpp, the baseline) and the balanced
// policies (balance/placement_policy.hpp) on Zipf(1.0) loads of 61 layers x 256 experts -> 288
// slots, for EP32 prefill (32 GPUs, 4 nodes, 8 groups: EPLB's hierarchical policy; the issue's
// target is a median <= 5 ms) and EP144 decode (144 GPUs, 18 nodes: the global policy). Ends with
// one table: median/min/max ms per call over repetitions, the time as a multiple of EPLB's on the
// same shape measured in the same run, and the placement's max/mean GPU load (mean over layers).
// Run: eplb_bench [google-benchmark flags], e.g. --benchmark_repetitions=20.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "balance/load_trace.hpp"
#include "balance/placement_policy.hpp"

namespace {

using sy::balance::EplbShape;
using sy::balance::PlacementPolicy;

struct Case {
  std::string name;
  EplbShape shape;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"ep32", {.num_replicas = 288, .num_groups = 8, .num_nodes = 4, .num_gpus = 32}},
      {"ep144", {.num_replicas = 288, .num_groups = 8, .num_nodes = 18, .num_gpus = 144}},
  };
  return all;
}

std::map<std::string, double>& quality() {  // benchmark name -> max/mean GPU load
  static std::map<std::string, double> q;
  return q;
}

void register_benchmarks(const sy::balance::ExpertLoad& load) {
  for (const Case& c : cases()) {
    for (const PlacementPolicy policy : sy::balance::kPlacementPolicies) {
      const std::string name = std::string(sy::balance::to_string(policy)) + "/" + c.name;
      const EplbShape shape = c.shape;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [&load, shape, policy, name](benchmark::State& state) {
                                     std::vector<std::vector<int>> phy2log;
                                     for (auto _ : state) {
                                       phy2log = sy::balance::place_experts(policy, load, shape).phy2log;
                                       benchmark::DoNotOptimize(phy2log.data());
                                     }
                                     const std::vector<double> ratio =
                                         sy::balance::max_over_mean_gpu_load(phy2log, load, shape.num_gpus);
                                     quality()[name] = std::accumulate(ratio.begin(), ratio.end(), 0.0) /
                                                       static_cast<double>(ratio.size());
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->Repetitions(10)
          ->ReportAggregatesOnly(true)
          ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
          ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
    }
  }
}

// Google Benchmark's usual lines, then the summary table in ms per call.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Aggregate) ms_[r.run_name.function_name][r.aggregate_name] = r.GetAdjustedRealTime();
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n61 layers x 256 experts -> 288 slots, Zipf(1.0) loads\n");
    std::printf("%-24s %10s %10s %10s %8s %14s\n", "policy/shape (ms)", "median", "min", "max", "x eplb", "max/mean GPU");
    for (const Case& c : cases()) {
      for (const PlacementPolicy policy : sy::balance::kPlacementPolicies) {
        const std::string name = std::string(sy::balance::to_string(policy)) + "/" + c.name;
        const auto it = ms_.find(name);
        if (it == ms_.end()) continue;
        const auto base = ms_.find("eplb/" + c.name);
        const auto get = [](const std::map<std::string, double>& m, const char* key) {
          const auto v = m.find(key);
          return v == m.end() ? 0.0 : v->second;
        };
        const double median = get(it->second, "median");
        const double base_median = base == ms_.end() ? 0.0 : get(base->second, "median");
        std::printf("%-24s %10.2f %10.2f %10.2f %8.1f %14.3f\n", name.c_str(), median, get(it->second, "min"),
                    get(it->second, "max"), base_median > 0 ? median / base_median : 0.0, quality()[name]);
      }
    }
  }

 private:
  std::map<std::string, std::map<std::string, double>> ms_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  try {
    const sy::balance::ExpertLoad load = sy::balance::zipf_load(61, 256, 1.0, /*seed=*/1);
    register_benchmarks(load);
    TableReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eplb_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
