// The single-process forward pass of a DeepSeek-V3-architecture model (spec §1.2-1.8): batched
// steps over a paged latent KV cache, prefill chunks and decode tokens mixed in one step, MLA in
// its naive (prefill) and absorbed (decode) forms, dense and MoE FFNs (experts behind the
// ExpertExecutor seam), and the MTP module as a draft model. Kernels run only through the given
// gpu::Backend. Owns its KV cache; borrows config, weights, backend and executor, which must
// outlive it. Not thread-safe: one caller drives steps (the generator loop or a worker actor).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "gpu/backend.hpp"
#include "model/config.hpp"
#include "model/kv_cache.hpp"
#include "model/linear.hpp"
#include "model/moe.hpp"
#include "model/weights.hpp"

namespace sy::model {

// Which MLA form attention uses. automatic: prompt chunks take the naive form (mla_prefill: per
// head k_nope and v up-projected from the latent), decode tokens (and MTP verification pairs)
// the absorbed form (mla_decode over the latent cache). The forced forms exist so tests can
// compare the two on the same inputs.
enum class AttentionForm { automatic, absorbed, naive };

struct EngineOptions {
  Numerics numerics = Numerics::fp8act;
  // KV pool size in 64-token pages; every layer (main and MTP) has this many. fp8act caches
  // BF16, dequant fp32 (kv_lora_rank + qk_rope_head_dim values per token per layer).
  std::int64_t kv_pages = 256;
  std::int64_t max_seqs = 16;           // sequences alive at once (block-table rows)
  std::int64_t max_seq_len = 0;         // tokens per sequence; 0 = max_position_embeddings
  std::int64_t max_chunk_tokens = 512;  // tokens per step, all sequences together
  AttentionForm attention = AttentionForm::automatic;
  bool mtp = true;  // keep the MTP layer's cache (when the model has MTP) so mtp_step works
  // Two-micro-batch overlap (DeepSeek's decode layout, SGLang's two-batch overlap): a step with
  // two or more sequences is split in two halves, and each MoE layer's routed experts of one
  // half run (on the expert hosts) while the other half computes attention. Output is the same
  // bit for bit (the kernels are batch-invariant); it pays only with a remote ExpertExecutor.
  bool two_micro_batches = false;
  // Where the KV arena comes from (KvCacheOptions::arena_provider); null: the cache allocates it.
  std::function<std::byte*(std::size_t bytes)> kv_arena_provider;
};

enum class InputKind {
  prompt,  // a chunk of the prompt (naive attention under automatic)
  decode,  // generated tokens: one decode token, or [token, draft] for MTP verification
};

enum class LogitRows { none, last, all };

// One sequence's part of a step: `tokens` occupy positions [length, length + n) of the sequence.
struct SequenceInput {
  SequenceId seq = 0;
  std::span<const std::int32_t> tokens;  // REQUIRES: non-empty, ids in [0, vocab_size)
  InputKind kind = InputKind::prompt;
  LogitRows logits = LogitRows::last;
};

// One sequence's part of an MTP step (spec §1.8). MTP position i combines the main model's last
// hidden state h_i (BEFORE the final norm, as vLLM and SGLang pass it) with the embedding of the
// token at i+1: x = eh_proj(cat[enorm(emb(x_{i+1})), hnorm(h_i)]), embedding first, then the
// MTP decoder layer with its own KV pages (entry i holds this input's latent), shared_head.norm
// and shared_head.head; its argmax drafts token i+2. Positions run [mtp_length, mtp_length + n)
// and must already be in the main cache (< length). Depth 1 (V3): only the first MTP module is
// used. Unlike vLLM we do not zero the embedding at position 0; position 0 is ordinary here.
struct MtpInput {
  SequenceId seq = 0;
  std::span<const std::int32_t> tokens;  // x_{i+1} for each position i
  const float* hidden = nullptr;         // [n, hidden_size] contiguous: h_i from StepOutput::hidden
  InputKind kind = InputKind::decode;
  LogitRows logits = LogitRows::last;
};

struct StepOutput {
  std::int64_t vocab = 0;
  std::int64_t hidden_size = 0;
  std::vector<float> logits;              // [logit rows, vocab]
  std::vector<std::int64_t> logit_begin;  // per input: its first logit row (rows: 0, 1 or n)
  std::vector<float> hidden;              // [tokens, hidden_size]: last hidden state before the final norm
  std::vector<std::int64_t> token_begin;  // per input: its first token row in `hidden`

