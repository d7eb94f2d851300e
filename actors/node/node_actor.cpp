#include "actors/node/node_actor.hpp"

#include <unistd.h>

#include <capnp/message.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace sy::actors::node {
namespace {

namespace tr = sy::transport;
using Clock = std::chrono::steady_clock;
using schemas::MessageKind;

// config::Role and the wire's schemas::Role list the roles in the same order.
static_assert(static_cast<int>(config::Role::router) == static_cast<int>(schemas::Role::ROUTER));
static_assert(static_cast<int>(config::Role::prefill) == static_cast<int>(schemas::Role::PREFILL));
static_assert(static_cast<int>(config::Role::decode) == static_cast<int>(schemas::Role::DECODE));
static_assert(static_cast<int>(config::Role::expert_host) == static_cast<int>(schemas::Role::EXPERT_HOST));
static_assert(static_cast<int>(config::Role::load_stats) == static_cast<int>(schemas::Role::LOAD_STATS));
static_assert(static_cast<int>(config::Role::controller) == static_cast<int>(schemas::Role::CONTROLLER));
static_assert(config::role_count == 6, "a new role needs its schemas::Role enumerant and the asserts above");

struct Peer {
  const config::NodeConfig* config = nullptr;
  PeerState state = PeerState::waiting;
  tr::PeerId id = tr::invalid_peer;
  std::vector<config::Role> roles;
  std::uint32_t pid = 0;
  std::uint64_t incarnation = 0;
  std::optional<Clock::time_point> last_heartbeat;
  std::string reason;
};

struct NodeState {
  NodeActorArgs args;
  const config::NodeConfig* me = nullptr;
  std::map<std::string, Peer> peers;           // by configured name
  std::map<tr::PeerId, std::string> names;     // connection -> peer name, once known
  std::map<tr::PeerId, bool> greeted;          // connections we sent our NodeHello on
  bool ready = false;
  bool draining = false;
  std::uint64_t heartbeat_sequence = 0;
  static inline const char* name = "sy.node";
};

using Self = node_actor::stateful_pointer<NodeState>;

template <class... Args>
void log(const NodeState& s, fmt::format_string<Args...> format, Args&&... args) {
  std::fprintf(stderr, "switchyard node %s: %s\n", s.args.self.c_str(),
               fmt::format(format, std::forward<Args>(args)...).c_str());
}

std::uint64_t now_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count());
}

void set_roles(capnp::List<schemas::Role>::Builder out, const std::vector<config::Role>& roles) {
  for (unsigned i = 0; i < roles.size(); ++i) out.set(i, static_cast<schemas::Role>(roles[i]));
}

void send_hello(NodeState& s, tr::PeerId peer) {
  if (s.greeted[peer]) return;
  s.greeted[peer] = true;
  capnp::MallocMessageBuilder message;
  auto hello = message.initRoot<schemas::NodeHello>();
  hello.getNode().setName(s.args.self);
  hello.getNode().setAddress(s.args.bridge->transport().local_address());
  set_roles(hello.initRoles(static_cast<unsigned>(s.me->roles.size())), s.me->roles);
  hello.setPid(static_cast<std::uint32_t>(::getpid()));
  hello.setProtocolVersion(schemas::wire_version);
  hello.setIncarnation(s.args.incarnation);
  s.args.bridge->send<schemas::NodeHello>(peer, message);
}

void send_ack(NodeState& s, tr::PeerId peer, MessageKind kind, std::uint64_t sequence, bool ok,
              const std::string& text) {
  capnp::MallocMessageBuilder message;
  auto ack = message.initRoot<schemas::Ack>();
  ack.setKind(static_cast<std::uint16_t>(kind));
  ack.setSequence(sequence);
  ack.setOk(ok);
  ack.setMessage(text.substr(0, schemas::limits::max_message_bytes));
  s.args.bridge->send<schemas::Ack>(peer, message);
}

// The name a connection belongs to, or "peer N" before its hello.
std::string who(const NodeState& s, tr::PeerId peer) {
  const auto it = s.names.find(peer);
  return it != s.names.end() ? it->second : fmt::format("peer {}", peer);
}

Peer* peer_of(NodeState& s, tr::PeerId id) {
  const auto it = s.names.find(id);
  if (it == s.names.end()) return nullptr;
  Peer& p = s.peers.at(it->second);
  return p.id == id ? &p : nullptr;
}

