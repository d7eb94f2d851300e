// `switchyard inspect DIR`: what a model folder holds — config summary, tensor inventory by dtype
// and by part, parameter counts (total, activated per token, MTP), and any mismatch between the
// checkpoint and its config. Reads only headers, so it runs in moments even on the 671B layout.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.hpp"
#include "model/safetensors.hpp"
#include "model/weights.hpp"

namespace sy::model {

struct TensorTally {
  std::int64_t tensors = 0;
  std::int64_t params = 0;  // elements
  std::uint64_t bytes = 0;
};

struct InspectReport {
  std::filesystem::path dir;
  ModelConfig config;
  std::size_t files = 0;
  TensorTally all;                                     // every tensor, scales included
  std::array<TensorTally, kDTypeCount> by_dtype{};
  std::array<TensorTally, kWeightPartCount> main_parts{};  // parameters of the main model
  std::array<TensorTally, kWeightPartCount> mtp_parts{};   // parameters of the MTP modules
  TensorTally scales;                                  // FP8 weight_scale_inv tensors
  std::int64_t total_params = 0;                       // main model, scales excluded
  std::int64_t mtp_params = 0;                         // MTP modules, incl. their embedding and head copies
  std::int64_t activated_params = 0;                   // per token: all but the routed experts not chosen
  std::vector<std::string> layout_problems;            // empty when the checkpoint matches config.json
  std::vector<TensorInfo> tensors;                     // sorted by name
};

InspectReport inspect_model(const std::filesystem::path& dir);
std::string format_report(const InspectReport& report, bool list_tensors);
nlohmann::ordered_json report_json(const InspectReport& report);

}  // namespace sy::model
