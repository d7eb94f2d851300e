// Next-token choice from logits: greedy argmax, and temperature / top-k / top-p sampling driven by
// a counter-based splitmix64 stream, so a request's n-th draw depends only on (seed, n, logits),
// not on the batch it rode in or the platform (std:: distributions differ between libraries).
// Each backend provides sy::gpu::<backend>::{argmax, sample}; the RNG here is shared by all.
// Stateless; params borrow the caller's memory.
#pragma once

#include <cstdint>

namespace sy::gpu {

// Per request. temperature 0 means greedy; top_k 0 and top_p 1 mean "no limit".
struct SamplerConfig {
  float temperature = 0.0f;  // REQUIRES: finite, >= 0
  std::int64_t top_k = 0;    // REQUIRES: >= 0
  float top_p = 1.0f;        // REQUIRES: in (0, 1]
  std::uint64_t seed = 0;
};

// Throws std::invalid_argument naming the bad field and its value.
void validate(const SamplerConfig& c);

// Row-wise argmax; ties go to the lowest token id. NaN logits never win.
struct ArgmaxParams {
  const float* logits = nullptr;  // [rows, vocab], row stride logits_stride
  std::int32_t* tokens = nullptr;  // [rows]
  std::int64_t rows = 0;
  std::int64_t vocab = 0;
  std::int64_t logits_stride = 0;
};

// Per row, with its config c and draw counter n:
//   temperature 0 → argmax. Otherwise order tokens by logit, descending (ties: lower id first);
//   keep the first top_k (if > 0); p_i = softmax(logit_i / temperature) over the kept tokens;
//   keep the shortest prefix whose cumulative p reaches top_p (at least one token);
//   u = sampling_uniform(c.seed, n); return the first kept token whose cumulative p, over the
//   kept tokens' sum, exceeds u (the last kept one if rounding leaves none).
// So top_k = 1 and a tiny top_p both equal greedy. REQUIRES: each row has a finite logit and no
// NaN (sample; argmax skips NaN).
struct SampleParams {
  const float* logits = nullptr;           // [rows, vocab], row stride logits_stride
  const SamplerConfig* configs = nullptr;  // [rows]
  const std::uint64_t* counters = nullptr;  // [rows] draw index, e.g. tokens generated so far
  std::int32_t* tokens = nullptr;          // [rows]
  std::int64_t rows = 0;
  std::int64_t vocab = 0;
  std::int64_t logits_stride = 0;
};

void validate(const ArgmaxParams& p);
void validate(const SampleParams& p);

// splitmix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mix.
constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The n-th uniform draw in [0, 1) of stream `seed`: 53 random bits, exact in a double.
constexpr double sampling_uniform(std::uint64_t seed, std::uint64_t counter) {
  const std::uint64_t bits = splitmix64(splitmix64(seed) ^ counter);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace sy::gpu
