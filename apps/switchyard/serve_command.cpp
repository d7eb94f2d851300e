// switchyard serve --config FILE (--node NAME | --rank N | --node-from-env): one node process of a
// cluster (--node-from-env: Slurm and Kubernetes, actors/config/launcher_env.hpp). Builds the UCX
// transport (tcp, error mode PEER so a dead peer is noticed) and hands it to the node bootstrap
// (actors/node/node.hpp), which runs the actor system until SIGTERM/SIGINT or a peer's Shutdown.
// Prints exactly one line to stdout, when ready: "node NAME ready (roles ..., peers ...)"
// (`switchyard local` and the system tests wait for it); everything else goes to stderr.
// Metrics: the process's registry and its exporter, at the node's host:metrics_port (GET /metrics).
// With [cluster] metrics = false there is neither (bench/metrics_overhead.sh measures the cost).
// Roles: router, prefill and decode are built from the config ([model] path and backend,
// [decode] sizes, [api] rpc) by make_roles below. SY_DUMP_LOGITS_DIR=DIR makes prefill and decode
// dump every generated token's logits there (the determinism tests compare them).
// Transport: UCX over tcp with error mode PEER (a dead peer is noticed at once). When UCX_TLS
// names shared-memory transports (sm, posix, sysv, cma) the node uses error mode NONE, which
// shared memory requires (TOOLCHAIN.md); then only polite leaves are noticed.
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <optional>
#include <string>
#include <thread>

#include "actors/config/cluster_config.hpp"
#include "actors/config/launcher_env.hpp"
#include "actors/controller/controller_role.hpp"
#include "actors/decode/decode_role.hpp"
#include "actors/expert_host/expert_host_role.hpp"
#include "actors/load_stats/load_stats_role.hpp"
#include "balance/placement.hpp"
#include "model/config.hpp"
#include "actors/node/node.hpp"
#include "actors/prefill/prefill_role.hpp"
#include "actors/router/router_role.hpp"
#include "apps/switchyard/backends.hpp"
#include "apps/switchyard/commands.hpp"
#include "model/linear.hpp"
#include "monitoring/exporter.hpp"
#include "monitoring/metrics.hpp"
#include "transport/ucx/ucx_transport.hpp"

namespace sy::apps {
namespace {

struct ServeArgs {
  std::string config;
  std::string node;
  std::int64_t rank = -1;
  bool node_from_env = false;
  double peer_timeout_s = 0;
};

// Turns SIGTERM/SIGINT into a stop request. The signals are blocked in every thread (the mask is
// set before any thread starts, and threads inherit it), and this thread collects them.
class SignalWaiter {
 public:
  explicit SignalWaiter(actors::node::StopLatch& stop) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this, &stop] {
      const timespec tick{0, 200'000'000};
      while (!done_.load()) {
        const int sig = sigtimedwait(&set_, nullptr, &tick);
        if (sig == SIGTERM || sig == SIGINT) stop.request(sig == SIGTERM ? "SIGTERM" : "SIGINT");
      }
    });
  }
  ~SignalWaiter() {
    done_.store(true);
    thread_.join();
  }
  SignalWaiter(const SignalWaiter&) = delete;
  SignalWaiter& operator=(const SignalWaiter&) = delete;

 private:
  sigset_t set_{};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

bool uses_shared_memory(const char* tls) {
  if (tls == nullptr) return false;
  const std::string t(tls);
  for (const char* name : {"sm", "posix", "sysv", "cma", "shm"}) {
    if (t.find(name) != std::string::npos) return true;
  }
  return false;
}

