// Test-only twin of `switchyard tokenize --model DIR --jsonl`, so compare_with_reference.sh can
// check the tokenizer before (and independently of) the app: reads {"text": ...} lines on stdin,
// writes {"ids": [...]} lines (BOS per tokenizer_config unless --no-bos), or with --roundtrip
// {"ok": true|false} for decode(encode(text, no BOS)) == text. Single-threaded.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/tokenizer.hpp"

int main(int argc, char** argv) {
  std::string model_dir;
  bool no_bos = false, roundtrip = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--no-bos") == 0) {
      no_bos = true;
    } else if (std::strcmp(argv[i], "--roundtrip") == 0) {
      roundtrip = true;
    } else if (std::strcmp(argv[i], "--jsonl") != 0) {
      std::fprintf(stderr, "usage: %s --model DIR [--jsonl] [--no-bos] [--roundtrip]\n", argv[0]);
      return 2;
    }
  }
  if (model_dir.empty()) {
    std::fprintf(stderr, "%s: --model DIR is required\n", argv[0]);
    return 2;
  }
  try {
    const auto tokenizer = sy::model::Tokenizer::load(model_dir);
    const bool add_bos = !no_bos && tokenizer.add_bos_by_default();
    std::string line;
    std::size_t line_no = 0;
    while (std::getline(std::cin, line)) {
      ++line_no;
      if (line.empty()) continue;
      const auto in = nlohmann::json::parse(line);
      const std::string text = in.at("text").get<std::string>();
      nlohmann::json out;
      if (roundtrip) {
        out["ok"] = tokenizer.decode(tokenizer.encode(text, false)) == text;
      } else {
        out["ids"] = tokenizer.encode(text, add_bos);
      }
      std::cout << out.dump() << '\n';
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
  return 0;
}
