// `switchyard simulate-balance`: replays synthetic expert-load traces (balance/load_trace.hpp) at
// DeepSeek scale against four ways of keeping the placement current (balance/simulation.hpp: no
// rebalancing, full EPLB every round, the migration-aware capped mode, the balanced policy) and
// prints balancedness over time, then a summary. Writes, per trace, <scenario>-<trace>.csv,
// .json and .svg (a line plot written here, no plotting tool needed) into --output-dir.
// Single-threaded; deterministic for a seed.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/switchyard/commands.hpp"
#include "balance/simulation.hpp"

namespace sy::apps {
namespace {

// V3 routed expert in FP8: gate, up and down projections (3 x 7168 x 2048 bytes) plus their
// 128x128-block float32 scales (3 x 56 x 16 x 4 bytes).
constexpr std::uint64_t kV3ExpertBytes = 3ull * 7168 * 2048 + 3ull * 56 * 16 * 4;

struct Scenario {
  const char* name;
  const char* what;
  int layers;
  int experts;
  balance::EplbShape shape;
  int rounds;  // default rounds: one day of 10-minute intervals, or 24 for quick
};

// spec/deepseek-v3.md §7: prefill EP32 with 32 redundant experts (4 nodes of 8 GPUs), decode
// EP144 with 32 redundant (18 nodes, 2 slots per GPU), decode EP320 one expert per GPU
// (256 + 64 redundant, 40 nodes). 8 groups: hierarchical EPLB on EP32, global on the others.
const Scenario kScenarios[] = {
    {"ep32-prefill", "58 layers x 256 experts -> 288 slots on 32 GPUs, 4 nodes, 8 groups", 58, 256,
     {.num_replicas = 288, .num_groups = 8, .num_nodes = 4, .num_gpus = 32}, 144},
    {"ep144-decode", "58 layers x 256 experts -> 288 slots on 144 GPUs, 18 nodes, 8 groups", 58, 256,
     {.num_replicas = 288, .num_groups = 8, .num_nodes = 18, .num_gpus = 144}, 144},
    {"ep320-decode", "58 layers x 256 experts -> 320 slots on 320 GPUs (one each), 40 nodes", 58, 256,
     {.num_replicas = 320, .num_groups = 8, .num_nodes = 40, .num_gpus = 320}, 144},
    {"quick", "4 layers x 32 experts -> 40 slots on 8 GPUs, 2 nodes, 4 groups (tests)", 4, 32,
     {.num_replicas = 40, .num_groups = 4, .num_nodes = 2, .num_gpus = 8}, 24},
};

struct SimulateArgs {
  std::string scenario = "ep32-prefill";
  bool quick = false;
  std::string trace = "all";
  int rounds = 0;  // 0: the scenario's
  int window = 2;
  double max_move_fraction = 0.1;
  std::uint64_t seed = 1;
  std::vector<std::string> strategies;
  std::string output_dir = ".";
  int print_every = 0;  // 0: about 24 rows
};

const char* const kColors[] = {"#7f7f7f", "#1f77b4", "#2ca02c", "#d62728"};

// A line plot of balancedness per round, one line per strategy, written as plain SVG.
std::string svg_plot(const std::string& title, const balance::SimulationResult& result) {
  const double width = 760, height = 420, left = 70, right = 170, top = 40, bottom = 50;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  std::size_t rounds = 0;
  double low = 1.0;
  for (const auto& run : result.runs) {
    rounds = std::max(rounds, run.balancedness.size());
    for (const double b : run.balancedness) low = std::min(low, b);
  }
  low = std::max(0.0, std::floor(low * 20.0 - 0.5) / 20.0);  // down to a multiple of 0.05
  const double high = 1.0;
  const auto x_of = [&](std::size_t round) {
    return left + plot_w * (rounds > 1 ? static_cast<double>(round) / static_cast<double>(rounds - 1) : 0.0);
  };
  const auto y_of = [&](double b) { return top + plot_h * (high - b) / (high - low); };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"14\">{3}</text>\n",
      width, height, left, title);
  // Axes, grid and ticks.
  for (int i = 0; i <= 5; ++i) {
    const double b = low + (high - low) * i / 5.0;
    const double y = y_of(b);
    svg += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", left, y,
                       left + plot_w, y);
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.2f}</text>\n", left - 6, y + 4, b);
  }
  const std::size_t step = std::max<std::size_t>(1, (rounds + 7) / 8);
  for (std::size_t r = 0; r < rounds; r += step) {
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x_of(r),
                       top + plot_h + 18, r);
  }
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n"
      "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">round (one rebalancing interval)</text>\n"
      "<text transform=\"translate(18,{:.1f}) rotate(-90)\" text-anchor=\"middle\">balancedness "
      "(mean/max GPU load)</text>\n",
      left, top, plot_w, plot_h, left + plot_w / 2, height - 10, top + plot_h / 2);
  for (std::size_t i = 0; i < result.runs.size(); ++i) {
    const auto& run = result.runs[i];
    const char* color = kColors[static_cast<std::size_t>(run.strategy) % std::size(kColors)];
    std::string points;
    for (std::size_t r = 0; r < run.balancedness.size(); ++r) {
      points += fmt::format("{:.1f},{:.1f} ", x_of(r), y_of(run.balancedness[r]));
    }
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", color, points);
    const double y = top + 16 + 20 * static_cast<double>(i);
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"3\"/>"
        "<text x=\"{4}\" y=\"{5}\">{6} ({7:.3f})</text>\n",
        left + plot_w + 12, y, left + plot_w + 32, color, left + plot_w + 38, y + 4, balance::to_string(run.strategy),
        run.mean_balancedness());
  }
  svg += "</svg>\n";
  return svg;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path.string()));
}

