// The cluster API's operator calls through a real RpcServer and Cap'n Proto client, over a
// recording OperatorService (the router and controller behind it are tested live by
// tests/system/operator_api_test.sh): the admin token gate, wire conversions both ways, answers
// that arrive later from another thread, typed errors, and a server that survives garbage bytes
// and connections that break mid-call.
#include <arpa/inet.h>
#include <capnp/ez-rpc.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/cluster_api/rpc_server.hpp"
#include "schemas/cluster.capnp.h"

namespace sy::actors::cluster_api {
namespace {

using schemas::Cluster;

// Generation is not under test here: every request is refused at once.
class NoGeneration final : public GenerationService {
 public:
  RequestId submit(GenerateInput, std::shared_ptr<GenerationSink> sink) override {
    sink->on_error(GenerationError{ErrorKind::unavailable, "no generation in this test"});
    return 1;
  }
  void cancel(RequestId) override {}
  StatusSnapshot status() override {
    StatusSnapshot s;
    s.model_name = "test";
    return s;
  }
};

// Records what it was asked; answers rounds and drains from its own thread, later.
class RecordingOperators final : public OperatorService {
 public:
  ~RecordingOperators() override {
    for (std::thread& t : threads_) t.join();
  }

  ExpertLoadInfo expert_load() override {
    ExpertLoadInfo l;
    l.window_s = 60;
    l.reports = 3;
    l.experts = 4;
    l.layers.push_back(LayerLoadInfo{1, {5, 0, 7, 1}, 0.75});
    l.hosts = {{"e0", 6}, {"e1", 7}};
    return l;
  }
  balance::ExpertPlacement placement() override { return served; }
  std::vector<RoundInfo> history() override { return {RoundInfo{2, "completed", "2 moves", "operator", 2, 200, 0.5, 0.9, 0.01, 1}}; }
  BalancingSettings balancing() override { return settings; }
  void plan_rebalance(OperatorCallback<RoundPlan> done) override { later([done] { done(plan("planned")); }); }
  void rebalance(OperatorCallback<RoundPlan> done) override {
    if (busy) return done(OperatorError(ErrorKind::overloaded, "the round for epoch 3 is still running"));
    later([done] { done(plan("completed")); });
  }
  void import_placement(balance::ExpertPlacement p, OperatorCallback<RoundPlan> done) override {
    {
      std::lock_guard lock(mutex);
      imported = std::move(p);
    }
    later([done] { done(plan("completed")); });
  }
  BalancingSettings set_paused(bool paused) override {
    settings.paused = paused;
    return settings;
  }
  BalancingSettings set_interval(double seconds) override {
    if (seconds < 1) throw OperatorError(ErrorKind::bad_request, "interval 0.5 s is outside [1, 86400]");
    settings.interval_s = seconds;
    return settings;
  }
  BalancingSettings set_threshold(double threshold) override {
    settings.threshold = threshold;
    return settings;
  }
  BalancingSettings pin(PinInfo p) override {
    settings.pins.push_back(p);
    return settings;
  }
  BalancingSettings unpin(int, int) override { throw OperatorError(ErrorKind::bad_request, "layer 1 slot 3 has no pin"); }
  void drain(std::string node, OperatorCallback<DrainReport> done) override {
    later([node, done] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      done(DrainReport{node, 2, 0.1});
    });
  }
  void undrain(const std::string&) override {}

  balance::ExpertPlacement served = balance::initial_placement(4, 2, {"e0", "e1"}, {false, true});
  BalancingSettings settings;
  bool busy = false;
  std::mutex mutex;
  std::optional<balance::ExpertPlacement> imported;  // GUARDED_BY(mutex)

