// The tiny model on the CUDA backend (its staged host-pointer table, gpu/cuda/README.md): greedy
// tokens equal the cpu backend's, with and without MTP, in both numeric modes; logits close.
// Label gpu: skips with "no CUDA device: ..." where no device can be used, and without the
// tokenizer files like every tiny-model test.
#include <gtest/gtest.h>

#include <vector>

#include "gpu/cpu/kernels.hpp"
#include "gpu/cuda/kernels.hpp"
#include "model/engine_test_util.hpp"

namespace sy::model {
namespace {

using testing::gen_options;
using testing::test_prompt;

class TinyCudaEngine : public testing::TinyModelTest {
 protected:
  void SetUp() override {
    if (const std::string problem = gpu::cuda::device_problem(); !problem.empty()) GTEST_SKIP() << problem;
    TinyModelTest::SetUp();
  }
};

EngineOptions options(Numerics numerics) {
  EngineOptions o;
  o.numerics = numerics;
  o.kv_pages = 64;
  o.max_seqs = 4;
  o.max_seq_len = 1024;
  o.max_chunk_tokens = 256;
  return o;
}

// Stated tolerance: identical tokens; logits within 1e-4 normalized (fp32 sums in other orders).
TEST_F(TinyCudaEngine, GreedyTokensEqualTheCpuBackend) {
  std::vector<GenerationRequest> requests;
  for (std::uint64_t i = 0; i < 2; ++i) {
    GenerationRequest r;
    r.prompt = test_prompt(70 + i, 6 + 5 * i, config().vocab_size);
    r.max_tokens = 8;
    r.stop_at_eos = false;
    requests.push_back(r);
  }
  for (const Numerics numerics : {Numerics::fp8act, Numerics::dequant}) {
    for (const bool mtp : {false, true}) {
      SCOPED_TRACE(std::string(numerics_name(numerics)) + (mtp ? " mtp" : ""));
      Engine cpu(config(), weights(), gpu::cpu::backend(), options(numerics));
      Engine cuda(config(), weights(), gpu::cuda::backend(), options(numerics));
      const auto want = generate(cpu, requests, gen_options(mtp, true));
      const auto got = generate(cuda, requests, gen_options(mtp, true));
      for (std::size_t i = 0; i < requests.size(); ++i) {
        EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
        if (got[i].logits.size() == want[i].logits.size()) {
          EXPECT_LT(testing::normalized_error(got[i].logits, want[i].logits), 1e-4) << "request " << i;
          EXPECT_FALSE(testing::has_nan(got[i].logits));
        }
      }
    }
  }
}

}  // namespace
}  // namespace sy::model
