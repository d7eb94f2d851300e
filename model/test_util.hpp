// Helpers shared by model/ tests: scratch folders and the reference configs in tests/data/.
#pragma once

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <unistd.h>

#include "model/config.hpp"
#include "model/tiny_model.hpp"

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

inline bool have_tokenizer_files() { return std::filesystem::exists(default_tokenizer_dir() / "tokenizer.json"); }

// A tiny model shared by every test process of this build tree (ctest runs each test in its own
// process; making the model each time would dominate the run). Made once under the build folder,
// guarded by a file lock, and made again whenever the test binary is newer than it (the maker's
// code may have changed). REQUIRES: have_tokenizer_files().
inline std::filesystem::path shared_tiny_model(const std::string& preset = "tiny", std::uint64_t seed = 7) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(SY_BINARY_DIR) / "test-models";
  fs::create_directories(root);
  const fs::path dir = root / (preset + "-seed" + std::to_string(seed));
  const fs::path stamp = dir / ".complete";
  const int lock = ::open((root / ".lock").c_str(), O_CREAT | O_RDWR, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) throw std::runtime_error("cannot lock " + root.string());
  const bool fresh = fs::exists(stamp) && fs::last_write_time(stamp) >= fs::last_write_time("/proc/self/exe");
  if (!fresh) {
    fs::remove_all(dir);
    TinyModelOptions options;
    options.preset = preset;
    options.seed = seed;
    make_tiny_model(dir, options);
    std::ofstream(stamp) << "made by " << fs::read_symlink("/proc/self/exe").string() << "\n";
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return dir;
}

}  // namespace sy::model::testing