 private:
  static RoundPlan plan(const char* outcome) {
    RoundPlan p;
    p.round = RoundInfo{3, outcome, "1 move", "operator", 1, 100, 0.5, 0.8, 0, 2};
    p.moves.push_back(MoveInfo{1, 0, "e0", 0, 2});
    p.layers = {1};
    p.before = {0.5};
    p.after = {0.8};
    return p;
  }
  void later(std::function<void()> f) { threads_.emplace_back(std::move(f)); }
  std::vector<std::thread> threads_;
};

RpcServerOptions options(std::string token) {
  RpcServerOptions o;
  o.listen = "127.0.0.1:0";
  o.admin_token = std::move(token);
  return o;
}

std::string failure(kj::Promise<void>&& p, kj::WaitScope& ws) {
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { p.wait(ws); })) { return e->getDescription().cStr(); }
  return "";
}

TEST(OperatorCalls, AdminNeedsTheConfiguredToken) {
  NoGeneration gen;
  RecordingOperators ops;
  {
    RpcServer none(gen, options(""), &ops);
    capnp::EzRpcClient client(none.address());
    auto req = client.getMain<Cluster>().adminRequest();
    req.setToken("anything");
    EXPECT_NE(failure(req.send().ignoreResult(), client.getWaitScope()).find("permission denied: this server has no admin token"),
              std::string::npos);
  }
  RpcServer server(gen, options("s3cret"), &ops);
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();
  for (const char* wrong : {"", "s3cre", "s3cret!", "S3cret"}) {
    auto req = cluster.adminRequest();
    req.setToken(wrong);
    EXPECT_NE(failure(req.send().ignoreResult(), ws).find("permission denied: wrong admin token"), std::string::npos)
        << wrong;
  }
  auto req = cluster.adminRequest();
  req.setToken("s3cret");
  auto admin = req.send().getAdmin();
  auto pause = admin.pauseRequest().send().wait(ws);
  EXPECT_TRUE(pause.getSettings().getPaused());
  EXPECT_TRUE(ops.settings.paused);
}

TEST(OperatorCalls, WithoutOperatorsEveryCallIsUnavailable) {
  NoGeneration gen;
  RpcServer server(gen, options("t"));
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();
  EXPECT_NE(failure(cluster.expertLoadRequest().send().ignoreResult(), ws).find("unavailable: this server has no expert"),
            std::string::npos);
  EXPECT_NE(failure(cluster.planRebalanceRequest().send().ignoreResult(), ws).find("unavailable"), std::string::npos);
  // The connection still serves.
  EXPECT_EQ(std::string(cluster.statusRequest().send().wait(ws).getStatus().getModelName().cStr()), "test");
}

TEST(OperatorCalls, ReadOnlyCallsCarryWhatTheServiceSays) {
  NoGeneration gen;
  RecordingOperators ops;
  RpcServer server(gen, options("t"), &ops);
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();
  auto load_response = cluster.expertLoadRequest().send().wait(ws);  // owns what the readers read
  auto load = load_response.getLoad();
  ASSERT_EQ(load.getLayers().size(), 1u);
  EXPECT_EQ(load.getLayers()[0].getTokens()[2], 7u);
  EXPECT_DOUBLE_EQ(load.getLayers()[0].getBalancedness(), 0.75);
  EXPECT_EQ(std::string(load.getHosts()[1].getName().cStr()), "e1");
  auto placement_response = cluster.placementRequest().send().wait(ws);
  auto placement = placement_response.getPlacement();
  EXPECT_EQ(placement.getNumLayers(), 2);
  ASSERT_EQ(placement.getLayers().size(), 1u);  // the dense layer 0 holds no slots
  EXPECT_EQ(placement.getLayers()[0].getLayer(), 1);
  EXPECT_EQ(placement.getLayers()[0].getPhy2log().size(), 6u);
  auto history_response = cluster.historyRequest().send().wait(ws);
  auto history = history_response.getRounds();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(std::string(history[0].getOutcome().cStr()), "completed");
  // An answer that arrives later, from another thread.
  auto plan_response = cluster.planRebalanceRequest().send().wait(ws);
  auto plan = plan_response.getPlan();
  EXPECT_EQ(std::string(plan.getRound().getOutcome().cStr()), "planned");
  ASSERT_EQ(plan.getMoves().size(), 1u);
  EXPECT_EQ(plan.getMoves()[0].getToExpert(), 2u);
}