// The roles of `me` as the config describes them.
std::vector<std::unique_ptr<actors::node::NodeRole>> make_roles(actors::node::RoleContext& context) {
  const actors::config::ClusterConfig& cluster = context.cluster;
  const actors::config::NodeConfig& me = context.me;
  using actors::config::Role;
  const bool serving = me.has_role(Role::router) || me.has_role(Role::prefill) || me.has_role(Role::decode) ||
                       me.has_role(Role::expert_host);
  if (serving && cluster.model.path.empty()) {
    throw actors::config::ConfigError(fmt::format("{}: node {} hosts {}, which need [model] path", cluster.source,
                                                  me.name, actors::config::join_roles(me.roles)));
  }
  const std::string backend_name = cluster.model.backend.empty() ? backend_names().back() : cluster.model.backend;
  const gpu::Backend& backend = find_backend(backend_name);
  const model::Numerics numerics = model::parse_numerics(cluster.model.numerics);
  const char* dump = std::getenv("SY_DUMP_LOGITS_DIR");
  // Expert parallelism: with expert hosts configured, every node computes the same start-up
  // placement (epoch 1) from the config; workers dispatch to it, hosts check against it.
  std::optional<balance::ExpertPlacement> placement;
  const std::vector<const actors::config::NodeConfig*> hosts = cluster.nodes_with(Role::expert_host);
  if (!hosts.empty() && serving) {
    const model::ModelConfig config = model::ModelConfig::from_file(std::filesystem::path(cluster.model.path) / "config.json");
    std::vector<std::string> names;
    for (const auto* h : hosts) names.push_back(h->name);
    std::vector<bool> moe_layers;
    for (std::int64_t l = 0; l < config.num_checkpoint_layers(); ++l) moe_layers.push_back(config.is_moe_layer(l));
    try {
      placement = balance::initial_placement(static_cast<int>(config.n_routed_experts),
                                             static_cast<int>(cluster.experts.redundant), names, moe_layers);
    } catch (const std::invalid_argument& e) {
      throw actors::config::ConfigError(fmt::format("{}: [experts] redundant = {}: {}", cluster.source,
                                                    cluster.experts.redundant, e.what()));
    }
  }
  std::vector<std::unique_ptr<actors::node::NodeRole>> roles;
  actors::load_stats::LoadStatsRole* stats = nullptr;
  actors::controller::ControllerRole* controller = nullptr;
  if (me.has_role(Role::load_stats)) {
    auto role = actors::load_stats::make_load_stats_role(context, actors::load_stats::LoadStatsOptions{});
    stats = role.get();
    roles.push_back(std::move(role));
  }
  if (me.has_role(Role::controller)) {
    if (!placement) {
      throw actors::config::ConfigError(
          fmt::format("{}: node {} hosts the controller, but no node hosts expert_host", cluster.source, me.name));
    }
    if (stats == nullptr) {
      throw actors::config::ConfigError(fmt::format(
          "{}: node {} hosts the controller without load_stats (they must share a node)", cluster.source, me.name));
    }
    actors::controller::ControllerOptions o;
    o.model_dir = cluster.model.path;
    o.initial = *placement;
    o.stats = stats;
    o.interval = std::chrono::seconds(cluster.balance.interval_s);
    o.threshold = cluster.balance.threshold;
    o.step_timeout = std::chrono::milliseconds(cluster.balance.step_timeout_ms);
    o.policy = cluster.balance.policy;
    o.max_move_fraction = cluster.balance.max_move_fraction;
    auto role = actors::controller::make_controller_role(context, std::move(o));
    controller = role.get();
    roles.push_back(std::move(role));
  }
  if (me.has_role(Role::expert_host)) {
    actors::expert_host::ExpertHostOptions o;
    o.model_dir = cluster.model.path;
    o.backend = &backend;
    o.numerics = numerics;
    o.placement = *placement;
    o.stage_delay = std::chrono::milliseconds(cluster.balance.stage_delay_ms);
    roles.push_back(actors::expert_host::make_expert_host_role(context, std::move(o)));
  }
  if (me.has_role(Role::decode)) {
    actors::decode::DecodeRoleOptions o;
    o.model_dir = cluster.model.path;
    o.backend = &backend;
    o.numerics = numerics;
    o.kv_pages = cluster.decode.kv_pages;
    o.max_batch = cluster.decode.max_batch;
    o.mtp = cluster.decode.mtp;
    if (dump != nullptr) o.dump_logits_dir = dump;
    o.expert_placement = placement;
    o.two_micro_batches = placement.has_value() && cluster.experts.overlap;
    o.max_seq_len = cluster.model.max_seq_len;
    roles.push_back(actors::decode::make_decode_role(context, std::move(o)));
  }
  if (me.has_role(Role::prefill)) {
    actors::prefill::PrefillRoleOptions o;
    o.model_dir = cluster.model.path;
    o.backend = &backend;
    o.numerics = numerics;
    o.mtp = cluster.decode.mtp;
    if (dump != nullptr) o.dump_logits_dir = dump;
    o.expert_placement = placement;
    o.two_micro_batches = placement.has_value() && cluster.experts.overlap;
    o.max_seq_len = cluster.model.max_seq_len;
    roles.push_back(actors::prefill::make_prefill_role(context, std::move(o)));
  }
  if (me.has_role(Role::router)) {
    actors::router::RouterRoleOptions o;
    o.model_dir = cluster.model.path;
    o.backend_name = backend_name;
    o.numerics = cluster.model.numerics;
    o.rpc_listen = cluster.api.rpc.to_string();
    o.http_listen = cluster.api.http.to_string();
    o.max_seq_len = cluster.model.max_seq_len;
    if (const char* key = std::getenv("SY_API_KEY")) o.api_key = key;
    o.admin_token = cluster.cluster.admin_token;
    o.rpc_tls_cert = cluster.api.rpc_tls_cert;
    o.rpc_tls_key = cluster.api.rpc_tls_key;
    if (const char* token = std::getenv("SY_ADMIN_TOKEN"); token != nullptr && *token != '\0') o.admin_token = token;
    if (controller != nullptr) {
      o.controller = controller;
      o.stats = stats;
    }
    roles.push_back(actors::router::make_router_role(context, std::move(o)));
  }
  return roles;
}

