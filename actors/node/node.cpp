#include "actors/node/node.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include <caf/all.hpp>

#include "actors/interfaces.hpp"
#include "actors/node/node_actor.hpp"
#include "actors/node/transport_bridge.hpp"
#include "monitoring/metrics.hpp"

namespace sy::actors::node {
namespace {

namespace tr = sy::transport;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds first_backoff{50};
constexpr milliseconds max_backoff{2000};

// A peer this node dials (its name sorts after ours).
struct Dial {
  const config::NodeConfig* peer = nullptr;
  Clock::time_point next_try{};
  milliseconds backoff = first_backoff;
  std::string last_error;
};

std::uint64_t new_incarnation() {
  std::random_device device;
  std::uint64_t value = 0;
  while (value == 0) value = (std::uint64_t{device()} << 32) ^ device();
  return value;
}

bool is_up(PeerState s) { return s == PeerState::hello || s == PeerState::ready; }
bool needs_dial(PeerState s) { return s == PeerState::waiting || s == PeerState::left || s == PeerState::lost; }

// "peer decode1 at 127.0.0.1:17403 (not reachable: ...), peer prefill0 at ... (connected, no NodeHello yet)"
std::string waiting_for(const node_status& status, const std::vector<Dial>& dials) {
  std::vector<std::string> parts;
  for (const peer_status& p : status.peers) {
    if (is_up(p.state)) continue;
    std::string why;
    const auto dial = std::find_if(dials.begin(), dials.end(), [&](const Dial& d) { return d.peer->name == p.name; });
    switch (p.state) {
      case PeerState::waiting:
        if (dial == dials.end()) {
          why = "it dials this node; no connection from it yet";
        } else {
          why = dial->last_error.empty() ? "not reachable yet" : "not reachable: " + dial->last_error;
        }
        break;
      case PeerState::connected: why = "connected, no NodeHello yet"; break;
      case PeerState::left: why = "left: " + p.reason; break;
      case PeerState::lost: why = "lost: " + p.reason; break;
      case PeerState::hello:
      case PeerState::ready: break;
    }
    parts.push_back(fmt::format("peer {} at {} ({})", p.name, p.address, why));
  }
  std::string out;
  for (const std::string& part : parts) out += (out.empty() ? "" : ", ") + part;
  return out;
}

// Stops the node on every way out of run_node: close the transport first (afterwards no handler
// runs, so nothing posts to actors any more), then stop the roles (they fail what they hold and
// join their threads), then end the node actor so the actor system's destructor (which awaits
// every actor) returns.
class Teardown {
 public:
  Teardown(caf::actor_system& system, tr::Transport& transport, node_actor node, milliseconds close_timeout)
      : system_(system), transport_(transport), node_(std::move(node)), close_timeout_(close_timeout) {}
  ~Teardown() {
    try {
      transport_.close(close_timeout_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "switchyard node: closing the transport: %s\n", e.what());
    }
    for (auto it = roles.rbegin(); it != roles.rend(); ++it) {
      try {
        (*it)->stop();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "switchyard node: stopping role %s: %s\n", (*it)->name().c_str(), e.what());
      }
    }
    roles.clear();
    // Wait for the node actor to end: it points at the bridge and the peer directory, which are
    // destroyed right after this.
    caf::scoped_actor waiter{system_};
    waiter->monitor(node_);
    caf::anon_send_exit(node_, caf::exit_reason::user_shutdown);
    waiter->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds(5)) >> [] {
      std::fprintf(stderr, "switchyard node: the node actor did not stop within 5 s\n");
    });
  }
  Teardown(const Teardown&) = delete;
  Teardown& operator=(const Teardown&) = delete;

  std::vector<std::unique_ptr<NodeRole>> roles;  // in creation order; stopped in reverse

 private:
  caf::actor_system& system_;
  tr::Transport& transport_;
  node_actor node_;
  milliseconds close_timeout_;
};

// The node's own gauges: switchyard_node_up (1 from start until run_node returns) and
// switchyard_node_peers by state (refreshed from each status poll of the bootstrap loop).
class NodeGauges {
 public:
  NodeGauges(monitoring::Registry* registry, const config::NodeConfig& me) {
    if (registry == nullptr) return;
    using monitoring::Metric;
    std::string roles;
    for (config::Role r : me.roles) roles += (roles.empty() ? "" : ",") + std::string(config::role_name(r));
    up_ = &registry->gauge(Metric::node_up).Add(monitoring::labels(Metric::node_up, {me.name, roles}));
    up_->Set(1);
    auto& peers = registry->gauge(Metric::node_peers);
    for (std::size_t i = 0; i < peers_.size(); ++i) {
      const std::string state(peer_state_name(static_cast<PeerState>(i)));
      peers_[i] = &peers.Add(monitoring::labels(Metric::node_peers, {state}));
    }
  }
  ~NodeGauges() {
    if (up_ != nullptr) up_->Set(0);
  }
  NodeGauges(const NodeGauges&) = delete;
  NodeGauges& operator=(const NodeGauges&) = delete;

  void update(const node_status& status) {
    if (up_ == nullptr) return;
    std::array<int, 6> count{};
    for (const peer_status& p : status.peers) ++count.at(static_cast<std::size_t>(p.state));
    for (std::size_t i = 0; i < peers_.size(); ++i) peers_[i]->Set(count[i]);
  }

