// Position-encoding math shared by every backend: config values → inverse frequencies and scales.
// Follows Hugging Face's DeepseekV3YarnRotaryEmbedding (spec §1.5) in double precision.
#include "gpu/rope.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace sy::gpu {
namespace {

void check_config(const RopeConfig& config) {
  if (config.rope_dim <= 0 || config.rope_dim % 2 != 0) {
    throw std::invalid_argument("rope: rope_dim must be even and > 0 (got " + std::to_string(config.rope_dim) + ")");
  }
  if (!(config.theta > 1.0) || !std::isfinite(config.theta)) {
    throw std::invalid_argument("rope: theta must be finite and > 1 (got " + std::to_string(config.theta) + ")");
  }
  if (config.yarn) {
    const YarnParams& y = *config.yarn;
    if (!(y.factor > 0.0) || !std::isfinite(y.factor)) {
      throw std::invalid_argument("rope: yarn factor must be finite and > 0 (got " + std::to_string(y.factor) + ")");
    }
    if (y.original_max_position_embeddings <= 0) {
      throw std::invalid_argument("rope: yarn original_max_position_embeddings must be > 0");
    }
    if (!(y.beta_fast > 0.0) || !(y.beta_slow > 0.0)) {
      throw std::invalid_argument("rope: yarn beta_fast and beta_slow must be > 0");
    }
  }
}

// Hugging Face's yarn_find_correction_dim: the (fractional) dimension index whose wavelength makes
// num_rotations turns over the original context.
double correction_dim(double num_rotations, const RopeConfig& config) {
  const double dim = static_cast<double>(config.rope_dim);
  const double l0 = static_cast<double>(config.yarn->original_max_position_embeddings);
  return dim * std::log(l0 / (num_rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(config.theta));
}

}  // namespace

YarnCorrectionRange yarn_correction_range(const RopeConfig& config) {
  check_config(config);
  if (!config.yarn) throw std::invalid_argument("rope: yarn_correction_range needs yarn parameters");
  const auto low = static_cast<std::int64_t>(std::floor(correction_dim(config.yarn->beta_fast, config)));
  const auto high = static_cast<std::int64_t>(std::ceil(correction_dim(config.yarn->beta_slow, config)));
  return {std::max<std::int64_t>(low, 0), std::min<std::int64_t>(high, config.rope_dim - 1)};
}

double yarn_get_mscale(double factor, double mscale) {
  if (factor <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(factor) + 1.0;
}

std::vector<float> rope_inv_freq(const RopeConfig& config) {
  check_config(config);
  const std::int64_t pairs = config.rope_dim / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(pairs));
  double low = 0.0;
  double high = 0.0;
  if (config.yarn) {
    const YarnCorrectionRange range = yarn_correction_range(config);
    low = static_cast<double>(range.low);
    high = static_cast<double>(range.high);
    if (low == high) high += 0.001;  // Hugging Face's guard against a zero-width ramp
  }
  for (std::int64_t i = 0; i < pairs; ++i) {
    const double base = std::pow(config.theta, -2.0 * static_cast<double>(i) / static_cast<double>(config.rope_dim));
    double f = base;
    if (config.yarn) {
      // ramp 0: the original frequency (high-frequency dims, which see many rotations in the
      // original context, are left alone); ramp 1: divided by factor (interpolated).
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      f = base / config.yarn->factor * ramp + base * (1.0 - ramp);
    }
    inv_freq[static_cast<std::size_t>(i)] = static_cast<float>(f);
  }
  return inv_freq;
}

float rope_cos_sin_scale(const RopeConfig& config) {
  check_config(config);
  if (!config.yarn) return 1.0f;
  const YarnParams& y = *config.yarn;
  return static_cast<float>(yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim));
}

double attention_softmax_scale(std::int64_t qk_head_dim, const std::optional<YarnParams>& yarn) {
  if (qk_head_dim <= 0) {
    throw std::invalid_argument("attention_softmax_scale: qk_head_dim must be > 0 (got " +
                                std::to_string(qk_head_dim) + ")");
  }
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim));
  if (yarn && yarn->mscale_all_dim != 0.0) {
    const double m = yarn_get_mscale(yarn->factor, yarn->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

}  // namespace sy::gpu
