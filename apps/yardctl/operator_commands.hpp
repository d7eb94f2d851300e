// yardctl's operator subcommands (schemas/cluster.capnp beyond generate and status): expert load
// as a heat map, placement (show, export, import), rebalancing (plan, run, history, settings,
// pause/resume, interval, threshold, pin/unpin) and drains. Each prints a readable table, or JSON
// with --json, and returns yardctl's exit code. Calls on Admin first obtain it with the admin
// token (--admin-token or SY_ADMIN_TOKEN).
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "schemas/cluster.capnp.h"

namespace sy::yardctl {

// Exit codes (main.cpp documents them).
inline constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitConnect = 3, kExitRetryable = 4,
                     kExitDenied = 5;

// A usage error found before or without the server (exit 2).
struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct OperatorArgs {
  std::string command;        // the subcommand's name
  bool json = false;
  std::string admin_token;
  std::string color = "auto";  // heat map colours: auto (a terminal), always, never
  std::string file;           // placement --export / import
  std::string node;           // drain, undrain
  double value = 0;           // set-interval seconds, set-threshold
  std::vector<long> numbers;  // pin LAYER SLOT EXPERT, unpin LAYER SLOT
  std::size_t max_moves = 20;  // plan/rebalance: moves listed in the table
};

// Runs one operator subcommand on a connected cluster.
int run_operator_command(schemas::Cluster::Client& cluster, kj::WaitScope& ws, const OperatorArgs& args);

// Placement <-> JSON (the export/import file): {"epoch", "experts", "slots", "num_layers",
// "hosts": [..], "host_of_slot": [..], "layers": [{"layer": L, "phy2log": [..]}, ..]}.
nlohmann::json placement_to_json(schemas::Placement::Reader p);
// Throws Usage naming the field when the JSON does not have this shape.
void placement_from_json(const nlohmann::json& j, schemas::Placement::Builder out);

// The remote's message without capnp's "remote exception: " prefix, and its exit code.
std::string describe(const kj::Exception& e);
int exit_code_for(const kj::Exception& e);

}  // namespace sy::yardctl
