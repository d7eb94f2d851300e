#include "model/engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <optional>
#include <set>
#include <stdexcept>

#include "gpu/rope.hpp"

namespace sy::model {

// A contiguous run of token rows belonging to one sequence.
struct Engine::Segment {
  SequenceId seq = 0;
  std::int64_t row = 0;    // first token row in the batch
  std::int64_t count = 0;  // tokens
  std::int64_t start = 0;  // position of the first token
  bool naive = false;      // attention form
  LogitRows logits = LogitRows::last;
};

struct Engine::Batch {
  std::int64_t tokens = 0;
  std::vector<std::int32_t> seq_ids;    // [tokens]
  std::vector<std::int32_t> positions;  // [tokens]
  std::vector<Segment> segments;
};

std::span<const float> StepOutput::logits_row(std::size_t input, std::int64_t j) const {
  return std::span<const float>(logits).subspan(static_cast<std::size_t>((logit_begin.at(input) + j) * vocab),
                                                static_cast<std::size_t>(vocab));
}

std::span<const float> StepOutput::hidden_row(std::size_t input, std::int64_t j) const {
  return std::span<const float>(hidden).subspan(static_cast<std::size_t>((token_begin.at(input) + j) * hidden_size),
                                                static_cast<std::size_t>(hidden_size));
}

namespace {

std::optional<gpu::YarnParams> yarn_params(const ModelConfig& c) {
  if (!c.yarn) return std::nullopt;
  return gpu::YarnParams{c.yarn->factor,    c.yarn->original_max_position_embeddings,
                         c.yarn->beta_fast, c.yarn->beta_slow,
                         c.yarn->mscale,    c.yarn->mscale_all_dim};
}

std::int64_t resolve_max_seq_len(const ModelConfig& config, const EngineOptions& o) {
  if (o.max_seq_len < 0)
    throw std::invalid_argument(fmt::format("engine: max_seq_len must be >= 0 (got {})", o.max_seq_len));
  if (o.max_seq_len > config.max_position_embeddings) {
    throw std::invalid_argument(fmt::format("engine: max_seq_len {} exceeds the model's max_position_embeddings {}",
                                            o.max_seq_len, config.max_position_embeddings));
  }
  return o.max_seq_len == 0 ? config.max_position_embeddings : o.max_seq_len;
}

KvCacheOptions cache_options(const ModelConfig& config, const EngineOptions& o) {
  if (o.max_chunk_tokens <= 0) {
    throw std::invalid_argument(fmt::format("engine: max_chunk_tokens must be > 0 (got {})", o.max_chunk_tokens));
  }
  KvCacheOptions c;
  c.num_pages = o.kv_pages;
  c.num_layers = config.num_hidden_layers + (o.mtp ? config.num_nextn_predict_layers : 0);
  c.kv_lora_rank = config.kv_lora_rank;
  c.rope_dim = config.qk_rope_head_dim;
  c.dtype = o.numerics == Numerics::fp8act ? gpu::KvCacheDtype::bf16 : gpu::KvCacheDtype::fp32;
  c.max_seqs = o.max_seqs;
  c.max_seq_len = resolve_max_seq_len(config, o);
  c.arena_provider = o.kv_arena_provider;
  return c;
}

void add_in_place(float* x, const float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace

Engine::Engine(const ModelConfig& config, const ModelWeights& weights, const gpu::Backend& backend,
               EngineOptions options, ExpertExecutor* experts)
    : config_(config),
      weights_(weights),
      backend_(backend),
      options_(options),
      experts_(experts),
      cache_(cache_options(config, options)) {
  options_.max_seq_len = cache_.max_seq_len();
  if (static_cast<std::int64_t>(weights.layers.size()) != config.num_checkpoint_layers()) {
    throw std::invalid_argument("engine: the weights do not match the config's layer count");
  }
  check_fp8act_shapes(weights, options.numerics, "engine");
  if (experts_ == nullptr) {
    owned_experts_ = std::make_unique<LocalExpertExecutor>(weights, backend, options.numerics);
    experts_ = owned_experts_.get();
  }
  const gpu::RopeConfig rope{config.qk_rope_head_dim, config.rope_theta, yarn_params(config)};
  inv_freq_ = gpu::rope_inv_freq(rope);
  cos_sin_scale_ = gpu::rope_cos_sin_scale(rope);
  softmax_scale_ = static_cast<float>(gpu::attention_softmax_scale(config.qk_head_dim(), rope.yarn));
  // The absorbed form folds W_UK into the query and applies W_UV after attention, both from an
  // fp32 copy of kv_b_proj (the demo dequantizes it on every forward; we do it once). These are
  // host-side weight preparations at load time, not per-step kernels.
  kv_b_.resize(static_cast<std::size_t>(cache_.num_layers()));
  for (std::int64_t l = 0; l < cache_.num_layers(); ++l) {
    const LinearWeight& w = weights.layers[static_cast<std::size_t>(l)].attention.kv_b_proj;
    std::vector<float>& dst = kv_b_[static_cast<std::size_t>(l)];
    dst.resize(static_cast<std::size_t>(w.out * w.in));
    for (std::int64_t r = 0; r < w.out; ++r) {
      for (std::int64_t c = 0; c < w.in; ++c) dst[static_cast<std::size_t>(r * w.in + c)] = w.at(r, c);
    }
  }
  seqs_.resize(static_cast<std::size_t>(options.max_seqs));
}

Engine::~Engine() = default;

bool Engine::has_mtp() const {
  return config_.num_nextn_predict_layers > 0 && cache_.num_layers() > config_.num_hidden_layers;
}

Engine::SeqState& Engine::state(SequenceId seq) {
  return const_cast<SeqState&>(static_cast<const Engine&>(*this).state(seq));
}

const Engine::SeqState& Engine::state(SequenceId seq) const {
  if (seq < 0 || static_cast<std::size_t>(seq) >= seqs_.size() || !seqs_[static_cast<std::size_t>(seq)].live) {
    throw std::invalid_argument(fmt::format("engine: sequence {} does not exist", seq));
  }
  return seqs_[static_cast<std::size_t>(seq)];
}

SequenceId Engine::add_sequence(std::int64_t reserve_tokens) {
  if (reserve_tokens < 0 || reserve_tokens > cache_.max_seq_len()) {
    throw std::invalid_argument(
        fmt::format("engine: cannot reserve {} tokens (max_seq_len {})", reserve_tokens, cache_.max_seq_len()));
  }
  const SequenceId seq = cache_.add_sequence();
  try {
    cache_.reserve(seq, reserve_tokens);
  } catch (...) {
    cache_.remove_sequence(seq);
    throw;
  }
  seqs_[static_cast<std::size_t>(seq)] = SeqState{true, 0, 0};
  return seq;
}

void Engine::remove_sequence(SequenceId seq) {
  state(seq).live = false;
  cache_.remove_sequence(seq);
}

std::int64_t Engine::length(SequenceId seq) const { return state(seq).length; }
std::int64_t Engine::mtp_length(SequenceId seq) const { return state(seq).mtp_length; }

void Engine::truncate(SequenceId seq, std::int64_t length) {
  SeqState& s = state(seq);
  if (length < 0 || length > s.length) {
    throw std::invalid_argument(
        fmt::format("engine: cannot truncate sequence {} of length {} to {}", seq, s.length, length));
  }
  s.length = length;
  s.mtp_length = std::min(s.mtp_length, length);
}

void Engine::adopt_sequence(SequenceId seq, std::int64_t length, std::int64_t mtp_length) {
  SeqState& s = state(seq);
  if (s.length != 0 || s.mtp_length != 0) {
    throw std::invalid_argument(fmt::format(
        "engine: sequence {} already holds {} tokens; only an empty sequence can be adopted", seq, s.length));
  }
  if (length < 1 || length > cache_.reserved(seq)) {
    throw std::invalid_argument(fmt::format("engine: cannot adopt {} tokens into sequence {}, whose pages hold {}",
                                            length, seq, cache_.reserved(seq)));
  }
  if (mtp_length < 0 || mtp_length > length || (mtp_length > 0 && !has_mtp())) {
    throw std::invalid_argument(fmt::format("engine: cannot adopt {} MTP positions for {} tokens{}", mtp_length, length,
                                            has_mtp() ? "" : " (this engine keeps no MTP cache)"));
  }
  s.length = length;
  s.mtp_length = mtp_length;
}

void Engine::reserve_for(const std::vector<std::pair<SequenceId, std::int64_t>>& needs) {
  // All or nothing: count the pages the whole step needs before reserving any.
  std::int64_t pages = 0;
  for (const auto& [seq, len] : needs) {
    pages += std::max<std::int64_t>(0, KvCache::pages_for(len) - cache_.reserved(seq) / gpu::kMlaPageSize);
  }
  if (pages > cache_.free_pages()) throw KvPoolExhausted(pages, cache_.free_pages(), cache_.num_pages());
  for (const auto& [seq, len] : needs) cache_.reserve(seq, len);
}

void Engine::embed(std::span<const std::int32_t> tokens, std::span<const gpu::bf16> table, float* x) const {
  // A row gather from the (host) embedding table.
  const std::int64_t hidden = config_.hidden_size;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const gpu::bf16* row = table.data() + static_cast<std::int64_t>(tokens[t]) * hidden;
    float* dst = x + static_cast<std::int64_t>(t) * hidden;
    for (std::int64_t d = 0; d < hidden; ++d) dst[d] = gpu::bf16_to_float(row[d]);
  }
}

StepOutput Engine::step(std::span<const SequenceInput> inputs) {
  const std::int64_t vocab = config_.vocab_size;
  if (inputs.empty()) throw std::invalid_argument("engine step: no inputs");
  Batch batch;
  std::set<SequenceId> seen;
  std::vector<std::pair<SequenceId, std::int64_t>> needs;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const SequenceInput& in = inputs[i];
    const SeqState& s = state(in.seq);
    if (!seen.insert(in.seq).second) {
      throw std::invalid_argument(fmt::format("engine step: sequence {} appears twice", in.seq));
    }
    if (in.tokens.empty()) throw std::invalid_argument(fmt::format("engine step: input {} has no tokens", i));
    for (const std::int32_t t : in.tokens) {
      if (t < 0 || t >= vocab) {
        throw std::invalid_argument(fmt::format("token id {} is outside the vocabulary [0, {})", t, vocab));
      }
    }
    const auto n = static_cast<std::int64_t>(in.tokens.size());
    if (s.length + n > cache_.max_seq_len()) {
      throw std::invalid_argument(fmt::format("sequence {}: {} + {} tokens exceed the context length {}", in.seq,
                                              s.length, n, cache_.max_seq_len()));
    }
    const bool naive = options_.attention == AttentionForm::naive ||
                       (options_.attention == AttentionForm::automatic && in.kind == InputKind::prompt);
    batch.segments.push_back({in.seq, batch.tokens, n, s.length, naive, in.logits});
    batch.tokens += n;
    needs.emplace_back(in.seq, s.length + n);
  }
  if (batch.tokens > options_.max_chunk_tokens) {
    throw std::invalid_argument(
        fmt::format("engine step: {} tokens exceed max_chunk_tokens {}", batch.tokens, options_.max_chunk_tokens));
  }
  reserve_for(needs);

