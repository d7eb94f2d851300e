#include "model/weights.hpp"

#include <gtest/gtest.h>

#include <map>

#include "model/test_util.hpp"

namespace sy::model {
namespace {

using testing::deepseek_v3_config;
using testing::ScratchDir;

std::map<std::string, TensorSpec> by_name(const std::vector<TensorSpec>& specs) {
  std::map<std::string, TensorSpec> m;
  for (const auto& s : specs) m.emplace(s.name, s);
  return m;
}

TEST(WeightLayout, MatchesTheReleasedDeepSeekV3Checkpoint) {
  const auto specs = expected_tensors(deepseek_v3_config());
  // The R1/V3 checkpoint dump lists 91,991 tensors (spec §2.6).
  EXPECT_EQ(specs.size(), 91991u);
  const auto m = by_name(specs);
  ASSERT_EQ(m.size(), specs.size()) << "duplicate names";
  auto shape = [&](const std::string& name) { return m.at(name).shape; };
  using S = std::vector<std::int64_t>;
  EXPECT_EQ(shape("model.embed_tokens.weight"), (S{129280, 7168}));
  EXPECT_EQ(shape("model.layers.0.self_attn.q_a_proj.weight_scale_inv"), (S{12, 56}));
  EXPECT_EQ(shape("model.layers.0.self_attn.q_b_proj.weight_scale_inv"), (S{192, 12}));
  EXPECT_EQ(shape("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), (S{576, 7168}));
  EXPECT_EQ(shape("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"), (S{5, 56}));
  EXPECT_EQ(shape("model.layers.0.self_attn.kv_b_proj.weight_scale_inv"), (S{256, 4}));
  EXPECT_EQ(shape("model.layers.0.self_attn.o_proj.weight_scale_inv"), (S{56, 128}));
  EXPECT_EQ(shape("model.layers.2.mlp.gate_proj.weight_scale_inv"), (S{144, 56}));
  EXPECT_EQ(shape("model.layers.2.mlp.down_proj.weight_scale_inv"), (S{56, 144}));
  EXPECT_EQ(shape("model.layers.3.mlp.gate.weight"), (S{256, 7168}));
  EXPECT_EQ(m.at("model.layers.3.mlp.gate.weight").dtype, DType::BF16);
  EXPECT_EQ(m.at("model.layers.3.mlp.gate.e_score_correction_bias").dtype, DType::F32);
  EXPECT_EQ(shape("model.layers.60.mlp.experts.255.down_proj.weight_scale_inv"), (S{56, 16}));
  EXPECT_EQ(shape("model.layers.60.mlp.shared_experts.up_proj.weight"), (S{2048, 7168}));
  EXPECT_EQ(shape("model.layers.61.eh_proj.weight"), (S{7168, 14336}));
  EXPECT_EQ(m.at("model.layers.61.eh_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(shape("model.layers.61.shared_head.head.weight"), (S{129280, 7168}));
  EXPECT_EQ(m.at("model.layers.61.mlp.experts.0.gate_proj.weight").dtype, DType::F8_E4M3);
  EXPECT_FALSE(m.contains("model.layers.2.mlp.gate.weight"));
  EXPECT_FALSE(m.contains("model.layers.62.input_layernorm.weight"));
}

TEST(WeightLayout, ParameterCountsMatchTheSpec) {
  const ModelConfig c = deepseek_v3_config();
  std::int64_t main = 0, routed = 0, mtp = 0;
  for (const auto& s : expected_tensors(c)) {
    if (s.is_scale) continue;
    if (s.layer >= c.num_hidden_layers) {
      mtp += s.numel();
    } else {
      main += s.numel();
      if (s.part == WeightPart::kRoutedExpert) routed += s.numel();
    }
  }
  // spec §1.9: 671.03B total, 37.55B activated (with embedding and head).
  EXPECT_NEAR(static_cast<double>(main) / 1e9, 671.03, 0.01);
  const double activated = static_cast<double>(main - routed + routed / 256 * 8) / 1e9;
  EXPECT_NEAR(activated, 37.55, 0.01);
  // spec §1.9: MTP unique 11.61B, plus its copies of embedding and head.
  EXPECT_NEAR(static_cast<double>(mtp - 2 * 129280LL * 7168) / 1e9, 11.61, 0.01);
}

TEST(WeightLayout, QLoraRankZeroUsesASingleQProj) {
  auto j = testing::deepseek_v3_config_json();
  j["q_lora_rank"] = nullptr;
  const auto m = by_name(expected_tensors(ModelConfig::from_json(j)));
  EXPECT_TRUE(m.contains("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.weight").shape, (std::vector<std::int64_t>{24576, 7168}));
  EXPECT_FALSE(m.contains("model.layers.0.self_attn.q_a_proj.weight"));
}

TEST(WeightLayout, UnquantizedConfigsHaveBf16LinearsAndNoScales) {
  auto j = testing::deepseek_v3_config_json();
  j.erase("quantization_config");
  for (const auto& s : expected_tensors(ModelConfig::from_json(j))) {
    EXPECT_FALSE(s.is_scale) << s.name;
    EXPECT_NE(s.dtype, DType::F8_E4M3) << s.name;
  }
}

// A small config whose checkpoint is cheap to write in full.
ModelConfig small_config() {
  auto j = testing::deepseek_v3_config_json();
  j["hidden_size"] = 256;
  j["intermediate_size"] = 384;
  j["moe_intermediate_size"] = 128;
  j["num_hidden_layers"] = 2;
  j["first_k_dense_replace"] = 1;
  j["num_attention_heads"] = 2;
  j["num_key_value_heads"] = 2;
  j["q_lora_rank"] = 128;
  j["kv_lora_rank"] = 128;
  j["qk_nope_head_dim"] = 32;
  j["qk_rope_head_dim"] = 32;
  j["v_head_dim"] = 32;
  j["n_routed_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["n_group"] = 2;
  j["topk_group"] = 1;
  j["vocab_size"] = 300;
  return ModelConfig::from_json(j);
}

void write_layout(const ModelConfig& c, const std::filesystem::path& file, const std::string& skip = "",
                  const std::string& reshape = "", const std::string& retype = "", const std::string& extra = "") {
  SafetensorsWriter w;
  for (const auto& s : expected_tensors(c)) {
    if (s.name == skip) continue;
    auto shape = s.shape;
    auto dtype = s.dtype;
    if (s.name == reshape) shape[0] += 1;
    if (s.name == retype) dtype = DType::F32;
    w.add_zeros(s.name, dtype, shape);
  }
  if (!extra.empty()) w.add_zeros(extra, DType::F32, {4});
  w.write(file);
}

TEST(BindWeights, BindsEveryViewOfAMatchingCheckpoint) {
  ScratchDir dir("bind");
  const ModelConfig c = small_config();
  write_layout(c, dir.path() / "model.safetensors");
  const Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_TRUE(check_layout(ck, c).empty());
  const ModelWeights w = bind_weights(ck, c);
  ASSERT_EQ(w.layers.size(), 3u);  // 2 main + 1 MTP
  EXPECT_TRUE(w.layers[0].dense_mlp.has_value());
  EXPECT_FALSE(w.layers[0].moe.has_value());
  ASSERT_TRUE(w.layers[1].moe.has_value());
  EXPECT_EQ(w.layers[1].moe->experts.size(), 8u);
  EXPECT_EQ(w.layers[1].moe->e_score_correction_bias.size(), 8u);
  EXPECT_EQ(w.layers[1].attention.kv_a_proj_with_mqa.out, 160);
  EXPECT_EQ(w.layers[1].attention.kv_a_proj_with_mqa.dtype, DType::F8_E4M3);
  EXPECT_NE(w.layers[1].attention.kv_a_proj_with_mqa.scale_inv, nullptr);
  ASSERT_TRUE(w.layers[2].mtp.has_value());
  EXPECT_EQ(w.layers[2].mtp->eh_proj.in, 512);
  EXPECT_EQ(w.layers[2].mtp->eh_proj.dtype, DType::BF16);
  EXPECT_EQ(w.lm_head.size(), 300u * 256u);
  EXPECT_EQ(w.layers[1].attention.o_proj.at(0, 0), 0.0f);
}

TEST(BindWeights, ReportsEveryMismatchAtOnce) {
  ScratchDir dir("mismatch");
  const ModelConfig c = small_config();
  write_layout(c, dir.path() / "model.safetensors", "model.layers.1.mlp.experts.3.up_proj.weight",
               "model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.gate.weight", "model.bogus.weight");
  const Checkpoint ck = Checkpoint::open(dir.path());
  try {
    (void)bind_weights(ck, c);
    FAIL() << "bound a mismatched checkpoint";
  } catch (const WeightLayoutError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.problems().size(), 4u) << msg;
    EXPECT_NE(msg.find("model.layers.1.mlp.experts.3.up_proj.weight: missing"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.layers.0.self_attn.o_proj.weight: is F8_E4M3 [257, 64], expected F8_E4M3 [256, 64]"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("model.layers.1.mlp.gate.weight: is F32"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.bogus.weight: not part of the layout"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sy::model
