#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu {
namespace {

std::int32_t sample_one(const std::vector<float>& logits, const SamplerConfig& config, std::uint64_t counter) {
  std::int32_t token = -1;
  ref::sample({.logits = logits.data(), .configs = &config, .counters = &counter, .tokens = &token, .rows = 1,
               .vocab = static_cast<std::int64_t>(logits.size()),
               .logits_stride = static_cast<std::int64_t>(logits.size())});
  return token;
}

std::int32_t greedy(const std::vector<float>& logits) {
  std::int32_t token = -1;
  ref::argmax({.logits = logits.data(), .tokens = &token, .rows = 1, .vocab = static_cast<std::int64_t>(logits.size()),
               .logits_stride = static_cast<std::int64_t>(logits.size())});
  return token;
}

TEST(RefSampling, SplitMix64KnownValue) {
  // The first output of the reference splitmix64 generator seeded with 0.
  EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFull);
  const double u = sampling_uniform(42, 7);
  EXPECT_GE(u, 0.0);
  EXPECT_LT(u, 1.0);
}

TEST(RefSampling, ArgmaxTakesLowestIdOnTiesAndSkipsNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(greedy({1.0f, 3.0f, 3.0f, -2.0f}), 1);
  EXPECT_EQ(greedy({nan, 0.5f, nan, 0.5f}), 1);
  // Several rows with a stride.
  const std::vector<float> rows = {0.0f, 9.0f, 1.0f, -5.0f, /* row 1 */ 4.0f, 2.0f, 4.0f, 0.0f};
  std::vector<std::int32_t> tokens(2);
  ref::argmax({.logits = rows.data(), .tokens = tokens.data(), .rows = 2, .vocab = 3, .logits_stride = 4});
  EXPECT_EQ(tokens, (std::vector<std::int32_t>{1, 0}));
}

TEST(RefSampling, GreedyLimitsEqualArgmax) {
  test::TestRng rng(15);
  for (int trial = 0; trial < 20; ++trial) {
    const std::vector<float> logits = rng.normals(1000, 2.0f);
    const std::int32_t want = greedy(logits);
    for (std::uint64_t counter = 0; counter < 5; ++counter) {
      EXPECT_EQ(sample_one(logits, {.temperature = 0.0f, .seed = 9}, counter), want);
      EXPECT_EQ(sample_one(logits, {.temperature = 1.0f, .top_k = 1, .seed = 9}, counter), want);
      EXPECT_EQ(sample_one(logits, {.temperature = 1.0f, .top_p = 1e-6f, .seed = 9}, counter), want);
    }
  }
}

TEST(RefSampling, DeterministicPerSeedAndCounter) {
  test::TestRng rng(16);
  const std::vector<float> logits = rng.normals(500, 1.0f);
  const SamplerConfig config = {.temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = 1234};
  std::vector<std::int32_t> first, again, other_seed;
  for (std::uint64_t n = 0; n < 64; ++n) {
    first.push_back(sample_one(logits, config, n));
    again.push_back(sample_one(logits, config, n));
    other_seed.push_back(sample_one(logits, {.temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = 4321}, n));
  }
  EXPECT_EQ(first, again);
  EXPECT_NE(first, other_seed);
  // A batch row draws exactly what the same request draws alone.
  const std::vector<float> batch = [&] {
    std::vector<float> b(1000, 0.0f);
    std::copy(logits.begin(), logits.end(), b.begin() + 500);
    return b;
  }();
  const SamplerConfig configs[2] = {{}, config};
  const std::uint64_t counters[2] = {0, 17};
  std::int32_t tokens[2];
  ref::sample({.logits = batch.data(), .configs = configs, .counters = counters, .tokens = tokens, .rows = 2,
               .vocab = 500, .logits_stride = 500});
  EXPECT_EQ(tokens[1], first[17]);
  EXPECT_EQ(tokens[0], 0);  // greedy on all-equal logits
}

TEST(RefSampling, FrequenciesFollowTheDistribution) {
  // p = (0.5, 0.3, 0.2) at temperature 1; top_k 2 → (5/8, 3/8); top_p 0.6 keeps the same two.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const int draws = 20000;
  const auto frequencies = [&](const SamplerConfig& c) {
    std::vector<double> f(3, 0.0);
    for (int n = 0; n < draws; ++n) f[sample_one(logits, c, static_cast<std::uint64_t>(n))] += 1.0 / draws;
    return f;
  };
  // Binomial standard deviation at 20000 draws is <= 0.0036; 0.015 is over 4 of them.
  const std::vector<double> plain = frequencies({.temperature = 1.0f, .seed = 5});
  EXPECT_NEAR(plain[0], 0.5, 0.015);
  EXPECT_NEAR(plain[1], 0.3, 0.015);
  EXPECT_NEAR(plain[2], 0.2, 0.015);
  for (const SamplerConfig c : {SamplerConfig{.temperature = 1.0f, .top_k = 2, .seed = 6},
                                SamplerConfig{.temperature = 1.0f, .top_p = 0.6f, .seed = 7}}) {
    const std::vector<double> f = frequencies(c);
    EXPECT_NEAR(f[0], 0.625, 0.015);
    EXPECT_NEAR(f[1], 0.375, 0.015);
    EXPECT_EQ(f[2], 0.0);
  }
  // Temperature 2 flattens: p ∝ sqrt(0.5, 0.3, 0.2).
  const std::vector<double> warm = frequencies({.temperature = 2.0f, .seed = 8});
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.2);
  EXPECT_NEAR(warm[0], std::sqrt(0.5) / z, 0.015);
  EXPECT_NEAR(warm[2], std::sqrt(0.2) / z, 0.015);
}

TEST(RefSampling, RejectsInvalidParameters) {
  const std::vector<float> logits = {0.0f, 1.0f};
  const auto message_of = [&](const SamplerConfig& c) -> std::string {
    try {
      sample_one(logits, c, 0);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no exception";
  };
  EXPECT_NE(message_of({.temperature = -0.5f}).find("temperature"), std::string::npos);
  EXPECT_NE(message_of({.temperature = std::numeric_limits<float>::quiet_NaN()}).find("temperature"), std::string::npos);
  EXPECT_NE(message_of({.temperature = 1.0f, .top_k = -1}).find("top_k"), std::string::npos);
  EXPECT_NE(message_of({.temperature = 1.0f, .top_p = 0.0f}).find("top_p"), std::string::npos);
  EXPECT_NE(message_of({.temperature = 1.0f, .top_p = 1.5f}).find("top_p"), std::string::npos);
  EXPECT_EQ(message_of({.temperature = 1.0f, .top_k = 5, .top_p = 1.0f}), "no exception");
}

}  // namespace
}  // namespace sy::gpu
