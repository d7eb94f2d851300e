// The transport bridge and the node actor over the loopback transport: node "a" runs the bridge and
// the node actor; the test plays peer "b" with a bare transport, sending good and bad frames.
#include "actors/node/transport_bridge.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <capnp/message.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "actors/interfaces.hpp"
#include "actors/node/node.hpp"
#include "actors/node/node_actor.hpp"
#include "monitoring/metrics.hpp"
#include "schemas/wire_samples.hpp"
#include "transport/loopback/loopback_transport.hpp"
#include "transport/tests/test_util.hpp"

namespace sy::actors::node {
namespace {

namespace tr = sy::transport;
using namespace std::chrono_literals;
using schemas::MessageKind;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kTwoNodes = R"(
[cluster]
name = "bridge-test"
heartbeat_ms = 50
[[node]]
name = "a"
transport_port = 1
metrics_port = 2
roles = ["router", "prefill"]
[[node]]
name = "b"
transport_port = 3
metrics_port = 4
roles = ["decode"]
)";

std::vector<std::byte> bytes_of(std::string_view text) {
  const auto* p = reinterpret_cast<const std::byte*>(text.data());
  return {p, p + text.size()};
}

schemas::Frame hello_frame(const std::string& name, const std::string& address) {
  capnp::MallocMessageBuilder message;
  auto hello = message.initRoot<schemas::NodeHello>();
  hello.getNode().setName(name);
  hello.getNode().setAddress(address);
  hello.initRoles(1).set(0, schemas::Role::DECODE);
  hello.setPid(static_cast<std::uint32_t>(::getpid()));
  hello.setProtocolVersion(schemas::wire_version);
  hello.setIncarnation(42);
  return schemas::encode<schemas::NodeHello>(message);
}

schemas::Frame sample_of(MessageKind kind) {
  for (const auto& s : schemas::testing::wire_samples()) {
    if (s.kind == kind) return s.frame;
  }
  ADD_FAILURE() << "no sample of " << schemas::kind_name(kind);
  return {};
}

class BridgeTest : public ::testing::Test {
 protected:
  BridgeTest() {
    cfg_.add_message_types<caf::id_block::sy_actors>();
    system_ = std::make_unique<caf::actor_system>(cfg_);
    a_.listen(cluster_.node("a").transport_address());
    b_.listen(cluster_.node("b").transport_address());
    for (MessageKind k : {MessageKind::node_hello, MessageKind::node_ready, MessageKind::ack}) {
      b_.set_handler(static_cast<tr::AmId>(k), inbox_[static_cast<std::size_t>(k)].handler(static_cast<tr::AmId>(k)));
    }
    bridge_ = std::make_unique<TransportBridge>(a_, "a");
    node_ = spawn_node_actor(*system_, NodeActorArgs{&cluster_, "a", bridge_.get(), nullptr, 7,
                                                     [this](const std::string& r) { stop_.request(r); }});
    to_a_ = b_.connect(cluster_.node("a").transport_address(), 5s);
  }

  ~BridgeTest() override {
    b_.close(1s);
    a_.close(1s);
    bridge_.reset();
    caf::anon_send_exit(node_, caf::exit_reason::user_shutdown);
    system_.reset();
  }

  // Sends a frame from b to a under `am_id`, in the header (as header kinds travel).
  void send_header(tr::AmId am_id, const std::vector<std::byte>& frame) {
    tr::testing::Awaited done;
    b_.send(to_a_, am_id, frame, {}, done.completion());
    ASSERT_TRUE(done.wait().ok());
  }
  void send(MessageKind kind, const schemas::Frame& frame) {
    const auto parts = schemas::am_parts(kind, frame);
    tr::testing::Awaited done;
    b_.send(to_a_, static_cast<tr::AmId>(kind), parts.header, parts.payload, done.completion());
    ASSERT_TRUE(done.wait().ok());
  }

  node_status status() {
    caf::scoped_actor self{*system_};
    node_status out;
    self->request(node_, 5s, status_atom::value)
        .receive([&](node_status& s) { out = std::move(s); }, [&](caf::error& e) { ADD_FAILURE() << system_->render(e); });
    return out;
  }
  // Polls the node's status until `pred` holds (10 s at most).
  bool eventually(const std::function<bool(const node_status&)>& pred) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred(status())) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  tr::testing::Mailbox& inbox(MessageKind k) { return inbox_[static_cast<std::size_t>(k)]; }