std::string csv_of(const balance::SimulationResult& result) {
  std::string csv = "round";
  for (const auto& run : result.runs) {
    const char* s = balance::to_string(run.strategy);
    csv += fmt::format(",{0}_balancedness,{0}_max_over_mean,{0}_moves", s);
  }
  csv += "\n";
  const std::size_t rounds = result.runs.empty() ? 0 : result.runs.front().balancedness.size();
  for (std::size_t r = 0; r < rounds; ++r) {
    csv += std::to_string(r);
    for (const auto& run : result.runs) {
      csv += fmt::format(",{:.6f},{:.6f},{}", run.balancedness[r], run.max_over_mean[r], run.moves[r]);
    }
    csv += "\n";
  }
  return csv;
}

int run_simulate(const SimulateArgs& a) {
  const std::string scenario_name = a.quick ? "quick" : a.scenario;
  const Scenario* scenario = nullptr;
  for (const Scenario& s : kScenarios) {
    if (scenario_name == s.name) scenario = &s;
  }
  if (!scenario) {
    throw std::invalid_argument(fmt::format(
        "unknown scenario \"{}\" (ep32-prefill, ep144-decode, ep320-decode, quick)", scenario_name));
  }
  std::vector<balance::TraceKind> kinds;
  if (a.trace == "all") {
    kinds.assign(std::begin(balance::kTraceKinds), std::end(balance::kTraceKinds));
  } else if (const auto kind = balance::trace_kind_from_name(a.trace)) {
    kinds.push_back(*kind);
  } else {
    throw std::invalid_argument(fmt::format("unknown trace \"{}\" (drift, bursts, day-night, all)", a.trace));
  }
  balance::SimulationOptions options;
  options.shape = scenario->shape;
  options.window = a.window;
  options.max_move_fraction = a.max_move_fraction;
  options.bytes_per_expert = kV3ExpertBytes;
  if (!a.strategies.empty()) {
    options.strategies.clear();
    for (const std::string& name : a.strategies) {
      const auto strategy = balance::strategy_from_name(name);
      if (!strategy) {
        throw std::invalid_argument(fmt::format("unknown strategy \"{}\" (none, eplb, capped, balanced)", name));
      }
      options.strategies.push_back(*strategy);
    }
  }
  const int rounds = a.rounds > 0 ? a.rounds : scenario->rounds;
  std::filesystem::create_directories(a.output_dir);

  std::cout << fmt::format("simulate-balance: {} ({}); {} rounds, window {}, capped at {:.0f}% of slots per round, "
                           "seed {}\n",
                           scenario->name, scenario->what, rounds, a.window, 100 * a.max_move_fraction, a.seed);
  for (const balance::TraceKind kind : kinds) {
    balance::TraceOptions trace_options;
    trace_options.kind = kind;
    trace_options.layers = scenario->layers;
    trace_options.experts = scenario->experts;
    trace_options.rounds = rounds;
    trace_options.rounds_per_day = scenario->rounds;
    trace_options.seed = a.seed;
    const balance::LoadTrace trace = balance::make_trace(trace_options);
    const balance::SimulationResult result = balance::simulate(trace, options);

    const std::string base = fmt::format("{}-{}", scenario->name, balance::to_string(kind));
    std::cout << fmt::format("\ntrace {}: balancedness (mean/max GPU load, mean over layers) per round\n{:>5}",
                             balance::to_string(kind), "round");
    for (const auto& run : result.runs) std::cout << fmt::format(" {:>9}", balance::to_string(run.strategy));
    std::cout << "\n";
    const int every = a.print_every > 0 ? a.print_every : std::max(1, rounds / 24);
    for (int r = 0; r < rounds; ++r) {
      if (r % every != 0 && r != rounds - 1) continue;
      std::cout << fmt::format("{:>5}", r);
      for (const auto& run : result.runs) std::cout << fmt::format(" {:>9.4f}", run.balancedness[static_cast<std::size_t>(r)]);
      std::cout << "\n";
    }
    std::cout << fmt::format("{:<9} {:>9} {:>9} {:>13} {:>11} {:>11} {:>13} {:>8}\n", "strategy", "mean bal",
                             "min bal", "max/mean GPU", "moves/rnd", "max moves", "max % slots", "time s");
    nlohmann::json strategies = nlohmann::json::object();
    for (const auto& run : result.runs) {
      const double mean_moves = static_cast<double>(std::accumulate(run.moves.begin(), run.moves.end(), std::size_t{0})) /
                                std::max(1.0, static_cast<double>(run.moves.size() - 1));
      const double max_share = 100.0 * static_cast<double>(run.max_moves()) / static_cast<double>(result.slots);
      std::cout << fmt::format("{:<9} {:>9.4f} {:>9.4f} {:>13.4f} {:>11.1f} {:>11} {:>13.2f} {:>8.2f}\n",
                               balance::to_string(run.strategy), run.mean_balancedness(), run.min_balancedness(),
                               run.mean_max_over_mean(), mean_moves, run.max_moves(), max_share, run.seconds);
      strategies[balance::to_string(run.strategy)] = {
          {"balancedness", run.balancedness},
          {"max_over_mean", run.max_over_mean},
          {"moves", run.moves},
          {"mean_balancedness", run.mean_balancedness()},
          {"min_balancedness", run.min_balancedness()},
          {"mean_max_over_mean", run.mean_max_over_mean()},
          {"mean_moves", mean_moves},
          {"max_moves", run.max_moves()},
          {"max_moves_percent_of_slots", max_share},
          {"max_bytes_per_round", run.max_moves() * kV3ExpertBytes},
          {"seconds", run.seconds}};
    }
    nlohmann::json json = {{"scenario", scenario->name},
                           {"trace", balance::to_string(kind)},
                           {"layers", scenario->layers},
                           {"experts", scenario->experts},
                           {"num_replicas", scenario->shape.num_replicas},
                           {"num_groups", scenario->shape.num_groups},
                           {"num_nodes", scenario->shape.num_nodes},
                           {"num_gpus", scenario->shape.num_gpus},
                           {"rounds", rounds},
                           {"window", a.window},
                           {"max_move_fraction", a.max_move_fraction},
                           {"seed", a.seed},
                           {"bytes_per_expert", kV3ExpertBytes},
                           {"strategies", strategies}};
    const auto* eplb = result.find(balance::Strategy::eplb);
    if (const auto* capped = result.find(balance::Strategy::capped); capped && eplb) {
      const double ratio = capped->mean_balancedness() / eplb->mean_balancedness();
      json["capped_over_eplb"] = ratio;
      std::cout << fmt::format("capped vs eplb: mean balancedness {:.4f} vs {:.4f} = {:.2f}% of full EPLB ({})\n",
                               capped->mean_balancedness(), eplb->mean_balancedness(), 100 * ratio,
                               ratio >= 0.97 ? "within 3%" : "NOT within 3%");
    }
    if (const auto* balanced = result.find(balance::Strategy::balanced); balanced && eplb) {
      int worse = 0;
      double worst = 0.0;
      for (std::size_t r = 0; r < balanced->balancedness.size(); ++r) {
        const double diff = balanced->balancedness[r] - eplb->balancedness[r];
        if (diff < -1e-9) ++worse;
        worst = std::min(worst, diff);
      }
      json["balanced_rounds_worse_than_eplb"] = worse;
      std::cout << fmt::format("balanced vs eplb: mean balancedness {:.4f} vs {:.4f}; worse in {} of {} rounds{}\n",
                               balanced->mean_balancedness(), eplb->mean_balancedness(), worse,
                               balanced->balancedness.size(),
                               worse > 0 ? fmt::format(" (worst by {:.4f})", -worst) : std::string());
    }
    const std::filesystem::path dir(a.output_dir);
    write_file(dir / (base + ".csv"), csv_of(result));
    write_file(dir / (base + ".json"), json.dump(1) + "\n");
    write_file(dir / (base + ".svg"),
               svg_plot(fmt::format("{}, {} trace: balancedness per round", scenario->name, balance::to_string(kind)),
                        result));
    std::cout << fmt::format("wrote {0}.csv, {0}.json, {0}.svg in {1}\n", base, a.output_dir);
  }
  return 0;
}

}  // namespace

