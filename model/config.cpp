#include "model/config.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace sy::model {
namespace {

std::string join_problems(const std::string& source, const std::vector<std::string>& problems) {
  std::string out = fmt::format("{}: invalid model config:", source);
  for (const auto& p : problems) out += "\n  - " + p;
  return out;
}

// Reads keys with type checks, collecting problems instead of stopping at the first.
class Reader {
 public:
  Reader(const nlohmann::json& json, std::vector<std::string>& problems) : json_(json), problems_(problems) {}

  template <class T>
  void required(const char* key, T& out) {
    if (!json_.contains(key) || json_.at(key).is_null()) {
      problems_.push_back(fmt::format("{}: missing", key));
      return;
    }
    read(key, json_.at(key), out);
  }
  template <class T>
  void optional(const char* key, T& out) {
    if (json_.contains(key) && !json_.at(key).is_null()) read(key, json_.at(key), out);
  }

 private:
  void read(const char* key, const nlohmann::json& v, std::int64_t& out) {
    if (v.is_number_integer()) {
      out = v.get<std::int64_t>();
    } else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) {
      out = static_cast<std::int64_t>(v.get<double>());
    } else {
      problems_.push_back(fmt::format("{}: expected an integer, got {}", key, v.dump()));
    }
  }
  void read(const char* key, const nlohmann::json& v, double& out) {
    if (v.is_number()) {
      out = v.get<double>();
    } else {
      problems_.push_back(fmt::format("{}: expected a number, got {}", key, v.dump()));
    }
  }
  void read(const char* key, const nlohmann::json& v, bool& out) {
    if (v.is_boolean()) {
      out = v.get<bool>();
    } else {
      problems_.push_back(fmt::format("{}: expected true or false, got {}", key, v.dump()));
    }
  }
  void read(const char* key, const nlohmann::json& v, std::string& out) {
    if (v.is_string()) {
      out = v.get<std::string>();
    } else {
      problems_.push_back(fmt::format("{}: expected a string, got {}", key, v.dump()));
    }
  }

  const nlohmann::json& json_;
  std::vector<std::string>& problems_;
};

}  // namespace

ConfigError::ConfigError(std::string source, std::vector<std::string> problems)
    : std::runtime_error(join_problems(source, problems)), problems_(std::move(problems)) {}

ModelConfig ModelConfig::from_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path.string(), {"cannot open the file"});
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(path.string(), {fmt::format("not valid JSON: {}", e.what())});
  }
  return from_json(json, path.string());
}

