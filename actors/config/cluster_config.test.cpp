#include "actors/config/cluster_config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace sy::actors::config {
namespace {

using ::testing::HasSubstr;

// A valid four-node cluster; tests break one thing at a time.
constexpr const char* kGood = R"(
[cluster]
name = "test"
admin_token = "s3cret"

[model]
path = "/models/tiny"
numerics = "dequant"
backend = "ref"

[api]
rpc = "127.0.0.1:17433"

[decode]
kv_pages = 128
max_batch = 8

[experts]
redundant = 2

[[node]]
name = "router"
transport_port = 17500
metrics_port = 17600
roles = ["router", "load_stats", "controller"]

[[node]]
name = "prefill0"
transport_port = 17501
metrics_port = 17601
roles = ["prefill"]

[[node]]
name = "decode0"
host = "127.0.0.1"
transport_port = 17502
metrics_port = 17602
roles = ["decode", "expert_host"]

[[node]]
name = "decode1"
transport_port = 17503
metrics_port = 17603
roles = ["decode"]
)";

std::string error_of(const std::string& text) {
  try {
    parse_cluster_config(text, "c.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// kGood with `from` replaced by `to` (which must occur once).
std::string with(std::string from, std::string to) {
  std::string text = kGood;
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  EXPECT_EQ(text.find(from, at + 1), std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(ClusterConfig, ParsesEveryField) {
  const ClusterConfig c = parse_cluster_config(kGood, "c.toml");
  EXPECT_EQ(c.source, "c.toml");
  EXPECT_EQ(c.cluster.name, "test");
  EXPECT_EQ(c.cluster.admin_token, "s3cret");
  EXPECT_EQ(c.cluster.heartbeat_ms, 1000u);
  EXPECT_EQ(c.cluster.peer_timeout_s, 30u);
  EXPECT_EQ(c.model.path, "/models/tiny");
  EXPECT_EQ(c.model.numerics, "dequant");
  EXPECT_EQ(c.model.backend, "ref");
  EXPECT_EQ(c.api.rpc.to_string(), "127.0.0.1:17433");
  EXPECT_EQ(c.api.http.to_string(), "127.0.0.1:8000");  // default
  EXPECT_EQ(c.decode.kv_pages, 128u);
  EXPECT_EQ(c.decode.max_batch, 8u);
  EXPECT_EQ(c.experts.redundant, 2u);
  ASSERT_EQ(c.nodes.size(), 4u);
  EXPECT_EQ(c.nodes[0].name, "router");
  EXPECT_EQ(c.nodes[0].host, "127.0.0.1");  // default
  EXPECT_EQ(c.nodes[0].transport_address(), "127.0.0.1:17500");
  EXPECT_EQ(c.nodes[0].metrics_port, 17600);
  EXPECT_EQ(join_roles(c.nodes[0].roles), "router, load_stats, controller");
  EXPECT_TRUE(c.nodes[2].has_role(Role::expert_host));
  EXPECT_EQ(c.nodes[2].line, 33u);
  EXPECT_EQ(c.nodes_with(Role::decode).size(), 2u);
  EXPECT_EQ(&c.node("decode1"), &c.nodes[3]);
}

TEST(ClusterConfig, MinimalConfigTakesDefaults) {
  const ClusterConfig c = parse_cluster_config(R"(
[[node]]
name = "a"
transport_port = 1
metrics_port = 2
roles = ["router", "prefill", "decode"]
)");
  EXPECT_EQ(c.cluster.name, "switchyard");
  EXPECT_TRUE(c.cluster.admin_token.empty());
  EXPECT_EQ(c.model.numerics, "fp8act");
  EXPECT_TRUE(c.model.backend.empty());
  EXPECT_EQ(c.api.rpc.to_string(), "127.0.0.1:7433");
  EXPECT_EQ(c.decode.kv_pages, 4096u);
  EXPECT_EQ(c.experts.redundant, 0u);
}

TEST(ClusterConfig, RoundTripsThroughToToml) {
  const ClusterConfig a = parse_cluster_config(kGood, "c.toml");
  const ClusterConfig b = parse_cluster_config(to_toml(a), "c.toml");
  EXPECT_EQ(to_toml(a), to_toml(b));
  ASSERT_EQ(b.nodes.size(), 4u);
  EXPECT_EQ(b.nodes[2].roles, a.nodes[2].roles);
  EXPECT_EQ(b.cluster.admin_token, "s3cret");
}

TEST(ClusterConfig, MetricsCanBeTurnedOffAndRoundTrip) {
  EXPECT_TRUE(parse_cluster_config(kGood, "c.toml").cluster.metrics);
  const ClusterConfig off = parse_cluster_config(with("name = \"test\"\n", "name = \"test\"\nmetrics = false\n"), "c.toml");
  EXPECT_FALSE(off.cluster.metrics);
  EXPECT_FALSE(parse_cluster_config(to_toml(off), "c.toml").cluster.metrics);
  EXPECT_THAT(error_of(with("name = \"test\"\n", "name = \"test\"\nmetrics = 0\n")),
              HasSubstr("cluster.metrics: expected true or false"));
}

TEST(ClusterConfig, MaxMoveFractionIsAFractionAndRoundTrips) {
  const ClusterConfig c = parse_cluster_config(with("redundant = 2\n", "redundant = 2\n\n[balance]\nmax_move_fraction = 0.1\n"), "c.toml");
  EXPECT_DOUBLE_EQ(c.balance.max_move_fraction, 0.1);
  EXPECT_DOUBLE_EQ(parse_cluster_config(to_toml(c), "c.toml").balance.max_move_fraction, 0.1);
  EXPECT_THAT(error_of(with("redundant = 2\n", "redundant = 2\n\n[balance]\nmax_move_fraction = 1.5\n")),
              HasSubstr("balance.max_move_fraction"));
}

TEST(ClusterConfig, RpcTlsNeedsCertificateAndKeyAndRoundTrips) {
  const std::string tls = "rpc = \"127.0.0.1:17433\"\nrpc_tls_cert = \"/etc/sy/api.pem\"\nrpc_tls_key = \"/etc/sy/api.key\"\n";
  const ClusterConfig c = parse_cluster_config(with("rpc = \"127.0.0.1:17433\"\n", tls), "c.toml");
  EXPECT_EQ(c.api.rpc_tls_cert, "/etc/sy/api.pem");
  EXPECT_EQ(parse_cluster_config(to_toml(c), "c.toml").api.rpc_tls_key, "/etc/sy/api.key");
  EXPECT_THAT(error_of(with("rpc = \"127.0.0.1:17433\"\n", "rpc = \"127.0.0.1:17433\"\nrpc_tls_cert = \"a.pem\"\n")),
              HasSubstr("api.rpc_tls_key: TLS needs both rpc_tls_cert and rpc_tls_key"));
}

TEST(ClusterConfig, UnknownRoleNamesKeyLineAndChoices) {
  const std::string e = error_of(with("roles = [\"decode\"]\n", "roles = [\"decoder\"]\n"));
  EXPECT_THAT(e, HasSubstr("c.toml:44:"));
  EXPECT_THAT(e, HasSubstr("node[3] (decode1).roles"));
  EXPECT_THAT(e, HasSubstr("unknown role \"decoder\""));
  EXPECT_THAT(e, HasSubstr("expert_host"));
}

TEST(ClusterConfig, RefusesBrokenRules) {
  struct Case {
    std::string from, to, expected;
  };
  const Case cases[] = {
      {"name = \"decode1\"", "name = \"decode0\"", "c.toml:40: node[3].name: duplicate node name \"decode0\" (first defined on line 33)"},
      {"transport_port = 17503", "transport_port = 17501", "port 127.0.0.1:17501 is already used by node[1] (prefill0).transport_port"},
      {"metrics_port = 17603", "metrics_port = 17502", "node[3] (decode1).metrics_port: port 127.0.0.1:17502 is already used"},
      {"rpc = \"127.0.0.1:17433\"", "rpc = \"127.0.0.1:17600\"", "api.rpc: port 127.0.0.1:17600 is already used by node[0]"},
      {"roles = [\"router\", \"load_stats\", \"controller\"]", "roles = [\"load_stats\"]", "no node has role \"router\""},
      {"roles = [\"prefill\"]", "roles = [\"router\"]", "no node has role \"prefill\""},
      {"roles = [\"decode\", \"expert_host\"]", "roles = [\"controller\"]", "node (decode0).roles: role \"controller\" is already on node \"router\""},
      {"roles = [\"prefill\"]", "roles = [\"prefill\", \"prefill\"]", "c.toml:31: node[1] (prefill0).roles: role \"prefill\" listed twice"},
      {"roles = [\"prefill\"]", "roles = []", "node[1] (prefill0).roles: must name at least one"},
      {"roles = [\"prefill\"]", "roles = \"prefill\"", "roles: expected a list of role names, got a string"},
      {"transport_port = 17501", "transport_port = 0", "c.toml:29: node[1] (prefill0).transport_port: 0 is out of range [1, 65535]"},
      {"transport_port = 17501", "transport_port = 70000", "70000 is out of range"},
      {"transport_port = 17501", "transport_port = \"17501\"", "transport_port: expected an integer, got a string"},
      {"transport_port = 17501\n", "", "node[1] (prefill0): missing key \"transport_port\""},
      {"name = \"prefill0\"\n", "", "c.toml:27: node[1]: missing key \"name\""},
      {"name = \"prefill0\"", "name = \"pre fill\"", "node[1].name: \"pre fill\" must be 1..64 characters"},
      {"metrics_port = 17601", "metrics_port = 17601\ntrasport_port = 1", "c.toml:31: node[1] (prefill0).trasport_port: unknown key"},
      {"host = \"127.0.0.1\"", "host = \"\"", "node[2] (decode0).host: \"\" is not an IP address"},
      {"numerics = \"dequant\"", "numerics = \"fp4\"", "c.toml:8: model.numerics: \"fp4\" is not fp8act or dequant"},
      {"backend = \"ref\"", "backend = \"tpu\"", "model.backend: \"tpu\" is not ref, cpu or cuda"},
      {"rpc = \"127.0.0.1:17433\"", "rpc = \"127.0.0.1\"", "c.toml:12: api.rpc: \"127.0.0.1\" is not HOST:PORT"},
      {"rpc = \"127.0.0.1:17433\"", "rpc = \"h:99999\"", "is not HOST:PORT with a port in 1..65535"},
      {"kv_pages = 128", "kv_pages = 0", "decode.kv_pages: 0 is out of range"},
      {"max_batch = 8", "max_batch = 1.5", "decode.max_batch: expected an integer, got a float"},
      {"redundant = 2", "redundant = -1", "experts.redundant: -1 is out of range"},
      {"admin_token = \"s3cret\"", "admin_token = \"\"", "cluster.admin_token: must not be empty"},
      {"[experts]", "[expert]", "c.toml:18: expert: unknown key"},
      {"[experts]", "[decode.experts]", "c.toml:18: decode.experts: unknown key"},
      {"name = \"test\"", "name = \"test", "c.toml:3:"},  // TOML syntax error, with line and column
  };
  for (const Case& c : cases) {
    EXPECT_THAT(error_of(with(c.from, c.to)), HasSubstr(c.expected)) << c.from << " -> " << c.to;
  }
}

TEST(ClusterConfig, RefusesASectionOfTheWrongType) {
  EXPECT_THAT(error_of("experts = 3\n"), HasSubstr("c.toml:1: experts: expected a [experts] table, got an integer"));
}

TEST(ClusterConfig, RefusesAClusterWithoutNodes) {
  EXPECT_THAT(error_of("[cluster]\nname = \"x\"\n"), HasSubstr("c.toml: node: no [[node]] entries"));
  EXPECT_THAT(error_of("node = 1\n"), HasSubstr("c.toml:1: node: expected [[node]] entries"));
}

TEST(ClusterConfig, NodeLookupNamesTheConfiguredNodes) {
  const ClusterConfig c = parse_cluster_config(kGood, "c.toml");
  try {
    c.node("decode7");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no node named \"decode7\" (configured: router, prefill0, decode0, decode1)"));
  }
}

TEST(ClusterConfig, LoadsAFileAndReportsUnreadableOnes) {
  const ClusterConfig c = load_cluster_config(std::string(SY_SOURCE_DIR) + "/deploy/local-cluster.toml");
  EXPECT_EQ(c.nodes.size(), 4u);
  EXPECT_EQ(c.nodes_with(Role::decode).size(), 2u);
  EXPECT_THROW(load_cluster_config("/nonexistent/cluster.toml"), ConfigError);
}

}  // namespace
}  // namespace sy::actors::config
