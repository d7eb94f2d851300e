#include "actors/config/launcher_env.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <charconv>
#include <climits>

extern char** environ;

namespace sy::actors::config {
namespace {

// A whole decimal number in [0, max]; nullopt otherwise.
std::optional<std::uint64_t> parse_uint(std::string_view s, std::uint64_t max = UINT32_MAX) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

// Splits at commas outside brackets.
std::vector<std::string_view> split_top_level(std::string_view s, std::string_view whole) {
  std::vector<std::string_view> out;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '[') {
      if (++depth > 1) throw ConfigError(fmt::format("hostlist \"{}\": nested '['", whole));
    } else if (s[i] == ']') {
      if (--depth < 0) throw ConfigError(fmt::format("hostlist \"{}\": ']' without '['", whole));
    } else if (s[i] == ',' && depth == 0) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) throw ConfigError(fmt::format("hostlist \"{}\": unclosed '['", whole));
  out.push_back(s.substr(start));
  return out;
}

// "01-03,7" -> 01 02 03 7 (each range keeps the width of its first bound when zero-padded).
std::vector<std::string> expand_ranges(std::string_view body, std::string_view whole) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= body.size()) {
    std::size_t comma = body.find(',', start);
    if (comma == std::string_view::npos) comma = body.size();
    const std::string_view item = body.substr(start, comma - start);
    const std::size_t dash = item.find('-');
    const std::string_view lo_text = item.substr(0, dash);
    const std::string_view hi_text = dash == std::string_view::npos ? lo_text : item.substr(dash + 1);
    const auto lo = parse_uint(lo_text, 999'999'999);
    const auto hi = parse_uint(hi_text, 999'999'999);
    if (!lo || !hi || *hi < *lo || *hi - *lo > 100'000) {
      throw ConfigError(fmt::format("hostlist \"{}\": \"{}\" is not a number or an ascending range", whole, item));
    }
    const std::size_t width = lo_text.size();
    for (std::uint64_t v = *lo; v <= *hi; ++v) out.push_back(fmt::format("{:0{}}", v, width));
    start = comma + 1;
  }
  return out;
}

// One top-level item, maybe with several bracket groups: "r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2.
void expand_item(std::string_view item, std::string_view whole, std::vector<std::string>& out) {
  std::vector<std::string> partial{""};
  std::size_t i = 0;
  while (i < item.size()) {
    const std::size_t open = item.find('[', i);
    const std::string_view literal = item.substr(i, open == std::string_view::npos ? std::string_view::npos : open - i);
    for (std::string& p : partial) p += literal;
    if (open == std::string_view::npos) break;
    const std::size_t close = item.find(']', open);  // split_top_level checked the pairing
    std::vector<std::string> next;
    for (const std::string& p : partial) {
      for (const std::string& n : expand_ranges(item.substr(open + 1, close - open - 1), whole)) next.push_back(p + n);
    }
    partial = std::move(next);
    i = close + 1;
  }
  for (std::string& p : partial) {
    if (p.empty()) throw ConfigError(fmt::format("hostlist \"{}\": empty host name", whole));
    out.push_back(std::move(p));
  }
}

const std::string* first_of(const LauncherEnv& env, std::initializer_list<const char*> names, std::string& which) {
  for (const char* n : names) {
    if (const std::string* v = env.get(n)) {
      which = n;
      return v;
    }
  }
  return nullptr;
}

}  // namespace

const std::string* LauncherEnv::get(std::string_view name) const {
  const auto it = vars.find(std::string(name));
  return it == vars.end() || it->second.empty() ? nullptr : &it->second;
}

LauncherEnv LauncherEnv::from_process() {
  LauncherEnv env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view kv(*e);
    const std::size_t eq = kv.find('=');
    if (eq != std::string_view::npos) env.vars.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) == 0) env.hostname = name;
  return env;
}

std::vector<std::string> expand_hostlist(std::string_view list) {
  if (list.empty()) throw ConfigError("hostlist is empty");
  std::vector<std::string> out;
  for (std::string_view item : split_top_level(list, list)) {
    if (item.empty()) throw ConfigError(fmt::format("hostlist \"{}\": empty item", list));
    expand_item(item, list, out);
  }
  return out;
}

std::vector<std::uint32_t> expand_tasks_per_node(std::string_view text) {
  std::vector<std::uint32_t> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view item = text.substr(start, comma - start);
    const std::size_t paren = item.find("(x");
    const auto count = parse_uint(item.substr(0, paren));
    std::optional<std::uint64_t> repeat = 1;
    if (paren != std::string_view::npos) {
      repeat = item.ends_with(")") ? parse_uint(item.substr(paren + 2, item.size() - paren - 3), 100'000) : std::nullopt;
    }
    if (!count || *count == 0 || !repeat || *repeat == 0) {
      throw ConfigError(fmt::format("tasks per node \"{}\": \"{}\" is not N or N(xM)", text, item));
    }
    out.insert(out.end(), *repeat, static_cast<std::uint32_t>(*count));
    start = comma + 1;
  }
  return out;
}

