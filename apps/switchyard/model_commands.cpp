#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/switchyard/commands.hpp"
#include "model/chat_format.hpp"
#include "model/inspect.hpp"
#include "model/tiny_model.hpp"
#include "model/tokenizer.hpp"

namespace sy::apps {
namespace {

struct InspectArgs {
  std::string dir;
  bool tensors = false;
  bool json = false;
};

int run_inspect(const InspectArgs& a) {
  const model::InspectReport report = model::inspect_model(a.dir);
  if (a.json) {
    std::cout << model::report_json(report).dump(2) << "\n";
  } else {
    std::cout << model::format_report(report, a.tensors);
  }
  return report.layout_problems.empty() ? 0 : 1;
}

struct TokenizeArgs {
  std::string dir;
  bool no_bos = false;
  bool jsonl = false;
  bool chat = false;
  std::vector<std::string> texts;
};

// --jsonl: {"text": ...} per line in, {"ids": [...]} per line out. A bad line gets
// {"error": ...} (and a message on stderr naming the line); the others are still answered.
int tokenize_jsonl(const model::Tokenizer& tokenizer, bool add_bos) {
  int status = 0;
  std::string line;
  for (std::size_t number = 1; std::getline(std::cin, line); ++number) {
    if (line.empty()) continue;
    nlohmann::json out;
    try {
      const auto in = nlohmann::json::parse(line);
      if (!in.is_object() || !in.contains("text") || !in.at("text").is_string()) {
        throw std::invalid_argument("expected an object with a string field \"text\"");
      }
      out["ids"] = tokenizer.encode(in.at("text").get<std::string>(), add_bos);
    } catch (const std::exception& e) {
      std::cerr << fmt::format("tokenize: stdin line {}: {}\n", number, e.what());
      out = {{"error", fmt::format("line {}: {}", number, e.what())}};
      status = 1;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return status;
}

int run_tokenize(const TokenizeArgs& a) {
  const model::Tokenizer tokenizer = model::Tokenizer::load(a.dir);
  const bool add_bos = !a.no_bos;
  if (a.jsonl) return tokenize_jsonl(tokenizer, add_bos);
  std::vector<std::string> texts = a.texts;
  if (texts.empty()) texts.emplace_back(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  for (const auto& raw : texts) {
    std::string text = raw;
    bool bos = add_bos;
    if (a.chat) {
      const model::ChatMessage message{"user", raw};
      text = model::format_chat(std::span(&message, 1), /*add_generation_prompt=*/true,
                                tokenizer.bos_token());
      bos = false;  // the chat format writes BOS itself
    }
    const auto ids = tokenizer.encode(text, bos);
    std::cout << fmt::format("{} tokens: {}\n", ids.size(), nlohmann::json(ids).dump());
    std::string pieces;
    for (auto id : ids) {
      pieces += "|" + tokenizer.decode(std::span(&id, 1));
    }
    std::cout << "pieces: " << nlohmann::json(pieces + "|").dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
    const std::string back = tokenizer.decode(ids, /*skip_special_tokens=*/false);
    std::cout << fmt::format("decode(encode(x)) == x: {}\n", back == (bos ? std::string(tokenizer.bos_token()) : std::string()) + text ? "yes" : "no");
  }
  return 0;
}

struct MakeTinyArgs {
  std::string dir;
  std::uint64_t seed = 0;
  std::string preset = "tiny";
  std::string tokenizer_dir;
};

int run_make_tiny(const MakeTinyArgs& a) {
  model::TinyModelOptions options;
  options.seed = a.seed;
  options.preset = a.preset;
  options.tokenizer_dir = a.tokenizer_dir;
  model::make_tiny_model(a.dir, options);
  const model::InspectReport report = model::inspect_model(a.dir);
  std::cout << fmt::format("wrote {} ({} preset, seed {}): {} files, {} tensors, {} parameters\n", a.dir, a.preset,
                           a.seed, report.files, report.all.tensors, report.total_params + report.mtp_params);
  return 0;
}

}  // namespace

void add_model_commands(CLI::App& app, CommandTable& commands) {
  auto inspect_args = std::make_shared<InspectArgs>();
  auto* inspect = app.add_subcommand("inspect", "Summarize a model folder: config, tensors, parameter counts");
  inspect->add_option("dir", inspect_args->dir, "Hugging Face DeepSeek-V3 model folder")->required();
  inspect->add_flag("--tensors", inspect_args->tensors, "List every tensor");
  inspect->add_flag("--json", inspect_args->json, "Print the report as JSON");
  commands.add(inspect, [inspect_args] { return run_inspect(*inspect_args); });

  auto tok_args = std::make_shared<TokenizeArgs>();
  auto* tokenize = app.add_subcommand("tokenize", "Tokenize text with the model's tokenizer");
  tokenize->add_option("--model", tok_args->dir, "Model folder (tokenizer.json, tokenizer_config.json)")->required();
  tokenize->add_flag("--no-bos", tok_args->no_bos, "Do not prepend the BOS token");
  tokenize->add_flag("--jsonl", tok_args->jsonl, "Read {\"text\": ...} lines from stdin, write {\"ids\": [...]} lines");
  tokenize->add_flag("--chat", tok_args->chat, "Format each text as a user turn of the chat format first");
  tokenize->add_option("text", tok_args->texts, "Texts to tokenize (default: all of stdin)");
  commands.add(tokenize, [tok_args] { return run_tokenize(*tok_args); });

  auto tiny_args = std::make_shared<MakeTinyArgs>();
  auto* tiny = app.add_subcommand("make-tiny-model", "Write a small DeepSeek-V3-architecture model with random weights");
  tiny->add_option("dir", tiny_args->dir, "Output folder")->required();
  tiny->add_option("--seed", tiny_args->seed, "Random seed (same seed, same bytes)");
  tiny->add_option("--preset", tiny_args->preset, "tiny | small")->check(CLI::IsMember(model::tiny_model_presets()));
  tiny->add_option("--tokenizer-dir", tiny_args->tokenizer_dir,
                   "Folder with tokenizer.json and tokenizer_config.json (default: the install-deps cache)");
  commands.add(tiny, [tiny_args] { return run_make_tiny(*tiny_args); });
}

}  // namespace sy::apps
