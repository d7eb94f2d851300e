#include "actors/config/cluster_config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include <toml++/toml.h>

namespace sy::actors::config {
namespace {

constexpr std::array<std::string_view, role_count> kRoleNames = {"router",      "prefill",    "decode",
                                                                 "expert_host", "load_stats", "controller"};

std::string all_role_names() {
  std::string out;
  for (std::string_view name : kRoleNames) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

bool is_valid_name(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), is_name_char);
}

bool is_host_char(char c) { return is_name_char(c) && c != '_'; }

// Empty when `host` is a well-formed template: host characters and the placeholders {name},
// {slurm_host} and {env:VAR} (launcher_env.hpp expands them).
std::string host_template_problem(std::string_view host) {
  std::size_t i = 0;
  while (i < host.size()) {
    if (host[i] != '{') {
      if (!is_host_char(host[i])) return fmt::format("'{}' is not allowed in a host name", host[i]);
      ++i;
      continue;
    }
    const std::size_t close = host.find('}', i);
    const std::string_view p = host.substr(i + 1, close - i - 1);
    if (close == std::string_view::npos || p.find('{') != std::string_view::npos) return "unclosed '{'";
    const bool env = p.starts_with("env:") && p.size() > 4 &&
                     std::all_of(p.begin() + 4, p.end(), [](char c) {
                       return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                     });
    if (p != "name" && p != "slurm_host" && !env) {
      return fmt::format("unknown placeholder {{{}}} (expected {{name}}, {{slurm_host}} or {{env:VAR}})", p);
    }
    i = close + 1;
  }
  return {};
}

// Reads one table strictly: each key is taken at most once, and finish() refuses keys nobody took.
class TableReader {
 public:
  TableReader(const std::string& source, const toml::table& table, std::string prefix)
      : source_(source), table_(table), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const toml::source_region& where, std::string_view key, std::string_view problem) const {
    throw ConfigError(where.begin.line > 0
                          ? fmt::format("{}:{}: {}: {}", source_, where.begin.line, path(key), problem)
                          : fmt::format("{}: {}: {}", source_, path(key), problem));
  }
  [[noreturn]] void fail_table(std::string_view problem) const { fail(table_.source(), "", problem); }

