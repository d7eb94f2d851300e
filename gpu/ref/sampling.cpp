#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {
namespace {

std::int32_t argmax_row(const float* logits, std::int64_t vocab) {
  std::int64_t best = -1;
  for (std::int64_t i = 0; i < vocab; ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = i;  // strict >: the lowest id wins ties
  }
  return static_cast<std::int32_t>(best < 0 ? 0 : best);
}

std::int32_t sample_row(const float* logits, std::int64_t vocab, const SamplerConfig& c, std::uint64_t counter) {
  if (c.temperature == 0.0f) return argmax_row(logits, vocab);
  // Candidates by descending logit (= descending probability), ties to the lower id.
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const auto before = [logits](std::int32_t a, std::int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::int64_t kept = vocab;
  if (c.top_k > 0 && c.top_k < vocab) {
    kept = c.top_k;
    std::partial_sort(order.begin(), order.begin() + kept, order.end(), before);
  } else {
    std::sort(order.begin(), order.end(), before);
  }
  const float max_logit = logits[order[0]];
  if (!std::isfinite(max_logit)) throw std::invalid_argument("sample: a row has no finite logit");
  // Softmax over the kept candidates, in double.
  std::vector<double> probs(static_cast<std::size_t>(kept));
  double total = 0.0;
  for (std::int64_t j = 0; j < kept; ++j) {
    const double z = (static_cast<double>(logits[order[j]]) - max_logit) / c.temperature;
    probs[j] = std::exp(z);
    total += probs[j];
  }
  // Top-p: the shortest prefix whose probability reaches top_p.
  if (c.top_p < 1.0f) {
    double cumulative = 0.0;
    for (std::int64_t j = 0; j < kept; ++j) {
      cumulative += probs[j] / total;
      if (cumulative >= c.top_p) {
        kept = j + 1;
        break;
      }
    }
    total = std::accumulate(probs.begin(), probs.begin() + kept, 0.0);
  }
  // Inverse CDF over the kept candidates.
  const double u = sampling_uniform(c.seed, counter) * total;
  double cumulative = 0.0;
  for (std::int64_t j = 0; j < kept; ++j) {
    cumulative += probs[j];
    if (cumulative > u) return order[j];
  }
  return order[kept - 1];
}

}  // namespace

void argmax(const ArgmaxParams& p) {
  validate(p);
  for (std::int64_t r = 0; r < p.rows; ++r) p.tokens[r] = argmax_row(p.logits + r * p.logits_stride, p.vocab);
}

void sample(const SampleParams& p) {
  validate(p);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    p.tokens[r] = sample_row(p.logits + r * p.logits_stride, p.vocab, p.configs[r], p.counters[r]);
  }
}

}  // namespace sy::gpu::ref
