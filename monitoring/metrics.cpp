#include "monitoring/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace sy::monitoring {
namespace {

using L = std::string_view;

// Label name lists (shared where families share their series shape).
constexpr std::array<L, 0> no_labels{};
constexpr std::array<L, 1> outcome{"outcome"};
constexpr std::array<L, 2> layer_expert{"layer", "expert"};
constexpr std::array<L, 2> host_slot{"host", "slot"};
constexpr std::array<L, 1> layer{"layer"};
constexpr std::array<L, 2> peer_direction{"peer", "direction"};
constexpr std::array<L, 2> peer_kind{"peer", "kind"};
constexpr std::array<L, 2> node_roles{"node", "roles"};
constexpr std::array<L, 1> state{"state"};

// Bucket boundaries. Request latencies span 1 ms (a cached prefix on an idle node) to minutes
// (long prompts under load); inter-token latency sits in 5–500 ms; dispatch/combine in 10 µs–100
// ms; a migration round in 10 ms–10 min.
constexpr std::array<double, 0> no_buckets{};
constexpr std::array request_seconds{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                                     5.0,   7.5,   10.0, 20.0,  40.0, 80.0, 160.0, 320.0, 640.0};
constexpr std::array token_seconds{0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
                                   0.1,   0.15, 0.2,   0.3,  0.4,   0.5,  0.75, 1.0,  2.5};
constexpr std::array comm_seconds{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1};
constexpr std::array migration_seconds{0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0};

using T = MetricType;

constexpr std::array<MetricInfo, metric_count> entries{{
    {Metric::requests, "switchyard_requests_total", T::counter, "requests",
     "Finished client requests by outcome (ok, error, cancelled, rejected, timeout).", outcome, no_buckets},
    {Metric::request_queue_time, "switchyard_request_queue_time_seconds", T::histogram, "seconds",
     "Time a request waited before its prefill started.", no_labels, request_seconds},
    {Metric::time_to_first_token, "switchyard_time_to_first_token_seconds", T::histogram, "seconds",
     "Time from request arrival to its first generated token.", no_labels, request_seconds},
    {Metric::inter_token_latency, "switchyard_inter_token_latency_seconds", T::histogram, "seconds",
     "Time between consecutive generated tokens of one request.", no_labels, token_seconds},
    {Metric::e2e_request_latency, "switchyard_e2e_request_latency_seconds", T::histogram, "seconds",
     "Time from request arrival to its last token.", no_labels, request_seconds},
    {Metric::prompt_tokens, "switchyard_prompt_tokens_total", T::counter, "tokens",
     "Prompt tokens of admitted requests.", no_labels, no_buckets},
    {Metric::generation_tokens, "switchyard_generation_tokens_total", T::counter, "tokens",
     "Generated tokens.", no_labels, no_buckets},
    {Metric::requests_running, "switchyard_num_requests_running", T::gauge, "requests",
     "Requests in a running batch on this node.", no_labels, no_buckets},
    {Metric::requests_waiting, "switchyard_num_requests_waiting", T::gauge, "requests",
     "Requests admitted but waiting for a batch slot or KV pages on this node.", no_labels, no_buckets},
    {Metric::kv_pages_used, "switchyard_kv_pages_used", T::gauge, "pages",
     "Latent-cache pages in use (64 tokens each) on this decode node.", no_labels, no_buckets},
    {Metric::kv_pages_free, "switchyard_kv_pages_free", T::gauge, "pages",
     "Latent-cache pages free on this decode node.", no_labels, no_buckets},
    {Metric::prefix_cache_queries, "switchyard_prefix_cache_queries_tokens_total", T::counter, "tokens",
     "Prompt tokens looked up in the prefix cache (hit rate = rate(hits) / rate(queries)).", no_labels, no_buckets},
    {Metric::prefix_cache_hits, "switchyard_prefix_cache_hits_tokens_total", T::counter, "tokens",
     "Prompt tokens found in the prefix cache.", no_labels, no_buckets},
    {Metric::mtp_draft_tokens, "switchyard_mtp_draft_tokens_total", T::counter, "tokens",
     "Tokens drafted by multi-token prediction.", no_labels, no_buckets},
    {Metric::mtp_accepted_tokens, "switchyard_mtp_accepted_tokens_total", T::counter, "tokens",
     "Drafted tokens accepted by verification (acceptance = rate(accepted) / rate(draft)).", no_labels,
     no_buckets},
    {Metric::expert_tokens, "switchyard_expert_tokens_total", T::counter, "tokens",
     "Tokens routed to each logical expert of each MoE layer.", layer_expert, no_buckets},
    {Metric::expert_slot_load, "switchyard_expert_slot_load_tokens", T::gauge, "tokens",
     "Tokens per second handled by each physical expert slot of each host over the load window.", host_slot,
     no_buckets},
    {Metric::eplb_balancedness, "switchyard_eplb_balancedness", T::gauge, "ratio",
     "Mean over max of per-slot load in a MoE layer (1 = perfectly balanced).", layer, no_buckets},
    {Metric::eplb_rearrangements, "switchyard_eplb_rearrangements_total", T::counter, "rounds",
     "Rebalance rounds by outcome (completed, failed, aborted).", outcome, no_buckets},
    {Metric::eplb_expert_moves, "switchyard_eplb_expert_moves_total", T::counter, "experts",
     "Expert replicas moved between slots by rebalancing.", no_labels, no_buckets},
    {Metric::eplb_bytes_moved, "switchyard_eplb_moved_bytes_total", T::counter, "bytes",
     "Expert weight bytes moved by rebalancing.", no_labels, no_buckets},
    {Metric::eplb_rearrangement_seconds, "switchyard_eplb_rearrangement_seconds", T::histogram, "seconds",
     "Duration of one rebalance round (plan to epoch switch).", no_labels, migration_seconds},
    {Metric::placement_epoch, "switchyard_placement_epoch", T::gauge, "epoch",
     "Current expert placement epoch.", no_labels, no_buckets},
    {Metric::moe_dispatch_seconds, "switchyard_moe_dispatch_seconds", T::histogram, "seconds",
     "Time to dispatch one layer's tokens to their expert hosts.", no_labels, comm_seconds},
    {Metric::moe_combine_seconds, "switchyard_moe_combine_seconds", T::histogram, "seconds",
     "Time to combine one layer's expert outputs back.", no_labels, comm_seconds},
    {Metric::transport_messages, "switchyard_transport_messages_total", T::counter, "messages",
     "Transport messages per peer and direction (in, out).", peer_direction, no_buckets},
    {Metric::transport_bytes, "switchyard_transport_bytes_total", T::counter, "bytes",
     "Transport message bytes (header and payload) per peer and direction (in, out).", peer_direction,
     no_buckets},
    {Metric::transport_errors, "switchyard_transport_errors_total", T::counter, "errors",
     "Transport errors per peer and kind (send_failed, bad_frame).", peer_kind, no_buckets},
    {Metric::node_up, "switchyard_node_up", T::gauge, "bool",
     "1 while the node process runs (labels: its name and roles).", node_roles, no_buckets},
    {Metric::node_peers, "switchyard_node_peers", T::gauge, "peers",
     "Configured peers of this node by connection state (waiting, connected, hello, ready, left, lost).",
     state, no_buckets},
    {Metric::node_bad_frames, "switchyard_node_bad_frames_total", T::counter, "frames",
     "Frames refused by the wire decoder (malformed, wrong kind or version, invalid).", no_labels, no_buckets},
    {Metric::node_unrouted_frames, "switchyard_node_unrouted_frames_total", T::counter, "frames",
     "Valid messages of a kind no actor on this node takes; dropped.", no_labels, no_buckets},
}};

// The count check: every Metric has exactly one entry, in enum order.
static_assert(entries.size() == static_cast<std::size_t>(Metric::node_unrouted_frames) + 1,
              "metric_count and the Metric enum disagree: update both and the table");
constexpr bool in_order() {
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (static_cast<std::size_t>(entries[i].metric) != i) return false;
  }
  return true;
}
static_assert(in_order(), "the metric table must list every Metric once, in enum order");
constexpr bool well_formed() {
  for (const MetricInfo& m : entries) {
    if (!m.name.starts_with("switchyard_") || m.help.empty() || m.unit.empty()) return false;
    if ((m.type == MetricType::counter) != m.name.ends_with("_total")) return false;
    if ((m.type == MetricType::histogram) == m.buckets.empty()) return false;
    for (std::size_t i = 1; i < m.buckets.size(); ++i) {
      if (!(m.buckets[i - 1] < m.buckets[i])) return false;
    }
  }
  return true;
}
static_assert(well_formed(), "names start with switchyard_, counters (only) end in _total, histograms "
                             "(only) have increasing buckets, help and unit are set");

