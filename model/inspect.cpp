#include "model/inspect.hpp"

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace sy::model {
namespace {

std::string human_count(std::int64_t n) {
  const double v = static_cast<double>(n);
  if (v >= 1e9) return fmt::format("{:.2f}B", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}K", v / 1e3);
  return fmt::format("{}", n);
}

std::string human_bytes(std::uint64_t n) {
  const double v = static_cast<double>(n);
  if (v >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", v / (1024.0 * 1024 * 1024));
  if (v >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", v / (1024.0 * 1024));
  if (v >= 1024.0) return fmt::format("{:.1f} KiB", v / 1024.0);
  return fmt::format("{} B", n);
}

void add(TensorTally& t, const TensorInfo& info) {
  t.tensors += 1;
  t.params += info.numel();
  t.bytes += info.byte_size();
}

}  // namespace

InspectReport inspect_model(const std::filesystem::path& dir) {
  InspectReport r;
  r.dir = dir;
  r.config = ModelConfig::from_file(dir / "config.json");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  r.files = checkpoint.file_count();
  r.layout_problems = check_layout(checkpoint, r.config);

  std::map<std::string, TensorSpec> specs;
  for (auto& spec : expected_tensors(r.config)) specs.emplace(spec.name, std::move(spec));
  for (const auto& name : checkpoint.names()) {
    const TensorInfo& info = *checkpoint.find(name);
    r.tensors.push_back(info);
    add(r.all, info);
    add(r.by_dtype[static_cast<std::size_t>(info.dtype)], info);
    const auto it = specs.find(name);
    if (it == specs.end()) continue;  // reported in layout_problems
    const TensorSpec& spec = it->second;
    if (spec.is_scale) {
      add(r.scales, info);
      continue;
    }
    const bool mtp = spec.layer >= r.config.num_hidden_layers;
    add((mtp ? r.mtp_parts : r.main_parts)[static_cast<std::size_t>(spec.part)], info);
    (mtp ? r.mtp_params : r.total_params) += info.numel();
  }
  // Per token, a MoE layer runs num_experts_per_tok of its n_routed_experts routed experts.
  const std::int64_t routed = r.main_parts[static_cast<std::size_t>(WeightPart::kRoutedExpert)].params;
  r.activated_params = r.total_params - routed;
  if (r.config.n_routed_experts > 0) {
    r.activated_params += routed / r.config.n_routed_experts * r.config.num_experts_per_tok;
  }
  return r;
}

std::string format_report(const InspectReport& r, bool list_tensors) {
  const ModelConfig& c = r.config;
  std::string out;
  auto line = [&]<class... A>(fmt::format_string<A...> format, A&&... args) {
    out += fmt::format(format, std::forward<A>(args)...);
    out += "\n";
  };
  line("model      {}", r.dir.string());
  line("layers     {} ({} dense, {} MoE) + {} MTP", c.num_hidden_layers, c.num_hidden_layers - c.num_moe_layers(),
       c.num_moe_layers(), c.num_nextn_predict_layers);
  line("hidden     {}  heads {}  vocab {}  dense inter {}  expert inter {}", c.hidden_size, c.num_attention_heads,
       c.vocab_size, c.intermediate_size, c.moe_intermediate_size);
  line("MLA        q_lora {}  kv_lora {}  qk_nope {}  qk_rope {}  v {}  (KV cache {} values/token/layer)",
       c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_cache_dim());
  line("MoE        {} routed + {} shared experts, top-{} of {} groups (top {}), {} {}, scale {}", c.n_routed_experts,
       c.n_shared_experts, c.num_experts_per_tok, c.n_group, c.topk_group, c.scoring_func, c.topk_method,
       c.routed_scaling_factor);
  line("weights    {}", c.fp8 ? fmt::format("FP8 e4m3, {}x{} blocks", c.fp8->block_rows, c.fp8->block_cols) : "BF16");
  line("rope       theta {}{}  softmax scale {:.7f}", c.rope_theta,
       c.yarn ? fmt::format(", YaRN factor {} over {}", c.yarn->factor, c.yarn->original_max_position_embeddings) : "",
       c.softmax_scale());
  line("{}", "");
  line("files      {}  tensors {}  size {}", r.files, r.all.tensors, human_bytes(r.all.bytes));
  for (int d = 0; d < kDTypeCount; ++d) {
    const auto& t = r.by_dtype[static_cast<std::size_t>(d)];
    if (t.tensors > 0) {
      line("  {:<9} {:>7} tensors  {:>10} elements  {:>11}", dtype_name(static_cast<DType>(d)), t.tensors,
           human_count(t.params), human_bytes(t.bytes));
    }
  }
  line("{}", "");
  line("{:<16} {:>12} {:>12}", "part", "main", "mtp");
  for (int p = 0; p < kWeightPartCount; ++p) {
    const auto& m = r.main_parts[static_cast<std::size_t>(p)];
    const auto& t = r.mtp_parts[static_cast<std::size_t>(p)];
    if (m.tensors + t.tensors == 0) continue;
    line("{:<16} {:>12} {:>12}", weight_part_name(static_cast<WeightPart>(p)), human_count(m.params),
         human_count(t.params));
  }
  line("{}", "");
  line("parameters total {} ({})  activated per token {} ({})  MTP {} ({})", human_count(r.total_params),
       r.total_params, human_count(r.activated_params), r.activated_params, human_count(r.mtp_params), r.mtp_params);
  line("           scale_inv tensors {} ({} values, not counted as parameters)", r.scales.tensors,
       human_count(r.scales.params));
  if (r.layout_problems.empty()) {
    line("layout     matches config.json");
  } else {
    line("layout     {} problems:", r.layout_problems.size());
    for (const auto& p : r.layout_problems) line("  - {}", p);
  }
  if (list_tensors) {
    line("{}", "");
    for (const auto& t : r.tensors) line("{:<64} {:<8} [{}]", t.name, dtype_name(t.dtype), fmt::join(t.shape, ", "));
  }
  return out;
}

nlohmann::ordered_json report_json(const InspectReport& r) {
  nlohmann::ordered_json j;
  j["dir"] = r.dir.string();
  j["config"] = r.config.to_json();
  j["files"] = r.files;
  j["tensors"] = r.all.tensors;
  j["bytes"] = r.all.bytes;
  j["total_params"] = r.total_params;
  j["activated_params"] = r.activated_params;
  j["mtp_params"] = r.mtp_params;
  j["scale_tensors"] = r.scales.tensors;
  nlohmann::ordered_json parts;
  for (int p = 0; p < kWeightPartCount; ++p) {
    parts[weight_part_name(static_cast<WeightPart>(p))] = {
        {"main", r.main_parts[static_cast<std::size_t>(p)].params},
        {"mtp", r.mtp_parts[static_cast<std::size_t>(p)].params}};
  }
  j["params_by_part"] = parts;
  j["layout_problems"] = r.layout_problems;
  return j;
}

}  // namespace sy::model