  const std::int64_t hidden = config_.hidden_size;
  std::vector<std::int32_t> tokens;
  tokens.reserve(static_cast<std::size_t>(batch.tokens));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Segment& seg = batch.segments[i];
    for (std::int64_t j = 0; j < seg.count; ++j) {
      tokens.push_back(inputs[i].tokens[static_cast<std::size_t>(j)]);
      batch.seq_ids.push_back(seg.seq);
      batch.positions.push_back(static_cast<std::int32_t>(seg.start + j));
    }
  }
  std::vector<float> x(static_cast<std::size_t>(batch.tokens * hidden));
  embed(tokens, weights_.embed_tokens, x.data());
  if (options_.two_micro_batches && batch.segments.size() >= 2) {
    layers_overlapped(batch, x.data());
  } else {
    for (std::int64_t l = 0; l < config_.num_hidden_layers; ++l) decoder_layer(l, batch, x.data());
  }

  StepOutput out;
  head(batch, x.data(), weights_.norm, weights_.lm_head, out);
  for (const Segment& seg : batch.segments) state(seg.seq).length += seg.count;
  return out;
}

StepOutput Engine::mtp_step(std::span<const MtpInput> inputs) {
  if (!has_mtp()) {
    throw std::invalid_argument(config_.num_nextn_predict_layers == 0
                                    ? "engine: this model has no MTP module"
                                    : "engine: built without the MTP cache (mtp off)");
  }
  if (inputs.empty()) throw std::invalid_argument("engine mtp_step: no inputs");
  const std::int64_t vocab = config_.vocab_size;
  const std::int64_t hidden = config_.hidden_size;
  const std::int64_t layer = config_.num_hidden_layers;
  const MtpWeights& mtp = *weights_.layers[static_cast<std::size_t>(layer)].mtp;
  Batch batch;
  std::set<SequenceId> seen;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const MtpInput& in = inputs[i];
    const SeqState& s = state(in.seq);
    if (!seen.insert(in.seq).second) {
      throw std::invalid_argument(fmt::format("engine mtp_step: sequence {} appears twice", in.seq));
    }
    const auto n = static_cast<std::int64_t>(in.tokens.size());
    if (n == 0 || in.hidden == nullptr) {
      throw std::invalid_argument(fmt::format("engine mtp_step: input {} has no tokens or no hidden states", i));
    }
    for (const std::int32_t t : in.tokens) {
      if (t < 0 || t >= vocab) {
        throw std::invalid_argument(fmt::format("token id {} is outside the vocabulary [0, {})", t, vocab));
      }
    }
    if (s.mtp_length + n > s.length) {
      throw std::invalid_argument(fmt::format(
          "engine mtp_step: sequence {} has {} main-model positions; MTP positions [{}, {}) are not all there", in.seq,
          s.length, s.mtp_length, s.mtp_length + n));
    }
    const bool naive = options_.attention == AttentionForm::naive ||
                       (options_.attention == AttentionForm::automatic && in.kind == InputKind::prompt);
    batch.segments.push_back({in.seq, batch.tokens, n, s.mtp_length, naive, in.logits});
    batch.tokens += n;
  }
  // Pages: MTP positions are main positions already reserved (one page id spans all layers).
  std::vector<std::int32_t> tokens;
  std::vector<float> h(static_cast<std::size_t>(batch.tokens * hidden));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Segment& seg = batch.segments[i];
    std::copy_n(inputs[i].hidden, seg.count * hidden, h.data() + seg.row * hidden);
    for (std::int64_t j = 0; j < seg.count; ++j) {
      tokens.push_back(inputs[i].tokens[static_cast<std::size_t>(j)]);
      batch.seq_ids.push_back(seg.seq);
      batch.positions.push_back(static_cast<std::int32_t>(seg.start + j));
    }
  }
  // cat[enorm(emb(x_{i+1})), hnorm(h_i)] → eh_proj.
  const std::int64_t t_count = batch.tokens;
  std::vector<float> cat(static_cast<std::size_t>(t_count * 2 * hidden));
  std::vector<float> e(static_cast<std::size_t>(t_count * hidden));
  embed(tokens, mtp.embed_tokens, e.data());
  const auto eps = static_cast<float>(config_.rms_norm_eps);
  backend_.rms_norm({.x = e.data(),
                     .weight = mtp.enorm.data(),
                     .y = cat.data(),
                     .rows = t_count,
                     .dim = hidden,
                     .x_stride = hidden,
                     .y_stride = 2 * hidden,
                     .eps = eps});
  backend_.rms_norm({.x = h.data(),
                     .weight = mtp.hnorm.data(),
                     .y = cat.data() + hidden,
                     .rows = t_count,
                     .dim = hidden,
                     .x_stride = hidden,
                     .y_stride = 2 * hidden,
                     .eps = eps});
  std::vector<float> x(static_cast<std::size_t>(t_count * hidden));
  linear(backend_, options_.numerics, mtp.eh_proj, cat.data(), t_count, 2 * hidden, x.data(), hidden);
  decoder_layer(layer, batch, x.data());

  StepOutput out;
  head(batch, x.data(), mtp.shared_head_norm, mtp.shared_head_head, out);
  for (const Segment& seg : batch.segments) state(seg.seq).mtp_length += seg.count;
  return out;
}

