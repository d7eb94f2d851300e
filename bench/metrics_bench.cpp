// The serving metrics' cost per generated token, on the updates the roles make (router: one
// generated-tokens increment and one inter-token-latency observation per token; decode: four
// gauge sets and two MTP increments per batch step, here charged to every token as if each step
// made one) against the same loop with metrics off (null pointers, what the roles run with
// `[cluster] metrics = false`), in the same run. bench/metrics_overhead.sh measures the whole
// cluster; this isolates the part the metrics add, which the shared machine's noise hides there.
// Run: metrics_bench [--tokens N] (default 2,000,000 per repetition, 15 repetitions).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "monitoring/metrics.hpp"

namespace {

using sy::monitoring::Metric;
using sy::monitoring::Registry;
using Clock = std::chrono::steady_clock;

struct Series {
  prometheus::Counter* tokens = nullptr;
  prometheus::Histogram* itl = nullptr;
  prometheus::Gauge* gauges[4] = {};
  prometheus::Counter* mtp[2] = {};
};

// One token as the roles account it; volatile sink keeps the off loop from vanishing.
volatile double sink = 0;
void token(const Series& s, double gap) {
  if (s.tokens != nullptr) s.tokens->Increment(1.0);
  if (s.itl != nullptr) s.itl->Observe(gap);
  if (s.gauges[0] != nullptr) {
    for (prometheus::Gauge* g : s.gauges) g->Set(gap);
    for (prometheus::Counter* c : s.mtp) c->Increment(1.0);
  }
  sink = gap;
}

double ns_per_token(const Series& s, long n) {
  const auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) token(s, 0.001 * static_cast<double>(i % 97));
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  long n = 2'000'000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--tokens") == 0) n = std::atol(argv[i + 1]);
  }
  Registry registry;
  Series on;
  on.tokens = &registry.counter(Metric::generation_tokens).Add({});
  on.itl = &registry.histogram(Metric::inter_token_latency).Add({}, Registry::buckets(Metric::inter_token_latency));
  const Metric gauges[4] = {Metric::requests_running, Metric::requests_waiting, Metric::kv_pages_used,
                            Metric::kv_pages_free};
  for (int i = 0; i < 4; ++i) on.gauges[i] = &registry.gauge(gauges[i]).Add({});
  on.mtp[0] = &registry.counter(Metric::mtp_draft_tokens).Add({});
  on.mtp[1] = &registry.counter(Metric::mtp_accepted_tokens).Add({});
  const Series off;

  std::vector<double> t_on, t_off;
  for (int r = 0; r < 15; ++r) {
    t_off.push_back(ns_per_token(off, n));
    t_on.push_back(ns_per_token(on, n));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double on_ns = median(t_on), off_ns = median(t_off);
  fmt::print("{} tokens x 15 repetitions (ns per token, median (min-max))\n", n);
  fmt::print("| setup | ns/token | added ns/token |\n|---|---|---|\n");
  fmt::print("| metrics off (null series) | {:.1f} ({:.1f}-{:.1f}) | 0 |\n", off_ns,
             *std::min_element(t_off.begin(), t_off.end()), *std::max_element(t_off.begin(), t_off.end()));
  fmt::print("| metrics on | {:.1f} ({:.1f}-{:.1f}) | **{:.1f}** |\n", on_ns,
             *std::min_element(t_on.begin(), t_on.end()), *std::max_element(t_on.begin(), t_on.end()), on_ns - off_ns);
  fmt::print("throughput ratio bound at D decode tokens/s: 1 / (1 + D x {:.1f} ns); at 1000 tok/s: {:.6f}\n",
             on_ns - off_ns, 1.0 / (1.0 + 1000.0 * (on_ns - off_ns) * 1e-9));
  return 0;
}
