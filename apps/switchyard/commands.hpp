// The subcommands of the switchyard binary, registered on a CLI11 app by topic; main() runs
// whichever was selected. Each command prints what it did or a one-line error naming the problem.
#pragma once

#include <functional>
#include <map>

#include <CLI/CLI.hpp>

namespace sy::apps {

// What each registered subcommand runs; main() owns one and passes it to the add_* functions.
class CommandTable {
 public:
  void add(const CLI::App* subcommand, std::function<int()> action) { actions_[subcommand] = std::move(action); }
  // Runs the selected subcommand's action and returns the process exit code; an exception
  // becomes a one-line error naming the command and the problem (exit code 1).
  int run_selected(const CLI::App& app) const;

 private:
  std::map<const CLI::App*, std::function<int()>> actions_;
};

// inspect, tokenize, make-tiny-model.
void add_model_commands(CLI::App& app, CommandTable& commands);

// generate: a prompt through the single-process engine (generate_command.cpp).
void add_generate_command(CLI::App& app, CommandTable& commands);

// serve: one node of a cluster (serve_command.cpp).
void add_serve_command(CLI::App& app, CommandTable& commands);

// local: a whole cluster on this machine, one serve process per node (local_command.cpp).
void add_local_command(CLI::App& app, CommandTable& commands);

// serve-api: the cluster API from one process running every role (serve_api_command.cpp).
void add_serve_api_command(CLI::App& app, CommandTable& commands);

// eplb: EPLB placements for a JSON list of load cases (eplb_command.cpp).
void add_eplb_command(CLI::App& app, CommandTable& commands);

// simulate-balance: rebalancing strategies replayed on synthetic load traces (simulate_command.cpp).
void add_simulate_command(CLI::App& app, CommandTable& commands);

}  // namespace sy::apps