// Which node this process is: --node, --rank (file order) or the launcher's environment
// (actors/config/launcher_env.hpp: SLURM_PROCID, a StatefulSet pod's name or ordinal).
std::string choose_node(const ServeArgs& args, const actors::config::ClusterConfig& cluster,
                        const actors::config::LauncherEnv& env) {
  if (!args.node.empty()) return args.node;
  if (args.rank >= 0) return actors::config::node_by_rank(cluster, args.rank).name;
  const actors::config::NodeChoice choice = actors::config::node_from_env(cluster, env);
  std::fprintf(stderr, "switchyard serve: %s\n", choice.reason.c_str());
  return choice.name;
}

int run_serve(ServeArgs args) {
  // Host templates ({slurm_host}, {name}, {env:VAR}) expand from this process's environment; every
  // node of a launch sees the same one, so all agree on every address.
  const actors::config::LauncherEnv env = actors::config::LauncherEnv::from_process();
  const actors::config::ClusterConfig cluster =
      actors::config::resolve_hosts(actors::config::load_cluster_config(args.config), env);
  args.node = choose_node(args, cluster, env);
  const actors::config::NodeConfig& me = cluster.node(args.node);  // an unknown node fails before anything starts

  actors::node::StopLatch stop;
  const SignalWaiter signals(stop);  // before the transport and CAF start their threads
  // A node must not die because whoever read its log went away (a killed `local` supervisor
  // closes our stderr pipe while we shut down): writes then fail with EPIPE instead.
  ::signal(SIGPIPE, SIG_IGN);

  // After the signal mask is set: the exporter's threads inherit it.
  // [cluster] metrics = false (overhead runs): no exporter, and the roles get no registry.
  const auto metrics = std::make_shared<monitoring::Registry>();
  std::optional<monitoring::Exporter> exporter;
  if (cluster.cluster.metrics) exporter.emplace(fmt::format("{}:{}", me.host, me.metrics_port), metrics);

  transport::ucx::UcxOptions options;
  options.error_mode = uses_shared_memory(std::getenv("UCX_TLS")) ? transport::ucx::ErrorMode::none
                                                                   : transport::ucx::ErrorMode::peer;
  options.name = args.node;
  // The listener path needs tcp, and error mode PEER uses only tcp lanes; the environment may
  // still choose (UCX_TLS, UCX_NET_DEVICES).
  if (std::getenv("UCX_TLS") == nullptr) options.config.emplace_back("TLS", "tcp");
  // A restarted node binds its configured port again at once, while connections of its previous
  // incarnation still sit in TIME_WAIT on it. A connection-manager setting, which UCX 1.13 reads
  // only from the environment (ucp_config_modify does not reach it); an explicit setting wins.
  ::setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
  transport::ucx::UcxTransport transport(options);

  actors::node::NodeOptions node_options;
  if (args.peer_timeout_s > 0) {
    node_options.peer_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(args.peer_timeout_s * 1000));
  }
  node_options.metrics = cluster.cluster.metrics ? metrics.get() : nullptr;
  node_options.make_roles = make_roles;
  node_options.on_ready = [](const actors::node_status& status) {
    std::fputs((actors::node::ready_line(status) + "\n").c_str(), stdout);
    std::fflush(stdout);
  };
  return actors::node::run_node(cluster, args.node, transport, stop, node_options);
}

}  // namespace

void add_serve_command(CLI::App& app, CommandTable& commands) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Run one node of a cluster (its roles, transport and actors)");
  cmd->add_option("--config", args->config, "Cluster TOML file (see deploy/local-cluster.toml)")->required();
  auto* node = cmd->add_option("--node", args->node, "This node's name in the config");
  auto* rank = cmd->add_option("--rank", args->rank, "This node's index in the config's [[node]] order (from 0)")
                   ->check(CLI::NonNegativeNumber);
  auto* from_env = cmd->add_flag("--node-from-env", args->node_from_env,
                                 "Pick the node from the launcher: SLURM_PROCID as the rank, else a node named like "
                                 "the host (a Kubernetes pod), else the host name's StatefulSet ordinal as the rank");
  node->excludes(rank)->excludes(from_env);
  rank->excludes(from_env);
  cmd->callback([node, rank, from_env] {
    if (node->count() + rank->count() + from_env->count() == 0) {
      throw CLI::RequiredError("one of --node, --rank or --node-from-env");
    }
  });
  cmd->add_option("--peer-timeout", args->peer_timeout_s,
                  "Seconds to wait for every peer (default: the config's cluster.peer_timeout_s)");
  commands.add(cmd, [args] { return run_serve(*args); });
}

}  // namespace sy::apps
