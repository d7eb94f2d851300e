#include "apps/yardctl/operator_commands.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

namespace sy::yardctl {
namespace {

using schemas::Cluster;
using json = nlohmann::json;

// capnp list iterators are not std iterators.
template <typename T, typename List>
std::vector<T> to_vector(List list) {
  std::vector<T> out;
  out.reserve(list.size());
  for (const auto v : list) out.push_back(v);
  return out;
}

// A call the server refused; its message was printed.
struct CallFailed {
  int code;
};

// Waits for a call; a failure prints "yardctl COMMAND: message" and becomes the exit code.
template <typename Request>
auto wait_for(Request&& request, kj::WaitScope& ws, const std::string& command)
    -> std::optional<decltype(request.send().wait(ws))> {
  std::optional<decltype(request.send().wait(ws))> response;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { response.emplace(request.send().wait(ws)); })) {
    fmt::print(stderr, "yardctl {}: {}\n", command, describe(*e));
    throw CallFailed{exit_code_for(*e)};
  }
  return response;
}

schemas::Admin::Client admin(Cluster::Client& cluster, kj::WaitScope& ws, const OperatorArgs& a) {
  if (a.admin_token.empty()) {
    throw Usage(fmt::format("{} changes the cluster: give the admin token (--admin-token or SY_ADMIN_TOKEN)", a.command));
  }
  auto req = cluster.adminRequest();
  req.setToken(a.admin_token);
  return wait_for(req, ws, a.command)->getAdmin();
}

// ---- Expert load: a heat map per MoE layer.

constexpr std::size_t kMaxColumns = 64;

bool use_color(const std::string& mode) {
  if (mode == "always") return true;
  if (mode == "never") return false;
  const char* no_color = std::getenv("NO_COLOR");
  return ::isatty(STDOUT_FILENO) == 1 && (no_color == nullptr || *no_color == '\0');
}

// One cell: a 256-colour background from cold (blue) to hot (red), or a density character.
std::string cell(double fraction, bool color) {
  static constexpr int palette[] = {17, 19, 27, 33, 44, 49, 82, 190, 214, 202, 196};
  static constexpr std::string_view ramp = " .:-=+*#%@";
  fraction = std::clamp(fraction, 0.0, 1.0);
  if (color) {
    const auto i = static_cast<std::size_t>(fraction * (std::size(palette) - 1) + 0.5);
    return fmt::format("\x1b[48;5;{}m  \x1b[0m", palette[i]);
  }
  const auto i = static_cast<std::size_t>(fraction * static_cast<double>(ramp.size() - 1) + 0.5);
  return std::string(2, ramp[i]);
}

