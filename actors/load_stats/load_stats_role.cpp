#include "actors/load_stats/load_stats_role.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "actors/messages.hpp"
#include "monitoring/metrics.hpp"

namespace sy::actors::load_stats {
namespace {

using Clock = std::chrono::steady_clock;

struct Report {
  Clock::time_point received;
  std::string host;
  std::int64_t layers = 0;
  std::int64_t experts = 0;
  std::vector<std::uint64_t> tokens;  // [layers * experts]
};

class Role final : public LoadStatsRole {
 public:
  Role(node::RoleContext& context, LoadStatsOptions options) : me_(context.me), options_(options) {
    if (context.metrics != nullptr) family_ = &context.metrics->counter(monitoring::Metric::expert_tokens);
    Role* role = this;
    actor_ = context.system.spawn([role](caf::event_based_actor*) -> caf::behavior {
      return {[role](const received<schemas::ExpertLoadReport>& m) { role->add(m); }};
    });
    context.bridge.route(schemas::MessageKind::expert_load_report, actor_);
  }
  ~Role() override { stop(); }

  std::string name() const override { return "load_stats"; }
  void stop() override {
    if (stopped_.exchange(true)) return;
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  }

  LoadSnapshot snapshot() const override {
    std::lock_guard lock(mutex_);
    LoadSnapshot s;
    s.window_s = std::chrono::duration<double>(options_.window).count();
    const Clock::time_point since = Clock::now() - options_.window;
    for (const Report& r : history_) {
      if (r.received < since) continue;
      if (s.tokens.empty()) {
        s.layers = r.layers;
        s.experts = r.experts;
        s.tokens.assign(static_cast<std::size_t>(r.layers), std::vector<std::uint64_t>(static_cast<std::size_t>(r.experts)));
      }
      if (r.layers != s.layers || r.experts != s.experts) continue;  // another model shape: not comparable
      std::uint64_t& host_total = s.host_tokens[r.host];
      for (const std::uint64_t v : r.tokens) host_total += v;
      for (std::int64_t l = 0; l < r.layers; ++l) {
        for (std::int64_t e = 0; e < r.experts; ++e) {
          s.tokens[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)] += r.tokens[static_cast<std::size_t>(l * r.experts + e)];
        }
      }
      ++s.reports;
    }
    return s;
  }

 private:
  void add(const received<schemas::ExpertLoadReport>& m) {
    const auto r = m.reader();
    Report report{Clock::now(), r.getHost(), r.getLayers(), r.getExperts(), {}};
    report.tokens.reserve(r.getTokens().size());
    for (const std::uint64_t v : r.getTokens()) report.tokens.push_back(v);
    std::lock_guard lock(mutex_);
    if (family_ != nullptr) {
      for (std::int64_t l = 0; l < report.layers; ++l) {
        for (std::int64_t e = 0; e < report.experts; ++e) {
          const std::uint64_t v = report.tokens[static_cast<std::size_t>(l * report.experts + e)];
          if (v == 0 && counters_.count({l, e}) != 0) continue;
          prometheus::Counter*& c = counters_[{l, e}];
          if (c == nullptr) {
            // Layers without routed experts report zeros: leave them out of the metric.
            if (v == 0) {
              counters_.erase({l, e});
              continue;
            }
            c = &family_->Add(monitoring::labels(monitoring::Metric::expert_tokens, {std::to_string(l), std::to_string(e)}));
          }
          c->Increment(static_cast<double>(v));
        }
      }
    }
    history_.push_back(std::move(report));
    const Clock::time_point since = Clock::now() - options_.window;
    while (!history_.empty() && (history_.size() > options_.max_reports || history_.front().received < since)) {
      history_.pop_front();
    }
  }

  const config::NodeConfig& me_;
  const LoadStatsOptions options_;
  caf::actor actor_;
  std::atomic<bool> stopped_{false};
  mutable std::mutex mutex_;
  std::deque<Report> history_;
  prometheus::Family<prometheus::Counter>* family_ = nullptr;
  std::map<std::pair<std::int64_t, std::int64_t>, prometheus::Counter*> counters_;
};

}  // namespace

std::unique_ptr<LoadStatsRole> make_load_stats_role(node::RoleContext& context, LoadStatsOptions options) {
  return std::make_unique<Role>(context, options);
}

}  // namespace sy::actors::load_stats