void Engine::head(const Batch& batch, const float* x, std::span<const gpu::bf16> norm,
                  std::span<const gpu::bf16> head_weight, StepOutput& out) {
  const std::int64_t hidden = config_.hidden_size;
  const std::int64_t vocab = config_.vocab_size;
  out.vocab = vocab;
  out.hidden_size = hidden;
  out.hidden.assign(x, x + batch.tokens * hidden);
  std::vector<std::int64_t> rows;
  for (const Segment& seg : batch.segments) {
    out.token_begin.push_back(seg.row);
    out.logit_begin.push_back(static_cast<std::int64_t>(rows.size()));
    if (seg.logits == LogitRows::all) {
      for (std::int64_t j = 0; j < seg.count; ++j) rows.push_back(seg.row + j);
    } else if (seg.logits == LogitRows::last) {
      rows.push_back(seg.row + seg.count - 1);
    }
  }
  const auto r = static_cast<std::int64_t>(rows.size());
  if (r == 0) return;
  std::vector<float> normed(static_cast<std::size_t>(r * hidden));
  for (std::int64_t i = 0; i < r; ++i)
    std::copy_n(x + rows[static_cast<std::size_t>(i)] * hidden, hidden, normed.data() + i * hidden);
  backend_.rms_norm({.x = normed.data(),
                     .weight = norm.data(),
                     .y = normed.data(),
                     .rows = r,
                     .dim = hidden,
                     .x_stride = hidden,
                     .y_stride = hidden,
                     .eps = static_cast<float>(config_.rms_norm_eps)});
  out.logits.resize(static_cast<std::size_t>(r * vocab));
  backend_.bf16_gemm({.a = normed.data(),
                      .b = head_weight.data(),
                      .c = out.logits.data(),
                      .m = r,
                      .n = vocab,
                      .k = hidden,
                      .lda = hidden,
                      .ldb = hidden,
                      .ldc = vocab});
}

