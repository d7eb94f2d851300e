#include "actors/config/launcher_env.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sy::actors::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Hostlist, ExpandsRangesListsAndPadding) {
  EXPECT_THAT(expand_hostlist("node[01-03,7]"), ElementsAre("node01", "node02", "node03", "node7"));
  EXPECT_THAT(expand_hostlist("a,b-2,c[9-10]"), ElementsAre("a", "b-2", "c9", "c10"));
  EXPECT_THAT(expand_hostlist("gpu[008-010]"), ElementsAre("gpu008", "gpu009", "gpu010"));
  EXPECT_THAT(expand_hostlist("r[1-2]n[1-2]"), ElementsAre("r1n1", "r1n2", "r2n1", "r2n2"));
  EXPECT_THAT(expand_hostlist("x[1-2].ib,y"), ElementsAre("x1.ib", "x2.ib", "y"));
  EXPECT_THAT(expand_hostlist("vm"), ElementsAre("vm"));
}

TEST(Hostlist, RefusesMalformedLists) {
  for (const char* bad : {"", "node[1-3", "node1-3]", "n[3-1]", "n[a-b]", "n[1,,2]", "a,,b", "n[[1]]", "[1-2]x[]"}) {
    EXPECT_THAT(error_of([&] { expand_hostlist(bad); }), HasSubstr("hostlist")) << bad;
  }
}

TEST(TasksPerNode, ExpandsRepeats) {
  EXPECT_THAT(expand_tasks_per_node("2(x3),1"), ElementsAre(2u, 2u, 2u, 1u));
  EXPECT_THAT(expand_tasks_per_node("5"), ElementsAre(5u));
  for (const char* bad : {"", "0", "2(x0)", "2(x3", "x", "1,,2", "-1"}) {
    EXPECT_THAT(error_of([&] { expand_tasks_per_node(bad); }), HasSubstr("tasks per node")) << bad;
  }
}

TEST(SlurmTaskHosts, BlockDistributionOverTheStep) {
  LauncherEnv env;
  env.vars = {{"SLURM_STEP_NODELIST", "gpu[01-02],cpu7"}, {"SLURM_STEP_TASKS_PER_NODE", "2(x2),1"},
              {"SLURM_JOB_NODELIST", "ignored[1-9]"}};
  EXPECT_THAT(slurm_task_hosts(env), ElementsAre("gpu01", "gpu01", "gpu02", "gpu02", "cpu7"));
  env.vars = {{"SLURM_JOB_NODELIST", "n[1-2]"}, {"SLURM_TASKS_PER_NODE", "1(x2)"}};  // outside a step
  EXPECT_THAT(slurm_task_hosts(env), ElementsAre("n1", "n2"));
}

TEST(SlurmTaskHosts, RefusesWhatItCannotMap) {
  LauncherEnv env;
  EXPECT_THAT(error_of([&] { slurm_task_hosts(env); }), HasSubstr("not inside a Slurm step"));
  env.vars = {{"SLURM_STEP_NODELIST", "n[1-3]"}, {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}};
  EXPECT_THAT(error_of([&] { slurm_task_hosts(env); }), HasSubstr("names 3 hosts but"));
  env.vars = {{"SLURM_STEP_NODELIST", "n[1-2]"}, {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"},
              {"SLURM_DISTRIBUTION", "cyclic"}};
  EXPECT_THAT(error_of([&] { slurm_task_hosts(env); }), HasSubstr("distribution=block"));
}

TEST(HostnameOrdinal, StatefulSetSuffix) {
  EXPECT_EQ(hostname_ordinal("switchyard-decode-12"), 12u);
  EXPECT_EQ(hostname_ordinal("decode-0"), 0u);
  EXPECT_EQ(hostname_ordinal("decode"), std::nullopt);
  EXPECT_EQ(hostname_ordinal("decode-"), std::nullopt);
  EXPECT_EQ(hostname_ordinal("decode-1a"), std::nullopt);
  EXPECT_EQ(hostname_ordinal("-3"), std::nullopt);
}

// Five nodes as deploy/slurm lays them out: rank 0 router + controller + load_stats, then prefill,
// two decode, one expert host; every host from Slurm.
constexpr const char* kSlurm = R"(
[model]
path = "/m"
[[node]]
name = "router"
host = "{slurm_host}"
transport_port = 17400
metrics_port = 19400
roles = ["router", "load_stats", "controller"]
[[node]]
name = "prefill0"
host = "{slurm_host}"
transport_port = 17401
metrics_port = 19401
roles = ["prefill"]
[[node]]
name = "decode0"
host = "{slurm_host}"
transport_port = 17402
metrics_port = 19402
roles = ["decode"]
[[node]]
name = "decode1"
host = "{slurm_host}"
transport_port = 17402
metrics_port = 19402
roles = ["decode"]
[[node]]
name = "expert0"
host = "{env:SY_TEST_DOMAIN}-{name}"
transport_port = 17404
metrics_port = 19404
roles = ["expert_host"]
)";

