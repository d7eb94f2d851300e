#include "model/tiny_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "gpu/dtypes.hpp"
#include "model/safetensors.hpp"
#include "model/weights.hpp"

namespace sy::model {
namespace {

// splitmix64: tiny, fast and specified bit for bit (std::normal_distribution is not portable
// across standard libraries, and the output must be byte-identical everywhere).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1) with 24 bits of resolution.
  float symmetric() { return static_cast<float>(next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }

 private:
  std::uint64_t state_;
};

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001B3ull;
  return h;
}

// Each tensor draws from its own stream, keyed by seed and name, so values do not depend on order.
std::vector<float> uniform_values(std::uint64_t seed, std::string_view name, std::int64_t count, float center,
                                  float half_width) {
  SplitMix64 rng(seed ^ fnv1a(name));
  std::vector<float> v(static_cast<std::size_t>(count));
  for (auto& x : v) x = center + half_width * rng.symmetric();
  return v;
}

// Initial values chosen so hidden states stay of order one through every layer: linear weights
// have std 1/sqrt(fan_in) (unit-variance in, unit-variance out after RMSNorm), norms sit near 1,
// the gate bias is small but non-zero so that it changes which experts win.
struct Init {
  float center;
  float half_width;
};
Init init_for(const TensorSpec& spec) {
  const float sqrt3 = std::sqrt(3.0f);
  if (spec.part == WeightPart::kNorm) return {1.0f, 0.1f};
  if (spec.part == WeightPart::kEmbedding) return {0.0f, sqrt3};
  if (spec.name.ends_with("e_score_correction_bias")) return {0.0f, 0.1f};
  const float fan_in = static_cast<float>(spec.shape.back());
  return {0.0f, sqrt3 / std::sqrt(fan_in)};
}

std::span<const std::byte> as_bytes(const auto& vec) { return std::as_bytes(std::span(vec)); }

// DeepSeek's block quantization (spec §2.2): per 128x128 block, scale_inv = max(amax, 1e-4)/448
// and W_fp8 = W / scale_inv; ragged edge blocks use only their real elements.
void quantize_fp8_blocks(const std::vector<float>& w, std::int64_t rows, std::int64_t cols, std::int64_t block,
                         std::vector<gpu::fp8_e4m3>& out, std::vector<float>& scale_inv) {
  const std::int64_t block_rows = (rows + block - 1) / block;
  const std::int64_t block_cols = (cols + block - 1) / block;
  out.resize(static_cast<std::size_t>(rows * cols));
  scale_inv.assign(static_cast<std::size_t>(block_rows * block_cols), 0.0f);
  for (std::int64_t br = 0; br < block_rows; ++br) {
    for (std::int64_t bc = 0; bc < block_cols; ++bc) {
      const std::int64_t r_end = std::min(rows, (br + 1) * block);
      const std::int64_t c_end = std::min(cols, (bc + 1) * block);
      float amax = 0.0f;
      for (std::int64_t r = br * block; r < r_end; ++r) {
        for (std::int64_t c = bc * block; c < c_end; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      }
      const float scale = std::max(amax, 1e-4f) / gpu::kFp8E4m3Max;
      scale_inv[br * block_cols + bc] = scale;
      for (std::int64_t r = br * block; r < r_end; ++r) {
        for (std::int64_t c = bc * block; c < c_end; ++c) out[r * cols + c] = gpu::fp8_from_float(w[r * cols + c] / scale);
      }
    }
  }
}

void copy_file_exact(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (!std::filesystem::exists(from)) {
    throw std::runtime_error(fmt::format(
        "tokenizer file {} not found: run ./deploy/install-deps.sh (or pass the folder that holds it)", from.string()));
  }
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
}

}  // namespace

std::vector<std::string> tiny_model_presets() { return {"tiny", "small"}; }

ModelConfig tiny_model_config(std::string_view preset) {
  ModelConfig c;
  // Shared by both presets: the real V3 vocabulary, routing, numerics and YaRN settings.
  c.vocab_size = 129280;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.yarn = YarnScaling{40.0, 4096, 32.0, 1.0, 1.0, 1.0};
  c.fp8 = Fp8Quantization{};
  c.max_position_embeddings = 163840;
  c.num_nextn_predict_layers = 1;
  if (preset == "tiny") {
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.moe_intermediate_size = 128;
    c.num_hidden_layers = 4;
    c.first_k_dense_replace = 1;
    c.num_attention_heads = 4;
    c.q_lora_rank = 128;
    c.kv_lora_rank = 128;  // kv_a_proj_with_mqa has 128 + 32 = 160 rows: a ragged FP8 block, as V3's 576
    c.qk_nope_head_dim = 64;
    c.qk_rope_head_dim = 32;
    c.v_head_dim = 64;
    c.n_routed_experts = 32;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
  } else if (preset == "small") {
    c.hidden_size = 1024;
    c.intermediate_size = 2816;
    c.moe_intermediate_size = 512;
    c.num_hidden_layers = 6;
    c.first_k_dense_replace = 1;
    c.num_attention_heads = 8;
    c.q_lora_rank = 384;
    c.kv_lora_rank = 256;
    c.qk_nope_head_dim = 64;
    c.qk_rope_head_dim = 32;
    c.v_head_dim = 64;
    c.n_routed_experts = 64;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 6;
    c.n_group = 8;
    c.topk_group = 3;
  } else {
    throw std::invalid_argument(fmt::format("unknown tiny-model preset \"{}\" (choose tiny or small)", preset));
  }
  c.num_key_value_heads = c.num_attention_heads;
  c.validate(fmt::format("preset {}", preset));
  return c;
}

std::filesystem::path default_tokenizer_dir() {
  if (const char* d = std::getenv("SY_DATA_DIR"); d != nullptr && *d != '\0') {
    return std::filesystem::path(d) / "tokenizer";
  }
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    return std::filesystem::path(x) / "switchyard" / "tokenizer";
  }
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : ".") / ".cache" / "switchyard" / "tokenizer";
}