void send_ready(NodeState& s, tr::PeerId peer) {
  capnp::MallocMessageBuilder message;
  auto ready = message.initRoot<schemas::NodeReady>();
  ready.setIncarnation(s.args.incarnation);
  set_roles(ready.initRoles(static_cast<unsigned>(s.me->roles.size())), s.me->roles);
  s.args.bridge->send<schemas::NodeReady>(peer, message);
}

void check_ready(NodeState& s) {
  if (s.ready) return;
  for (const auto& [name, p] : s.peers) {
    if (p.state != PeerState::hello && p.state != PeerState::ready) return;
  }
  s.ready = true;
  // No role loads anything yet, so the node accepts work as soon as its peers are known.
  // TODO(roles): announce once the hosted roles report loaded.
  for (const auto& [name, p] : s.peers) send_ready(s, p.id);
}

void on_hello(NodeState& s, tr::PeerId from, schemas::NodeHello::Reader hello) {
  const std::string name = hello.getNode().getName();
  auto refuse = [&](const std::string& why) {
    log(s, "refusing NodeHello from peer {} ({}): {}", from, name, why);
    send_ack(s, from, MessageKind::node_hello, 0, false, why);
  };
  if (hello.getProtocolVersion() != schemas::wire_version) {
    return refuse(fmt::format("protocol version {} is not this node's {}", hello.getProtocolVersion(),
                              schemas::wire_version));
  }
  const auto it = s.peers.find(name);
  if (it == s.peers.end()) {
    return refuse(fmt::format("\"{}\" is not a peer in {} (cluster \"{}\")", name, s.args.cluster->source,
                              s.args.cluster->cluster.name));
  }
  send_hello(s, from);  // an inbound connection whose peer_connected we have not seen yet
  Peer& p = it->second;
  if (p.id != tr::invalid_peer && p.id != from) {
    if (p.incarnation != hello.getIncarnation()) log(s, "peer {} restarted (pid {})", name, hello.getPid());
    s.names.erase(p.id);
  }
  if (p.incarnation != 0 && p.incarnation != hello.getIncarnation()) p.last_heartbeat.reset();
  p.id = from;
  s.names[from] = name;
  s.args.bridge->name_peer(from, name);
  p.roles.clear();
  for (schemas::Role r : hello.getRoles()) p.roles.push_back(static_cast<config::Role>(r));
  p.pid = hello.getPid();
  p.incarnation = hello.getIncarnation();
  p.reason.clear();
  p.state = PeerState::hello;
  if (s.args.peers != nullptr) s.args.peers->up(name, from, p.roles);
  if (s.ready) {
    send_ready(s, from);  // a peer that (re)joined after we became ready
  } else {
    check_ready(s);
  }
}

node_status status_of(const NodeState& s) {
  node_status out;
  out.name = s.args.self;
  out.address = s.args.bridge->transport().local_address();
  for (config::Role r : s.me->roles) out.roles.emplace_back(config::role_name(r));
  out.ready = s.ready;
  out.draining = s.draining;
  const auto now = Clock::now();
  for (const config::NodeConfig& n : s.args.cluster->nodes) {  // config order
    const auto it = s.peers.find(n.name);
    if (it == s.peers.end()) continue;
    const Peer& p = it->second;
    peer_status ps;
    ps.name = n.name;
    ps.address = n.transport_address();
    ps.state = p.state;
    for (config::Role r : p.roles) ps.roles.emplace_back(config::role_name(r));
    ps.pid = p.pid;
    if (p.last_heartbeat) {
      ps.last_heartbeat_ms_ago =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - *p.last_heartbeat).count();
    }
    ps.reason = p.reason;
    out.peers.push_back(std::move(ps));
  }
  const BridgeStats stats = s.args.bridge->stats();
  out.bad_frames = stats.bad_frames;
  out.unrouted = stats.unrouted;
  return out;
}