const char* type_check_name(MetricType t) {
  return t == MetricType::counter ? "counter" : t == MetricType::gauge ? "gauge" : "histogram";
}

const MetricInfo& checked(Metric metric, MetricType want) {
  const MetricInfo& m = info(metric);
  if (m.type != want) {
    throw std::logic_error(fmt::format("metric {} is a {}, not a {}", m.name, type_check_name(m.type),
                                       type_check_name(want)));
  }
  return m;
}

}  // namespace

std::string_view metric_type_name(MetricType type) { return type_check_name(type); }

std::span<const MetricInfo> table() { return entries; }

const MetricInfo& info(Metric metric) {
  const auto i = static_cast<std::size_t>(metric);
  if (i >= entries.size()) throw std::out_of_range(fmt::format("no metric {}", i));
  return entries[i];
}

const MetricInfo* find(std::string_view name) {
  const auto it = std::find_if(entries.begin(), entries.end(), [&](const MetricInfo& m) { return m.name == name; });
  return it == entries.end() ? nullptr : &*it;
}

prometheus::Labels labels(Metric metric, std::initializer_list<std::string> values) {
  const MetricInfo& m = info(metric);
  if (values.size() != m.labels.size()) {
    throw std::invalid_argument(fmt::format("metric {} takes {} label values, got {}", m.name, m.labels.size(),
                                            values.size()));
  }
  prometheus::Labels out;
  auto value = values.begin();
  for (std::string_view name : m.labels) out.emplace(std::string(name), *value++);
  return out;
}

