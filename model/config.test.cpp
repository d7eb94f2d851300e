#include "model/config.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace sy::model {
namespace {

nlohmann::json v3_json() {
  std::ifstream in(std::filesystem::path(SY_SOURCE_DIR) / "tests/data/deepseek-v3-config.json");
  return nlohmann::json::parse(in);
}

// The ConfigError for `json`, or a failure if it parses.
std::string error_of(const nlohmann::json& json) {
  try {
    (void)ModelConfig::from_json(json, "test-config.json");
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "config was accepted: " << json.dump();
  return "";
}

TEST(ModelConfig, ParsesTheDeepSeekV3Config) {
  const ModelConfig c = ModelConfig::from_json(v3_json());
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_moe_layers(), 58);
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(61));  // the MTP module's layer
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_cache_dim(), 576);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_EQ(c.experts_per_group(), 32);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  ASSERT_TRUE(c.yarn.has_value());
  EXPECT_EQ(c.yarn->original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.yarn->factor, 40.0);
  ASSERT_TRUE(c.fp8.has_value());
  EXPECT_EQ(c.fp8->block_rows, 128);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.num_checkpoint_layers(), 62);
  // spec §1.4.6: 192^-0.5 * (0.1 ln 40 + 1)^2 = 0.1352338.
  EXPECT_NEAR(c.softmax_scale(), 0.1352338, 5e-7);
}

TEST(ModelConfig, WithoutYarnTheSoftmaxScaleIsPlain) {
  auto j = v3_json();
  j["rope_scaling"] = nullptr;
  EXPECT_NEAR(ModelConfig::from_json(j).softmax_scale(), 0.0721688, 5e-7);
}

TEST(ModelConfig, AcceptsQLoraRankZeroOrNull) {
  auto j = v3_json();
  j["q_lora_rank"] = nullptr;
  EXPECT_FALSE(ModelConfig::from_json(j).has_q_lora());
  j["q_lora_rank"] = 0;
  EXPECT_FALSE(ModelConfig::from_json(j).has_q_lora());
}

TEST(ModelConfig, AcceptsAnUnquantizedConfig) {
  auto j = v3_json();
  j.erase("quantization_config");
  EXPECT_FALSE(ModelConfig::from_json(j).fp8.has_value());
}

TEST(ModelConfig, RoundTripsThroughToJson) {
  const ModelConfig a = ModelConfig::from_json(v3_json());
  const ModelConfig b = ModelConfig::from_json(nlohmann::json::parse(a.to_json().dump()));
  EXPECT_EQ(a.to_json().dump(), b.to_json().dump());
}

TEST(ModelConfig, RejectsExpertsNotDivisibleByGroups) {
  auto j = v3_json();
  j["n_group"] = 7;
  const std::string msg = error_of(j);
  EXPECT_NE(msg.find("n_group"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test-config.json"), std::string::npos) << msg;
}

TEST(ModelConfig, RejectsTopKBeyondExperts) {
  auto j = v3_json();
  j["num_experts_per_tok"] = 300;
  EXPECT_NE(error_of(j).find("num_experts_per_tok"), std::string::npos);
}

TEST(ModelConfig, RejectsTopKBeyondTheSelectedGroups) {
  auto j = v3_json();
  j["topk_group"] = 1;
  j["num_experts_per_tok"] = 40;  // one group of 32 cannot supply 40
  EXPECT_NE(error_of(j).find("num_experts_per_tok"), std::string::npos);
}

TEST(ModelConfig, RejectsTopKGroupBeyondGroups) {
  auto j = v3_json();
  j["topk_group"] = 9;
  EXPECT_NE(error_of(j).find("topk_group"), std::string::npos);
}

TEST(ModelConfig, NamesMissingAndMistypedKeysAllAtOnce) {
  auto j = v3_json();
  j.erase("hidden_size");
  j["kv_lora_rank"] = "512";
  j["scoring_func"] = "relu";
  try {
    (void)ModelConfig::from_json(j, "x.json");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("hidden_size: missing"), std::string::npos) << msg;
    EXPECT_NE(msg.find("kv_lora_rank: expected an integer"), std::string::npos) << msg;
    EXPECT_EQ(e.problems().size(), 2u) << msg;  // type errors stop before consistency checks
  }
}

TEST(ModelConfig, RejectsUnsupportedValuesByKey) {
  struct Case {
    const char* key;
    nlohmann::json value;
  };
  const Case cases[] = {
      {"scoring_func", "relu"},       {"topk_method", "random"},  {"hidden_act", "gelu"},
      {"qk_rope_head_dim", 63},       {"first_k_dense_replace", 99}, {"bos_token_id", 200000},
      {"num_key_value_heads", 8},     {"model_type", "llama"},    {"attention_bias", true},
      {"rms_norm_eps", 0},            {"vocab_size", -1},
  };
  for (const auto& c : cases) {
    auto j = v3_json();
    j[c.key] = c.value;
    EXPECT_NE(error_of(j).find(c.key), std::string::npos) << c.key;
  }
}

TEST(ModelConfig, RejectsOtherQuantization) {
  auto j = v3_json();
  j["quantization_config"]["weight_block_size"] = {64, 64};
  EXPECT_NE(error_of(j).find("quantization_config.weight_block_size"), std::string::npos);
  j = v3_json();
  j["quantization_config"]["fmt"] = "e5m2";
  EXPECT_NE(error_of(j).find("quantization_config.fmt"), std::string::npos);
}

TEST(ModelConfig, FileErrorsNameTheFile) {
  const auto path = std::filesystem::temp_directory_path() / "sy-config-test-bad.json";
  std::ofstream(path) << "{ \"vocab_size\": 12,";
  try {
    (void)ModelConfig::from_file(path);
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
  std::filesystem::remove(path);
  EXPECT_THROW((void)ModelConfig::from_file(path), ConfigError);
}

}  // namespace
}  // namespace sy::model
