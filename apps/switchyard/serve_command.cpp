// switchyard serve --config FILE --node NAME: one node process of a cluster. Builds the UCX
// transport (tcp, error mode PEER so a dead peer is noticed) and hands it to the node bootstrap
// (actors/node/node.hpp), which runs the actor system until SIGTERM/SIGINT or a peer's Shutdown.
// Prints exactly one line to stdout, when ready: "node NAME ready (roles ..., peers ...)"
// (`switchyard local` and the system tests wait for it); everything else goes to stderr.
// Metrics: the process's registry and its exporter, at the node's host:metrics_port (GET /metrics).
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <thread>

#include "actors/config/cluster_config.hpp"
#include "actors/node/node.hpp"
#include "apps/switchyard/commands.hpp"
#include "monitoring/exporter.hpp"
#include "monitoring/metrics.hpp"
#include "transport/ucx/ucx_transport.hpp"

namespace sy::apps {
namespace {

struct ServeArgs {
  std::string config;
  std::string node;
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

int run_serve(const ServeArgs& args) {
  const actors::config::ClusterConfig cluster = actors::config::load_cluster_config(args.config);
  const actors::config::NodeConfig& me = cluster.node(args.node);  // an unknown node fails before anything starts

  actors::node::StopLatch stop;
  const SignalWaiter signals(stop);  // before the transport and CAF start their threads
  // A node must not die because whoever read its log went away (a killed `local` supervisor
  // closes our stderr pipe while we shut down): writes then fail with EPIPE instead.
  ::signal(SIGPIPE, SIG_IGN);

  // After the signal mask is set: the exporter's threads inherit it.
  const auto metrics = std::make_shared<monitoring::Registry>();
  const monitoring::Exporter exporter(fmt::format("{}:{}", me.host, me.metrics_port), metrics);

  transport::ucx::UcxOptions options;
  options.error_mode = transport::ucx::ErrorMode::peer;
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
  node_options.metrics = metrics.get();
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
  cmd->add_option("--node", args->node, "This node's name in the config")->required();
  cmd->add_option("--peer-timeout", args->peer_timeout_s,
                  "Seconds to wait for every peer (default: the config's cluster.peer_timeout_s)");
  commands.add(cmd, [args] { return run_serve(*args); });
}

}  // namespace sy::apps