 private:
  prometheus::Gauge* up_ = nullptr;
  std::array<prometheus::Gauge*, 6> peers_{};  // [PeerState]: waiting .. lost
};
static_assert(static_cast<std::size_t>(PeerState::lost) + 1 == 6, "NodeGauges counts six peer states");

}  // namespace

void StopLatch::request(const std::string& reason) {
  std::lock_guard lock(mutex_);
  if (requested_) return;
  requested_ = true;
  reason_ = reason;
  cv_.notify_all();
}

bool StopLatch::requested() const {
  std::lock_guard lock(mutex_);
  return requested_;
}

std::string StopLatch::reason() const {
  std::lock_guard lock(mutex_);
  return reason_;
}

bool StopLatch::wait_for(milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [this] { return requested_; });
}

std::string ready_line(const node_status& status) {
  std::string peers;
  for (const peer_status& p : status.peers) peers += (peers.empty() ? "" : " ") + p.name;
  return fmt::format("node {} ready (roles {}, peers {})", status.name, roles_text(status.roles),
                     peers.empty() ? "none" : peers);
}

int run_node(const config::ClusterConfig& cluster, const std::string& node_name, tr::Transport& transport,
             StopLatch& stop, const NodeOptions& options) {
  const config::NodeConfig& me = cluster.node(node_name);
  const milliseconds peer_timeout =
      options.peer_timeout.count() > 0 ? options.peer_timeout : milliseconds(cluster.cluster.peer_timeout_s * 1000);
  auto log = [&](const std::string& line) { std::fprintf(stderr, "switchyard node %s: %s\n", node_name.c_str(), line.c_str()); };

  caf::actor_system_config cfg;
  cfg.add_message_types<caf::id_block::sy_actors>();
  // The node actor and the roles' actors only forward; compute runs on the roles' own threads.
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system system{cfg};
  TransportBridge bridge{transport, node_name};
  if (options.metrics != nullptr) bridge.export_metrics(*options.metrics);
  NodeGauges gauges(options.metrics, me);
  PeerDirectory directory;
  const node_actor node = spawn_node_actor(
      system, NodeActorArgs{&cluster, node_name, &bridge, &directory, new_incarnation(),
                            [&stop](const std::string& reason) { stop.request(reason); }});
  Teardown teardown{system, transport, node, options.close_timeout};
  if (options.make_roles) {
    RoleContext context{cluster, me, system, bridge, directory, options.metrics};
    teardown.roles = options.make_roles(context);
  }
  // Listen only now: the handlers and their routes are in place, so the first peer's hello can
  // neither miss its handler nor arrive before the node actor that takes it.
  try {
    transport.listen(me.transport_address());
  } catch (const tr::TransportError& e) {
    throw tr::TransportError(e.code(), fmt::format("node {}: cannot listen on {}: {}", node_name,
                                                   me.transport_address(), e.what()));
  }
  caf::scoped_actor asker{system};

  auto query = [&]() -> node_status {
    std::optional<node_status> result;
    std::string error;
    asker->request(node, std::chrono::seconds(5), status_atom::value)
        .receive([&](node_status& s) { result = std::move(s); },
                 [&](caf::error& e) { error = system.render(e); });
    if (!result) throw NodeError(fmt::format("node {}: the node actor did not answer: {}", node_name, error));
    return std::move(*result);
  };

  std::vector<Dial> dials;
  for (const config::NodeConfig& n : cluster.nodes) {
    if (n.name > node_name) dials.push_back(Dial{.peer = &n, .next_try = {}, .backoff = first_backoff, .last_error = {}});
  }

  const auto start = Clock::now();
  const auto deadline = start + peer_timeout;
  auto next_log = start + options.wait_log_interval;
  bool ready = false;
  while (!stop.requested()) {
    const node_status status = query();
    gauges.update(status);
    auto now = Clock::now();
    for (Dial& d : dials) {
      const auto it = std::find_if(status.peers.begin(), status.peers.end(),
                                   [&](const peer_status& p) { return p.name == d.peer->name; });
      if (it == status.peers.end() || !needs_dial(it->state) || now < d.next_try) continue;
      const std::string address = d.peer->transport_address();
      try {
        const tr::PeerId id = transport.connect(address, options.connect_timeout);
        caf::anon_send(node, peer_connected{id, address, true, d.peer->name});
        d.backoff = first_backoff;
        d.last_error.clear();
      } catch (const tr::TransportError& e) {
        if (e.code() == tr::Errc::closed) throw;
        d.last_error = e.what();
        d.next_try = Clock::now() + d.backoff;
        d.backoff = std::min(d.backoff * 2, max_backoff);
      }
      now = Clock::now();
    }
    if (!ready && status.ready) {
      ready = true;
      log(fmt::format("ready after {} ms", std::chrono::duration_cast<milliseconds>(now - start).count()));
      if (options.on_ready) options.on_ready(status);
    }
    if (!ready) {
      if (now >= deadline) {
        throw NodeError(fmt::format("node {}: timed out after {:.3g} s waiting for {}", node_name,
                                    std::chrono::duration<double>(peer_timeout).count(), waiting_for(status, dials)));
      }
      if (now >= next_log) {
        log("waiting for " + waiting_for(status, dials));
        next_log += options.wait_log_interval;
      }
    }
    stop.wait_for(ready ? milliseconds(250) : milliseconds(20));
  }
  log(fmt::format("stopping ({})", stop.reason()));
  return 0;
}

}  // namespace sy::actors::node
