// yardctl: the command-line client of the cluster API (schemas/cluster.capnp), for people and
// scripts: `generate` (streams the completion's text to stdout as it arrives, a summary line on
// stderr), `status`, and the operator subcommands of operator_commands.hpp (load, placement,
// import, history, balancing, plan, rebalance, pause, resume, set-interval, set-threshold, pin,
// unpin, drain, undrain). Tables for people, --json for scripts. One connection per run.
// Exit codes: 0 ok, 1 the request failed (the server's message on stderr; also a rebalancing
// round that failed), 2 bad usage, 3 cannot connect, 4 refused for now or the server went away
// (retryable), 5 permission denied (admin token missing or wrong).
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "apps/token_ids.hpp"
#include "apps/yardctl/operator_commands.hpp"
#include "schemas/cluster.capnp.h"

namespace {

using sy::schemas::Cluster;
using sy::schemas::TokenSink;

using sy::yardctl::describe;
using sy::yardctl::exit_code_for;
using sy::yardctl::kExitConnect;
using sy::yardctl::kExitOk;
using sy::yardctl::kExitUsage;
using sy::yardctl::Usage;

struct GenerateArgs {
  std::string prompt;
  std::string ids;
  bool chat = false;
  std::uint32_t max_tokens = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::uint32_t top_k = 0;
  std::uint64_t seed = 0;
  bool no_stop_at_eos = false;
  std::string request_id;
  bool json = false;
};

// Bad ids are a usage error (exit 2).
std::vector<std::int32_t> parse_ids(const std::string& text) {
  try {
    return sy::apps::parse_token_ids(text);
  } catch (const std::invalid_argument& e) {
    throw Usage(e.what());
  }
}

const char* finish_name(sy::schemas::FinishReason r) {
  switch (r) {
    case sy::schemas::FinishReason::STOP: return "stop";
    case sy::schemas::FinishReason::LENGTH: return "length";
    case sy::schemas::FinishReason::CANCELLED: return "cancelled";
    case sy::schemas::FinishReason::ERROR: return "error";
    case sy::schemas::FinishReason::NONE: break;
  }
  return "none";
}

const char* health_name(sy::schemas::Health h) {
  switch (h) {
    case sy::schemas::Health::HEALTHY: return "healthy";
    case sy::schemas::Health::DEGRADED: return "degraded";
    case sy::schemas::Health::DOWN: return "down";
  }
  return "?";
}

// Prints text as it arrives (unless --json) and keeps the ids.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"  // generated Server classes (capnp deletes via a virtual base)
class PrintingSink final : public TokenSink::Server {
 public:
  // Each push's arrival (ms since `start`) and token count go to `pushes`.
  PrintingSink(bool print, std::vector<std::int32_t>& tokens, std::string& text,
               std::vector<std::pair<double, std::size_t>>& pushes, std::chrono::steady_clock::time_point start)
      : print_(print), tokens_(tokens), text_(text), pushes_(pushes), start_(start) {}

 protected:
  kj::Promise<void> push(PushContext context) override {
    const auto p = context.getParams();
    for (const std::int32_t t : p.getTokens()) tokens_.push_back(t);
    pushes_.emplace_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count(),
                         p.getTokens().size());
    const std::string_view piece(p.getText().cStr(), p.getText().size());
    text_ += piece;
    if (print_) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return kj::READY_NOW;
  }
  kj::Promise<void> done(DoneContext) override { return kj::READY_NOW; }

 private:
  bool print_;
  std::vector<std::int32_t>& tokens_;
  std::string& text_;
  std::vector<std::pair<double, std::size_t>>& pushes_;
  std::chrono::steady_clock::time_point start_;
};
#pragma GCC diagnostic pop

// Usage errors are found before connecting (exit 2, not 3, when no server is up).
void check_usage(const GenerateArgs& a) {
  if (a.prompt.empty() == a.ids.empty()) throw Usage("give exactly one of --prompt and --ids");
  if (a.chat && a.prompt.empty()) throw Usage("--chat formats a --prompt text (not --ids)");
  if (!a.ids.empty()) parse_ids(a.ids);
}