  std::string path(std::string_view key) const {
    if (key.empty()) return prefix_;
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  const toml::node* take(std::string_view key) {
    taken_.insert(std::string(key));
    return table_.get(key);
  }

  std::optional<std::string> string(std::string_view key) {
    const toml::node* node = take(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_string()) fail(node->source(), key, fmt::format("expected a string, got {}", type_name(*node)));
    return std::string(node->as_string()->get());
  }

  // An integer in [lo, hi].
  std::optional<std::int64_t> integer(std::string_view key, std::int64_t lo, std::int64_t hi) {
    const toml::node* node = take(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_integer()) fail(node->source(), key, fmt::format("expected an integer, got {}", type_name(*node)));
    const std::int64_t v = node->as_integer()->get();
    if (v < lo || v > hi) fail(node->source(), key, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
    return v;
  }

  std::optional<bool> boolean(std::string_view key) {
    const toml::node* node = take(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_boolean()) fail(node->source(), key, fmt::format("expected true or false, got {}", type_name(*node)));
    return node->as_boolean()->get();
  }

  // A number (integer or float) in [lo, hi].
  std::optional<double> number(std::string_view key, double lo, double hi) {
    const toml::node* node = take(key);
    if (node == nullptr) return std::nullopt;
    double v = 0;
    if (node->is_integer()) {
      v = static_cast<double>(node->as_integer()->get());
    } else if (node->is_floating_point()) {
      v = node->as_floating_point()->get();
    } else {
      fail(node->source(), key, fmt::format("expected a number, got {}", type_name(*node)));
    }
    if (!(v >= lo && v <= hi)) fail(node->source(), key, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
    return v;
  }

  std::optional<Endpoint> endpoint(std::string_view key) {
    const toml::node* node = take(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_string()) {
      fail(node->source(), key, fmt::format("expected \"HOST:PORT\", got {}", type_name(*node)));
    }
    const std::string text(node->as_string()->get());
    const auto colon = text.rfind(':');
    Endpoint e;
    int port = 0;
    if (colon != std::string::npos) {
      e.host = text.substr(0, colon);
      const char* first = text.data() + colon + 1;
      const char* last = text.data() + text.size();
      const auto [end, ec] = std::from_chars(first, last, port);
      if (ec != std::errc() || end != last || first == last) port = 0;
    }
    if (colon == std::string::npos || e.host.empty() || port < 1 || port > 65535) {
      fail(node->source(), key, fmt::format("\"{}\" is not HOST:PORT with a port in 1..65535", text));
    }
    e.port = static_cast<std::uint16_t>(port);
    return e;
  }

  void finish() const {
    for (auto&& [key, value] : table_) {
      if (!taken_.contains(std::string(key.str()))) fail(key.source(), key.str(), "unknown key");
    }
  }

  const toml::table& table() const { return table_; }

  static std::string_view type_name(const toml::node& node) {
    switch (node.type()) {
      case toml::node_type::table: return "a table";
      case toml::node_type::array: return "an array";
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a float";
      case toml::node_type::boolean: return "a boolean";
      case toml::node_type::date:
      case toml::node_type::time:
      case toml::node_type::date_time: return "a date/time";
      case toml::node_type::none: break;
    }
    return "nothing";
  }

 private:
  const std::string& source_;
  const toml::table& table_;
  std::string prefix_;
  std::set<std::string> taken_;
};

// The sub-table `key` of the root (absent: an empty table), refusing any other type.
const toml::table* sub_table(TableReader& root, std::string_view key) {
  const toml::node* node = root.take(key);
  if (node == nullptr) return nullptr;
  if (!node->is_table()) {
    root.fail(node->source(), key, fmt::format("expected a [{}] table, got {}", key, TableReader::type_name(*node)));
  }
  return node->as_table();
}

void parse_cluster(const std::string& source, const toml::table& t, ClusterSettings& out) {
  TableReader r(source, t, "cluster");
  if (auto v = r.string("name")) {
    if (!is_valid_name(*v)) {
      r.fail(t.get("name")->source(), "name", fmt::format("\"{}\" must be 1..64 characters of [A-Za-z0-9._-]", *v));
    }
    out.name = *v;
  }
  if (auto v = r.string("admin_token")) {
    if (v->empty()) r.fail(t.get("admin_token")->source(), "admin_token", "must not be empty (leave it out instead)");
    out.admin_token = *v;
  }
  if (auto v = r.integer("heartbeat_ms", 10, 60000)) out.heartbeat_ms = static_cast<std::uint32_t>(*v);
  if (auto v = r.integer("peer_timeout_s", 1, 3600)) out.peer_timeout_s = static_cast<std::uint32_t>(*v);
  if (auto v = r.boolean("metrics")) out.metrics = *v;
  r.finish();
}

void parse_model(const std::string& source, const toml::table& t, ModelConfig& out) {
  TableReader r(source, t, "model");
  if (auto v = r.string("path")) {
    if (v->empty()) r.fail(t.get("path")->source(), "path", "must not be empty");
    out.path = *v;
  }
  if (auto v = r.string("numerics")) {
    if (*v != "fp8act" && *v != "dequant") {
      r.fail(t.get("numerics")->source(), "numerics", fmt::format("\"{}\" is not fp8act or dequant", *v));
    }
    out.numerics = *v;
  }
  if (auto v = r.string("backend")) {
    if (*v != "ref" && *v != "cpu" && *v != "cuda") {
      r.fail(t.get("backend")->source(), "backend", fmt::format("\"{}\" is not ref, cpu or cuda", *v));
    }
    out.backend = *v;
  }
  if (auto v = r.integer("max_seq_len", 0, std::int64_t{1} << 24)) out.max_seq_len = static_cast<std::uint32_t>(*v);
  r.finish();
}

void parse_api(const std::string& source, const toml::table& t, ApiConfig& out) {
  TableReader r(source, t, "api");
  if (auto v = r.endpoint("rpc")) out.rpc = *v;
  if (auto v = r.endpoint("http")) out.http = *v;
  if (auto v = r.string("rpc_tls_cert")) out.rpc_tls_cert = *v;
  if (auto v = r.string("rpc_tls_key")) out.rpc_tls_key = *v;
  if (out.rpc_tls_cert.empty() != out.rpc_tls_key.empty()) {
    r.fail(t.source(), out.rpc_tls_cert.empty() ? "rpc_tls_cert" : "rpc_tls_key",
           "TLS needs both rpc_tls_cert and rpc_tls_key");
  }
  r.finish();
}

void parse_decode(const std::string& source, const toml::table& t, DecodeConfig& out) {
  TableReader r(source, t, "decode");
  if (auto v = r.integer("kv_pages", 1, std::int64_t{1} << 30)) out.kv_pages = static_cast<std::uint32_t>(*v);
  if (auto v = r.integer("max_batch", 1, 4096)) out.max_batch = static_cast<std::uint32_t>(*v);
  if (auto v = r.boolean("mtp")) out.mtp = *v;
  r.finish();
}

void parse_balance(const std::string& source, const toml::table& t, BalanceConfig& out) {
  TableReader r(source, t, "balance");
  if (auto v = r.integer("interval_s", 1, 86400)) out.interval_s = static_cast<std::uint32_t>(*v);
  if (auto v = r.number("threshold", 0.0, 1.0)) out.threshold = *v;
  if (auto v = r.number("max_move_fraction", 0.0, 1.0)) out.max_move_fraction = *v;
  if (auto v = r.integer("step_timeout_ms", 100, 600000)) out.step_timeout_ms = static_cast<std::uint32_t>(*v);
  if (auto v = r.integer("stage_delay_ms", 0, 600000)) out.stage_delay_ms = static_cast<std::uint32_t>(*v);
  if (auto v = r.string("policy")) {
    if (*v != "eplb" && *v != "balanced" && *v != "balanced-strict") {
      r.fail(t.get("policy")->source(), "policy", fmt::format("\"{}\" is not eplb, balanced or balanced-strict", *v));
    }
    out.policy = *v;
  }
  r.finish();
}

void parse_experts(const std::string& source, const toml::table& t, ExpertsConfig& out) {
  TableReader r(source, t, "experts");
  if (auto v = r.integer("redundant", 0, 4096)) out.redundant = static_cast<std::uint32_t>(*v);
  if (auto v = r.boolean("overlap")) out.overlap = *v;
  r.finish();
}

NodeConfig parse_node(const std::string& source, const toml::table& t, std::size_t index) {
  TableReader r(source, t, fmt::format("node[{}]", index));
  NodeConfig n;
  n.line = t.source().begin.line;
  const auto name = r.string("name");
  if (!name) r.fail_table("missing key \"name\"");
  if (!is_valid_name(*name)) {
    r.fail(t.get("name")->source(), "name", fmt::format("\"{}\" must be 1..64 characters of [A-Za-z0-9._-]", *name));
  }
  n.name = *name;
  // From here on messages name the node: node[2] (decode0).
  TableReader named(source, t, fmt::format("node[{}] ({})", index, n.name));
  named.take("name");
  if (auto v = named.string("host")) {
    if (is_host_template(*v)) {
      if (const std::string problem = host_template_problem(*v); !problem.empty()) {
        named.fail(t.get("host")->source(), "host", fmt::format("\"{}\": {}", *v, problem));
      }
    } else if (v->empty() || !std::all_of(v->begin(), v->end(), is_host_char)) {
      named.fail(t.get("host")->source(), "host", fmt::format("\"{}\" is not an IP address or host name", *v));
    }
    n.host = *v;
  }
  const auto transport_port = named.integer("transport_port", 1, 65535);
  if (!transport_port) named.fail_table("missing key \"transport_port\"");
  n.transport_port = static_cast<std::uint16_t>(*transport_port);
  const auto metrics_port = named.integer("metrics_port", 1, 65535);
  if (!metrics_port) named.fail_table("missing key \"metrics_port\"");
  n.metrics_port = static_cast<std::uint16_t>(*metrics_port);

  const toml::node* roles = named.take("roles");
  if (roles == nullptr) named.fail_table(fmt::format("missing key \"roles\" (a list of: {})", all_role_names()));
  if (!roles->is_array()) {
    named.fail(roles->source(), "roles", fmt::format("expected a list of role names, got {}", TableReader::type_name(*roles)));
  }
  for (const toml::node& item : *roles->as_array()) {
    if (!item.is_string()) {
      named.fail(item.source(), "roles", fmt::format("expected role names, got {}", TableReader::type_name(item)));
    }
    const std::string_view text = item.as_string()->get();
    const auto role = parse_role(text);
    if (!role) {
      named.fail(item.source(), "roles", fmt::format("unknown role \"{}\" (expected one of: {})", text, all_role_names()));
    }
    if (n.has_role(*role)) named.fail(item.source(), "roles", fmt::format("role \"{}\" listed twice", text));
    n.roles.push_back(*role);
  }
  if (n.roles.empty()) named.fail(roles->source(), "roles", fmt::format("must name at least one of: {}", all_role_names()));
  named.finish();
  return n;
}

// Rules across nodes: unique names, no port bound twice on one host, the roles a cluster needs.
void validate_cluster(const ClusterConfig& c) {
  auto fail_at = [&](std::uint32_t line, const std::string& key, const std::string& problem) {
    throw ConfigError(line > 0 ? fmt::format("{}:{}: {}: {}", c.source, line, key, problem)
                               : fmt::format("{}: {}: {}", c.source, key, problem));
  };
  std::map<std::string, const NodeConfig*> by_name;
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const NodeConfig& n = c.nodes[i];
    const auto [it, fresh] = by_name.emplace(n.name, &n);
    if (!fresh) {
      fail_at(n.line, fmt::format("node[{}].name", i),
              fmt::format("duplicate node name \"{}\" (first defined on line {})", n.name, it->second->line));
    }
  }
  // Every port a process of this cluster binds, by (host, port).
  std::map<std::pair<std::string, std::uint16_t>, std::string> bound;
  auto bind = [&](const std::string& host, std::uint16_t port, std::uint32_t line, const std::string& what) {
    // Templates resolve per launch (launcher_env.hpp), which validates the result again.
    if (is_host_template(host)) return;
    const auto [it, fresh] = bound.emplace(std::make_pair(host, port), what);
    if (!fresh) fail_at(line, what, fmt::format("port {}:{} is already used by {}", host, port, it->second));
  };
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const NodeConfig& n = c.nodes[i];
    bind(n.host, n.transport_port, n.line, fmt::format("node[{}] ({}).transport_port", i, n.name));
    bind(n.host, n.metrics_port, n.line, fmt::format("node[{}] ({}).metrics_port", i, n.name));
  }
  bind(c.api.rpc.host, c.api.rpc.port, 0, "api.rpc");
  bind(c.api.http.host, c.api.http.port, 0, "api.http");

  if (c.nodes.empty()) fail_at(0, "node", "no [[node]] entries (a cluster needs at least a router, a prefill and a decode node)");
  auto require = [&](Role role) {
    if (c.nodes_with(role).empty()) {
      fail_at(0, "node.roles", fmt::format("no node has role \"{}\" (a cluster needs at least one router, prefill and decode)",
                                            role_name(role)));
    }
  };
  require(Role::router);
  require(Role::prefill);
  require(Role::decode);
  for (Role single : {Role::controller, Role::load_stats}) {
    const auto with = c.nodes_with(single);
    if (with.size() > 1) {
      fail_at(with[1]->line, fmt::format("node ({}).roles", with[1]->name),
              fmt::format("role \"{}\" is already on node \"{}\"; a cluster has at most one", role_name(single),
                          with[0]->name));
    }
  }
}

std::string quoted(std::string_view s) {
  std::ostringstream out;
  out << toml::value<std::string>(std::string(s));
  return out.str();
}

}  // namespace

