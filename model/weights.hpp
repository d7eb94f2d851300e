// The DeepSeek-V3 weight layout and typed views of a loaded checkpoint.
// expected_tensors() is the one list of every tensor a config implies (HF names, dtypes, shapes;
// spec §2.6); the tiny-model maker writes it, bind_weights() checks a checkpoint against it
// (reporting every mismatch at once) and hands out zero-copy views into the mapped files.
// Views are plain pointers, valid while the Checkpoint lives; immutable, shareable across threads.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/dtypes.hpp"
#include "model/config.hpp"
#include "model/safetensors.hpp"

namespace sy::model {

// Which part of the model a tensor belongs to; inspect and parameter counts group by it.
enum class WeightPart : std::uint8_t {
  kEmbedding,      // model.embed_tokens
  kHead,           // lm_head
  kNorm,           // every RMSNorm weight
  kAttention,      // MLA projections
  kDenseMlp,       // layers [0, first_k_dense_replace)
  kGate,           // MoE router weight and e_score_correction_bias
  kSharedExpert,
  kRoutedExpert,
  kMtpProjection,  // MTP eh_proj
};
inline constexpr int kWeightPartCount = 9;
const char* weight_part_name(WeightPart part);

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  WeightPart part;
  std::int64_t layer = -1;    // -1: top level; >= num_hidden_layers: an MTP module
  std::int64_t expert = -1;   // routed expert index, else -1
  bool is_scale = false;      // an FP8 weight_scale_inv (quantization metadata, not a parameter)
  std::int64_t numel() const;
};

// Every tensor the config implies, in checkpoint order (top level, then layer by layer).
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);

// Shape of the fp32 weight_scale_inv for an FP8 [rows, cols] weight: [ceil(rows/128), ceil(cols/128)].
std::vector<std::int64_t> scale_inv_shape(const ModelConfig& config, std::int64_t rows, std::int64_t cols);

// A checkpoint that does not match its config. what() lists every mismatch.
class WeightLayoutError : public std::runtime_error {
 public:
  WeightLayoutError(const std::string& checkpoint, std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// All mismatches between a checkpoint and the config's layout: missing tensors, wrong dtype or
// shape, and tensors the layout does not know. Empty means the checkpoint matches.
std::vector<std::string> check_layout(const Checkpoint& checkpoint, const ModelConfig& config);

// A linear layer's weight [out, in]: FP8 e4m3 with fp32 scale_inv blocks (multiply to
// dequantize), or BF16 (scale_inv == nullptr).
struct LinearWeight {
  DType dtype = DType::BF16;
  const void* data = nullptr;        // [out, in] row-major
  const float* scale_inv = nullptr;  // [ceil(out/128), ceil(in/128)] row-major, FP8 only
  std::int64_t out = 0;
  std::int64_t in = 0;
  std::int64_t block = 128;          // weight_block_size (square)

  const gpu::fp8_e4m3* fp8() const { return static_cast<const gpu::fp8_e4m3*>(data); }
  const gpu::bf16* bf16() const { return static_cast<const gpu::bf16*>(data); }
  std::int64_t scale_cols() const { return (in + block - 1) / block; }
  // Dequantized element (slow; for tests and references).
  float at(std::int64_t row, std::int64_t col) const;
};

struct SwiGluWeights {  // down(silu(gate x) * up x)
  LinearWeight gate_proj, up_proj, down_proj;
};

struct AttentionWeights {
  std::optional<LinearWeight> q_a_proj;                 // [q_lora_rank, hidden] when q_lora_rank > 0
  std::span<const gpu::bf16> q_a_layernorm;             // [q_lora_rank]
  std::optional<LinearWeight> q_b_proj;                 // [heads * qk_head_dim, q_lora_rank]
  std::optional<LinearWeight> q_proj;                   // [heads * qk_head_dim, hidden] when q_lora_rank == 0
  LinearWeight kv_a_proj_with_mqa;                      // [kv_lora_rank + qk_rope_head_dim, hidden]
  std::span<const gpu::bf16> kv_a_layernorm;            // [kv_lora_rank]
  LinearWeight kv_b_proj;                               // [heads * (qk_nope + v), kv_lora_rank]
  LinearWeight o_proj;                                  // [hidden, heads * v_head_dim]
};

struct MoeWeights {
  std::span<const gpu::bf16> gate;                      // [n_routed_experts, hidden]
  std::span<const float> e_score_correction_bias;       // [n_routed_experts]; empty unless noaux_tc
  std::vector<SwiGluWeights> experts;                   // n_routed_experts
  std::optional<SwiGluWeights> shared;                  // inter = n_shared_experts * moe_intermediate_size
};

struct MtpWeights {  // spec §1.8: h' = eh_proj([enorm(emb); hnorm(h)])
  std::span<const gpu::bf16> enorm, hnorm;              // [hidden]
  LinearWeight eh_proj;                                 // [hidden, 2 * hidden], BF16
  std::span<const gpu::bf16> shared_head_norm;          // [hidden]
  std::span<const gpu::bf16> shared_head_head;          // [vocab, hidden]
  std::span<const gpu::bf16> embed_tokens;              // [vocab, hidden]
};

struct LayerWeights {
  std::int64_t index = 0;
  std::span<const gpu::bf16> input_layernorm;           // [hidden]
  std::span<const gpu::bf16> post_attention_layernorm;  // [hidden]
  AttentionWeights attention;
  std::optional<SwiGluWeights> dense_mlp;
  std::optional<MoeWeights> moe;
  std::optional<MtpWeights> mtp;                        // MTP modules only
};

struct ModelWeights {
  std::span<const gpu::bf16> embed_tokens;              // [vocab, hidden]
  std::span<const gpu::bf16> norm;                      // [hidden]
  std::span<const gpu::bf16> lm_head;                   // [vocab, hidden] (embed_tokens when tied)
  std::vector<LayerWeights> layers;                     // main layers, then MTP modules
};

// Checks the layout (throws WeightLayoutError listing every mismatch) and binds the views.
ModelWeights bind_weights(const Checkpoint& checkpoint, const ModelConfig& config);

}  // namespace sy::model
