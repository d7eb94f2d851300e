// The cluster configuration: one TOML file names every node (address, ports, roles), the model,
// the client API addresses and the serving limits (DESIGN.md "Interfaces and defaults"). Every
// node process reads the same file (`switchyard serve --config C --node N`); `switchyard local`
// starts one process per [[node]]. Parsing is strict: an unknown key, a wrong type or a broken
// rule is a ConfigError naming the file, the TOML line and the key. Plain data, CAF-free;
// immutable after parsing and safe to share between threads.
//
// Format (deploy/local-cluster.toml is a complete sample; defaults in brackets):
//   [cluster]  name ["switchyard"], admin_token [none], heartbeat_ms [1000], peer_timeout_s [30]
//              metrics [true] (false: nodes serve no /metrics and roles count nothing; for overhead runs)
//   [model]    path [none yet], numerics ["fp8act" | "dequant"], backend ["" = fastest | ref | cpu | cuda],
//              max_seq_len [0 = the model's max_position_embeddings]
//   [api]      rpc ["127.0.0.1:7433"], http ["127.0.0.1:8000"], rpc_tls_cert, rpc_tls_key [none: no TLS]
//   [decode]   kv_pages [4096], max_batch [64], mtp [false]
//   [experts]  redundant [0], overlap [true]
//   [balance]  interval_s [600], threshold [0.01], step_timeout_ms [10000], stage_delay_ms [0],
//              policy ["eplb" | "balanced" | "balanced-strict"], max_move_fraction [0: no cap]
//   [[node]]   name, host ["127.0.0.1"], transport_port, metrics_port, roles = ["router", ...]
//              host may be a template ("{slurm_host}", "{name}.switchyard-decode"), expanded from
//              the launcher's environment by resolve_hosts (launcher_env.hpp) before a node starts
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sy::actors::config {

// What a node hosts (DESIGN.md "Roles"); the order of schemas::Role in control.capnp.
enum class Role : std::uint8_t { router, prefill, decode, expert_host, load_stats, controller };
inline constexpr std::size_t role_count = 6;

// "router", "prefill", "decode", "expert_host", "load_stats", "controller".
std::string_view role_name(Role role);
std::optional<Role> parse_role(std::string_view name);
// "router, prefill" (config order).
std::string join_roles(const std::vector<Role>& roles);

// A host and a TCP port, written "HOST:PORT" in the file.
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const;
};

struct NodeConfig {
  std::string name;                 // 1..64 of [A-Za-z0-9._-], unique in the cluster
  std::string host = "127.0.0.1";   // where its listeners bind and peers reach it
  std::uint16_t transport_port = 0; // UCX listener (1..65535; 0 is refused: peers must know it)
  std::uint16_t metrics_port = 0;   // Prometheus /metrics (1..65535)
  std::vector<Role> roles;          // at least one, each at most once, in file order
  std::uint32_t line = 0;           // the [[node]] header's line, for later error messages

  bool has_role(Role role) const;
  std::string transport_address() const;  // "host:transport_port", what Transport::listen takes
};

struct ClusterSettings {
  std::string name = "switchyard";
  std::string admin_token;              // empty: none configured (admin calls then refused)
  std::uint32_t heartbeat_ms = 1000;    // Heartbeat interval (10..60000)
  std::uint32_t peer_timeout_s = 30;    // how long a starting node waits for its peers (1..3600)
  bool metrics = true;                  // false: no /metrics exporter, no role metrics (bench/metrics_overhead.sh)
};

struct ModelConfig {
  std::string path;                 // model folder; empty until a role needs weights
  std::string numerics = "fp8act";  // "fp8act" | "dequant" (model::parse_numerics)
  std::string backend;              // "" (the fastest in the build) | "ref" | "cpu" | "cuda"
  std::uint32_t max_seq_len = 0;    // context per request (prompt + completion); 0: the model's
};

struct ApiConfig {
  Endpoint rpc{"127.0.0.1", 7433};   // Cap'n Proto cluster API (served by the router node)
  Endpoint http{"127.0.0.1", 8000};  // OpenAI-compatible HTTP
  // TLS for the Cap'n Proto API: PEM certificate chain and private key files; both or neither
  // (empty: plain TCP, as on loopback).
  std::string rpc_tls_cert;
  std::string rpc_tls_key;
};

struct DecodeConfig {
  std::uint32_t kv_pages = 4096;  // latent-cache pages per layer pool, per decode node (>= 1)
  std::uint32_t max_batch = 64;   // running requests per decode node (1..4096)
  bool mtp = false;               // MTP self-speculative drafts for greedy requests (needs an MTP model)
};

struct ExpertsConfig {
  std::uint32_t redundant = 0;  // redundant expert slots per MoE layer (EPLB), 0..4096
  bool overlap = true;          // two-micro-batch overlap in the workers when expert hosts run the experts
};

// The rebalancing controller (a node with role "controller"; DESIGN "Placement, epochs,
// migration"): how often it runs a round, when a round is worth it, how long a step may take.
struct BalanceConfig {
  std::uint32_t interval_s = 600;      // seconds between automatic rounds (1..86400)
  double threshold = 0.01;             // minimal predicted gain in mean balancedness to migrate (0..1)
  std::uint32_t step_timeout_ms = 10000;  // each protocol step's acks (100..600000)
  std::uint32_t stage_delay_ms = 0;    // test seam: expert hosts hold stage acks back this long
  std::string policy = "eplb";         // placement policy: "eplb" | "balanced" | "balanced-strict"
  // Migration-aware rounds: at most this fraction of all slots move per round, heading for the
  // policy's replica counts from the served placement (balance::migration_aware_target); 0: no
  // cap, the fewest moves to the policy's own placement.
  double max_move_fraction = 0.0;
};

struct ClusterConfig {
  std::string source = "<string>";  // the file it came from, for messages
  ClusterSettings cluster;
  ModelConfig model;
  ApiConfig api;
  DecodeConfig decode;
  ExpertsConfig experts;
  BalanceConfig balance;
  std::vector<NodeConfig> nodes;  // file order

  const NodeConfig* find_node(std::string_view name) const;
  // Throws ConfigError naming the configured nodes when there is no such node.
  const NodeConfig& node(std::string_view name) const;
  std::vector<const NodeConfig*> nodes_with(Role role) const;
};

// what(): "<source>:<line>: <key>: <problem>" (the line is left out when unknown).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// True when `host` holds a placeholder ("{slurm_host}", "{name}", "{env:VAR}"; launcher_env.hpp).
bool is_host_template(std::string_view host);

// The rules across nodes (unique names, no port bound twice on one host, the roles a cluster
// needs; template hosts are not compared). parse_cluster_config runs it; resolve_hosts again.
void validate_cluster_config(const ClusterConfig& config);

// Parses and validates. `source` names the text in messages. Throws ConfigError.
ClusterConfig parse_cluster_config(std::string_view toml_text, std::string source = "<string>");
// Reads and parses a file. Throws ConfigError (also when it cannot be read).
ClusterConfig load_cluster_config(const std::string& path);
// The config as TOML that parse_cluster_config reads back to an equal config (`switchyard local
// --model` writes its generated cluster with it).
std::string to_toml(const ClusterConfig& config);

}  // namespace sy::actors::config