int show_load(Cluster::Client& cluster, kj::WaitScope& ws, const OperatorArgs& a) {
  auto response = wait_for(cluster.expertLoadRequest(), ws, a.command);
  const auto load = response->getLoad();
  if (a.json) {
    json layers = json::array();
    for (const auto l : load.getLayers()) {
      const auto tokens = to_vector<std::uint64_t>(l.getTokens());
      layers.push_back({{"layer", l.getLayer()}, {"tokens", tokens}, {"balancedness", l.getBalancedness()}});
    }
    json hosts = json::array();
    for (const auto h : load.getHosts()) hosts.push_back({{"host", h.getName().cStr()}, {"tokens", h.getTokens()}});
    std::cout << json{{"window_s", load.getWindowS()},
                      {"reports", load.getReports()},
                      {"experts", load.getExperts()},
                      {"layers", layers},
                      {"hosts", hosts}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  const std::size_t experts = load.getExperts();
  const std::size_t per_column = std::max<std::size_t>(1, (experts + kMaxColumns - 1) / kMaxColumns);
  const std::size_t columns = experts == 0 ? 0 : (experts + per_column - 1) / per_column;
  std::vector<std::vector<std::uint64_t>> grid;
  std::uint64_t hottest = 0, total = 0;
  for (const auto l : load.getLayers()) {
    std::vector<std::uint64_t> row(columns, 0);
    for (std::size_t e = 0; e < l.getTokens().size() && e < experts; ++e) row[e / per_column] += l.getTokens()[e];
    for (const std::uint64_t v : row) {
      hottest = std::max(hottest, v);
      total += v;
    }
    grid.push_back(std::move(row));
  }
  const bool color = use_color(a.color);
  std::cout << fmt::format("expert load over the last {:.0f} s ({} reports), {} experts per layer{}\n",
                           load.getWindowS(), load.getReports(), experts,
                           per_column > 1 ? fmt::format(", {} experts per column", per_column) : "");
  std::cout << fmt::format("{:>5}  {:<{}}  {}\n", "LAYER", "EXPERTS (cold -> hot)", columns * 2, "BALANCEDNESS");
  std::size_t i = 0;
  for (const auto l : load.getLayers()) {
    std::string line;
    for (const std::uint64_t v : grid[i]) line += cell(hottest == 0 ? 0.0 : static_cast<double>(v) / static_cast<double>(hottest), color);
    std::cout << fmt::format("{:>5}  {}  {:.3f}\n", l.getLayer(), line, l.getBalancedness());
    ++i;
  }
  std::string legend;
  for (int k = 0; k <= 10; ++k) legend += cell(k / 10.0, color);
  std::cout << fmt::format("scale  {}  0 .. {} tokens per cell\n", legend, hottest);
  std::cout << fmt::format("\n{:<16} {:>12} {:>7}\n", "HOST", "TOKENS", "SHARE");
  std::uint64_t host_total = 0;
  for (const auto h : load.getHosts()) host_total += h.getTokens();
  for (const auto h : load.getHosts()) {
    std::cout << fmt::format("{:<16} {:>12} {:>6.1f}%\n", h.getName().cStr(), h.getTokens(),
                             host_total == 0 ? 0.0 : 100.0 * static_cast<double>(h.getTokens()) / static_cast<double>(host_total));
  }
  return kExitOk;
}

// ---- Placement.

int show_placement(Cluster::Client& cluster, kj::WaitScope& ws, const OperatorArgs& a) {
  auto response = wait_for(cluster.placementRequest(), ws, a.command);
  const auto p = response->getPlacement();
  const json j = placement_to_json(p);
  if (!a.file.empty()) {
    std::ofstream out(a.file);
    out << j.dump(1) << "\n";
    if (!out) throw Usage(fmt::format("cannot write {}", a.file));
    fmt::print(stderr, "placement epoch {} written to {}\n", p.getEpoch(), a.file);
    return kExitOk;
  }
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << fmt::format("epoch {}: {} experts in {} slots per MoE layer on {} hosts\n", p.getEpoch(), p.getExperts(),
                           p.getSlots(), p.getHosts().size());
  for (const auto layer : p.getLayers()) {
    std::cout << fmt::format("layer {}\n", layer.getLayer());
    for (unsigned h = 0; h < p.getHosts().size(); ++h) {
      std::string experts;
      for (unsigned s = 0; s < layer.getPhy2log().size() && s < p.getHostOfSlot().size(); ++s) {
        if (p.getHostOfSlot()[s] != h) continue;
        experts += fmt::format("{}{}:{}", experts.empty() ? "" : " ", s, layer.getPhy2log()[s]);
      }
      std::cout << fmt::format("  {:<16} {}\n", p.getHosts()[h].cStr(), experts);
    }
  }
  std::cout << "(slot:expert)\n";
  return kExitOk;
}

// ---- Rounds.

json round_json(schemas::RebalanceRound::Reader r) {
  return {{"epoch", r.getEpoch()},
          {"outcome", r.getOutcome().cStr()},
          {"detail", r.getDetail().cStr()},
          {"trigger", r.getTrigger().cStr()},
          {"moves", r.getMoves()},
          {"bytes", r.getBytes()},
          {"balancedness_before", r.getBalancednessBefore()},
          {"balancedness_after", r.getBalancednessAfter()},
          {"seconds", r.getSeconds()},
          {"started_unix_ms", r.getStartedUnixMs()}};
}

std::string round_line(schemas::RebalanceRound::Reader r) {
  return fmt::format("{:>5}  {:<9}  {:<8}  {:>5}  {:>9.1f}  {:.4f} -> {:.4f}  {:>7.3f}  {}", r.getEpoch(),
                     r.getOutcome().cStr(), r.getTrigger().cStr(), r.getMoves(),
                     static_cast<double>(r.getBytes()) / (1024.0 * 1024.0), r.getBalancednessBefore(),
                     r.getBalancednessAfter(), r.getSeconds(), r.getDetail().cStr());
}

constexpr const char* kRoundHeader = "EPOCH  OUTCOME    TRIGGER   MOVES        MiB  BALANCEDNESS       SECONDS  DETAIL";

// A plan or a round's result; a failed round exits 1.
int print_plan(schemas::RebalancePlan::Reader plan, const OperatorArgs& a) {
  const auto r = plan.getRound();
  const int code = std::string_view(r.getOutcome().cStr()) == "failed" ? kExitFailed : kExitOk;
  if (a.json) {
    json moves = json::array();
    for (const auto m : plan.getMoves()) {
      moves.push_back({{"layer", m.getLayer()},
                       {"slot", m.getSlot()},
                       {"host", m.getHost().cStr()},
                       {"from_expert", m.getFromExpert()},
                       {"to_expert", m.getToExpert()}});
    }
    json layers = json::array();
    for (const auto l : plan.getLayers()) {
      layers.push_back({{"layer", l.getLayer()}, {"before", l.getBefore()}, {"after", l.getAfter()}});
    }
    std::cout << json{{"round", round_json(r)}, {"moves", moves}, {"layers", layers}}.dump(2) << "\n";
    return code;
  }
  std::cout << fmt::format("round for epoch {} ({}): {}\n  {}", r.getEpoch(), r.getTrigger().cStr(),
                           r.getOutcome().cStr(), r.getDetail().cStr());
  if (r.getSeconds() > 0) std::cout << fmt::format(" ({:.3f} s)", r.getSeconds());
  std::cout << "\n";
  if (plan.getLayers().size() > 0) {
    std::cout << fmt::format("\n{:>5}  {:>8}  {:>8}\n", "LAYER", "BEFORE", "AFTER");
    for (const auto l : plan.getLayers()) {
      std::cout << fmt::format("{:>5}  {:>8.4f}  {:>8.4f}\n", l.getLayer(), l.getBefore(), l.getAfter());
    }
  }
  if (plan.getMoves().size() > 0) {
    std::cout << fmt::format("\n{:>5}  {:>5}  {:<16} {}\n", "LAYER", "SLOT", "HOST", "EXPERT");
    std::size_t shown = 0;
    for (const auto m : plan.getMoves()) {
      if (shown++ == a.max_moves) {
        std::cout << fmt::format("... {} more (--json lists every move)\n", plan.getMoves().size() - a.max_moves);
        break;
      }
      std::cout << fmt::format("{:>5}  {:>5}  {:<16} {} -> {}\n", m.getLayer(), m.getSlot(), m.getHost().cStr(),
                               m.getFromExpert(), m.getToExpert());
    }
  }
  return code;
}

int show_history(Cluster::Client& cluster, kj::WaitScope& ws, const OperatorArgs& a) {
  auto response = wait_for(cluster.historyRequest(), ws, a.command);
  if (a.json) {
    json rounds = json::array();
    for (const auto r : response->getRounds()) rounds.push_back(round_json(r));
    std::cout << rounds.dump(2) << "\n";
    return kExitOk;
  }
  if (response->getRounds().size() == 0) {
    std::cout << "no rebalancing rounds yet\n";
    return kExitOk;
  }
  std::cout << kRoundHeader << "\n";
  for (const auto r : response->getRounds()) std::cout << round_line(r) << "\n";
  return kExitOk;
}

int print_settings(schemas::BalancingSettings::Reader s, const OperatorArgs& a) {
  if (a.json) {
    json pins = json::array();
    for (const auto p : s.getPins()) pins.push_back({{"layer", p.getLayer()}, {"slot", p.getSlot()}, {"expert", p.getExpert()}});
    std::cout << json{{"paused", s.getPaused()},
                      {"interval_s", s.getIntervalS()},
                      {"threshold", s.getThreshold()},
                      {"policy", s.getPolicy().cStr()},
                      {"pins", pins},
                      {"epoch", s.getEpoch()},
                      {"round_running", s.getRoundRunning()},
                      {"next_round_in_s", s.getNextRoundInS()}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  std::cout << fmt::format("automatic rounds  {}\n",
                           s.getPaused() ? std::string("paused")
                                         : fmt::format("every {:g} s (next in {:.0f} s)", s.getIntervalS(), s.getNextRoundInS()));
  std::cout << fmt::format("threshold         {:g}\npolicy            {}\nepoch             {}{}\n", s.getThreshold(),
                           s.getPolicy().cStr(), s.getEpoch(), s.getRoundRunning() ? " (a round is running)" : "");
  std::cout << fmt::format("pins              {}\n", s.getPins().size() == 0 ? "none" : "");
  for (const auto p : s.getPins()) {
    std::cout << fmt::format("  layer {} slot {} -> expert {}\n", p.getLayer(), p.getSlot(), p.getExpert());
  }
  return kExitOk;
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Usage(fmt::format("cannot read {}", path));
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw Usage(fmt::format("{}: not valid JSON: {}", path, e.what()));
  }
}

}  // namespace

std::string describe(const kj::Exception& e) {
  std::string text = e.getDescription().cStr();
  constexpr std::string_view remote = "remote exception: ";
  if (text.starts_with(remote)) text.erase(0, remote.size());
  return text;
}

int exit_code_for(const kj::Exception& e) {
  switch (e.getType()) {
    case kj::Exception::Type::OVERLOADED:
    case kj::Exception::Type::DISCONNECTED: return kExitRetryable;
    default: break;
  }
  return describe(e).starts_with("permission denied") ? kExitDenied : kExitFailed;
}

json placement_to_json(schemas::Placement::Reader p) {
  std::vector<std::string> hosts;
  for (const auto h : p.getHosts()) hosts.emplace_back(h.cStr());
  const auto host_of_slot = to_vector<std::uint16_t>(p.getHostOfSlot());
  json layers = json::array();
  for (const auto l : p.getLayers()) {
    const auto row = to_vector<std::uint32_t>(l.getPhy2log());
    layers.push_back({{"layer", l.getLayer()}, {"phy2log", row}});
  }
  return {{"epoch", p.getEpoch()},     {"experts", p.getExperts()},         {"slots", p.getSlots()},
          {"num_layers", p.getNumLayers()}, {"hosts", hosts}, {"host_of_slot", host_of_slot},
          {"layers", layers}};
}

void placement_from_json(const json& j, schemas::Placement::Builder out) {
  const auto field = [&j](const char* name) -> const json& {
    if (!j.is_object() || !j.contains(name)) throw Usage(fmt::format("placement: field \"{}\" missing", name));
    return j.at(name);
  };
  try {
    out.setEpoch(field("epoch").get<std::uint64_t>());
    out.setExperts(field("experts").get<std::uint32_t>());
    out.setSlots(field("slots").get<std::uint32_t>());
    out.setNumLayers(field("num_layers").get<std::uint16_t>());
    const auto hosts = field("hosts").get<std::vector<std::string>>();
    auto h = out.initHosts(static_cast<unsigned>(hosts.size()));
    for (unsigned i = 0; i < hosts.size(); ++i) h.set(i, hosts[i]);
    const auto host_of_slot = field("host_of_slot").get<std::vector<std::uint16_t>>();
    auto hs = out.initHostOfSlot(static_cast<unsigned>(host_of_slot.size()));
    for (unsigned i = 0; i < host_of_slot.size(); ++i) hs.set(i, host_of_slot[i]);
    const json& layers = field("layers");
    if (!layers.is_array()) throw Usage("placement: \"layers\" is not a list");
    auto ls = out.initLayers(static_cast<unsigned>(layers.size()));
    for (unsigned i = 0; i < layers.size(); ++i) {
      if (!layers[i].is_object() || !layers[i].contains("layer") || !layers[i].contains("phy2log")) {
        throw Usage(fmt::format("placement: layers[{}] needs \"layer\" and \"phy2log\"", i));
      }
      ls[i].setLayer(layers[i].at("layer").get<std::uint16_t>());
      const auto row = layers[i].at("phy2log").get<std::vector<std::uint32_t>>();
      auto r = ls[i].initPhy2log(static_cast<unsigned>(row.size()));
      for (unsigned s = 0; s < row.size(); ++s) r.set(s, row[s]);
    }
  } catch (const json::exception& e) {
    throw Usage(fmt::format("placement: {}", e.what()));
  }
}

int run_operator_command(Cluster::Client& cluster, kj::WaitScope& ws, const OperatorArgs& a) {
  try {
    const std::string& c = a.command;
    if (c == "load") return show_load(cluster, ws, a);
    if (c == "placement") return show_placement(cluster, ws, a);
    if (c == "history") return show_history(cluster, ws, a);
    if (c == "balancing") {
      auto response = wait_for(cluster.balancingRequest(), ws, c);
      return print_settings(response->getSettings(), a);
    }
    if (c == "plan") {
      auto response = wait_for(cluster.planRebalanceRequest(), ws, c);
      return print_plan(response->getPlan(), a);
    }
    // Admin calls from here on. Parse files before asking for the capability.
    if (c == "import") {
      const json j = read_json_file(a.file);
      capnp::MallocMessageBuilder scratch;
      auto placement = scratch.initRoot<schemas::Placement>();
      placement_from_json(j, placement);
      auto adm = admin(cluster, ws, a);
      auto req = adm.importPlacementRequest();
      req.setPlacement(placement.asReader());
      auto response = wait_for(req, ws, c);
      return print_plan(response->getPlan(), a);
    }
    auto adm = admin(cluster, ws, a);
    if (c == "rebalance") {
      auto response = wait_for(adm.rebalanceRequest(), ws, c);
      return print_plan(response->getPlan(), a);
    }
    if (c == "pause") return print_settings(wait_for(adm.pauseRequest(), ws, c)->getSettings(), a);
    if (c == "resume") return print_settings(wait_for(adm.resumeRequest(), ws, c)->getSettings(), a);
    if (c == "set-interval") {
      auto req = adm.setIntervalRequest();
      req.setSeconds(a.value);
      return print_settings(wait_for(req, ws, c)->getSettings(), a);
    }
    if (c == "set-threshold") {
      auto req = adm.setThresholdRequest();
      req.setThreshold(a.value);
      return print_settings(wait_for(req, ws, c)->getSettings(), a);
    }
    if (c == "pin" || c == "unpin") {
      for (const long n : a.numbers) {
        if (n < 0) throw Usage(fmt::format("{}: {} is negative", c, n));
      }
      if (c == "pin") {
        auto req = adm.pinRequest();
        req.setLayer(static_cast<std::uint16_t>(a.numbers.at(0)));
        req.setSlot(static_cast<std::uint32_t>(a.numbers.at(1)));
        req.setExpert(static_cast<std::uint32_t>(a.numbers.at(2)));
        return print_settings(wait_for(req, ws, c)->getSettings(), a);
      }
      auto req = adm.unpinRequest();
      req.setLayer(static_cast<std::uint16_t>(a.numbers.at(0)));
      req.setSlot(static_cast<std::uint32_t>(a.numbers.at(1)));
      return print_settings(wait_for(req, ws, c)->getSettings(), a);
    }
    if (c == "drain") {
      auto req = adm.drainRequest();
      req.setNode(a.node);
      fmt::print(stderr, "draining {}: waiting for its requests to finish\n", a.node);
      auto response = wait_for(req, ws, c);
      const auto r = response->getReport();
      if (a.json) {
        std::cout << json{{"node", r.getNode().cStr()}, {"requests_at_start", r.getRequestsAtStart()}, {"seconds", r.getSeconds()}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << fmt::format("node {} drained: {} request(s) finished in {:.3f} s; it gets no new requests until "
                                 "`yardctl undrain {}`\n",
                                 r.getNode().cStr(), r.getRequestsAtStart(), r.getSeconds(), r.getNode().cStr());
      }
      return kExitOk;
    }
    if (c == "undrain") {
      auto req = adm.undrainRequest();
      req.setNode(a.node);
      wait_for(req, ws, c);
      if (!a.json) std::cout << fmt::format("node {} gets requests again\n", a.node);
      return kExitOk;
    }
    throw Usage("unknown operator command " + c);
  } catch (const CallFailed& f) {
    return f.code;  // wait_for printed the server's message
  }
}

}  // namespace sy::yardctl
