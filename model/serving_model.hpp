// A model folder loaded for serving: config, checkpoint mapping, bound weights and one Engine on
// them, built in that order because each borrows the one before. What every worker that runs
// the model holds (the prefill and decode roles, the one-process generation service); the
// tokenizer is separate because the router needs it without the weights.
// Threading: as the Engine (one owner). Not movable: the engine points into the members.
#pragma once

#include <filesystem>
#include <memory>

#include "gpu/backend.hpp"
#include "model/config.hpp"
#include "model/engine.hpp"
#include "model/safetensors.hpp"
#include "model/weights.hpp"

namespace sy::model {

class ServingModel {
 public:
  // Throws (naming the file) on a bad folder, and std::invalid_argument on bad options.
  // experts: where the routed experts run (expert hosts); null: in this process. Borrowed; it
  // must outlive the model.
  ServingModel(const std::filesystem::path& dir, const gpu::Backend& backend, const EngineOptions& options,
               ExpertExecutor* experts = nullptr);
  ServingModel(const ServingModel&) = delete;
  ServingModel& operator=(const ServingModel&) = delete;

  const ModelConfig& config() const { return config_; }
  Engine& engine() { return *engine_; }

 private:
  ModelConfig config_;
  Checkpoint checkpoint_;
  ModelWeights weights_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace sy::model
