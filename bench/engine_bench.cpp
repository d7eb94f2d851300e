// End-to-end engine throughput on a model folder (default: the tiny model, made if missing):
// prefill tokens/s for one long prompt, and decode tokens/s at batch 1 and 16, on the fast CPU
// backend, with the same workloads on the reference backend as the baseline measured in the same
// run. Prints one stable table: median, min, max over repetitions and the cpu/ref ratio.
// Run: engine_bench [--model DIR] [--quick]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gpu/cpu/kernels.hpp"
#include "gpu/ref/kernels.hpp"
#include "model/engine.hpp"
#include "model/generator.hpp"
#include "model/safetensors.hpp"
#include "model/tiny_model.hpp"
#include "model/weights.hpp"

namespace {

using sy::model::GenerationRequest;

struct Stats {
  double median = 0, min = 0, max = 0;
};

Stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

struct Workload {
  const char* name;
  int batch;
  int prompt_tokens;
  int new_tokens;
  bool prefill;  // report prompt tokens/s (else generated tokens/s after the first)
};

// Tokens per second of one run of `w` on `backend`.
double run_once(const sy::model::ModelConfig& config, const sy::model::ModelWeights& weights,
                const sy::gpu::Backend& backend, const Workload& w) {
  sy::model::EngineOptions options;
  options.numerics = sy::model::Numerics::fp8act;
  options.max_seqs = std::max(16, w.batch);
  options.kv_pages = 512;
  options.max_chunk_tokens = 512;
  options.mtp = false;
  sy::model::Engine engine(config, weights, backend, options);
  std::vector<GenerationRequest> requests(static_cast<std::size_t>(w.batch));
  for (int b = 0; b < w.batch; ++b) {
    auto& r = requests[static_cast<std::size_t>(b)];
    for (int t = 0; t < w.prompt_tokens; ++t) r.prompt.push_back(1000 + (t * 37 + b * 101) % 50000);
    r.max_tokens = w.new_tokens;
    r.stop_at_eos = false;
  }
  const auto results = sy::model::generate(engine, requests, {});
  if (w.prefill) return w.batch * w.prompt_tokens / results[0].prefill_seconds;
  double decode_seconds = 0;
  for (const auto& r : results) decode_seconds = std::max(decode_seconds, r.decode_seconds);
  return w.batch * (w.new_tokens - 1) / decode_seconds;
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path model_dir;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--model DIR] [--quick]\n", argv[0]);
      return 2;
    }
  }
  if (model_dir.empty()) {
    model_dir = sy::model::default_tokenizer_dir().parent_path() / "models" / "tiny";
    if (!std::filesystem::exists(model_dir / "config.json")) sy::model::make_tiny_model(model_dir, {});
  }
  const auto config = sy::model::ModelConfig::from_file(model_dir / "config.json");
  const auto checkpoint = sy::model::Checkpoint::open(model_dir);
  const auto weights = sy::model::bind_weights(checkpoint, config);

  const Workload workloads[] = {
      {"prefill, 1 x 256-token prompt", 1, 256, 1, true},
      {"decode, batch 1", 1, 16, quick ? 8 : 24, false},
      {"decode, batch 16", 16, 16, quick ? 8 : 24, false},
  };
  const int reps = quick ? 3 : 5;
  std::printf("engine_bench: %s (fp8act numerics; tokens/s; %d repetitions, ref baseline 1 repetition)\n",
              model_dir.c_str(), reps);
  std::printf("%-32s %10s %10s %10s %10s %8s\n", "workload", "median", "min", "max", "ref", "cpu/ref");
  for (const Workload& w : workloads) {
    std::vector<double> cpu;
    for (int r = 0; r < reps; ++r) cpu.push_back(run_once(config, weights, sy::gpu::cpu::backend(), w));
    const double ref = run_once(config, weights, sy::gpu::ref::backend(), w);
    const Stats s = summarize(cpu);
    std::printf("%-32s %10.1f %10.1f %10.1f %10.1f %8.2f\n", w.name, s.median, s.min, s.max, ref, s.median / ref);
  }
  return 0;
}
