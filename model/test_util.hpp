// Helpers shared by model/ tests: scratch folders and the reference configs in tests/data/.
#pragma once

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "model/config.hpp"

namespace sy::model::testing {

// A fresh folder under the temp dir, removed when the object dies.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("sy-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline nlohmann::json deepseek_v3_config_json() {
  std::ifstream in(std::filesystem::path(SY_SOURCE_DIR) / "tests/data/deepseek-v3-config.json");
  return nlohmann::json::parse(in);
}

inline ModelConfig deepseek_v3_config() { return ModelConfig::from_json(deepseek_v3_config_json()); }

}  // namespace sy::model::testing