std::string table_text() {
  std::string out;
  for (const MetricInfo& m : entries) {
    std::string label_list, bucket_list;
    for (std::string_view l : m.labels) label_list += (label_list.empty() ? "" : ",") + std::string(l);
    for (double b : m.buckets) bucket_list += (bucket_list.empty() ? "" : ",") + fmt::format("{}", b);
    out += fmt::format("{} {} {} labels={} buckets={} {}\n", m.name, metric_type_name(m.type), m.unit,
                       label_list.empty() ? "-" : label_list, bucket_list.empty() ? "-" : bucket_list, m.help);
  }
  return out;
}

Registry::Registry() : registry_(std::make_shared<prometheus::Registry>()) {}
Registry::~Registry() = default;

prometheus::Family<prometheus::Counter>& Registry::counter(Metric metric) {
  const MetricInfo& m = checked(metric, MetricType::counter);
  return prometheus::BuildCounter().Name(std::string(m.name)).Help(std::string(m.help)).Register(*registry_);
}

prometheus::Family<prometheus::Gauge>& Registry::gauge(Metric metric) {
  const MetricInfo& m = checked(metric, MetricType::gauge);
  return prometheus::BuildGauge().Name(std::string(m.name)).Help(std::string(m.help)).Register(*registry_);
}

prometheus::Family<prometheus::Histogram>& Registry::histogram(Metric metric) {
  const MetricInfo& m = checked(metric, MetricType::histogram);
  return prometheus::BuildHistogram().Name(std::string(m.name)).Help(std::string(m.help)).Register(*registry_);
}

prometheus::Histogram::BucketBoundaries Registry::buckets(Metric metric) {
  const MetricInfo& m = checked(metric, MetricType::histogram);
  return {m.buckets.begin(), m.buckets.end()};
}

void Registry::add_collector(std::weak_ptr<prometheus::Collectable> collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

prometheus::MetricFamily Registry::describe(Metric metric) {
  const MetricInfo& m = info(metric);
  prometheus::MetricFamily family;
  family.name = std::string(m.name);
  family.help = std::string(m.help);
  family.type = m.type == MetricType::counter ? prometheus::MetricType::Counter
                : m.type == MetricType::gauge ? prometheus::MetricType::Gauge
                                              : prometheus::MetricType::Histogram;
  return family;
}

std::vector<prometheus::MetricFamily> Registry::Collect() const {
  std::vector<prometheus::MetricFamily> out = registry_->Collect();
  std::vector<std::shared_ptr<prometheus::Collectable>> live;
  {
    std::lock_guard lock(mutex_);
    for (const auto& weak : collectors_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (const auto& c : live) {
    for (prometheus::MetricFamily& f : c->Collect()) out.push_back(std::move(f));
  }
  return out;
}

}  // namespace sy::monitoring
