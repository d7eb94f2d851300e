#include "model/weights.hpp"

#include <array>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace sy::model {
namespace {

constexpr std::array<const char*, kWeightPartCount> kWeightPartNames = {
    "embedding", "head", "norm", "attention", "dense_mlp", "gate", "shared_expert", "routed_expert", "mtp_projection"};

// Appends the specs of one layer family in checkpoint order.
class LayoutBuilder {
 public:
  explicit LayoutBuilder(const ModelConfig& config) : config_(config) {}

  void vector_bf16(std::string name, std::int64_t size, WeightPart part, std::int64_t layer) {
    specs_.push_back({std::move(name), DType::BF16, {size}, part, layer});
  }
  void matrix_bf16(std::string name, std::int64_t rows, std::int64_t cols, WeightPart part, std::int64_t layer) {
    specs_.push_back({std::move(name), DType::BF16, {rows, cols}, part, layer});
  }
  // A linear layer: FP8 + scale_inv when the config is quantized, else BF16.
  void linear(const std::string& prefix, std::int64_t out, std::int64_t in, WeightPart part, std::int64_t layer,
              std::int64_t expert = -1) {
    if (config_.fp8) {
      specs_.push_back({prefix + ".weight", DType::F8_E4M3, {out, in}, part, layer, expert});
      specs_.push_back({prefix + ".weight_scale_inv", DType::F32, scale_inv_shape(config_, out, in), part, layer,
                        expert, true});
    } else {
      specs_.push_back({prefix + ".weight", DType::BF16, {out, in}, part, layer, expert});
    }
  }
  void swiglu(const std::string& prefix, std::int64_t inter, WeightPart part, std::int64_t layer,
              std::int64_t expert = -1) {
    const std::int64_t hidden = config_.hidden_size;
    linear(prefix + ".gate_proj", inter, hidden, part, layer, expert);
    linear(prefix + ".up_proj", inter, hidden, part, layer, expert);
    linear(prefix + ".down_proj", hidden, inter, part, layer, expert);
  }
  void layer(std::int64_t l) {
    const ModelConfig& c = config_;
    const std::string p = fmt::format("model.layers.{}.", l);
    const std::int64_t h = c.hidden_size;
    const bool mtp = l >= c.num_hidden_layers;
    if (mtp) {
      // Order as in the released checkpoint: the MTP extras sort before the decoder layer.
      matrix_bf16(p + "embed_tokens.weight", c.vocab_size, h, WeightPart::kEmbedding, l);
      vector_bf16(p + "enorm.weight", h, WeightPart::kNorm, l);
      vector_bf16(p + "hnorm.weight", h, WeightPart::kNorm, l);
      matrix_bf16(p + "eh_proj.weight", h, 2 * h, WeightPart::kMtpProjection, l);
      vector_bf16(p + "shared_head.norm.weight", h, WeightPart::kNorm, l);
      matrix_bf16(p + "shared_head.head.weight", c.vocab_size, h, WeightPart::kHead, l);
    }
    vector_bf16(p + "input_layernorm.weight", h, WeightPart::kNorm, l);
    if (c.has_q_lora()) {
      linear(p + "self_attn.q_a_proj", c.q_lora_rank, h, WeightPart::kAttention, l);
      vector_bf16(p + "self_attn.q_a_layernorm.weight", c.q_lora_rank, WeightPart::kNorm, l);
      linear(p + "self_attn.q_b_proj", c.num_attention_heads * c.qk_head_dim(), c.q_lora_rank, WeightPart::kAttention, l);
    } else {
      linear(p + "self_attn.q_proj", c.num_attention_heads * c.qk_head_dim(), h, WeightPart::kAttention, l);
    }
    linear(p + "self_attn.kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, h, WeightPart::kAttention, l);
    vector_bf16(p + "self_attn.kv_a_layernorm.weight", c.kv_lora_rank, WeightPart::kNorm, l);
    linear(p + "self_attn.kv_b_proj", c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank,
           WeightPart::kAttention, l);
    linear(p + "self_attn.o_proj", h, c.num_attention_heads * c.v_head_dim, WeightPart::kAttention, l);
    vector_bf16(p + "post_attention_layernorm.weight", h, WeightPart::kNorm, l);
    if (!c.is_moe_layer(l)) {
      swiglu(p + "mlp", c.intermediate_size, WeightPart::kDenseMlp, l);
      return;
    }
    matrix_bf16(p + "mlp.gate.weight", c.n_routed_experts, h, WeightPart::kGate, l);
    if (c.topk_method == "noaux_tc") {
      specs_.push_back({p + "mlp.gate.e_score_correction_bias", DType::F32, {c.n_routed_experts}, WeightPart::kGate, l});
    }
    for (std::int64_t e = 0; e < c.n_routed_experts; ++e) {
      swiglu(fmt::format("{}mlp.experts.{}", p, e), c.moe_intermediate_size, WeightPart::kRoutedExpert, l, e);
    }
    if (c.n_shared_experts > 0) {
      swiglu(p + "mlp.shared_experts", c.n_shared_experts * c.moe_intermediate_size, WeightPart::kSharedExpert, l);
    }
  }
  std::vector<TensorSpec> take() { return std::move(specs_); }

 private:
  const ModelConfig& config_;
  std::vector<TensorSpec> specs_;
};

std::string shape_string(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Binds views by name; the layout was checked first, so every name exists with the right shape.
class Binder {
 public:
  Binder(const Checkpoint& checkpoint, const ModelConfig& config) : checkpoint_(checkpoint), config_(config) {}

  std::span<const gpu::bf16> bf16(const std::string& name) const { return checkpoint_.view(name).as<gpu::bf16>(); }
  std::span<const float> f32(const std::string& name) const { return checkpoint_.view(name).as<float>(); }
  LinearWeight linear(const std::string& prefix) const {
    const TensorView w = checkpoint_.view(prefix + ".weight");
    LinearWeight out;
    out.dtype = w.info->dtype;
    out.data = w.bytes.data();
    out.out = w.info->shape[0];
    out.in = w.info->shape[1];
    if (out.dtype == DType::F8_E4M3) {
      out.scale_inv = checkpoint_.view(prefix + ".weight_scale_inv").as<float>().data();
      out.block = config_.fp8 ? config_.fp8->block_rows : 128;
    }
    return out;
  }
  SwiGluWeights swiglu(const std::string& prefix) const {
    return {linear(prefix + ".gate_proj"), linear(prefix + ".up_proj"), linear(prefix + ".down_proj")};
  }

 private:
  const Checkpoint& checkpoint_;
  const ModelConfig& config_;
};

}  // namespace

const char* weight_part_name(WeightPart part) { return kWeightPartNames.at(static_cast<std::size_t>(part)); }

std::int64_t TensorSpec::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<std::int64_t> scale_inv_shape(const ModelConfig& config, std::int64_t rows, std::int64_t cols) {
  const std::int64_t br = config.fp8 ? config.fp8->block_rows : 128;
  const std::int64_t bc = config.fp8 ? config.fp8->block_cols : 128;
  return {(rows + br - 1) / br, (cols + bc - 1) / bc};
}

std::vector<TensorSpec> expected_tensors(const ModelConfig& config) {
  LayoutBuilder b(config);
  b.matrix_bf16("model.embed_tokens.weight", config.vocab_size, config.hidden_size, WeightPart::kEmbedding, -1);
  for (std::int64_t l = 0; l < config.num_checkpoint_layers(); ++l) b.layer(l);
  b.vector_bf16("model.norm.weight", config.hidden_size, WeightPart::kNorm, -1);
  if (!config.tie_word_embeddings) {
    b.matrix_bf16("lm_head.weight", config.vocab_size, config.hidden_size, WeightPart::kHead, -1);
  }
  return b.take();
}

WeightLayoutError::WeightLayoutError(const std::string& checkpoint, std::vector<std::string> problems)
    : std::runtime_error([&] {
        std::string msg = fmt::format("{}: checkpoint does not match config.json ({} problems):", checkpoint,
                                      problems.size());
        constexpr std::size_t kShown = 50;
        for (std::size_t i = 0; i < problems.size() && i < kShown; ++i) msg += "\n  - " + problems[i];
        if (problems.size() > kShown) msg += fmt::format("\n  ... and {} more", problems.size() - kShown);
        return msg;
      }()),
      problems_(std::move(problems)) {}

std::vector<std::string> check_layout(const Checkpoint& checkpoint, const ModelConfig& config) {
  std::vector<std::string> problems;
  std::map<std::string, const TensorSpec*> expected;
  const std::vector<TensorSpec> specs = expected_tensors(config);
  for (const auto& spec : specs) {
    expected.emplace(spec.name, &spec);
    const TensorInfo* info = checkpoint.find(spec.name);
    if (info == nullptr) {
      problems.push_back(fmt::format("{}: missing (expected {} {})", spec.name, dtype_name(spec.dtype),
                                     shape_string(spec.shape)));
      continue;
    }
    if (info->dtype != spec.dtype || info->shape != spec.shape) {
      problems.push_back(fmt::format("{}: is {} {}, expected {} {}", spec.name, dtype_name(info->dtype),
                                     shape_string(info->shape), dtype_name(spec.dtype), shape_string(spec.shape)));
    }
  }
  for (const auto& name : checkpoint.names()) {
    if (!expected.contains(name)) problems.push_back(fmt::format("{}: not part of the layout config.json implies", name));
  }
  return problems;
}

float LinearWeight::at(std::int64_t row, std::int64_t col) const {
  const std::int64_t i = row * in + col;
  if (dtype == DType::BF16) return gpu::bf16_to_float(bf16()[i]);
  return gpu::fp8_to_float(fp8()[i]) * scale_inv[(row / block) * scale_cols() + col / block];
}

ModelWeights bind_weights(const Checkpoint& checkpoint, const ModelConfig& config) {
  if (auto problems = check_layout(checkpoint, config); !problems.empty()) {
    throw WeightLayoutError(checkpoint.path().string(), std::move(problems));
  }
  const Binder b(checkpoint, config);
  ModelWeights w;
  w.embed_tokens = b.bf16("model.embed_tokens.weight");
  w.norm = b.bf16("model.norm.weight");
  w.lm_head = config.tie_word_embeddings ? w.embed_tokens : b.bf16("lm_head.weight");
  for (std::int64_t l = 0; l < config.num_checkpoint_layers(); ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights layer;
    layer.index = l;
    layer.input_layernorm = b.bf16(p + "input_layernorm.weight");
    layer.post_attention_layernorm = b.bf16(p + "post_attention_layernorm.weight");
    AttentionWeights& a = layer.attention;
    if (config.has_q_lora()) {
      a.q_a_proj = b.linear(p + "self_attn.q_a_proj");
      a.q_a_layernorm = b.bf16(p + "self_attn.q_a_layernorm.weight");
      a.q_b_proj = b.linear(p + "self_attn.q_b_proj");
    } else {
      a.q_proj = b.linear(p + "self_attn.q_proj");
    }
    a.kv_a_proj_with_mqa = b.linear(p + "self_attn.kv_a_proj_with_mqa");
    a.kv_a_layernorm = b.bf16(p + "self_attn.kv_a_layernorm.weight");
    a.kv_b_proj = b.linear(p + "self_attn.kv_b_proj");
    a.o_proj = b.linear(p + "self_attn.o_proj");
    if (config.is_moe_layer(l)) {
      MoeWeights moe;
      moe.gate = b.bf16(p + "mlp.gate.weight");
      if (config.topk_method == "noaux_tc") moe.e_score_correction_bias = b.f32(p + "mlp.gate.e_score_correction_bias");
      moe.experts.reserve(static_cast<std::size_t>(config.n_routed_experts));
      for (std::int64_t e = 0; e < config.n_routed_experts; ++e) {
        moe.experts.push_back(b.swiglu(fmt::format("{}mlp.experts.{}", p, e)));
      }
      if (config.n_shared_experts > 0) moe.shared = b.swiglu(p + "mlp.shared_experts");
      layer.moe = std::move(moe);
    } else {
      layer.dense_mlp = b.swiglu(p + "mlp");
    }
    if (l >= config.num_hidden_layers) {
      MtpWeights mtp;
      mtp.embed_tokens = b.bf16(p + "embed_tokens.weight");
      mtp.enorm = b.bf16(p + "enorm.weight");
      mtp.hnorm = b.bf16(p + "hnorm.weight");
      mtp.eh_proj = b.linear(p + "eh_proj");
      mtp.shared_head_norm = b.bf16(p + "shared_head.norm.weight");
      mtp.shared_head_head = b.bf16(p + "shared_head.head.weight");
      layer.mtp = mtp;
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

}  // namespace sy::model
