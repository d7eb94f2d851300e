// Every Switchyard metric family in one table: name (switchyard_*), type, unit, help, label names
// and, for histograms, bucket boundaries (DESIGN.md "Metrics"). The table only names things: a
// family is registered by the component that updates it (STYLE "Components own their metrics"),
// through Registry's helpers, so names, help and buckets come from here alone. Names follow vLLM
// and SGLang where the meaning matches (spec/peers.md §3), so dashboards and habits carry over.
// Threading: the table is constant; Registry is thread-safe (prometheus-cpp's registry is).
// Ownership: main builds one Registry per process and passes it in (no singletons).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/labels.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include "transport/thread_annotations.hpp"

namespace sy::monitoring {

// One entry per family, in the table's order (metrics.cpp). Adding one here breaks the build
// until the table (and metric_count) know it.
enum class Metric : std::uint16_t {
  // Requests (router, prefill, decode).
  requests,
  request_queue_time,
  time_to_first_token,
  inter_token_latency,
  e2e_request_latency,
  prompt_tokens,
  generation_tokens,
  requests_running,
  requests_waiting,
  // KV cache and prefix cache (decode, prefill).
  kv_pages_used,
  kv_pages_free,
  prefix_cache_queries,
  prefix_cache_hits,
  // Multi-token prediction (decode).
  mtp_draft_tokens,
  mtp_accepted_tokens,
  // Experts and balancing (load_stats, controller, expert_host).
  expert_tokens,
  expert_slot_load,
  eplb_balancedness,
  eplb_rearrangements,
  eplb_expert_moves,
  eplb_bytes_moved,
  eplb_rearrangement_seconds,
  placement_epoch,
  moe_dispatch_seconds,
  moe_combine_seconds,
  // Transport (the node's transport bridge).
  transport_messages,
  transport_bytes,
  transport_errors,
  // Node (bootstrap and bridge).
  node_up,
  node_peers,
  node_bad_frames,
  node_unrouted_frames,
};
inline constexpr std::size_t metric_count = 32;

enum class MetricType : std::uint8_t { counter, gauge, histogram };
std::string_view metric_type_name(MetricType type);  // "counter", "gauge", "histogram"

struct MetricInfo {
  Metric metric;
  std::string_view name;  // full Prometheus name, switchyard_*; counters end in _total
  MetricType type;
  std::string_view unit;  // "seconds", "tokens", "bytes", "pages", "requests", "messages", "ratio", ...
  std::string_view help;
  std::span<const std::string_view> labels;  // label names, in the order labels() takes values
  std::span<const double> buckets;           // histograms only: upper bounds, increasing
};

// The whole table, in Metric order (table()[i].metric == Metric(i)).
std::span<const MetricInfo> table();
const MetricInfo& info(Metric metric);
// The entry with this family name (suffixes _bucket/_sum/_count are not stripped), or none.
const MetricInfo* find(std::string_view name);

// Label set for one series of `metric`: values in the order of info(metric).labels. Throws
// std::invalid_argument when the count differs, so a series cannot miss or invent a label.
prometheus::Labels labels(Metric metric, std::initializer_list<std::string> values);

// The table as text, one family a line: "NAME TYPE UNIT labels=a,b buckets=... HELP" (for
// `promtool`-side checks and docs).
std::string table_text();

// A process's metrics: a prometheus::Registry of families built from the table, plus collectors
// that read counts their component keeps anyway at scrape time. Exporter serves it.
class Registry : public prometheus::Collectable {
 public:
  Registry();
  ~Registry() override;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The family of `metric` (registered on first use; later calls return the same family).
  // Throws std::logic_error when the table gives the metric another type.
  prometheus::Family<prometheus::Counter>& counter(Metric metric);
  prometheus::Family<prometheus::Gauge>& gauge(Metric metric);
  prometheus::Family<prometheus::Histogram>& histogram(Metric metric);
  // The table's bucket boundaries for a histogram metric (for family.Add(labels, buckets)).
  static prometheus::Histogram::BucketBoundaries buckets(Metric metric);

  // A component that keeps its own counts exposes them with a collector whose Collect() builds
  // families with describe(); the registry holds it weakly (drop it to unregister).
  void add_collector(std::weak_ptr<prometheus::Collectable> collector);
  // An empty MetricFamily with the table's name, help and type.
  static prometheus::MetricFamily describe(Metric metric);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mutex_;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectors_ SY_GUARDED_BY(mutex_);
};

}  // namespace sy::monitoring
