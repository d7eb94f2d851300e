#include "model/inspect.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include <sys/stat.h>

#include "model/test_util.hpp"

namespace sy::model {
namespace {

using testing::ScratchDir;

// The full DeepSeek-V3 671B layout: every tensor name and shape, sharded like the release, as
// sparse files that hold no data. inspect reads only headers, as it would on the real thing.
TEST(Inspect, ReportsTheFull671BLayout) {
  ScratchDir dir("inspect-671b");
  const auto json = testing::deepseek_v3_config_json();
  std::ofstream(dir.path() / "config.json") << json.dump(2);
  const ModelConfig config = ModelConfig::from_json(json);
  SafetensorsWriter writer;
  for (const auto& spec : expected_tensors(config)) writer.add_zeros(spec.name, spec.dtype, spec.shape);
  writer.write_sharded(dir.path(), 5ull << 30);

  const InspectReport r = inspect_model(dir.path());
  EXPECT_TRUE(r.layout_problems.empty());
  EXPECT_EQ(r.all.tensors, 91991);
  EXPECT_GT(r.files, 100u);
  EXPECT_NEAR(static_cast<double>(r.total_params) / 1e9, 671.0, 0.5);
  EXPECT_NEAR(static_cast<double>(r.activated_params) / 1e9, 37.0, 0.6);
  EXPECT_GT(r.all.bytes, 680'000'000'000ull);  // ~689 GB of FP8, BF16 and F32 scales

  // The files really are sparse: far less on disk than their size.
  std::uint64_t blocks = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    struct stat st{};
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
    blocks += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  EXPECT_LT(blocks, 1ull << 30);

  const std::string text = format_report(r, false);
  EXPECT_NE(text.find("layout     matches config.json"), std::string::npos) << text;
  EXPECT_NE(text.find("671.03B"), std::string::npos) << text;
  EXPECT_NE(text.find("37.55B"), std::string::npos) << text;
}

TEST(Inspect, ReportsLayoutProblems) {
  ScratchDir dir("inspect-bad");
  auto json = testing::deepseek_v3_config_json();
  json["num_hidden_layers"] = 4;
  std::ofstream(dir.path() / "config.json") << json.dump(2);
  json["num_hidden_layers"] = 5;  // the checkpoint has one layer more than config.json says
  SafetensorsWriter writer;
  for (const auto& spec : expected_tensors(ModelConfig::from_json(json))) {
    writer.add_zeros(spec.name, spec.dtype, spec.shape);
  }
  writer.write(dir.path() / "model.safetensors");
  const InspectReport r = inspect_model(dir.path());
  ASSERT_FALSE(r.layout_problems.empty());
  EXPECT_NE(format_report(r, false).find("model.layers.5."), std::string::npos);
}

}  // namespace
}  // namespace sy::model