struct Engine::LayerInFlight {
  std::int64_t layer = -1;
  std::vector<float> h;  // the FFN's input (post-attention norm)
  bool moe = false;
  MoeInFlight experts;
};

void Engine::decoder_layer(std::int64_t layer, const Batch& batch, float* x) {
  LayerInFlight flight;
  layer_start(layer, batch, x, flight);
  layer_finish(batch, x, flight);
}

void Engine::layer_start(std::int64_t layer, const Batch& batch, float* x, LayerInFlight& flight) {
  const LayerWeights& w = weights_.layers[static_cast<std::size_t>(layer)];
  const std::int64_t hidden = config_.hidden_size;
  const std::int64_t n = batch.tokens * hidden;
  const auto eps = static_cast<float>(config_.rms_norm_eps);
  flight.layer = layer;
  std::vector<float>& h = flight.h;
  h.resize(static_cast<std::size_t>(n));
  std::vector<float> y(static_cast<std::size_t>(n));
  backend_.rms_norm({.x = x,
                     .weight = w.input_layernorm.data(),
                     .y = h.data(),
                     .rows = batch.tokens,
                     .dim = hidden,
                     .x_stride = hidden,
                     .y_stride = hidden,
                     .eps = eps});
  attention(layer, batch, h.data(), y.data());
  add_in_place(x, y.data(), n);
  backend_.rms_norm({.x = x,
                     .weight = w.post_attention_layernorm.data(),
                     .y = h.data(),
                     .rows = batch.tokens,
                     .dim = hidden,
                     .x_stride = hidden,
                     .y_stride = hidden,
                     .eps = eps});
  flight.moe = static_cast<bool>(w.moe);
  if (flight.moe) {
    moe_start(config_, *w.moe, layer, h.data(), batch.tokens, backend_, options_.numerics, *experts_, flight.experts);
  } else {
    swiglu_ffn(backend_, options_.numerics, *w.dense_mlp, h.data(), batch.tokens, hidden, y.data());
    add_in_place(x, y.data(), n);
  }
}

