// `switchyard eplb`: runs EPLB (balance/eplb.hpp) on a JSON list of cases and writes each case's
// placement as JSON, in the reference eplb.py's shapes, so that results can be compared with the
// reference and placements planned by hand.
//   in:  [{"weight": [[load, ...], ...], "num_replicas": R, "num_groups": G, "num_nodes": N,
//          "num_gpus": P}, ...]
//   out: [{"phy2log": [[...]], "log2phy": [[[...]]], "logcnt": [[...]]}, ...] in the same order.
// A bad case fails the whole command naming the case index and the problem (exit 1).
#include <fmt/format.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/switchyard/commands.hpp"
#include "balance/eplb.hpp"

namespace sy::apps {
namespace {

struct EplbArgs {
  std::string input;
  std::string output;
};

int json_int(const nlohmann::json& item, const char* key) {
  const auto it = item.find(key);
  if (it == item.end()) throw std::invalid_argument(fmt::format("missing \"{}\"", key));
  if (!it->is_number_integer()) {
    throw std::invalid_argument(fmt::format("\"{}\" is {}, not an integer", key, it->dump()));
  }
  if (it->is_number_unsigned()) {
    if (it->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
      throw std::invalid_argument(fmt::format("\"{}\" ({}) is too large", key, it->dump()));
    }
    return static_cast<int>(it->get<std::uint64_t>());
  }
  const auto value = it->get<std::int64_t>();
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(fmt::format("\"{}\" ({}) is out of range", key, value));
  }
  return static_cast<int>(value);
}

std::vector<std::vector<double>> json_weight(const nlohmann::json& item) {
  const auto it = item.find("weight");
  if (it == item.end()) throw std::invalid_argument("missing \"weight\"");
  if (!it->is_array()) throw std::invalid_argument("\"weight\" is not a list of rows");
  std::vector<std::vector<double>> weight;
  for (std::size_t layer = 0; layer < it->size(); ++layer) {
    const nlohmann::json& row = (*it)[layer];
    if (!row.is_array()) throw std::invalid_argument(fmt::format("weight row {} is not a list", layer));
    std::vector<double>& out = weight.emplace_back();
    for (std::size_t e = 0; e < row.size(); ++e) {
      if (!row[e].is_number()) {
        throw std::invalid_argument(fmt::format("weight[{}][{}] is {}, not a number", layer, e, row[e].dump()));
      }
      out.push_back(row[e].get<double>());
    }
  }
  return weight;
}

nlohmann::json run_case(const nlohmann::json& item) {
  if (!item.is_object()) throw std::invalid_argument("not an object");
  for (const auto& [key, value] : item.items()) {
    if (key != "weight" && key != "num_replicas" && key != "num_groups" && key != "num_nodes" && key != "num_gpus") {
      throw std::invalid_argument(fmt::format("unknown key \"{}\"", key));
    }
  }
  const balance::EplbShape shape{.num_replicas = json_int(item, "num_replicas"),
                                 .num_groups = json_int(item, "num_groups"),
                                 .num_nodes = json_int(item, "num_nodes"),
                                 .num_gpus = json_int(item, "num_gpus")};
  const balance::EplbPlacement placement = balance::rebalance_experts(json_weight(item), shape);
  return nlohmann::json{{"phy2log", placement.phy2log}, {"log2phy", placement.log2phy}, {"logcnt", placement.logcnt}};
}

int run_eplb(const EplbArgs& a) {
  std::ifstream in(a.input);
  if (!in) throw std::invalid_argument(fmt::format("cannot read {}", a.input));
  const nlohmann::json cases = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (cases.is_discarded()) throw std::invalid_argument(fmt::format("{} is not valid JSON", a.input));
  if (!cases.is_array()) throw std::invalid_argument(fmt::format("{} must hold a JSON list of cases", a.input));
  nlohmann::json results = nlohmann::json::array();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    try {
      results.push_back(run_case(cases[i]));
    } catch (const std::exception& e) {
      throw std::invalid_argument(fmt::format("case {}: {}", i, e.what()));
    }
  }
  std::ofstream out(a.output);
  out << results.dump() << "\n";
  out.close();
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", a.output));
  std::cout << fmt::format("eplb: {} case(s) from {} written to {}\n", cases.size(), a.input, a.output);
  return 0;
}

}  // namespace

void add_eplb_command(CLI::App& app, CommandTable& commands) {
  auto args = std::make_shared<EplbArgs>();
  auto* eplb = app.add_subcommand("eplb", "Place replicated experts with EPLB (DeepSeek's reference algorithm)");
  eplb->add_option("--input", args->input,
                   "JSON list of cases: {weight, num_replicas, num_groups, num_nodes, num_gpus}")
      ->required();
  eplb->add_option("--output", args->output, "Where to write the JSON list of {phy2log, log2phy, logcnt}")->required();
  commands.add(eplb, [args] { return run_eplb(*args); });
}

}  // namespace sy::apps
