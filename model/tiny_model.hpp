// make-tiny-model: writes a complete Hugging Face DeepSeek-V3 folder (config.json with the real V3
// keys, sharded safetensors with an index, FP8 weights with 128x128 weight_scale_inv, the MTP
// layer, the real tokenizer files) with seeded random weights. The default model of demos and
// tests: same format and code paths as the 671B checkpoint, small enough for a laptop.
// Deterministic: the same seed and preset give byte-identical files on any machine.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.hpp"

namespace sy::model {

// Presets: "tiny" (hidden 256, 4 layers, 32 experts top-4; tests and demos) and "small"
// (hidden 1024, 6 layers, 64 experts top-6; benchmarks).
std::vector<std::string> tiny_model_presets();
ModelConfig tiny_model_config(std::string_view preset);  // throws std::invalid_argument naming the preset

struct TinyModelOptions {
  std::uint64_t seed = 0;
  std::string preset = "tiny";
  // Folder holding tokenizer.json and tokenizer_config.json (see default_tokenizer_dir()).
  std::filesystem::path tokenizer_dir;
  // Shard size; the tiny model comes out as several shards, as real checkpoints do.
  std::uint64_t max_shard_bytes = 96ull << 20;
};

// The tokenizer files deploy/install-deps.sh caches: $SY_DATA_DIR/tokenizer, else
// $XDG_CACHE_HOME/switchyard/tokenizer, else ~/.cache/switchyard/tokenizer.
std::filesystem::path default_tokenizer_dir();

// Writes the model into `dir` (created if needed; existing model files are replaced).
void make_tiny_model(const std::filesystem::path& dir, const TinyModelOptions& options);

// The writer behind make_tiny_model, for any valid config (tests use differently shaped models):
// seeded random weights in the layout expected_tensors(config) gives, config.json and the
// tokenizer files. options.preset is ignored. The tokenizer is copied as is, whatever the
// config's vocab_size (engine tests that feed ids directly may use a smaller vocabulary).
void write_random_model(const std::filesystem::path& dir, const ModelConfig& config, const TinyModelOptions& options);

}  // namespace sy::model
