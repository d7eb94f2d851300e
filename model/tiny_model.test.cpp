#include "model/tiny_model.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include "model/safetensors.hpp"
#include "model/test_util.hpp"
#include "model/weights.hpp"

namespace sy::model {
namespace {

using testing::ScratchDir;

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class TinyModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_tokenizer_files()) {
      GTEST_SKIP() << "no tokenizer files at " << default_tokenizer_dir() << ": run deploy/install-deps.sh";
    }
    dir_ = testing::shared_tiny_model("tiny", 7);
  }
  std::filesystem::path dir_;
};

TEST_F(TinyModel, IsACompleteDeepSeekV3Folder) {
  const auto& d = dir_;
  for (const char* f : {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(d / f)) << f;
  }
  const ModelConfig c = ModelConfig::from_file(d / "config.json");
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_EQ(c.n_routed_experts, 32);
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  ASSERT_TRUE(c.fp8.has_value());
  const Checkpoint ck = Checkpoint::open(d);
  EXPECT_GE(ck.file_count(), 2u);
  EXPECT_TRUE(check_layout(ck, c).empty());
  // The real tokenizer, copied byte for byte.
  EXPECT_EQ(read_all(d / "tokenizer.json"), read_all(default_tokenizer_dir() / "tokenizer.json"));
}

TEST_F(TinyModel, HasARaggedFp8MatrixLikeV3) {
  const Checkpoint ck = Checkpoint::open(dir_);
  const TensorInfo* w = ck.find("model.layers.1.self_attn.kv_a_proj_with_mqa.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::F8_E4M3);
  EXPECT_NE(w->shape[0] % 128, 0);
  EXPECT_EQ(ck.find("model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv")->shape,
            (std::vector<std::int64_t>{2, 2}));
}

TEST_F(TinyModel, Fp8BlocksUseTheFullRangeWithMultiplyScales) {
  // scale_inv = amax/448 per block, so each block's largest |code| decodes to exactly 448, and
  // weight * scale_inv recovers values of std 1/sqrt(fan_in).
  const ModelConfig c = ModelConfig::from_file(dir_ / "config.json");
  const Checkpoint ck = Checkpoint::open(dir_);
  const ModelWeights w = bind_weights(ck, c);
  const LinearWeight& kv_a = w.layers[1].attention.kv_a_proj_with_mqa;
  for (std::int64_t br = 0; br < 2; ++br) {
    for (std::int64_t bc = 0; bc < 2; ++bc) {
      float max_code = 0.0f;
      for (std::int64_t r = br * 128; r < std::min<std::int64_t>(kv_a.out, (br + 1) * 128); ++r) {
        for (std::int64_t col = bc * 128; col < (bc + 1) * 128; ++col) {
          max_code = std::max(max_code, std::fabs(gpu::fp8_to_float(kv_a.fp8()[r * kv_a.in + col])));
        }
      }
      EXPECT_EQ(max_code, 448.0f) << br << "," << bc;
    }
  }
  double sum_sq = 0.0;
  for (std::int64_t r = 0; r < kv_a.out; ++r) {
    for (std::int64_t col = 0; col < kv_a.in; ++col) sum_sq += kv_a.at(r, col) * kv_a.at(r, col);
  }
  const double std_dev = std::sqrt(sum_sq / static_cast<double>(kv_a.out * kv_a.in));
  EXPECT_NEAR(std_dev, 1.0 / std::sqrt(256.0), 0.1 / std::sqrt(256.0));
}

TEST_F(TinyModel, GateBiasIsNonZeroAndMtpSharesEmbeddingAndHead) {
  const ModelConfig c = ModelConfig::from_file(dir_ / "config.json");
  const Checkpoint ck = Checkpoint::open(dir_);
  const ModelWeights w = bind_weights(ck, c);
  float max_bias = 0.0f;
  for (float b : w.layers[1].moe->e_score_correction_bias) max_bias = std::max(max_bias, std::fabs(b));
  EXPECT_GT(max_bias, 0.01f);
  const MtpWeights& mtp = *w.layers[4].mtp;
  EXPECT_TRUE(std::equal(mtp.embed_tokens.begin(), mtp.embed_tokens.end(), w.embed_tokens.begin(),
                         [](auto a, auto b) { return a.bits == b.bits; }));
  EXPECT_TRUE(std::equal(mtp.shared_head_head.begin(), mtp.shared_head_head.end(), w.lm_head.begin(),
                         [](auto a, auto b) { return a.bits == b.bits; }));
}

TEST_F(TinyModel, SameSeedGivesByteIdenticalFilesAndAnotherSeedDoesNot) {
  ScratchDir again("tiny-model-again");
  TinyModelOptions options;
  options.seed = 7;
  make_tiny_model(again.path(), options);
  std::size_t compared = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    const auto name = entry.path().filename();
    if (name == ".complete") continue;
    ASSERT_TRUE(std::filesystem::exists(again.path() / name)) << name;
    EXPECT_TRUE(read_all(entry.path()) == read_all(again.path() / name)) << name << " differs";
    ++compared;
  }
  EXPECT_GE(compared, 6u);
  options.seed = 8;
  make_tiny_model(again.path(), options);
  const std::string first_shard = Checkpoint::open(again.path()).file_of("model.embed_tokens.weight").filename();
  EXPECT_NE(read_all(dir_ / first_shard), read_all(again.path() / first_shard));
}

TEST(TinyModelConfig, PresetsAreValidAndUnknownOnesAreNamed) {
  for (const auto& p : tiny_model_presets()) EXPECT_NO_THROW((void)tiny_model_config(p));
  try {
    (void)tiny_model_config("huge");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("huge"), std::string::npos);
  }
}

}  // namespace
}  // namespace sy::model
