// One cluster config for any launcher: which [[node]] this process is, and where its peers are,
// from the environment that Slurm (srun) or Kubernetes (a StatefulSet pod) gives every process.
// `switchyard serve --config C --node-from-env` (or `--rank N`) uses it; docs/deployment.md walks
// through each launcher. Plain data and pure functions over a snapshot of the environment, CAF-free.
//
// Host templates: a [[node]] host may contain placeholders, expanded by resolve_hosts on every node
// process (so all agree):
//   {slurm_host}  the host that runs the Slurm task whose rank is this node's index in [[node]]
//                 order (SLURM_STEP_NODELIST or SLURM_JOB_NODELIST, SLURM_STEP_TASKS_PER_NODE or
//                 SLURM_TASKS_PER_NODE; block distribution, srun's default)
//   {name}        the node's name (Kubernetes: "{name}.switchyard-decode" is pod decode-0's DNS
//                 name under the StatefulSet's headless Service)
//   {env:VAR}     the environment variable VAR (e.g. the pod's namespace from the downward API)
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/config/cluster_config.hpp"

namespace sy::actors::config {

// What the launcher put in the environment, taken once (tests build it by hand).
struct LauncherEnv {
  std::map<std::string, std::string> vars;
  std::string hostname;  // gethostname(); a Kubernetes pod's name

  // The variable, or null when unset or empty.
  const std::string* get(std::string_view name) const;
  // This process's environment and host name.
  static LauncherEnv from_process();
};

// Slurm hostlist syntax: "node[01-03,7],gpu-a" -> node01 node02 node03 node7 gpu-a (zero padding
// kept; several bracket groups per name, "r[1-2]n[1-2]", expand left to right). Throws ConfigError.
std::vector<std::string> expand_hostlist(std::string_view list);

// Slurm tasks per node: "2(x3),1" -> {2, 2, 2, 1}. Throws ConfigError.
std::vector<std::uint32_t> expand_tasks_per_node(std::string_view text);

// The host of each Slurm task, by rank, under block distribution. Throws ConfigError when the
// variables are missing, malformed or disagree (fewer hosts than counts, a cyclic distribution).
std::vector<std::string> slurm_task_hosts(const LauncherEnv& env);

// A StatefulSet ordinal: "decode-3" -> 3; nullopt when the name does not end in "-DIGITS".
std::optional<std::uint32_t> hostname_ordinal(std::string_view hostname);

// The config with every host template expanded (a no-op without templates), validated again
// (a port bound twice on one resolved host is refused). Throws ConfigError naming the node.
ClusterConfig resolve_hosts(ClusterConfig config, const LauncherEnv& env);

// The node this process is, with a line saying how it was chosen ("SLURM_PROCID=3 -> decode0"):
//  1. SLURM_PROCID: the node at that index in [[node]] order; the step's task count
//     (SLURM_STEP_NUM_TASKS or SLURM_NTASKS) must equal the number of nodes;
//  2. else the host name, when a node has that name (StatefulSet pods: decode-0, decode-1, ...);
//  3. else the host name's StatefulSet ordinal as the index (one StatefulSet for the whole cluster).
// Throws ConfigError naming what it looked at.
struct NodeChoice {
  std::string name;
  std::string reason;
};
NodeChoice node_from_env(const ClusterConfig& config, const LauncherEnv& env);

// The node at `rank` in [[node]] order. Throws ConfigError when out of range.
const NodeConfig& node_by_rank(const ClusterConfig& config, std::int64_t rank);

}  // namespace sy::actors::config
