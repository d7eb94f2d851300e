// `switchyard generate`: one prompt through the single-process engine, text streamed to stdout
// as tokens arrive, a stats line on stderr. The quickest end-to-end check of a model folder and
// a backend; the cluster's serve path drives the same Engine.
#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apps/switchyard/backends.hpp"
#include "apps/token_ids.hpp"
#include "apps/switchyard/commands.hpp"
#include "model/chat_format.hpp"
#include "model/engine.hpp"
#include "model/generator.hpp"
#include "model/safetensors.hpp"
#include "model/tokenizer.hpp"
#include "model/weights.hpp"

namespace sy::apps {
namespace {

struct GenerateArgs {
  std::string model_dir;
  std::string prompt;
  std::string ids;
  bool chat = false;
  std::int64_t max_tokens = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::int64_t top_k = 0;
  std::uint64_t seed = 0;
  bool mtp = false;
  std::string numerics = "fp8act";
  std::string backend = backend_names().back();  // the fastest linked in
  std::string dump_logits;
  std::int64_t max_seq_len = 0;
  std::int64_t chunk = 512;
};

int run_generate(const GenerateArgs& a) {
  // Cheap checks first, so bad flags fail before the model loads.
  const gpu::Backend& backend = find_backend(a.backend);
  const model::Numerics numerics = model::parse_numerics(a.numerics);
  const gpu::SamplerConfig sampler{.temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p, .seed = a.seed};
  gpu::validate(sampler);
  if (a.max_tokens < 1) throw std::invalid_argument(fmt::format("--max-tokens must be >= 1 (got {})", a.max_tokens));
  if (a.prompt.empty() == a.ids.empty()) throw std::invalid_argument("give exactly one of --prompt and --ids");
  if (a.chat && a.prompt.empty()) throw std::invalid_argument("--chat formats a --prompt text (not --ids)");

  const model::ModelConfig config = model::ModelConfig::from_file(std::filesystem::path(a.model_dir) / "config.json");
  const model::Tokenizer tokenizer = model::Tokenizer::load(a.model_dir);
  std::vector<std::int32_t> prompt;
  if (!a.ids.empty()) {
    prompt = parse_token_ids(a.ids);
    for (const std::int32_t id : prompt) {
      if (id >= config.vocab_size) {
        throw std::invalid_argument(
            fmt::format("--ids: token id {} is outside the vocabulary [0, {})", id, config.vocab_size));
      }
    }
  } else if (a.chat) {
    const model::ChatMessage message{"user", a.prompt};
    const std::string text =
        model::format_chat(std::span(&message, 1), /*add_generation_prompt=*/true, tokenizer.bos_token());
    prompt = tokenizer.encode(text, /*add_bos=*/false);  // the chat format starts with BOS itself
  } else {
    prompt = tokenizer.encode(a.prompt, tokenizer.add_bos_by_default());
  }
  const std::int64_t context = a.max_seq_len > 0 ? a.max_seq_len : config.max_position_embeddings;
  const auto prompt_len = static_cast<std::int64_t>(prompt.size());
  if (prompt_len + a.max_tokens > context) {
    throw std::invalid_argument(fmt::format("prompt ({} tokens) + --max-tokens ({}) exceeds the context length {}",
                                            prompt_len, a.max_tokens, context));
  }

  const model::Checkpoint checkpoint = model::Checkpoint::open(a.model_dir);
  const model::ModelWeights weights = model::bind_weights(checkpoint, config);
  model::EngineOptions options;
  options.numerics = numerics;
  options.max_seqs = 1;
  options.max_seq_len = context;
  options.kv_pages = model::KvCache::pages_for(prompt_len + a.max_tokens);
  options.max_chunk_tokens = a.chunk;
  options.mtp = a.mtp;
  model::Engine engine(config, weights, backend, options);

  model::GenerationRequest request;
  request.prompt = prompt;
  request.max_tokens = a.max_tokens;
  request.sampler = sampler;
  model::GenerationOptions gen;
  gen.mtp = a.mtp;
  gen.keep_logits = !a.dump_logits.empty();
  if (a.mtp && a.temperature > 0.0f) {
    std::cerr << "switchyard generate: --mtp applies to greedy decoding only; sampling one token per step\n";
  }
  model::StreamDecoder decoder(tokenizer, /*skip_special_tokens=*/true);
  const auto results = model::generate(engine, std::span(&request, 1), gen, [&](std::size_t, std::int32_t token) {
    std::cout << decoder.push_model_token(token) << std::flush;
  });
  std::cout << decoder.flush() << "\n" << std::flush;
  const model::GenerationResult& r = results.front();

  if (!a.dump_logits.empty()) {
    std::ofstream out(a.dump_logits, std::ios::binary);
    out.write(reinterpret_cast<const char*>(r.logits.data()),
              static_cast<std::streamsize>(r.logits.size() * sizeof(float)));
    if (!out) throw std::runtime_error(fmt::format("cannot write --dump-logits file {}", a.dump_logits));
  }
  const auto generated = static_cast<std::int64_t>(r.tokens.size());
  const double prefill_rate = r.prefill_seconds > 0 ? static_cast<double>(prompt_len) / r.prefill_seconds : 0.0;
  const double decode_rate =
      generated > 1 && r.decode_seconds > 0 ? static_cast<double>(generated - 1) / r.decode_seconds : 0.0;
  std::string stats = fmt::format("prompt tokens {}, generated {}{}, prefill {:.1f} tok/s, decode {:.1f} tok/s",
                                  prompt_len, generated, r.stopped_at_eos ? " (eos)" : "", prefill_rate, decode_rate);
  if (gen.mtp && a.temperature == 0.0f) {
    stats += fmt::format(
        ", MTP acceptance {}/{} ({:.1f}%)", r.mtp_accepted, r.mtp_drafts,
        r.mtp_drafts > 0 ? 100.0 * static_cast<double>(r.mtp_accepted) / static_cast<double>(r.mtp_drafts) : 0.0);
  }
  std::cerr << stats << fmt::format(" [{} backend, {}]\n", backend.name, model::numerics_name(numerics));
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, CommandTable& commands) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt with the single-process engine");
  cmd->add_option("--model", args->model_dir, "Hugging Face DeepSeek-V3 model folder")->required();
  cmd->add_option("--prompt", args->prompt, "Prompt text (encoded with the model's tokenizer)");
  cmd->add_option("--ids", args->ids, "Prompt as comma-separated token ids, e.g. 0,5,7");
  cmd->add_flag("--chat", args->chat, "Format --prompt as a user turn of the chat format");
  cmd->add_option("--max-tokens", args->max_tokens, "Tokens to generate at most (stops early at EOS)")
      ->capture_default_str();
  cmd->add_option("--temperature", args->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling mass, in (0, 1]")->capture_default_str();
  cmd->add_option("--top-k", args->top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--mtp", args->mtp, "Self-speculative decoding with the MTP module (greedy only)");
  cmd->add_option("--numerics", args->numerics, "fp8act (FP8 activations, BF16 KV cache) | dequant (fp32)")
      ->capture_default_str();
  cmd->add_option("--backend", args->backend, "Kernel backend: " + fmt::format("{}", fmt::join(backend_names(), " | ")))
      ->capture_default_str();
  cmd->add_option("--dump-logits", args->dump_logits,
                  "Write raw little-endian float32 logits, one vocab_size row per generated token");
  cmd->add_option("--max-seq-len", args->max_seq_len, "Context length (default: max_position_embeddings)");
  cmd->add_option("--chunk", args->chunk, "Prompt tokens per prefill step")->capture_default_str();
  commands.add(cmd, [args] { return run_generate(*args); });
}

}  // namespace sy::apps