bool is_host_template(std::string_view host) { return host.find('{') != std::string_view::npos; }

void validate_cluster_config(const ClusterConfig& config) { validate_cluster(config); }

std::string_view role_name(Role role) { return kRoleNames.at(static_cast<std::size_t>(role)); }

std::optional<Role> parse_role(std::string_view name) {
  for (std::size_t i = 0; i < kRoleNames.size(); ++i) {
    if (kRoleNames[i] == name) return static_cast<Role>(i);
  }
  return std::nullopt;
}

std::string join_roles(const std::vector<Role>& roles) {
  std::string out;
  for (Role r : roles) {
    if (!out.empty()) out += ", ";
    out += role_name(r);
  }
  return out;
}

std::string Endpoint::to_string() const { return fmt::format("{}:{}", host, port); }

bool NodeConfig::has_role(Role role) const { return std::find(roles.begin(), roles.end(), role) != roles.end(); }

std::string NodeConfig::transport_address() const { return fmt::format("{}:{}", host, transport_port); }

const NodeConfig* ClusterConfig::find_node(std::string_view name) const {
  for (const NodeConfig& n : nodes) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

const NodeConfig& ClusterConfig::node(std::string_view name) const {
  if (const NodeConfig* n = find_node(name)) return *n;
  std::string names;
  for (const NodeConfig& n : nodes) names += (names.empty() ? "" : ", ") + n.name;
  throw ConfigError(fmt::format("{}: no node named \"{}\" (configured: {})", source, name, names));
}

std::vector<const NodeConfig*> ClusterConfig::nodes_with(Role role) const {
  std::vector<const NodeConfig*> out;
  for (const NodeConfig& n : nodes) {
    if (n.has_role(role)) out.push_back(&n);
  }
  return out;
}

ClusterConfig parse_cluster_config(std::string_view toml_text, std::string source) {
  ClusterConfig c;
  c.source = std::move(source);
  toml::table root;
  try {
    root = toml::parse(toml_text, c.source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}:{}:{}: TOML syntax: {}", c.source, e.source().begin.line,
                                  e.source().begin.column, e.description()));
  }
  TableReader r(c.source, root, "");
  if (const toml::table* t = sub_table(r, "cluster")) parse_cluster(c.source, *t, c.cluster);
  if (const toml::table* t = sub_table(r, "model")) parse_model(c.source, *t, c.model);
  if (const toml::table* t = sub_table(r, "api")) parse_api(c.source, *t, c.api);
  if (const toml::table* t = sub_table(r, "decode")) parse_decode(c.source, *t, c.decode);
  if (const toml::table* t = sub_table(r, "experts")) parse_experts(c.source, *t, c.experts);
  if (const toml::table* t = sub_table(r, "balance")) parse_balance(c.source, *t, c.balance);
  if (const toml::node* nodes = r.take("node")) {
    if (!nodes->is_array_of_tables()) {
      r.fail(nodes->source(), "node", "expected [[node]] entries (an array of tables)");
    }
    std::size_t index = 0;
    for (const toml::node& item : *nodes->as_array()) c.nodes.push_back(parse_node(c.source, *item.as_table(), index++));
  }
  r.finish();
  validate_cluster(c);
  return c;
}

