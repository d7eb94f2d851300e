// run_node end to end in one process: several nodes, each with its own actor system, on one
// loopback fabric (the configured "IP:PORT" addresses are just names there).
#include "actors/node/node.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/loopback/loopback_transport.hpp"

namespace sy::actors::node {
namespace {

namespace tr = sy::transport;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr const char* kThreeNodes = R"(
[cluster]
name = "node-test"
heartbeat_ms = 20
[[node]]
name = "router"
transport_port = 17400
metrics_port = 19400
roles = ["router"]
[[node]]
name = "prefill0"
transport_port = 17401
metrics_port = 19401
roles = ["prefill"]
[[node]]
name = "decode0"
transport_port = 17402
metrics_port = 19402
roles = ["decode", "expert_host"]
)";

NodeOptions with_timeout(std::chrono::milliseconds peer_timeout) {
  NodeOptions options;
  options.peer_timeout = peer_timeout;
  return options;
}

// One node on its own thread: run_node's result (exit code or error text) and its ready line.
struct RunningNode {
  RunningNode(const config::ClusterConfig& cluster, const std::string& name,
              const std::shared_ptr<tr::loopback::LoopbackFabric>& fabric, NodeOptions options)
      : transport(fabric) {
    options.on_ready = [this](const node_status& s) { ready.set_value(ready_line(s)); };
    result = std::async(std::launch::async, [this, &cluster, name, options]() -> std::string {
      try {
        return "exit " + std::to_string(run_node(cluster, name, transport, stop, options));
      } catch (const std::exception& e) {
        return e.what();
      }
    });
  }
  ~RunningNode() {
    stop.request("test over");
    if (result.valid()) result.wait();
  }

  tr::loopback::LoopbackTransport transport;
  StopLatch stop;
  std::promise<std::string> ready;
  std::future<std::string> ready_line_future = ready.get_future();
  std::future<std::string> result;
};

TEST(RunNode, ThreeNodesBecomeReadyAndStopCleanly) {
  const auto cluster = config::parse_cluster_config(kThreeNodes, "three.toml");
  auto fabric = std::make_shared<tr::loopback::LoopbackFabric>();
  std::map<std::string, std::unique_ptr<RunningNode>> nodes;
  // Started in an order where dialled nodes come up last: the dialling side retries.
  for (const char* name : {"decode0", "prefill0", "router"}) {
    nodes[name] = std::make_unique<RunningNode>(cluster, name, fabric, with_timeout(10s));
    std::this_thread::sleep_for(30ms);
  }
  std::map<std::string, std::string> lines;
  for (auto& [name, node] : nodes) {
    ASSERT_EQ(node->ready_line_future.wait_for(10s), std::future_status::ready) << name;
    lines[name] = node->ready_line_future.get();
  }
  EXPECT_EQ(lines["router"], "node router ready (roles router, peers prefill0 decode0)");
  EXPECT_EQ(lines["prefill0"], "node prefill0 ready (roles prefill, peers router decode0)");
  EXPECT_EQ(lines["decode0"], "node decode0 ready (roles decode expert_host, peers router prefill0)");
  for (auto& [name, node] : nodes) node->stop.request("SIGTERM");
  for (auto& [name, node] : nodes) {
    ASSERT_EQ(node->result.wait_for(10s), std::future_status::ready) << name;
    EXPECT_EQ(node->result.get(), "exit 0") << name;
  }
}

TEST(RunNode, APeerThatNeverComesUpIsNamedAfterTheTimeout) {
  const auto cluster = config::parse_cluster_config(kThreeNodes, "three.toml");
  auto fabric = std::make_shared<tr::loopback::LoopbackFabric>();
  const NodeOptions options = with_timeout(300ms);
  // decode0 sorts first, so it dials both others; neither is up.
  RunningNode decode0(cluster, "decode0", fabric, options);
  ASSERT_EQ(decode0.result.wait_for(10s), std::future_status::ready);
  const std::string error = decode0.result.get();
  EXPECT_THAT(error, HasSubstr("node decode0: timed out after 0.3 s waiting for peer router at 127.0.0.1:17400 "
                               "(not reachable: "));
  EXPECT_THAT(error, HasSubstr("peer prefill0 at 127.0.0.1:17401 (not reachable: "));
}

TEST(RunNode, APeerThatShouldDialUsButNeverDoesIsNamed) {
  const auto cluster = config::parse_cluster_config(kThreeNodes, "three.toml");
  auto fabric = std::make_shared<tr::loopback::LoopbackFabric>();
  RunningNode router(cluster, "router", fabric, with_timeout(500ms));
  RunningNode prefill0(cluster, "prefill0", fabric, with_timeout(10s));  // stays up, so router names only decode0
  ASSERT_EQ(router.result.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(router.result.get(),
            "node router: timed out after 0.5 s waiting for peer decode0 at 127.0.0.1:17402 "
            "(it dials this node; no connection from it yet)");
}

TEST(RunNode, StopBeforeReadyExitsCleanly) {
  const auto cluster = config::parse_cluster_config(kThreeNodes, "three.toml");
  auto fabric = std::make_shared<tr::loopback::LoopbackFabric>();
  RunningNode router(cluster, "router", fabric, with_timeout(10s));
  std::this_thread::sleep_for(50ms);
  router.stop.request("SIGINT");
  ASSERT_EQ(router.result.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(router.result.get(), "exit 0");
}

TEST(RunNode, UnknownNodeAndTakenAddressAreClearErrors) {
  const auto cluster = config::parse_cluster_config(kThreeNodes, "three.toml");
  auto fabric = std::make_shared<tr::loopback::LoopbackFabric>();
  StopLatch stop;
  tr::loopback::LoopbackTransport t1(fabric);
  EXPECT_THROW(run_node(cluster, "decode9", t1, stop), config::ConfigError);
  tr::loopback::LoopbackTransport squatter(fabric);
  squatter.listen("127.0.0.1:17400");
  tr::loopback::LoopbackTransport t2(fabric);
  try {
    run_node(cluster, "router", t2, stop);
    FAIL() << "no error";
  } catch (const tr::TransportError& e) {
    EXPECT_THAT(e.what(), HasSubstr("node router: cannot listen on 127.0.0.1:17400"));
  }
}

TEST(RunNode, ARestartedPeerRejoins) {
  const auto cluster = config::parse_cluster_config(kThreeNodes, "three.toml");
  auto fabric = std::make_shared<tr::loopback::LoopbackFabric>();
  const NodeOptions options = with_timeout(10s);
  RunningNode router(cluster, "router", fabric, options);
  RunningNode prefill0(cluster, "prefill0", fabric, options);
  auto decode0 = std::make_unique<RunningNode>(cluster, "decode0", fabric, options);
  for (RunningNode* n : {&router, &prefill0, decode0.get()}) {
    ASSERT_EQ(n->ready_line_future.wait_for(10s), std::future_status::ready);
  }
  decode0.reset();  // stops politely; router and prefill0 see it leave
  decode0 = std::make_unique<RunningNode>(cluster, "decode0", fabric, options);
  // The new incarnation dials both again and becomes ready.
  ASSERT_EQ(decode0->ready_line_future.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(decode0->ready_line_future.get(), "node decode0 ready (roles decode expert_host, peers router prefill0)");
}

}  // namespace
}  // namespace sy::actors::node
