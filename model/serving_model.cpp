#include "model/serving_model.hpp"

namespace sy::model {

ServingModel::ServingModel(const std::filesystem::path& dir, const gpu::Backend& backend, const EngineOptions& options,
                           ExpertExecutor* experts)
    : config_(ModelConfig::from_file(dir / "config.json")),
      checkpoint_(Checkpoint::open(dir)),
      weights_(bind_weights(checkpoint_, config_)),
      engine_(std::make_unique<Engine>(config_, weights_, backend, options, experts)) {}

}  // namespace sy::model