TEST(OperatorCalls, AdminCallsRoundTripAndFailTyped) {
  NoGeneration gen;
  RecordingOperators ops;
  RpcServer server(gen, options("t"), &ops);
  capnp::EzRpcClient client(server.address());
  auto& ws = client.getWaitScope();
  Cluster::Client cluster = client.getMain<Cluster>();
  auto req = cluster.adminRequest();
  req.setToken("t");
  auto admin = req.send().getAdmin();

  // Import: the placement the service gets is the one exported.
  auto exported = cluster.placementRequest().send().wait(ws);
  auto import = admin.importPlacementRequest();
  import.setPlacement(exported.getPlacement());
  EXPECT_EQ(std::string(import.send().wait(ws).getPlan().getRound().getOutcome().cStr()), "completed");
  {
    std::lock_guard lock(ops.mutex);
    ASSERT_TRUE(ops.imported.has_value());
    EXPECT_EQ(ops.imported->phy2log, ops.served.phy2log);
    EXPECT_EQ(ops.imported->hosts, ops.served.hosts);
    EXPECT_EQ(ops.imported->host_of_slot, ops.served.host_of_slot);
  }
  // A layer outside numLayers is refused before the service sees it.
  auto bad = admin.importPlacementRequest();
  bad.setPlacement(exported.getPlacement());
  bad.getPlacement().getLayers()[0].setLayer(9);
  EXPECT_NE(failure(bad.send().ignoreResult(), ws).find("bad request: placement layer 9 is outside numLayers 2"),
            std::string::npos);

  auto interval = admin.setIntervalRequest();
  interval.setSeconds(0.5);
  kj::Exception::Type type = kj::Exception::Type::OVERLOADED;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { interval.send().wait(ws); })) {
    type = e->getType();
    EXPECT_NE(std::string(e->getDescription().cStr()).find("bad request: interval 0.5 s is outside"), std::string::npos);
  }
  EXPECT_EQ(type, kj::Exception::Type::FAILED);

  ops.busy = true;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { admin.rebalanceRequest().send().wait(ws); })) {
    type = e->getType();
  }
  EXPECT_EQ(type, kj::Exception::Type::OVERLOADED);

  auto pin = admin.pinRequest();
  pin.setLayer(1);
  pin.setSlot(3);
  pin.setExpert(2);
  auto pin_response = pin.send().wait(ws);
  auto pins = pin_response.getSettings().getPins();
  ASSERT_EQ(pins.size(), 1u);
  EXPECT_EQ(pins[0].getExpert(), 2u);

  auto drain = admin.drainRequest();
  drain.setNode("decode0");
  auto drain_response = drain.send().wait(ws);
  auto report = drain_response.getReport();
  EXPECT_EQ(std::string(report.getNode().cStr()), "decode0");
  EXPECT_EQ(report.getRequestsAtStart(), 2u);
}

TEST(OperatorCalls, GarbageBytesAndBrokenConnectionsLeaveTheServerServing) {
  NoGeneration gen;
  RecordingOperators ops;
  RpcServer server(gen, options("t"), &ops);
  const std::string address = server.address();
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  // A peer that sends bytes that are no Cap'n Proto message at all, then one with a huge
  // segment count.
  for (const std::string& bytes : {std::string("GET / HTTP/1.1\r\n\r\n"), std::string("\xff\xff\xff\x7f\0\0\0\0", 8)}) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    char sink[256];
    while (::read(fd, sink, sizeof(sink)) > 0) {
    }
    ::close(fd);  // the server dropped the connection
  }
  // A client that goes away while its drain is pending.
  {
    capnp::EzRpcClient gone(address);
    auto req = gone.getMain<Cluster>().adminRequest();
    req.setToken("t");
    auto drain = req.send().getAdmin().drainRequest();
    drain.setNode("decode1");
    auto pending = drain.send();
    gone.getWaitScope().poll();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the drain answers into the void
  capnp::EzRpcClient client(address);
  EXPECT_EQ(client.getMain<Cluster>().historyRequest().send().wait(client.getWaitScope()).getRounds().size(), 1u);
}

}  // namespace
}  // namespace sy::actors::cluster_api