  // Logit row j of input i (j counts that input's logit rows).
  std::span<const float> logits_row(std::size_t input, std::int64_t j = 0) const;
  std::span<const float> hidden_row(std::size_t input, std::int64_t j) const;
};

class Engine {
 public:
  // Precomputes what no step should recompute: RoPE inverse frequencies and the cos/sin scale,
  // the softmax scale (YaRN whenever configured), and each layer's dequantized kv_b_proj (fp32)
  // for the absorbed form (TODO(perf): 64 MiB per layer at V3 size; a BF16 copy would halve
  // it). Throws std::invalid_argument on options the model cannot run with (e.g. fp8act with a
  // non-multiple-of-128 FP8 input dim). experts == nullptr: a local executor.
  // Embedding rows, residual adds and the naive form's reads of earlier chunks' latents
  // (KvCache::read) are host loops, so the engine needs a host-memory backend (ref, cpu) until
  // the Backend grows gather/add kernels (TODO(cuda)).
  Engine(const ModelConfig& config, const ModelWeights& weights, const gpu::Backend& backend, EngineOptions options,
         ExpertExecutor* experts = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A new, empty sequence with pages reserved for reserve_tokens tokens. Throws KvPoolExhausted
  // (or runtime_error when every sequence slot is taken): retryable, nothing was kept.
  SequenceId add_sequence(std::int64_t reserve_tokens = 0);
  void remove_sequence(SequenceId seq);
  std::int64_t length(SequenceId seq) const;      // tokens in the main cache
  std::int64_t mtp_length(SequenceId seq) const;  // positions in the MTP layer's cache
  // Rolls the sequence back to `length` tokens (MTP rejection); the dropped positions' cache
  // entries are overwritten by later steps. Pages stay reserved.
  void truncate(SequenceId seq, std::int64_t length);
  // Takes over a sequence whose cache entries were written from outside (a KV hand-off: another
  // engine's prefill, put into this cache's pages by RMA or copied; model/kv_transfer.hpp): main
  // layers hold positions [0, length), the MTP layer [0, mtp_length). Steps continue at those
  // positions. REQUIRES: seq is live and empty (length 0), its reservation holds `length` tokens,
  // 0 <= mtp_length <= length, and mtp_length == 0 unless has_mtp() (std::invalid_argument).
  void adopt_sequence(SequenceId seq, std::int64_t length, std::int64_t mtp_length);

  // Runs the main model on a batch. Each sequence at most once; all tokens together at most
  // max_chunk_tokens. Validates everything (std::invalid_argument) and reserves pages
  // (KvPoolExhausted) before computing, so a refused step changes nothing.
  StepOutput step(std::span<const SequenceInput> inputs);
  // Runs the MTP module (layer num_hidden_layers) on a batch; logits come from shared_head.
  StepOutput mtp_step(std::span<const MtpInput> inputs);

  bool has_mtp() const;
  const ModelConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }
  const gpu::Backend& backend() const { return backend_; }
  const KvCache& kv_cache() const { return cache_; }
  // The KV arena (every layer's pool): for registering with a transport and for a hand-off's
  // writes into pages reserved for a sequence that will be adopted. Nothing else may write it.
  std::span<std::byte> kv_arena() { return {cache_.arena(), static_cast<std::size_t>(cache_.arena_bytes())}; }
  float softmax_scale() const { return softmax_scale_; }

 private:
  struct Segment;
  struct Batch;
  struct SeqState {
    bool live = false;
    std::int64_t length = 0;
    std::int64_t mtp_length = 0;
  };

  SeqState& state(SequenceId seq);
  const SeqState& state(SequenceId seq) const;
  void reserve_for(const std::vector<std::pair<SequenceId, std::int64_t>>& needs);
  void decoder_layer(std::int64_t layer, const Batch& batch, float* x);
  // decoder_layer in two halves: attention and the start of the FFN (the MoE's routed experts
  // under way), then the rest of the FFN. `flight` carries the layer's buffers between them.
  struct LayerInFlight;
  void layer_start(std::int64_t layer, const Batch& batch, float* x, LayerInFlight& flight);
  void layer_finish(const Batch& batch, float* x, LayerInFlight& flight);
  // The step's layers over two halves of the batch, interleaved (two_micro_batches).
  void layers_overlapped(const Batch& batch, float* x);
  void attention(std::int64_t layer, const Batch& batch, const float* h, float* out);
  void embed(std::span<const std::int32_t> tokens, std::span<const gpu::bf16> table, float* x) const;
  void head(const Batch& batch, const float* x, std::span<const gpu::bf16> norm, std::span<const gpu::bf16> head,
            StepOutput& out);

  const ModelConfig& config_;
  const ModelWeights& weights_;
  const gpu::Backend& backend_;
  EngineOptions options_;
  std::unique_ptr<ExpertExecutor> owned_experts_;
  ExpertExecutor* experts_;
  KvCache cache_;
  std::vector<float> inv_freq_;
  float cos_sin_scale_ = 1.0f;
  float softmax_scale_ = 0.0f;
  std::vector<std::vector<float>> kv_b_;  // per layer: kv_b_proj dequantized, [heads·(nope+v), kv_lora]
  std::vector<SeqState> seqs_;            // indexed by SequenceId (= block-table row)
};

// Chooses one token per logits row: argmax when the config's temperature is 0, else the backend's
// seeded sampler with draw counter `counter` (tokens generated so far).
std::int32_t choose_token(const gpu::Backend& backend, std::span<const float> logits, const gpu::SamplerConfig& config,
                          std::uint64_t counter);

}  // namespace sy::model