int run_generate(Cluster::Client& cluster, kj::WaitScope& ws, const GenerateArgs& a) {
  auto req = cluster.generateRequest();
  auto r = req.initRequest();
  if (!a.ids.empty()) {
    const std::vector<std::int32_t> ids = parse_ids(a.ids);
    auto list = r.getPrompt().initTokenIds(static_cast<unsigned>(ids.size()));
    for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
  } else {
    r.getPrompt().setText(a.prompt);
  }
  r.setChat(a.chat);
  auto s = r.initSampling();
  s.setTemperature(a.temperature);
  s.setTopP(a.top_p);
  s.setTopK(a.top_k);
  s.setSeed(a.seed);
  s.setMaxTokens(a.max_tokens);
  s.setStopAtEos(!a.no_stop_at_eos);
  r.setRequestId(a.request_id);
  std::vector<std::int32_t> tokens;
  std::string text;
  std::vector<std::pair<double, std::size_t>> pushes;
  req.setSink(kj::heap<PrintingSink>(!a.json, tokens, text, pushes, std::chrono::steady_clock::now()));

  std::optional<capnp::Response<Cluster::GenerateResults>> response;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { response.emplace(req.send().wait(ws)); })) {
    if (!a.json && !text.empty()) std::cout << "\n" << std::flush;
    fmt::print(stderr, "yardctl generate: {}\n", describe(*e));
    return exit_code_for(*e);
  }
  const auto summary = response->getSummary();
  const auto t = summary.getTimings();
  const auto usage = summary.getUsage();
  const auto mtp = summary.getMtp();
  if (a.json) {
    nlohmann::json out = {
        {"text", text},
        {"tokens", tokens},
        {"finish_reason", finish_name(summary.getFinishReason())},
        {"usage", {{"prompt_tokens", usage.getPromptTokens()}, {"completion_tokens", usage.getCompletionTokens()}}},
        {"timings",
         {{"queue_ms", t.getQueueMs()}, {"ttft_ms", t.getTimeToFirstTokenMs()}, {"total_ms", t.getTotalMs()}}},
        {"mtp", {{"drafts", mtp.getDrafts()}, {"accepted", mtp.getAccepted()}}},
        {"request_id", summary.getRequestId().cStr()},
        {"server_request_id", summary.getServerRequestId()},
        // When each push arrived here (ms since the call was sent) and its token count: what a
        // client sees of inter-token latency.
        {"pushes", pushes},
    };
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "\n" << std::flush;
  }
  const double decode_ms = t.getTotalMs() - t.getTimeToFirstTokenMs();
  const std::uint32_t n = usage.getCompletionTokens();
  const double rate = n > 1 && decode_ms > 0 ? (n - 1) / (decode_ms / 1000.0) : 0.0;
  std::string line = fmt::format("tokens {} (prompt {}), TTFT {:.1f} ms, {:.1f} tok/s, finish {}", n,
                                 usage.getPromptTokens(), t.getTimeToFirstTokenMs(), rate,
                                 finish_name(summary.getFinishReason()));
  if (mtp.getDrafts() > 0) line += fmt::format(", MTP {}/{}", mtp.getAccepted(), mtp.getDrafts());
  fmt::print(stderr, "{}\n", line);
  return kExitOk;
}