void Engine::layer_finish(const Batch& batch, float* x, LayerInFlight& flight) {
  if (!flight.moe) return;
  const std::int64_t n = batch.tokens * config_.hidden_size;
  std::vector<float> y(static_cast<std::size_t>(n));
  moe_finish(config_, flight.experts, y.data(), *experts_);
  add_in_place(x, y.data(), n);
  flight.moe = false;
}

void Engine::layers_overlapped(const Batch& batch, float* x) {
  // Halves by whole sequences, as even in tokens as the segments allow.
  std::size_t split = 1;
  std::int64_t best = batch.tokens;
  for (std::size_t i = 1; i < batch.segments.size(); ++i) {
    const std::int64_t left = batch.segments[i].row;
    const std::int64_t diff = left > batch.tokens - left ? 2 * left - batch.tokens : batch.tokens - 2 * left;
    if (diff < best) {
      best = diff;
      split = i;
    }
  }
  std::array<Batch, 2> half;
  for (std::size_t i = 0; i < batch.segments.size(); ++i) {
    Batch& b = half[i < split ? 0 : 1];
    Segment seg = batch.segments[i];
    const std::int64_t row = seg.row;
    seg.row = b.tokens;
    b.segments.push_back(seg);
    for (std::int64_t j = 0; j < seg.count; ++j) {
      b.seq_ids.push_back(batch.seq_ids[static_cast<std::size_t>(row + j)]);
      b.positions.push_back(batch.positions[static_cast<std::size_t>(row + j)]);
    }
    b.tokens += seg.count;
  }
  float* xa = x;
  float* xb = x + half[0].tokens * config_.hidden_size;
  LayerInFlight a, b;
  // A(l) starts once A(l-1) is done; B(l-1) finishes (its experts were in flight during A's
  // attention) before B(l) starts; A(l)'s experts fly during B's attention, and B(l)'s during
  // A(l+1)'s.
  try {
    for (std::int64_t l = 0; l < config_.num_hidden_layers; ++l) {
      layer_start(l, half[0], xa, a);
      if (l > 0) layer_finish(half[1], xb, b);
      layer_start(l, half[1], xb, b);
      layer_finish(half[0], xa, a);
    }
    layer_finish(half[1], xb, b);
  } catch (...) {
    // The step fails; a half whose experts are still under way is given up, not waited for.
    for (LayerInFlight* f : {&a, &b}) {
      if (f->moe) experts_->cancel(f->experts.ticket);
    }
    throw;
  }
}