node_actor::behavior_type node_actor_impl(Self self, NodeActorArgs args) {
  NodeState& s = self->state;
  s.args = std::move(args);
  s.me = &s.args.cluster->node(s.args.self);
  for (const config::NodeConfig& n : s.args.cluster->nodes) {
    if (n.name != s.args.self) s.peers[n.name].config = &n;
  }
  const auto beat = std::chrono::milliseconds(s.args.cluster->cluster.heartbeat_ms);
  self->delayed_send(self, beat, tick_atom::value);
  check_ready(s);  // a one-node cluster is ready at once
  return {
      [self](const peer_connected& c) {
        NodeState& st = self->state;
        if (c.outbound) {
          Peer& p = st.peers.at(c.name);
          if (p.id != tr::invalid_peer && p.id != c.peer) st.names.erase(p.id);
          p.id = c.peer;
          if (p.state == PeerState::waiting || p.state == PeerState::left || p.state == PeerState::lost) {
            p.state = PeerState::connected;
          }
          st.names[c.peer] = c.name;
          st.args.bridge->name_peer(c.peer, c.name);
        }
        send_hello(st, c.peer);
      },
      [self](const peer_down& d) {
        NodeState& st = self->state;
        st.greeted.erase(d.peer);
        if (st.args.peers != nullptr) st.args.peers->down(d.peer, d.graceful, d.reason);
        Peer* p = peer_of(st, d.peer);
        if (p == nullptr) {
          st.names.erase(d.peer);
          return;
        }
        p->state = d.graceful ? PeerState::left : PeerState::lost;
        p->reason = d.reason;
        p->id = tr::invalid_peer;
        log(st, "peer {} {}: {}", who(st, d.peer), d.graceful ? "left" : "lost", d.reason);
        st.names.erase(d.peer);
      },
      [self](const received<schemas::NodeHello>& m) { on_hello(self->state, m.from, m.reader()); },
      [self](const received<schemas::NodeReady>& m) {
        Peer* p = peer_of(self->state, m.from);
        if (p == nullptr) return log(self->state, "NodeReady from peer {} before its NodeHello; ignored", m.from);
        if (m.reader().getIncarnation() == p->incarnation) p->state = PeerState::ready;
      },
      [self](const received<schemas::Heartbeat>& m) {
        if (Peer* p = peer_of(self->state, m.from)) p->last_heartbeat = Clock::now();
      },
      [self](const received<schemas::Drain>& m) {
        NodeState& st = self->state;
        const auto d = m.reader();
        log(st, "draining on request of {} (grace {} ms): {}", who(st, m.from), d.getGraceMs(),
            std::string(d.getReason()));
        // No role holds work yet, so the drain completes at once.
        // TODO(roles): drain the hosted roles and report WorkerLoad until they are idle.
        st.draining = true;
        send_ack(st, m.from, MessageKind::drain, d.getSequence(), true, "draining");
      },
      [self](const received<schemas::Shutdown>& m) {
        NodeState& st = self->state;
        const auto d = m.reader();
        const std::string reason =
            fmt::format("Shutdown from {}: {}", who(st, m.from), std::string(d.getReason()));
        log(st, "{}", reason);
        send_ack(st, m.from, MessageKind::shutdown, d.getSequence(), true, "shutting down");
        if (st.args.request_stop) st.args.request_stop(reason);
      },
      [self](const received<schemas::Ack>& m) {
        const auto a = m.reader();
        if (!a.getOk()) {
          log(self->state, "{} refused our {}: {}", who(self->state, m.from),
              schemas::kind_name(static_cast<MessageKind>(a.getKind())), std::string(a.getMessage()));
        }
      },
      [self, beat](tick_atom) {
        NodeState& st = self->state;
        for (const auto& [name, p] : st.peers) {
          if (p.state != PeerState::hello && p.state != PeerState::ready) continue;
          capnp::MallocMessageBuilder message;
          auto hb = message.initRoot<schemas::Heartbeat>();
          hb.setMonotonicMs(now_ms());
          hb.setSequence(++st.heartbeat_sequence);
          st.args.bridge->send<schemas::Heartbeat>(p.id, message);
        }
        // TODO(roles): mark a peer suspect after a few silent intervals (a wedged, connected node).
        self->delayed_send(self, beat, tick_atom::value);
      },
      [self](status_atom) -> node_status { return status_of(self->state); },
  };
}

}  // namespace

node_actor spawn_node_actor(caf::actor_system& system, NodeActorArgs args) {
  TransportBridge* bridge = args.bridge;
  auto actor = system.spawn(node_actor_impl, std::move(args));
  const auto dynamic = caf::actor_cast<caf::actor>(actor);
  for (MessageKind kind : {MessageKind::node_hello, MessageKind::node_ready, MessageKind::heartbeat,
                           MessageKind::drain, MessageKind::shutdown, MessageKind::ack}) {
    bridge->route(kind, dynamic);
  }
  bridge->route_peer_events(dynamic);
  return actor;
}

std::string roles_text(const std::vector<std::string>& roles) {
  std::string out;
  for (const std::string& r : roles) out += (out.empty() ? "" : " ") + r;
  return out;
}

}  // namespace sy::actors::node