ClusterConfig load_cluster_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot read the cluster config", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(fmt::format("{}: cannot read the cluster config", path));
  return parse_cluster_config(text.str(), path);
}

std::string to_toml(const ClusterConfig& c) {
  std::string out;
  out += fmt::format("[cluster]\nname = {}\n", quoted(c.cluster.name));
  if (!c.cluster.admin_token.empty()) out += fmt::format("admin_token = {}\n", quoted(c.cluster.admin_token));
  out += fmt::format("heartbeat_ms = {}\npeer_timeout_s = {}\n", c.cluster.heartbeat_ms, c.cluster.peer_timeout_s);
  if (!c.cluster.metrics) out += "metrics = false\n";
  out += "\n";
  out += "[model]\n";
  if (!c.model.path.empty()) out += fmt::format("path = {}\n", quoted(c.model.path));
  out += fmt::format("numerics = {}\n", quoted(c.model.numerics));
  if (!c.model.backend.empty()) out += fmt::format("backend = {}\n", quoted(c.model.backend));
  if (c.model.max_seq_len != 0) out += fmt::format("max_seq_len = {}\n", c.model.max_seq_len);
  out += fmt::format("\n[api]\nrpc = {}\nhttp = {}\n", quoted(c.api.rpc.to_string()), quoted(c.api.http.to_string()));
  if (!c.api.rpc_tls_cert.empty()) {
    out += fmt::format("rpc_tls_cert = {}\nrpc_tls_key = {}\n", quoted(c.api.rpc_tls_cert), quoted(c.api.rpc_tls_key));
  }
  out += "\n";
  out += fmt::format("[decode]\nkv_pages = {}\nmax_batch = {}\nmtp = {}\n\n", c.decode.kv_pages, c.decode.max_batch,
                     c.decode.mtp);
  out += fmt::format("[experts]\nredundant = {}\noverlap = {}\n", c.experts.redundant, c.experts.overlap);
  out += fmt::format(
      "\n[balance]\ninterval_s = {}\nthreshold = {}\nstep_timeout_ms = {}\nstage_delay_ms = {}\npolicy = {}\n"
      "max_move_fraction = {}\n",
      c.balance.interval_s, c.balance.threshold, c.balance.step_timeout_ms, c.balance.stage_delay_ms,
      quoted(c.balance.policy), c.balance.max_move_fraction);
  for (const NodeConfig& n : c.nodes) {
    std::string roles;
    for (Role role : n.roles) roles += fmt::format("{}\"{}\"", roles.empty() ? "" : ", ", role_name(role));
    out += fmt::format("\n[[node]]\nname = {}\nhost = {}\ntransport_port = {}\nmetrics_port = {}\nroles = [{}]\n",
                       quoted(n.name), quoted(n.host), n.transport_port, n.metrics_port, roles);
  }
  return out;
}

}  // namespace sy::actors::config