void Engine::attention(std::int64_t layer, const Batch& batch, const float* h, float* out) {
  const AttentionWeights& w = weights_.layers[static_cast<std::size_t>(layer)].attention;
  const std::int64_t T = batch.tokens;
  const std::int64_t hidden = config_.hidden_size;
  const std::int64_t heads = config_.num_attention_heads;
  const std::int64_t nope = config_.qk_nope_head_dim;
  const std::int64_t rope = config_.qk_rope_head_dim;
  const std::int64_t qk = nope + rope;
  const std::int64_t v_dim = config_.v_head_dim;
  const std::int64_t lora = config_.kv_lora_rank;
  const std::int64_t entry = lora + rope;
  const Numerics num = options_.numerics;
  const auto eps = static_cast<float>(config_.rms_norm_eps);

  // Query: [T, heads, nope ‖ rope].
  std::vector<float> q(static_cast<std::size_t>(T * heads * qk));
  if (w.q_a_proj) {
    const std::int64_t r = config_.q_lora_rank;
    std::vector<float> c_q(static_cast<std::size_t>(T * r));
    linear(backend_, num, *w.q_a_proj, h, T, hidden, c_q.data(), r);
    backend_.rms_norm({.x = c_q.data(),
                       .weight = w.q_a_layernorm.data(),
                       .y = c_q.data(),
                       .rows = T,
                       .dim = r,
                       .x_stride = r,
                       .y_stride = r,
                       .eps = eps});
    linear(backend_, num, *w.q_b_proj, c_q.data(), T, r, q.data(), heads * qk);
  } else {
    linear(backend_, num, *w.q_proj, h, T, hidden, q.data(), heads * qk);
  }
  // Latent KV: [T, kv_lora ‖ k_pe]; kv_norm on the latent, RoPE on k_pe and q_pe.
  std::vector<float> kv(static_cast<std::size_t>(T * entry));
  linear(backend_, num, w.kv_a_proj_with_mqa, h, T, hidden, kv.data(), entry);
  backend_.rms_norm({.x = kv.data(),
                     .weight = w.kv_a_layernorm.data(),
                     .y = kv.data(),
                     .rows = T,
                     .dim = lora,
                     .x_stride = entry,
                     .y_stride = entry,
                     .eps = eps});
  backend_.apply_rope({.x = q.data() + nope,
                       .positions = batch.positions.data(),
                       .inv_freq = inv_freq_.data(),
                       .rows = T,
                       .heads = heads,
                       .rope_dim = rope,
                       .row_stride = heads * qk,
                       .head_stride = qk,
                       .cos_sin_scale = cos_sin_scale_});
  backend_.apply_rope({.x = kv.data() + lora,
                       .positions = batch.positions.data(),
                       .inv_freq = inv_freq_.data(),
                       .rows = T,
                       .heads = 1,
                       .rope_dim = rope,
                       .row_stride = entry,
                       .head_stride = rope,
                       .cos_sin_scale = cos_sin_scale_});
  const gpu::MlaKvCache cache = cache_.layer(layer);
  const gpu::MlaBlockTable table = cache_.table();
  backend_.mla_cache_write({.cache = cache,
                            .table = table,
                            .latent = kv.data(),
                            .k_pe = kv.data() + lora,
                            .seq_ids = batch.seq_ids.data(),
                            .positions = batch.positions.data(),
                            .tokens = T,
                            .latent_stride = entry,
                            .k_pe_stride = entry});

  // Attention output per head: [T, heads, v].
  std::vector<float> o(static_cast<std::size_t>(T * heads * v_dim));
  const gpu::MlaUpWeights up{.kv_b = kv_b_[static_cast<std::size_t>(layer)].data(),
                             .heads = heads,
                             .nope_dim = nope,
                             .v_dim = v_dim,
                             .kv_lora_rank = lora};
  // Rows of each form, gathered so each form runs as one kernel call over contiguous rows.
  std::vector<std::int64_t> abs_rows;
  std::vector<const Segment*> naive_segs;
  for (const Segment& seg : batch.segments) {
    if (seg.naive) {
      naive_segs.push_back(&seg);
    } else {
      for (std::int64_t j = 0; j < seg.count; ++j) abs_rows.push_back(seg.row + j);
    }
  }
  const std::int64_t q_row = heads * qk;
  if (!abs_rows.empty()) {
    const auto ta = static_cast<std::int64_t>(abs_rows.size());
    std::vector<float> qa(static_cast<std::size_t>(ta * q_row));
    std::vector<std::int32_t> seq_ids(static_cast<std::size_t>(ta));
    std::vector<std::int32_t> positions(static_cast<std::size_t>(ta));
    for (std::int64_t i = 0; i < ta; ++i) {
      const std::int64_t r = abs_rows[static_cast<std::size_t>(i)];
      std::copy_n(q.data() + r * q_row, q_row, qa.data() + i * q_row);
      seq_ids[static_cast<std::size_t>(i)] = batch.seq_ids[static_cast<std::size_t>(r)];
      positions[static_cast<std::size_t>(i)] = batch.positions[static_cast<std::size_t>(r)];
    }
    std::vector<float> q_latent(static_cast<std::size_t>(ta * heads * lora));
    std::vector<float> o_latent(static_cast<std::size_t>(ta * heads * lora));
    backend_.mla_absorb_q(
        {.w = up, .q_nope = {qa.data(), q_row, qk}, .q_latent = {q_latent.data(), heads * lora, lora}, .tokens = ta});
    backend_.mla_decode({.cache = cache,
                         .table = table,
                         .q_latent = {q_latent.data(), heads * lora, lora},
                         .q_pe = {qa.data() + nope, q_row, qk},
                         .out_latent = {o_latent.data(), heads * lora, lora},
                         .lse = nullptr,
                         .seq_ids = seq_ids.data(),
                         .positions = positions.data(),
                         .queries = ta,
                         .heads = heads,
                         .softmax_scale = softmax_scale_});
    std::vector<float> oa(static_cast<std::size_t>(ta * heads * v_dim));
    backend_.mla_output_up({.w = up,
                            .out_latent = {o_latent.data(), heads * lora, lora},
                            .out = {oa.data(), heads * v_dim, v_dim},
                            .tokens = ta});
    for (std::int64_t i = 0; i < ta; ++i) {
      std::copy_n(oa.data() + i * heads * v_dim, heads * v_dim,
                  o.data() + abs_rows[static_cast<std::size_t>(i)] * heads * v_dim);
    }
  }
  if (!naive_segs.empty()) {
    // Keys and values of every visible position come from the cache (earlier chunks' and this
    // chunk's entries alike, so both forms see the same cached, dtype-rounded latents), then are
    // up-projected per head by kv_b_proj as a linear layer.
    std::vector<std::int32_t> cu_q{0};
    std::vector<std::int32_t> cu_kv{0};
    for (const Segment* s : naive_segs) {
      cu_q.push_back(cu_q.back() + static_cast<std::int32_t>(s->count));
      cu_kv.push_back(cu_kv.back() + static_cast<std::int32_t>(s->start + s->count));
    }
    const std::int64_t tq = cu_q.back();
    const std::int64_t tkv = cu_kv.back();
    std::vector<float> latent(static_cast<std::size_t>(tkv * entry));
    std::vector<float> qn(static_cast<std::size_t>(tq * q_row));
    for (std::size_t i = 0; i < naive_segs.size(); ++i) {
      const Segment& s = *naive_segs[i];
      cache_.read(layer, s.seq, 0, s.start + s.count, latent.data() + cu_kv[i] * entry);
      std::copy_n(q.data() + s.row * q_row, s.count * q_row, qn.data() + cu_q[i] * q_row);
    }
    const std::int64_t kv_row = heads * (nope + v_dim);
    std::vector<float> kv_up(static_cast<std::size_t>(tkv * kv_row));
    linear(backend_, num, w.kv_b_proj, latent.data(), tkv, entry, kv_up.data(), kv_row);
    std::vector<float> on(static_cast<std::size_t>(tq * heads * v_dim));
    backend_.mla_prefill({.q = {qn.data(), q_row, qk},
                          .k_nope = {kv_up.data(), kv_row, nope + v_dim},
                          .k_pe = latent.data() + lora,
                          .k_pe_stride = entry,
                          .v = {kv_up.data() + nope, kv_row, nope + v_dim},
                          .out = {on.data(), heads * v_dim, v_dim},
                          .cu_seqlens_q = cu_q.data(),
                          .cu_seqlens_kv = cu_kv.data(),
                          .num_seqs = static_cast<std::int64_t>(naive_segs.size()),
                          .heads = heads,
                          .nope_dim = nope,
                          .rope_dim = rope,
                          .v_dim = v_dim,
                          .softmax_scale = softmax_scale_});
    for (std::size_t i = 0; i < naive_segs.size(); ++i) {
      const Segment& s = *naive_segs[i];
      std::copy_n(on.data() + cu_q[i] * heads * v_dim, s.count * heads * v_dim, o.data() + s.row * heads * v_dim);
    }
  }
  linear(backend_, num, w.o_proj, o.data(), T, heads * v_dim, out, hidden);
}

std::int32_t choose_token(const gpu::Backend& backend, std::span<const float> logits, const gpu::SamplerConfig& config,
                          std::uint64_t counter) {
  std::int32_t token = 0;
  const auto vocab = static_cast<std::int64_t>(logits.size());
  if (config.temperature == 0.0f) {
    backend.argmax({.logits = logits.data(), .tokens = &token, .rows = 1, .vocab = vocab, .logits_stride = vocab});
  } else {
    backend.sample({.logits = logits.data(),
                    .configs = &config,
                    .counters = &counter,
                    .tokens = &token,
                    .rows = 1,
                    .vocab = vocab,
                    .logits_stride = vocab});
  }
  return token;
}

}  // namespace sy::model