ModelConfig ModelConfig::from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) throw ConfigError(source, {"the top level is not a JSON object"});
  std::vector<std::string> problems;
  Reader r(json, problems);
  ModelConfig c;
  std::string model_type;
  r.optional("model_type", model_type);
  if (!model_type.empty() && model_type != "deepseek_v3") {
    problems.push_back(fmt::format("model_type: \"{}\" is not the DeepSeek-V3 architecture (deepseek_v3)", model_type));
  }
  r.required("vocab_size", c.vocab_size);
  r.required("hidden_size", c.hidden_size);
  r.required("intermediate_size", c.intermediate_size);
  r.required("moe_intermediate_size", c.moe_intermediate_size);
  r.required("num_hidden_layers", c.num_hidden_layers);
  r.required("first_k_dense_replace", c.first_k_dense_replace);
  r.optional("moe_layer_freq", c.moe_layer_freq);
  r.required("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  r.optional("num_key_value_heads", c.num_key_value_heads);
  r.optional("max_position_embeddings", c.max_position_embeddings);
  r.optional("q_lora_rank", c.q_lora_rank);  // null or 0: no q compression
  r.required("kv_lora_rank", c.kv_lora_rank);
  r.required("qk_nope_head_dim", c.qk_nope_head_dim);
  r.required("qk_rope_head_dim", c.qk_rope_head_dim);
  r.required("v_head_dim", c.v_head_dim);
  r.required("n_routed_experts", c.n_routed_experts);
  r.required("n_shared_experts", c.n_shared_experts);
  r.required("num_experts_per_tok", c.num_experts_per_tok);
  r.optional("n_group", c.n_group);
  r.optional("topk_group", c.topk_group);
  r.optional("scoring_func", c.scoring_func);
  r.optional("topk_method", c.topk_method);
  r.optional("norm_topk_prob", c.norm_topk_prob);
  r.optional("routed_scaling_factor", c.routed_scaling_factor);
  r.optional("rms_norm_eps", c.rms_norm_eps);
  r.optional("rope_theta", c.rope_theta);
  r.optional("hidden_act", c.hidden_act);
  r.optional("num_nextn_predict_layers", c.num_nextn_predict_layers);
  r.optional("tie_word_embeddings", c.tie_word_embeddings);
  r.optional("bos_token_id", c.bos_token_id);
  r.optional("eos_token_id", c.eos_token_id);
  r.optional("torch_dtype", c.torch_dtype);
  bool attention_bias = false;
  r.optional("attention_bias", attention_bias);
  if (attention_bias) problems.push_back("attention_bias: true is not part of this architecture (MLA has no biases)");

  if (json.contains("rope_scaling") && !json.at("rope_scaling").is_null()) {
    const auto& rs = json.at("rope_scaling");
    if (!rs.is_object()) {
      problems.push_back("rope_scaling: expected an object");
    } else {
      std::string type;
      if (rs.contains("type")) type = rs.value("type", "");
      if (rs.contains("rope_type")) type = rs.value("rope_type", "");
      if (type != "yarn") {
        problems.push_back(fmt::format("rope_scaling.type: \"{}\" is not supported (only \"yarn\")", type));
      } else {
        YarnScaling y;
        std::vector<std::string> sub;
        Reader yr(rs, sub);
        yr.required("factor", y.factor);
        yr.required("original_max_position_embeddings", y.original_max_position_embeddings);
        yr.optional("beta_fast", y.beta_fast);
        yr.optional("beta_slow", y.beta_slow);
        yr.optional("mscale", y.mscale);
        yr.optional("mscale_all_dim", y.mscale_all_dim);
        for (auto& p : sub) problems.push_back("rope_scaling." + p);
        c.yarn = y;
      }
    }
  }

  if (json.contains("quantization_config") && !json.at("quantization_config").is_null()) {
    const auto& q = json.at("quantization_config");
    if (!q.is_object()) {
      problems.push_back("quantization_config: expected an object");
    } else {
      std::vector<std::string> sub;
      Reader qr(q, sub);
      std::string method, format = "e4m3", scheme = "dynamic";
      qr.required("quant_method", method);
      qr.optional("fmt", format);
      qr.optional("activation_scheme", scheme);
      for (auto& p : sub) problems.push_back("quantization_config." + p);
      if (method != "fp8" && !method.empty()) {
        problems.push_back(fmt::format("quantization_config.quant_method: \"{}\" is not supported (only \"fp8\")", method));
      }
      if (format != "e4m3") {
        problems.push_back(fmt::format("quantization_config.fmt: \"{}\" is not supported (only \"e4m3\")", format));
      }
      if (scheme != "dynamic") {
        problems.push_back(fmt::format("quantization_config.activation_scheme: \"{}\" is not supported (only \"dynamic\")", scheme));
      }
      Fp8Quantization f;
      if (q.contains("weight_block_size")) {
        const auto& b = q.at("weight_block_size");
        if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer()) {
          problems.push_back("quantization_config.weight_block_size: expected [rows, cols]");
        } else {
          f.block_rows = b[0].get<std::int64_t>();
          f.block_cols = b[1].get<std::int64_t>();
          if (f.block_rows != 128 || f.block_cols != 128) {
            problems.push_back(fmt::format(
                "quantization_config.weight_block_size: [{}, {}] is not supported (DeepSeek-V3 uses [128, 128])",
                f.block_rows, f.block_cols));
          }
        }
      }
      c.fp8 = f;
    }
  }

  if (!problems.empty()) throw ConfigError(source, std::move(problems));
  c.validate(source);
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  std::vector<std::string> problems;
  auto positive = [&](const char* key, std::int64_t v) {
    if (v <= 0) problems.push_back(fmt::format("{}: must be positive, got {}", key, v));
  };
  auto non_negative = [&](const char* key, std::int64_t v) {
    if (v < 0) problems.push_back(fmt::format("{}: must not be negative, got {}", key, v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("qk_rope_head_dim", qk_rope_head_dim);
  positive("v_head_dim", v_head_dim);
  positive("moe_layer_freq", moe_layer_freq);
  non_negative("q_lora_rank", q_lora_rank);
  non_negative("n_routed_experts", n_routed_experts);
  non_negative("n_shared_experts", n_shared_experts);
  non_negative("first_k_dense_replace", first_k_dense_replace);
  non_negative("num_nextn_predict_layers", num_nextn_predict_layers);
  if (qk_rope_head_dim % 2 != 0) {
    problems.push_back(fmt::format("qk_rope_head_dim: must be even (RoPE rotates pairs), got {}", qk_rope_head_dim));
  }
  if (num_key_value_heads != num_attention_heads) {
    problems.push_back(fmt::format("num_key_value_heads: {} differs from num_attention_heads {} (MLA expands one latent to every head)",
                                   num_key_value_heads, num_attention_heads));
  }
  if (first_k_dense_replace > num_hidden_layers) {
    problems.push_back(fmt::format("first_k_dense_replace: {} exceeds num_hidden_layers {}", first_k_dense_replace,
                                   num_hidden_layers));
  }
  if (n_routed_experts > 0) {
    positive("moe_intermediate_size", moe_intermediate_size);
    positive("num_experts_per_tok", num_experts_per_tok);
    positive("n_group", n_group);
    positive("topk_group", topk_group);
    if (num_experts_per_tok > n_routed_experts) {
      problems.push_back(fmt::format("num_experts_per_tok: top-k {} exceeds n_routed_experts {}", num_experts_per_tok,
                                     n_routed_experts));
    }
    if (n_group > 0 && n_routed_experts % n_group != 0) {
      problems.push_back(fmt::format("n_group: n_routed_experts {} is not divisible by n_group {}", n_routed_experts,
                                     n_group));
    } else if (n_group > 0 && topk_group > 0) {
      if (topk_group > n_group) {
        problems.push_back(fmt::format("topk_group: {} exceeds n_group {}", topk_group, n_group));
      } else if (num_experts_per_tok > topk_group * (n_routed_experts / n_group)) {
        problems.push_back(fmt::format("num_experts_per_tok: top-k {} exceeds the {} experts in the top {} groups",
                                       num_experts_per_tok, topk_group * (n_routed_experts / n_group), topk_group));
      }
      if (topk_method == "noaux_tc" && n_group > 1 && n_routed_experts / n_group < 2) {
        problems.push_back("n_group: noaux_tc scores a group by its top-2 experts, so each group needs at least 2");
      }
    }
  }
  if (scoring_func != "sigmoid" && scoring_func != "softmax") {
    problems.push_back(fmt::format("scoring_func: \"{}\" is not sigmoid or softmax", scoring_func));
  }
  if (topk_method != "noaux_tc" && topk_method != "greedy" && topk_method != "group_limited_greedy") {
    problems.push_back(fmt::format("topk_method: \"{}\" is not noaux_tc, greedy or group_limited_greedy", topk_method));
  }
  if (hidden_act != "silu") problems.push_back(fmt::format("hidden_act: \"{}\" is not supported (only silu)", hidden_act));
  if (!(rms_norm_eps > 0.0)) problems.push_back(fmt::format("rms_norm_eps: must be positive, got {}", rms_norm_eps));
  if (!(rope_theta > 0.0)) problems.push_back(fmt::format("rope_theta: must be positive, got {}", rope_theta));
  if (!(routed_scaling_factor > 0.0)) {
    problems.push_back(fmt::format("routed_scaling_factor: must be positive, got {}", routed_scaling_factor));
  }
  if (yarn) {
    if (!(yarn->factor >= 1.0)) problems.push_back(fmt::format("rope_scaling.factor: must be >= 1, got {}", yarn->factor));
    if (yarn->original_max_position_embeddings <= 0) {
      problems.push_back("rope_scaling.original_max_position_embeddings: must be positive");
    }
    if (!(yarn->beta_fast > 0.0 && yarn->beta_slow > 0.0)) {
      problems.push_back("rope_scaling.beta_fast/beta_slow: must be positive");
    }
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    problems.push_back(fmt::format("bos_token_id: {} is outside the vocabulary [0, {})", bos_token_id, vocab_size));
  }
  if (eos_token_id < 0 || eos_token_id >= vocab_size) {
    problems.push_back(fmt::format("eos_token_id: {} is outside the vocabulary [0, {})", eos_token_id, vocab_size));
  }
  if (!problems.empty()) throw ConfigError(source, std::move(problems));
}

bool ModelConfig::is_moe_layer(std::int64_t layer) const {
  // Hugging Face's rule; MTP layers (layer >= num_hidden_layers) are MoE too.
  return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

std::int64_t ModelConfig::num_moe_layers() const {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < num_hidden_layers; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

double ModelConfig::softmax_scale() const { return gpu::attention_softmax_scale(qk_head_dim(), yarn); }

nlohmann::ordered_json ModelConfig::to_json() const {
  nlohmann::ordered_json j;
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["ep_size"] = 1;
  j["first_k_dense_replace"] = first_k_dense_replace;
  j["hidden_act"] = hidden_act;
  j["hidden_size"] = hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = intermediate_size;
  j["kv_lora_rank"] = kv_lora_rank;
  j["max_position_embeddings"] = max_position_embeddings;
  j["model_type"] = "deepseek_v3";
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["moe_layer_freq"] = moe_layer_freq;
  j["n_group"] = n_group;
  j["n_routed_experts"] = n_routed_experts;
  j["n_shared_experts"] = n_shared_experts;
  j["norm_topk_prob"] = norm_topk_prob;
  j["num_attention_heads"] = num_attention_heads;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  if (q_lora_rank > 0) {
    j["q_lora_rank"] = q_lora_rank;
  } else {
    j["q_lora_rank"] = nullptr;
  }
  j["qk_nope_head_dim"] = qk_nope_head_dim;
  j["qk_rope_head_dim"] = qk_rope_head_dim;
  if (fp8) {
    j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {fp8->block_rows, fp8->block_cols}}};
  }
  j["rms_norm_eps"] = rms_norm_eps;
  if (yarn) {
    j["rope_scaling"] = {{"beta_fast", yarn->beta_fast},
                         {"beta_slow", yarn->beta_slow},
                         {"factor", yarn->factor},
                         {"mscale", yarn->mscale},
                         {"mscale_all_dim", yarn->mscale_all_dim},
                         {"original_max_position_embeddings", yarn->original_max_position_embeddings},
                         {"type", "yarn"}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rope_theta"] = rope_theta;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["scoring_func"] = scoring_func;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["topk_group"] = topk_group;
  j["topk_method"] = topk_method;
  j["torch_dtype"] = torch_dtype;
  j["transformers_version"] = "4.46.3";
  j["use_cache"] = true;
  j["v_head_dim"] = v_head_dim;
  j["vocab_size"] = vocab_size;
  return j;
}

}  // namespace sy::model