std::vector<std::string> slurm_task_hosts(const LauncherEnv& env) {
  std::string list_var, tasks_var;
  const std::string* list = first_of(env, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}, list_var);
  const std::string* tasks = first_of(env, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}, tasks_var);
  if (list == nullptr || tasks == nullptr) {
    throw ConfigError("{slurm_host}: not inside a Slurm step (no SLURM_STEP_NODELIST/SLURM_JOB_NODELIST or "
                      "SLURM_STEP_TASKS_PER_NODE/SLURM_TASKS_PER_NODE; start the nodes with srun)");
  }
  if (const std::string* d = env.get("SLURM_DISTRIBUTION"); d != nullptr && !d->starts_with("block")) {
    throw ConfigError(fmt::format("{{slurm_host}}: SLURM_DISTRIBUTION={} (ranks must be laid out by block: srun "
                                  "--distribution=block)", *d));
  }
  const std::vector<std::string> hosts = expand_hostlist(*list);
  const std::vector<std::uint32_t> counts = expand_tasks_per_node(*tasks);
  if (counts.size() != hosts.size()) {
    throw ConfigError(fmt::format("{{slurm_host}}: {}={} names {} hosts but {}={} gives counts for {}", list_var, *list,
                                  hosts.size(), tasks_var, *tasks, counts.size()));
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < hosts.size(); ++i) out.insert(out.end(), counts[i], hosts[i]);
  return out;
}

std::optional<std::uint32_t> hostname_ordinal(std::string_view hostname) {
  const std::size_t dash = hostname.rfind('-');
  if (dash == std::string_view::npos || dash == 0) return std::nullopt;
  const auto v = parse_uint(hostname.substr(dash + 1));
  if (!v) return std::nullopt;
  return static_cast<std::uint32_t>(*v);
}

ClusterConfig resolve_hosts(ClusterConfig config, const LauncherEnv& env) {
  std::optional<std::vector<std::string>> slurm;
  for (std::size_t index = 0; index < config.nodes.size(); ++index) {
    NodeConfig& n = config.nodes[index];
    if (!is_host_template(n.host)) continue;
    const std::string where = fmt::format("{}:{}: node[{}] ({}).host \"{}\"", config.source, n.line, index, n.name, n.host);
    std::string out;
    std::size_t i = 0;
    while (i < n.host.size()) {
      const std::size_t open = n.host.find('{', i);
      out += n.host.substr(i, open == std::string::npos ? std::string::npos : open - i);
      if (open == std::string::npos) break;
      const std::size_t close = n.host.find('}', open);  // the parser checked the syntax
      const std::string p = n.host.substr(open + 1, close - open - 1);
      if (p == "name") {
        out += n.name;
      } else if (p == "slurm_host") {
        try {
          if (!slurm) slurm = slurm_task_hosts(env);
        } catch (const ConfigError& e) {
          throw ConfigError(fmt::format("{}: {}", where, e.what()));
        }
        if (slurm->size() != config.nodes.size()) {
          throw ConfigError(fmt::format("{}: the Slurm step has {} tasks but the config {} nodes (one task per "
                                        "[[node]]: srun --ntasks={})", where, slurm->size(), config.nodes.size(),
                                        config.nodes.size()));
        }
        out += (*slurm)[index];
      } else {
        const std::string var = p.substr(4);  // "env:VAR"
        const std::string* v = env.get(var);
        if (v == nullptr) throw ConfigError(fmt::format("{}: environment variable {} is not set", where, var));
        out += *v;
      }
      i = close + 1;
    }
    if (out.empty() || is_host_template(out)) {
      throw ConfigError(fmt::format("{}: expands to \"{}\", not a host name", where, out));
    }
    n.host = std::move(out);
  }
  validate_cluster_config(config);
  return config;
}

const NodeConfig& node_by_rank(const ClusterConfig& config, std::int64_t rank) {
  if (rank < 0 || static_cast<std::size_t>(rank) >= config.nodes.size()) {
    throw ConfigError(fmt::format("{}: rank {} is out of range: the config has {} nodes (ranks 0..{})", config.source,
                                  rank, config.nodes.size(), config.nodes.size() - 1));
  }
  return config.nodes[static_cast<std::size_t>(rank)];
}

NodeChoice node_from_env(const ClusterConfig& config, const LauncherEnv& env) {
  if (const std::string* procid = env.get("SLURM_PROCID")) {
    const auto rank = parse_uint(*procid);
    if (!rank) throw ConfigError(fmt::format("SLURM_PROCID={} is not a task rank", *procid));
    std::string which;
    if (const std::string* ntasks = first_of(env, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"}, which)) {
      if (parse_uint(*ntasks) != config.nodes.size()) {
        throw ConfigError(fmt::format("{}={} but {} has {} [[node]] entries (one Slurm task per node: srun --ntasks={})",
                                      which, *ntasks, config.source, config.nodes.size(), config.nodes.size()));
      }
    }
    const NodeConfig& n = node_by_rank(config, static_cast<std::int64_t>(*rank));
    return {n.name, fmt::format("SLURM_PROCID={} -> node {}", *procid, n.name)};
  }
  if (!env.hostname.empty()) {
    if (const NodeConfig* n = config.find_node(env.hostname)) {
      return {n->name, fmt::format("host name {} -> node {}", env.hostname, n->name)};
    }
    if (const auto ordinal = hostname_ordinal(env.hostname)) {
      const NodeConfig& n = node_by_rank(config, *ordinal);
      return {n.name, fmt::format("host name {} (StatefulSet ordinal {}) -> node {}", env.hostname, *ordinal, n.name)};
    }
  }
  std::string names;
  for (const NodeConfig& n : config.nodes) names += (names.empty() ? "" : ", ") + n.name;
  throw ConfigError(fmt::format("{}: cannot tell which node this is: no SLURM_PROCID, and the host name \"{}\" is "
                                "neither a node name ({}) nor ends in a StatefulSet ordinal (-N)",
                                config.source, env.hostname, names));
}

}  // namespace sy::actors::config
