// Shared by the engine tests: the tiny model made once per test suite, a second differently
// shaped model, and the error measures the tests state their tolerances in.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "model/engine.hpp"
#include "model/generator.hpp"
#include "model/safetensors.hpp"
#include "model/test_util.hpp"
#include "model/tiny_model.hpp"
#include "model/weights.hpp"

namespace sy::model::testing {

inline bool have_tokenizer() { return have_tokenizer_files(); }

// A model folder with its checkpoint mapped and weights bound: the build tree's shared tiny model
// (made once for all test processes), or a model of another shape in a scratch folder.
struct LoadedModel {
  std::unique_ptr<ScratchDir> scratch;
  std::filesystem::path path;
  ModelConfig config;
  Checkpoint checkpoint;
  ModelWeights weights;

  LoadedModel() : LoadedModel(nullptr, shared_tiny_model()) {}
  LoadedModel(const std::string& tag, const ModelConfig& shape)
      : LoadedModel(std::make_unique<ScratchDir>(tag), {}, &shape) {}

 private:
  LoadedModel(std::unique_ptr<ScratchDir> dir, std::filesystem::path folder, const ModelConfig* shape = nullptr)
      : scratch(std::move(dir)),
        path(scratch ? write(scratch->path(), *shape) : std::move(folder)),
        config(ModelConfig::from_file(path / "config.json")),
        checkpoint(Checkpoint::open(path)),
        weights(bind_weights(checkpoint, config)) {}

  static std::filesystem::path write(const std::filesystem::path& dir, const ModelConfig& shape) {
    TinyModelOptions options;
    options.seed = 7;
    write_random_model(dir, shape, options);
    return dir;
  }
};

// The fixture of the tests that run the tiny model: loaded once per test suite (the folder is
// shared_tiny_model()); every test skips, naming the folder, without the tokenizer files.
class TinyModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (have_tokenizer()) model_ = new LoadedModel();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (!have_tokenizer()) {
      GTEST_SKIP() << "no tokenizer files at " << default_tokenizer_dir() << ": run deploy/install-deps.sh";
    }
  }
  static const ModelConfig& config() { return model_->config; }
  static const ModelWeights& weights() { return model_->weights; }
  static inline LoadedModel* model_ = nullptr;
};

inline GenerationOptions gen_options(bool mtp, bool keep_logits = false) {
  GenerationOptions o;
  o.mtp = mtp;
  o.keep_logits = keep_logits;
  return o;
}

// ‖a − b‖₂ / ‖b‖₂.
inline double normalized_error(std::span<const float> a, std::span<const float> b) {
  double num = 0.0;
  double den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

inline bool has_nan(std::span<const float> a) {
  for (const float v : a) {
    if (std::isnan(v)) return true;
  }
  return false;
}

// Deterministic pseudo-random prompt ids in [2, limit) (no BOS/EOS).
inline std::vector<std::int32_t> test_prompt(std::uint64_t seed, std::size_t length, std::int64_t limit) {
  std::vector<std::int32_t> ids;
  for (std::size_t i = 0; i < length; ++i) {
    ids.push_back(
        static_cast<std::int32_t>(2 + gpu::splitmix64(seed * 1000 + i) % static_cast<std::uint64_t>(limit - 2)));
  }
  return ids;
}

}  // namespace sy::model::testing
