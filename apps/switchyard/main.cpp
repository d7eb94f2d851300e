// switchyard: the one binary of a node. Today: the model tools (inspect, tokenize,
// make-tiny-model), single-process generate, and the cluster skeleton (serve one node, local
// starts a whole cluster); bench joins later.
// Exit codes: 0 ok, 1 bad input or failure (the message names the problem), 2 bad command line.
#include <CLI/CLI.hpp>
#include "apps/switchyard/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Switchyard: serves DeepSeek-V3-architecture MoE models across processes"};
  app.require_subcommand(1);
  sy::apps::CommandTable commands;
  sy::apps::add_model_commands(app, commands);
  sy::apps::add_generate_command(app, commands);
  sy::apps::add_serve_command(app, commands);
  sy::apps::add_local_command(app, commands);
  sy::apps::add_serve_api_command(app, commands);
  sy::apps::add_eplb_command(app, commands);
  sy::apps::add_simulate_command(app, commands);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return commands.run_selected(app);
}