LauncherEnv slurm_env(std::string procid, std::string ntasks = "5") {
  LauncherEnv env;
  env.vars = {{"SLURM_PROCID", std::move(procid)}, {"SLURM_STEP_NUM_TASKS", std::move(ntasks)},
              {"SLURM_STEP_NODELIST", "gpu[1-3]"}, {"SLURM_STEP_TASKS_PER_NODE", "2,1,2"},
              {"SY_TEST_DOMAIN", "pod"}};
  return env;
}

TEST(ResolveHosts, ExpandsEveryTemplate) {
  const ClusterConfig parsed = parse_cluster_config(kSlurm, "s.toml");  // decode0/1 share ports: not compared yet
  const ClusterConfig c = resolve_hosts(parsed, slurm_env("3"));
  EXPECT_EQ(c.nodes[0].host, "gpu1");
  EXPECT_EQ(c.nodes[1].host, "gpu1");
  EXPECT_EQ(c.nodes[2].host, "gpu2");
  EXPECT_EQ(c.nodes[3].host, "gpu3");
  EXPECT_EQ(c.nodes[4].host, "pod-expert0");
}

TEST(ResolveHosts, RevalidatesPortsOnTheResolvedHosts) {
  LauncherEnv env = slurm_env("0");
  env.vars["SLURM_STEP_TASKS_PER_NODE"] = "1,3,1";  // decode0 and decode1 now on gpu2 with one port
  EXPECT_THAT(error_of([&] { resolve_hosts(parse_cluster_config(kSlurm, "s.toml"), env); }),
              HasSubstr("port gpu2:17402 is already used by node[2] (decode0)"));
}

TEST(ResolveHosts, NamesWhatIsMissing) {
  LauncherEnv env = slurm_env("0");
  env.vars.erase("SY_TEST_DOMAIN");
  EXPECT_THAT(error_of([&] { resolve_hosts(parse_cluster_config(kSlurm, "s.toml"), env); }),
              HasSubstr("node[4] (expert0).host \"{env:SY_TEST_DOMAIN}-{name}\": environment variable SY_TEST_DOMAIN"));
  env = slurm_env("0");
  env.vars["SLURM_STEP_TASKS_PER_NODE"] = "1,1,1";
  EXPECT_THAT(error_of([&] { resolve_hosts(parse_cluster_config(kSlurm, "s.toml"), env); }),
              HasSubstr("the Slurm step has 3 tasks but the config 5 nodes"));
}

TEST(ResolveHosts, ParserRefusesBadTemplates) {
  std::string text = kSlurm;
  text.replace(text.find("{env:SY_TEST_DOMAIN}"), 20, "{rank}");
  EXPECT_THAT(error_of([&] { parse_cluster_config(text, "s.toml"); }), HasSubstr("unknown placeholder {rank}"));
  text = kSlurm;
  text.replace(text.find("{env:SY_TEST_DOMAIN}"), 20, "{name");
  EXPECT_THAT(error_of([&] { parse_cluster_config(text, "s.toml"); }), HasSubstr("unclosed '{'"));
}

TEST(NodeFromEnv, SlurmRankPicksTheNodeInFileOrder) {
  const ClusterConfig c = parse_cluster_config(kSlurm, "s.toml");
  const NodeChoice choice = node_from_env(c, slurm_env("2"));
  EXPECT_EQ(choice.name, "decode0");
  EXPECT_EQ(choice.reason, "SLURM_PROCID=2 -> node decode0");
  EXPECT_THAT(error_of([&] { node_from_env(c, slurm_env("5", "6")); }),
              HasSubstr("SLURM_STEP_NUM_TASKS=6 but s.toml has 5 [[node]] entries"));
  EXPECT_THAT(error_of([&] { node_from_env(c, slurm_env("x")); }), HasSubstr("SLURM_PROCID=x is not a task rank"));
}

TEST(NodeFromEnv, KubernetesPodNameOrOrdinal) {
  const ClusterConfig c = parse_cluster_config(kSlurm, "s.toml");
  LauncherEnv env;
  env.hostname = "decode1";  // a pod named like its node
  EXPECT_EQ(node_from_env(c, env).name, "decode1");
  env.hostname = "switchyard-4";  // one StatefulSet for the whole cluster: the ordinal is the rank
  EXPECT_EQ(node_from_env(c, env).name, "expert0");
  EXPECT_EQ(node_from_env(c, env).reason, "host name switchyard-4 (StatefulSet ordinal 4) -> node expert0");
  env.hostname = "switchyard-5";
  EXPECT_THAT(error_of([&] { node_from_env(c, env); }), HasSubstr("rank 5 is out of range: the config has 5 nodes"));
  env.hostname = "laptop";
  EXPECT_THAT(error_of([&] { node_from_env(c, env); }), HasSubstr("cannot tell which node this is"));
}

}  // namespace
}  // namespace sy::actors::config