void add_simulate_command(CLI::App& app, CommandTable& commands) {
  auto args = std::make_shared<SimulateArgs>();
  auto* sim = app.add_subcommand("simulate-balance",
                                 "Simulate expert rebalancing on synthetic load traces at DeepSeek scale");
  sim->add_option("--scenario", args->scenario, "ep32-prefill | ep144-decode | ep320-decode | quick")
      ->capture_default_str();
  sim->add_flag("--quick", args->quick, "The small scenario (4 layers x 32 experts, 24 rounds), for tests");
  sim->add_option("--trace", args->trace, "drift | bursts | day-night | all")->capture_default_str();
  sim->add_option("--rounds", args->rounds, "Rebalancing rounds (default: the scenario's, 144 = a day of 10 min)")
      ->check(CLI::Range(1, 100000));
  sim->add_option("--window", args->window, "Rounds of load averaged into the prediction")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  sim->add_option("--max-move-fraction", args->max_move_fraction,
                  "Capped mode: the most slots moved per round, as a fraction of all slots")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  sim->add_option("--seed", args->seed, "Seed of the load traces")->capture_default_str();
  sim->add_option("--strategies", args->strategies, "Subset of: none eplb capped balanced (default: all)")
      ->delimiter(',');
  sim->add_option("--output-dir", args->output_dir, "Where to write <scenario>-<trace>.csv/.json/.svg")
      ->capture_default_str();
  sim->add_option("--print-every", args->print_every, "Print every Nth round (default: about 24 rows)")
      ->check(CLI::Range(1, 100000));
  commands.add(sim, [args] { return run_simulate(*args); });
}

}  // namespace sy::apps