void make_tiny_model(const std::filesystem::path& dir, const TinyModelOptions& options) {
  write_random_model(dir, tiny_model_config(options.preset), options);
}

void write_random_model(const std::filesystem::path& dir, const ModelConfig& config, const TinyModelOptions& options) {
  config.validate("write_random_model");
  const std::filesystem::path tokenizer_dir =
      options.tokenizer_dir.empty() ? default_tokenizer_dir() : options.tokenizer_dir;
  std::filesystem::create_directories(dir);
  // Old shards of another size would linger beside the new index.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") std::filesystem::remove(entry.path());
  }

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  const std::int64_t block = config.fp8 ? config.fp8->block_rows : 128;
  std::map<std::string, std::vector<gpu::bf16>> shared_copies;  // main embed/head, reused by MTP
  std::vector<gpu::fp8_e4m3> fp8_values;
  std::vector<float> scale_inv;
  const std::vector<TensorSpec> specs = expected_tensors(config);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    if (spec.is_scale) continue;  // written with its weight
    // The MTP module's embedding and head duplicate the main ones, as in the real checkpoint.
    std::string source = spec.name;
    if (spec.layer >= config.num_hidden_layers && spec.name.ends_with("embed_tokens.weight")) {
      source = "model.embed_tokens.weight";
    } else if (spec.layer >= config.num_hidden_layers && spec.name.ends_with("shared_head.head.weight")) {
      source = "lm_head.weight";
    }
    if (spec.dtype == DType::F8_E4M3) {
      const Init init = init_for(spec);
      const auto values = uniform_values(options.seed, spec.name, spec.numel(), init.center, init.half_width);
      quantize_fp8_blocks(values, spec.shape[0], spec.shape[1], block, fp8_values, scale_inv);
      writer.add(spec.name, spec.dtype, spec.shape, as_bytes(fp8_values));
      const TensorSpec& scale_spec = specs.at(i + 1);  // expected_tensors puts scale_inv right after
      writer.add(scale_spec.name, DType::F32, scale_spec.shape, as_bytes(scale_inv));
    } else if (spec.dtype == DType::BF16) {
      auto it = shared_copies.find(source);
      if (it == shared_copies.end()) {
        const Init init = init_for(spec);
        const auto values = uniform_values(options.seed, source, spec.numel(), init.center, init.half_width);
        std::vector<gpu::bf16> bf(values.size());
        std::transform(values.begin(), values.end(), bf.begin(), gpu::bf16_from_float);
        it = shared_copies.emplace(source, std::move(bf)).first;
      }
      writer.add(spec.name, spec.dtype, spec.shape, as_bytes(it->second));
      if (source != "model.embed_tokens.weight" && source != "lm_head.weight") shared_copies.erase(it);
    } else {  // F32: the gate bias
      const Init init = init_for(spec);
      const auto values = uniform_values(options.seed, spec.name, spec.numel(), init.center, init.half_width);
      writer.add(spec.name, spec.dtype, spec.shape, as_bytes(values));
    }
  }
  writer.write_sharded(dir, options.max_shard_bytes);

  std::ofstream(dir / "config.json") << config.to_json().dump(2) << "\n";
  copy_file_exact(tokenizer_dir / "tokenizer.json", dir / "tokenizer.json");
  copy_file_exact(tokenizer_dir / "tokenizer_config.json", dir / "tokenizer_config.json");
}

}  // namespace sy::model
