// ModelConfig: a Hugging Face DeepSeek-V3 config.json, parsed and checked for consistency.
// Every component that sizes a tensor reads it from here (weights, kernels, cache, placement), so
// a config that loads is one the whole stack can run. Immutable after parsing; share freely.
// Defaults for optional keys are those of Hugging Face's DeepseekV3Config.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/rope.hpp"

namespace sy::model {

// A config problem. what() lists every problem found, each naming its key.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string source, std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// rope_scaling of type "yarn" (spec §1.5): the kernel API's own parameters. The frequency
// correction and the mscale² softmax factor apply whenever it is present, as Hugging Face does.
using YarnScaling = gpu::YarnParams;

// quantization_config: only DeepSeek's block FP8 (e4m3, 128x128 weight blocks, dynamic 1x128
// activations) exists in this architecture's checkpoints; anything else is rejected by name.
struct Fp8Quantization {
  std::int64_t block_rows = 128;
  std::int64_t block_cols = 128;
};

struct ModelConfig {
  // Sizes.
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;      // dense MLP layers
  std::int64_t moe_intermediate_size = 0;  // one routed or shared expert
  std::int64_t num_hidden_layers = 0;
  std::int64_t first_k_dense_replace = 0;  // layers [0, k) are dense
  std::int64_t moe_layer_freq = 1;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;    // informational: MLA has one latent KV "head"
  std::int64_t max_position_embeddings = 0;
  // MLA (spec §1.4). q_lora_rank 0 means a single q_proj [heads*qk_head_dim, hidden].
  std::int64_t q_lora_rank = 0;
  std::int64_t kv_lora_rank = 0;
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;
  // MoE (spec §1.6).
  std::int64_t n_routed_experts = 0;
  std::int64_t n_shared_experts = 0;
  std::int64_t num_experts_per_tok = 0;
  std::int64_t n_group = 1;
  std::int64_t topk_group = 1;
  std::string scoring_func = "sigmoid";  // sigmoid | softmax
  std::string topk_method = "noaux_tc";  // noaux_tc | greedy | group_limited_greedy
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  // Numerics, position encoding, special ids.
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<YarnScaling> yarn;
  std::optional<Fp8Quantization> fp8;  // absent: linear weights are BF16
  std::string hidden_act = "silu";
  std::int64_t num_nextn_predict_layers = 0;  // MTP modules (V3: 1)
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = 0;
  std::int64_t eos_token_id = 1;
  std::string torch_dtype = "bfloat16";

  static ModelConfig from_json(const nlohmann::json& json, const std::string& source = "config.json");
  static ModelConfig from_file(const std::filesystem::path& path);
  // The Hugging Face config.json for this config, keys in the order DeepSeek ships them.
  nlohmann::ordered_json to_json() const;

  // Throws ConfigError listing every inconsistency (each names its key).
  void validate(const std::string& source) const;

  std::int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  std::int64_t kv_cache_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // 576 at V3 size
  std::int64_t experts_per_group() const { return n_routed_experts / n_group; }
  bool has_q_lora() const { return q_lora_rank > 0; }
  bool is_moe_layer(std::int64_t layer) const;
  std::int64_t num_moe_layers() const;
  // All layers in the checkpoint: the main stack followed by the MTP modules.
  std::int64_t num_checkpoint_layers() const { return num_hidden_layers + num_nextn_predict_layers; }
  // Attention softmax scale: qk_head_dim^-0.5, times mscale² under YaRN (spec §1.4.6).
  double softmax_scale() const;
};

}  // namespace sy::model