int run_status(Cluster::Client& cluster, kj::WaitScope& ws, bool json) {
  std::optional<capnp::Response<Cluster::StatusResults>> response;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { response.emplace(cluster.statusRequest().send().wait(ws)); })) {
    fmt::print(stderr, "yardctl status: {}\n", describe(*e));
    return exit_code_for(*e);
  }
  const auto s = response->getStatus();
  if (json) {
    nlohmann::json nodes = nlohmann::json::array();
    for (const auto n : s.getNodes()) {
      std::vector<std::string> roles;
      for (const auto role : n.getRoles()) roles.emplace_back(role.cStr());
      nodes.push_back(
          {{"name", n.getName().cStr()}, {"roles", roles}, {"health", health_name(n.getHealth())}, {"detail", n.getDetail().cStr()},
           {"draining", n.getDraining()}});
    }
    const nlohmann::json out = {
        {"model", s.getModelName().cStr()},
        {"backend", s.getBackend().cStr()},
        {"numerics", s.getNumerics().cStr()},
        {"mtp", s.getMtp()},
        {"uptime_ms", s.getUptimeMs()},
        {"nodes", nodes},
        {"queue", {{"running", s.getRunning()}, {"waiting", s.getWaiting()}, {"max_batch", s.getMaxBatch()}}},
        {"kv_pages", {{"used", s.getKvPagesUsed()}, {"free", s.getKvPagesFree()}, {"total", s.getKvPagesTotal()}}},
        {"requests",
         {{"completed", s.getCompleted()},
          {"cancelled", s.getCancelled()},
          {"failed", s.getFailed()},
          {"refused", s.getRefused()}}},
    };
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << fmt::format("model      {}\n", s.getModelName().cStr());
  std::cout << fmt::format("backend    {}, numerics {}, MTP {}\n", s.getBackend().cStr(), s.getNumerics().cStr(),
                           s.getMtp() ? "on" : "off");
  std::cout << fmt::format("uptime     {:.1f} s\n", static_cast<double>(s.getUptimeMs()) / 1000.0);
  std::cout << fmt::format("queue      running {}, waiting {} (max batch {})\n", s.getRunning(), s.getWaiting(),
                           s.getMaxBatch());
  std::cout << fmt::format("kv pages   used {}, free {}, total {}\n", s.getKvPagesUsed(), s.getKvPagesFree(),
                           s.getKvPagesTotal());
  std::cout << fmt::format("requests   completed {}, cancelled {}, failed {}, refused {}\n", s.getCompleted(),
                           s.getCancelled(), s.getFailed(), s.getRefused());
  std::cout << fmt::format("\n{:<16} {:<10} {}\n", "NODE", "HEALTH", "ROLES");
  for (const auto n : s.getNodes()) {
    std::string roles;
    for (const auto role : n.getRoles()) roles += (roles.empty() ? "" : ",") + std::string(role.cStr());
    std::cout << fmt::format("{:<16} {:<10} {}{}\n", n.getName().cStr(), health_name(n.getHealth()), roles,
                             n.getDetail().size() > 0 ? fmt::format("  ({})", n.getDetail().cStr()) : "");
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"yardctl: the command-line client of a Switchyard cluster API"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string address = "127.0.0.1:7433";
  app.add_option("--address", address, "Cluster API address: HOST:PORT or unix:/path")->capture_default_str();
  sy::yardctl::OperatorArgs op;
  if (const char* token = std::getenv("SY_ADMIN_TOKEN")) op.admin_token = token;
  std::string tls_ca, tls_name;
  app.add_option("--tls-ca", tls_ca, "Connect with TLS, trusting this PEM certificate (the server's or its CA's)");
  app.add_option("--tls-name", tls_name, "TLS: the name the server's certificate must carry (default: the address's host)");
  app.add_option("--admin-token", op.admin_token, "Token for commands that change the cluster (default: $SY_ADMIN_TOKEN)");

  GenerateArgs g;
  auto* gen = app.add_subcommand("generate", "Generate a completion, streaming its text to stdout");
  gen->add_option("--prompt", g.prompt, "Prompt text (the server tokenizes it)");
  gen->add_option("--ids", g.ids, "Prompt as comma-separated token ids, e.g. 0,5,7");
  gen->add_flag("--chat", g.chat, "Format --prompt as a user turn of the chat format");
  gen->add_option("--max-tokens", g.max_tokens, "Tokens to generate at most")->capture_default_str();
  gen->add_option("--temperature", g.temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-p", g.top_p, "Nucleus sampling mass, in (0, 1]")->capture_default_str();
  gen->add_option("--top-k", g.top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  gen->add_option("--seed", g.seed, "Sampling seed")->capture_default_str();
  gen->add_flag("--no-stop-at-eos", g.no_stop_at_eos, "Keep generating after EOS");
  gen->add_option("--request-id", g.request_id, "A label echoed by the server");
  gen->add_flag("--json", g.json, "Print one JSON object (text, tokens, summary) instead of streaming text");

  bool status_json = false;
  auto* st = app.add_subcommand("status", "Show the cluster's nodes, queues and KV pages");
  st->add_flag("--json", status_json, "Print JSON");

  // Operator subcommands (operator_commands.hpp).
  std::vector<CLI::App*> ops;
  auto add_op = [&](const char* name, const char* help, bool json = true) {
    CLI::App* sub = app.add_subcommand(name, help);
    if (json) sub->add_flag("--json", op.json, "Print JSON");
    ops.push_back(sub);
    return sub;
  };
  add_op("load", "Expert load per MoE layer as a heat map, and per expert host")
      ->add_option("--color", op.color, "Heat map colours: auto, always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  add_op("placement", "The expert placement being served (which expert each slot holds)")
      ->add_option("--export", op.file, "Write it as JSON to this file (for `import`)");
  add_op("import", "Install a placement from a JSON file (as `placement --export` writes) through a round [admin]")
      ->add_option("file", op.file, "The placement JSON")
      ->required();
  add_op("history", "Rebalancing rounds so far");
  add_op("balancing", "Automatic rebalancing: paused or not, interval, threshold, policy, pins");
  add_op("plan", "Dry run: the round the controller would run now, with its moves and predicted balancedness")
      ->add_option("--max-moves", op.max_moves, "Moves listed in the table")
      ->capture_default_str();
  add_op("rebalance", "Run a rebalancing round now and wait for it [admin]")
      ->add_option("--max-moves", op.max_moves, "Moves listed in the table")
      ->capture_default_str();
  add_op("pause", "Pause automatic rounds [admin]");
  add_op("resume", "Resume automatic rounds [admin]");
  add_op("set-interval", "Seconds between automatic rounds [admin]")
      ->add_option("seconds", op.value, "1..86400")
      ->required();
  add_op("set-threshold", "Least predicted gain of balancedness for an automatic round to migrate [admin]")
      ->add_option("threshold", op.value, "0..1")
      ->required();
  add_op("pin", "Keep an expert in a slot from the next round on [admin]")
      ->add_option("layer slot expert", op.numbers, "MoE layer, slot and logical expert")
      ->expected(3)
      ->required();
  add_op("unpin", "Remove a slot's pin [admin]")
      ->add_option("layer slot", op.numbers, "MoE layer and slot")
      ->expected(2)
      ->required();
  add_op("drain", "Stop sending requests to a prefill/decode node; wait until it holds none [admin]")
      ->add_option("node", op.node, "Node name")
      ->required();
  add_op("undrain", "Send requests to a drained node again [admin]")->add_option("node", op.node, "Node name")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  try {
    if (gen->parsed()) check_usage(g);
    kj::AsyncIoContext io = kj::setupAsyncIo();
    kj::Own<kj::AsyncIoStream> connection;
    std::optional<kj::TlsCertificate> ca;
    kj::TlsContext::Options tls_options;
    std::optional<kj::Own<kj::TlsContext>> tls;
    if (!tls_ca.empty()) {
      std::ifstream in(tls_ca);
      std::stringstream pem;
      pem << in.rdbuf();
      if (!in || pem.str().empty()) throw Usage("cannot read the TLS certificate " + tls_ca);
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { ca.emplace(kj::StringPtr(pem.str().c_str())); })) {
        throw Usage(fmt::format("{}: not a PEM certificate: {}", tls_ca, describe(*e)));
      }
      tls_options.useSystemTrustStore = false;
      tls_options.trustedCertificates = kj::arrayPtr(&*ca, 1);
    }
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                  auto addr = io.provider->getNetwork().parseAddress(kj::StringPtr(address.c_str()), 7433).wait(io.waitScope);
                  connection = addr->connect().wait(io.waitScope);
                  if (!tls_ca.empty()) {
                    // Verified against the given certificate only, never the system's trust store.
                    const std::string name = tls_name.empty() ? address.substr(0, address.rfind(':')) : tls_name;
                    tls.emplace(kj::heap<kj::TlsContext>(tls_options));
                    connection = (*tls)->wrapClient(kj::mv(connection), kj::StringPtr(name.c_str())).wait(io.waitScope);
                  }
                })) {
      fmt::print(stderr, "yardctl: cannot connect to {}: {}\n", address, describe(*e));
      return kExitConnect;
    }
    capnp::TwoPartyClient client(*connection);
    Cluster::Client cluster = client.bootstrap().castAs<Cluster>();
    if (gen->parsed()) return run_generate(cluster, io.waitScope, g);
    if (st->parsed()) return run_status(cluster, io.waitScope, status_json);
    for (CLI::App* sub : ops) {
      if (!sub->parsed()) continue;
      op.command = sub->get_name();
      return sy::yardctl::run_operator_command(cluster, io.waitScope, op);
    }
    throw Usage("no subcommand");
  } catch (const Usage& e) {
    fmt::print(stderr, "yardctl: {}\n", e.what());
    return kExitUsage;
  }
}