  const config::ClusterConfig cluster_ = config::parse_cluster_config(kTwoNodes, "two.toml");
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> system_;
  std::shared_ptr<tr::loopback::LoopbackFabric> fabric_ = std::make_shared<tr::loopback::LoopbackFabric>();
  tr::loopback::LoopbackTransport a_{fabric_};
  tr::loopback::LoopbackTransport b_{fabric_};
  std::array<tr::testing::Mailbox, schemas::message_kind_count + 1> inbox_;
  std::unique_ptr<TransportBridge> bridge_;
  node_actor node_;
  StopLatch stop_;
  tr::PeerId to_a_ = tr::invalid_peer;
};

TEST_F(BridgeTest, BadFramesAreCountedAndIgnoredThenAHelloReachesTheNodeActor) {
  // The node greets the new connection first.
  ASSERT_TRUE(inbox(MessageKind::node_hello).wait_for(1));
  {
    const auto m = inbox(MessageKind::node_hello).messages().at(0);
    const auto hello = schemas::decode<schemas::NodeHello>(m.header);
    EXPECT_EQ(std::string(hello->getNode().getName()), "a");
    EXPECT_EQ(hello->getIncarnation(), 7u);
  }
  send_header(static_cast<tr::AmId>(MessageKind::node_hello), bytes_of("garbage, not a frame"));  // malformed
  send_header(static_cast<tr::AmId>(MessageKind::node_hello), sample_of(MessageKind::heartbeat));  // another kind
  send_header(static_cast<tr::AmId>(MessageKind::node_hello), {});                                 // empty
  ASSERT_TRUE(eventually([](const node_status& s) { return s.bad_frames == 3; }));
  EXPECT_EQ(bridge_->stats().bad_frames, 3u);
  EXPECT_EQ(bridge_->stats().delivered, 0u);
  node_status s = status();
  ASSERT_EQ(s.peers.size(), 1u);
  EXPECT_EQ(s.peers[0].state, PeerState::waiting);  // the inbound connection has no name yet
  EXPECT_FALSE(s.ready);

  send(MessageKind::node_hello, hello_frame("b", "127.0.0.1:3"));
  ASSERT_TRUE(eventually([](const node_status& st) { return st.ready; }));
  s = status();
  EXPECT_EQ(s.peers[0].name, "b");
  EXPECT_EQ(s.peers[0].state, PeerState::hello);
  EXPECT_EQ(s.peers[0].roles, std::vector<std::string>{"decode"});
  EXPECT_EQ(s.peers[0].pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(s.bad_frames, 3u);
  EXPECT_EQ(ready_line(s), "node a ready (roles router prefill, peers b)");
  // Ready: a announces NodeReady to b, and beats heartbeats.
  ASSERT_TRUE(inbox(MessageKind::node_ready).wait_for(1));
}

TEST_F(BridgeTest, ValidMessageOfAKindNobodyTakesIsCountedAsUnrouted) {
  send(MessageKind::token_batch, sample_of(MessageKind::token_batch));
  ASSERT_TRUE(eventually([](const node_status& s) { return s.unrouted == 1; }));
  EXPECT_EQ(bridge_->stats().bad_frames, 0u);
}

// The bridge's metrics as the registry serves them: text of one family's series, "label=value,...
// value" per line (labels sorted), or "" when the family is absent.
std::string series_of(const monitoring::Registry& registry, std::string_view family) {
  std::string out;
  for (const auto& f : registry.Collect()) {
    if (f.name != family) continue;
    for (const auto& m : f.metric) {
      std::string line;
      for (const auto& l : m.label) line += (line.empty() ? "" : ",") + l.name + "=" + l.value;
      out += line + " " + std::to_string(static_cast<long long>(m.counter.value)) + "\n";
    }
  }
  return out;
}

TEST_F(BridgeTest, MetricsCountPerPeerNameBadAndUnroutedFrames) {
  monitoring::Registry registry;
  bridge_->export_metrics(registry);
  send_header(static_cast<tr::AmId>(MessageKind::node_hello), bytes_of("garbage"));
  send(MessageKind::token_batch, sample_of(MessageKind::token_batch));
  ASSERT_TRUE(eventually([](const node_status& s) { return s.unrouted == 1 && s.bad_frames == 1; }));
  EXPECT_EQ(series_of(registry, "switchyard_node_bad_frames_total"), " 1\n");
  EXPECT_EQ(series_of(registry, "switchyard_node_unrouted_frames_total"), " 1\n");
  // Before its hello the connection has no name; after it, all its counts carry "b".
  EXPECT_THAT(series_of(registry, "switchyard_transport_messages_total"), HasSubstr("direction=in,peer=unknown 2"));
  send(MessageKind::node_hello, hello_frame("b", "127.0.0.1:3"));
  ASSERT_TRUE(eventually([](const node_status& st) { return st.ready; }));
  ASSERT_TRUE(inbox(MessageKind::node_ready).wait_for(1));
  const std::string messages = series_of(registry, "switchyard_transport_messages_total");
  EXPECT_THAT(messages, HasSubstr("direction=in,peer=b 3"));
  EXPECT_THAT(messages, Not(HasSubstr("unknown")));
  EXPECT_THAT(messages, ContainsRegex("direction=out,peer=b [1-9]"));  // its NodeHello and NodeReady at least
  EXPECT_THAT(series_of(registry, "switchyard_transport_bytes_total"), ContainsRegex("direction=in,peer=b [1-9][0-9]"));
  EXPECT_THAT(series_of(registry, "switchyard_transport_errors_total"), HasSubstr("kind=bad_frame,peer=b 1"));
}

TEST_F(BridgeTest, HelloFromAnUnknownNodeIsRefusedWithAnAck) {
  send(MessageKind::node_hello, hello_frame("stranger", "127.0.0.1:9"));
  ASSERT_TRUE(inbox(MessageKind::ack).wait_for(1));
  const auto ack = schemas::decode<schemas::Ack>(inbox(MessageKind::ack).messages().at(0).header);
  EXPECT_FALSE(ack->getOk());
  EXPECT_EQ(ack->getKind(), static_cast<std::uint16_t>(MessageKind::node_hello));
  EXPECT_THAT(std::string(ack->getMessage()), HasSubstr("\"stranger\" is not a peer in two.toml"));
  EXPECT_FALSE(status().ready);
}

TEST_F(BridgeTest, ShutdownFromAPeerIsAckedAndStopsTheNode) {
  send(MessageKind::node_hello, hello_frame("b", "127.0.0.1:3"));
  capnp::MallocMessageBuilder message;
  auto shutdown = message.initRoot<schemas::Shutdown>();
  shutdown.setSequence(5);
  shutdown.setGraceMs(1000);
  shutdown.setReason("test says so");
  send(MessageKind::shutdown, schemas::encode<schemas::Shutdown>(message));
  ASSERT_TRUE(stop_.wait_for(10s));
  EXPECT_EQ(stop_.reason(), "Shutdown from b: test says so");
  ASSERT_TRUE(inbox(MessageKind::ack).wait_for(1));
  const auto ack = schemas::decode<schemas::Ack>(inbox(MessageKind::ack).messages().at(0).header);
  EXPECT_TRUE(ack->getOk());
  EXPECT_EQ(ack->getSequence(), 5u);
}

TEST_F(BridgeTest, APeerThatClosesIsReportedAsLeft) {
  send(MessageKind::node_hello, hello_frame("b", "127.0.0.1:3"));
  ASSERT_TRUE(eventually([](const node_status& s) { return s.ready; }));
  b_.close(1s);
  ASSERT_TRUE(eventually([](const node_status& s) { return s.peers[0].state == PeerState::left; }));
}

TEST_F(BridgeTest, APeerThatDiesIsReportedAsLost) {
  send(MessageKind::node_hello, hello_frame("b", "127.0.0.1:3"));
  ASSERT_TRUE(eventually([](const node_status& s) { return s.ready; }));
  b_.kill();
  ASSERT_TRUE(eventually([](const node_status& s) { return s.peers[0].state == PeerState::lost; }));
  EXPECT_FALSE(status().peers[0].reason.empty());
}

}  // namespace
}  // namespace sy::actors::node
