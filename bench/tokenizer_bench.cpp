// Tokenizer throughput on four deterministic corpora (English prose, code, Chinese, mixed):
// encode, decode and streaming decode in MB of text per second, against two baselines measured
// in the same run on the same text: the bare pre-tokenizer (added-token scan + the three PCRE2
// splits, no BPE) and a plain byte copy. Ends with one table: median/min/max over repetitions
// and encode's cost as a multiple of the pre-tokenizer's.
// Run: tokenizer_bench [--model DIR] [google-benchmark flags]; DIR defaults to
// $SY_DATA_DIR/tokenizer or ~/.cache/switchyard/tokenizer (deploy/install-deps.sh).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "bench/lcg.hpp"
#include "model/tokenizer.hpp"

namespace {

using sy::bench::Lcg;
using sy::model::StreamDecoder;
using sy::model::Tokenizer;

constexpr std::size_t kCorpusBytes = 256 * 1024;

std::string english(Lcg& rng) {
  static const char* const words[] = {
      "the",     "of",        "and",     "to",      "in",          "model",
      "request", "is",        "that",    "for",     "server",      "with",
      "tokens",  "as",        "on",      "was",     "by",          "latency",
      "experts", "are",       "this",    "be",      "from",        "throughput",
      "each",    "which",     "cluster", "memory",  "it",          "scheduling",
      "or",      "an",        "however", "between", "performance", "understanding",
      "we",      "have",      "not",     "their",   "Switchyard",  "DeepSeek",
      "routing", "attention", "batch",   "without", "consistently"};
  std::string s;
  const int n = 8 + static_cast<int>(rng.next() % 14);
  for (int i = 0; i < n; ++i) {
    std::string w = rng.pick(words);
    if (i == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    s += w;
    s += (i + 1 == n) ? "" : (rng.next() % 9 == 0 ? ", " : " ");
  }
  s += rng.next() % 5 == 0 ? "?\n" : ". ";
  return s;
}

std::string code(Lcg& rng) {
  static const char* const names[] = {"count",  "buffer", "index",     "result",
                                      "node",   "value",  "expert_id", "tokens",
                                      "offset", "stride", "batchSize"};
  const std::string a = rng.pick(names), b = rng.pick(names);
  const std::string n = std::to_string(rng.next() % 100000);
  switch (rng.next() % 4) {
    case 0:
      return "for (std::size_t " + a + " = 0; " + a + " < " + b + ".size(); ++" + a + ") {\n    " +
             b + "[" + a + "] += " + n + " * scale;\n}\n";
    case 1:
      return "def " + a + "_" + b + "(self, " + a + "):\n    if " + a +
             " is None:\n        return " + n + "\n    return self." + b + "[" + a + "]\n\n";
    case 2:
      return "  auto " + a + " = std::make_unique<" + b + ">(" + n + ");  // " + b + " owns it\n";
    default:
      return "{\"" + a + "\": " + n + ", \"" + b + "\": [1, 2, 3], \"ok\": true}\n";
  }
}

std::string chinese(Lcg& rng) {
  static const char* const phrases[] = {
      "深度求索", "人工智能", "模型", "推理", "服务器", "我们", "研究", "数据",   "专家", "路由",
      "的",       "是",       "在",   "和",   "一个",   "通过", "可以", "大规模", "计算", "内存"};
  std::string s;
  const int n = 6 + static_cast<int>(rng.next() % 12);
  for (int i = 0; i < n; ++i) s += rng.pick(phrases);
  s += rng.next() % 3 == 0 ? "。\n" : "，";
  return s;
}

std::string mixed(Lcg& rng) {
  static const char* const extras[] = {"😀 ",
                                       "👍🏽 ",
                                       "日本語のテキスト。",
                                       "한국어 문장. ",
                                       "Привет, мир! ",
                                       "🇺🇸 ",
                                       "2024-06-01 12:34:56 ",
                                       "<｜User｜>",
                                       "https://example.com/a?b=1 "};
  switch (rng.next() % 4) {
    case 0:
      return english(rng);
    case 1:
      return code(rng);
    case 2:
      return chinese(rng);
    default:
      return rng.pick(extras);
  }
}

std::string build_corpus(std::string (*generate)(Lcg&)) {
  Lcg rng(0x5EED);
  std::string text;
  while (text.size() < kCorpusBytes) text += generate(rng);
  return text;
}

struct Corpus {
  std::string name;
  std::string text;
  std::vector<std::int32_t> ids;
};

void register_benchmarks(const Tokenizer& tok, std::vector<Corpus>& corpora) {
  const auto configure = [](benchmark::internal::Benchmark* b) {
    b->Unit(benchmark::kMillisecond)
        ->Repetitions(5)
        ->ReportAggregatesOnly(true)
        ->ComputeStatistics(
            "min",
            [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
        ->ComputeStatistics("max", [](const std::vector<double>& v) {
          return *std::max_element(v.begin(), v.end());
        });
  };
  for (Corpus& c : corpora) {
    const auto bytes = static_cast<std::int64_t>(c.text.size());
    configure(
        benchmark::RegisterBenchmark(("copy/" + c.name).c_str(), [&c, bytes](benchmark::State& st) {
          std::string out;
          for (auto _ : st) {
            out.assign(c.text);
            benchmark::DoNotOptimize(out.data());
          }
          st.SetBytesProcessed(st.iterations() * bytes);
        }));
    configure(benchmark::RegisterBenchmark(("pretokenize/" + c.name).c_str(),
                                           [&tok, &c, bytes](benchmark::State& st) {
                                             for (auto _ : st)
                                               benchmark::DoNotOptimize(tok.pre_tokenize(c.text));
                                             st.SetBytesProcessed(st.iterations() * bytes);
                                           }));
    configure(benchmark::RegisterBenchmark(
        ("encode/" + c.name).c_str(), [&tok, &c, bytes](benchmark::State& st) {
          std::vector<std::int32_t> ids;
          for (auto _ : st) {
            ids.clear();
            tok.encode_into(c.text, false, ids);
            benchmark::DoNotOptimize(ids.data());
          }
          st.SetBytesProcessed(st.iterations() * bytes);
          st.counters["bytes/token"] = static_cast<double>(bytes) / static_cast<double>(ids.size());
        }));
    configure(benchmark::RegisterBenchmark(("decode/" + c.name).c_str(),
                                           [&tok, &c, bytes](benchmark::State& st) {
                                             for (auto _ : st)
                                               benchmark::DoNotOptimize(tok.decode(c.ids));
                                             st.SetBytesProcessed(st.iterations() * bytes);
                                           }));
    configure(benchmark::RegisterBenchmark(("stream_decode/" + c.name).c_str(),
                                           [&tok, &c, bytes](benchmark::State& st) {
                                             for (auto _ : st) {
                                               StreamDecoder stream(tok);
                                               std::size_t n = 0;
                                               for (std::int32_t id : c.ids)
                                                 n += stream.push(id).size();
                                               benchmark::DoNotOptimize(n += stream.flush().size());
                                             }
                                             st.SetBytesProcessed(st.iterations() * bytes);
                                           }));
  }
}

// Prints Google Benchmark's usual lines, then one summary table in MB/s (1 MB = 1e6 bytes).
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Aggregate) continue;
      const auto it = r.counters.find("bytes_per_second");
      if (it == r.counters.end()) continue;
      mbps_[r.run_name.function_name][r.aggregate_name] = it->second.value / 1e6;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n%-28s %10s %10s %10s %14s\n", "benchmark (MB/s)", "median", "min", "max",
                "x pre-tokenize");
    for (const auto& [name, stats] : mbps_) {
      const std::string corpus = name.substr(name.find('/') + 1);
      const auto base = mbps_.find("pretokenize/" + corpus);
      const double median = stats.count("median") ? stats.at("median") : 0.0;
      // Time relative to the pre-tokenizer's on the same text (2.0 = twice as long).
      const double ratio =
          base != mbps_.end() && median > 0 ? base->second.at("median") / median : 0;
      std::printf("%-28s %10.1f %10.1f %10.1f %14.2f\n", name.c_str(), median,
                  stats.count("min") ? stats.at("min") : 0.0,
                  stats.count("max") ? stats.at("max") : 0.0, ratio);
    }
  }

 private:
  std::map<std::string, std::map<std::string, double>> mbps_;
};

std::string default_model_dir() {
  if (const char* data = std::getenv("SY_DATA_DIR"); data && *data) {
    return std::string(data) + "/tokenizer";
  }
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/switchyard/tokenizer";
}

}  // namespace

int main(int argc, char** argv) {
  // Take --model DIR out before Google Benchmark sees the arguments.
  std::string model_dir = default_model_dir();
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (std::strncmp(argv[i], "--model=", 8) == 0) {
      model_dir = argv[i] + 8;
    } else {
      args.push_back(argv[i]);
    }
  }
  int bench_argc = static_cast<int>(args.size());
  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 2;

  try {
    const Tokenizer tok = Tokenizer::load(model_dir);
    std::vector<Corpus> corpora = {{"english", build_corpus(english), {}},
                                   {"code", build_corpus(code), {}},
                                   {"chinese", build_corpus(chinese), {}},
                                   {"mixed", build_corpus(mixed), {}}};
    for (Corpus& c : corpora) c.ids = tok.encode(c.text, false);
    register_benchmarks(tok, corpora);
    TableReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
