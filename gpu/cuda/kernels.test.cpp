// Parity of the CUDA backend's pointwise and router kernels with gpu/ref, through the staged
// Backend table (host pointers), so each test also covers the staging. Tolerances per output are
// stated at each check; exact where the GPU computes the reference's operations in its order.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gpu/cuda/kernels.hpp"
#include "gpu/cuda/test_util.hpp"
#include "gpu/ref/kernels.hpp"
#include "gpu/ref/test_util.hpp"

namespace sy::gpu::cuda {
namespace {

using gpu::test::compare;
using gpu::test::TestRng;
using gpu::test::within;
using CudaKernels = test::CudaTest;

TEST_F(CudaKernels, TableIsNamedCuda) { EXPECT_EQ(backend().name, "cuda"); }

TEST_F(CudaKernels, RmsNormMatchesRefStridedAndInPlace) {
  TestRng rng(1);
  const std::int64_t rows = 5, dim = 7168, stride = dim + 32;
  const std::vector<float> x = rng.normals(static_cast<std::size_t>(rows * stride), 2.0f);
  const std::vector<bf16> w = rng.bf16_normals(static_cast<std::size_t>(dim), 1.0f);
  std::vector<float> want(x.size(), 0.0f), got(x.size(), 0.0f);
  RmsNormParams p{.x = x.data(), .weight = w.data(), .y = want.data(), .rows = rows, .dim = dim, .x_stride = stride,
                  .y_stride = stride};
  ref::rms_norm(p);
  p.y = got.data();
  backend().rms_norm(p);
  // Sum of squares in another order: a few fp32 ulps.
  EXPECT_TRUE(within(compare(got, want), 1e-5, 1e-6));
  std::vector<float> in_place = x;
  backend().rms_norm({.x = in_place.data(), .weight = w.data(), .y = in_place.data(), .rows = rows, .dim = dim,
                      .x_stride = stride, .y_stride = stride});
  EXPECT_TRUE(within(compare(in_place, got), 0.0, 0.0));
}

TEST_F(CudaKernels, RopeMatchesRefAtV3Dims) {
  TestRng rng(2);
  const RopeConfig config{.rope_dim = 64, .theta = 10000.0, .yarn = YarnParams{.mscale_all_dim = 1.0}};
  const std::vector<float> inv_freq = rope_inv_freq(config);
  const std::int64_t rows = 9, heads = 16, head_stride = 192, row_stride = heads * head_stride;
  std::vector<float> x = rng.normals(static_cast<std::size_t>(rows * row_stride), 1.0f);
  std::vector<std::int32_t> positions;
  for (std::int64_t r = 0; r < rows; ++r) positions.push_back(static_cast<std::int32_t>(r * 16381 % 163840));
  std::vector<float> want = x, got = x;
  RopeParams p{.x = want.data() + 128, .positions = positions.data(), .inv_freq = inv_freq.data(), .rows = rows,
               .heads = heads, .rope_dim = 64, .row_stride = row_stride, .head_stride = head_stride};
  ref::apply_rope(p);
  p.x = got.data() + 128;
  backend().apply_rope(p);
  // Same fp32 angle, cos/sin in double rounded once, products without fusing: 1 ulp at most.
  EXPECT_TRUE(within(compare(got, want), 1e-6, 1e-7));
}

TEST_F(CudaKernels, ActQuantMatchesRefBitForBit) {
  TestRng rng(3);
  for (const ScaleFormat format : {ScaleFormat::fp32, ScaleFormat::ue8m0}) {
    const std::int64_t rows = 7, cols = 7168;
    std::vector<float> x = rng.normals(static_cast<std::size_t>(rows * cols), 3.0f);
    for (std::int64_t i = 0; i < 128; ++i) x[static_cast<std::size_t>(i)] = 0.0f;  // an all-zero tile
    std::vector<fp8_e4m3> want_y(x.size()), got_y(x.size());
    std::vector<float> want_s(static_cast<std::size_t>(rows * cols / 128)), got_s(want_s.size());
    ActQuantParams p{.x = x.data(), .y = want_y.data(), .scales = want_s.data(), .rows = rows, .cols = cols,
                     .x_stride = cols, .y_stride = cols, .scale_row_stride = cols / 128, .format = format};
    ref::act_quant(p);
    p.y = got_y.data();
    p.scales = got_s.data();
    backend().act_quant(p);
    // Same amax, the same IEEE division, round-to-nearest-even conversion: identical bits.
    EXPECT_EQ(got_s, want_s);
    std::int64_t differing = 0;
    for (std::size_t i = 0; i < x.size(); ++i) differing += got_y[i].bits != want_y[i].bits ? 1 : 0;
    EXPECT_EQ(differing, 0);
  }
}

TEST_F(CudaKernels, SwigluMatchesRefOnFusedRows) {
  TestRng rng(4);
  const std::int64_t rows = 6, cols = 2048;
  std::vector<float> fused = rng.normals(static_cast<std::size_t>(rows * 2 * cols), 4.0f);
  std::vector<float> want(static_cast<std::size_t>(rows * cols)), got(want.size());
  SwigluParams p{.gate = fused.data(), .up = fused.data() + cols, .out = want.data(), .rows = rows, .cols = cols,
                 .gate_stride = 2 * cols, .up_stride = 2 * cols, .out_stride = cols};
  ref::swiglu(p);
  p.out = got.data();
  backend().swiglu(p);
  // expf vs std::exp: within 2 ulp.
  EXPECT_TRUE(within(compare(got, want), 1e-5, 1e-6));
}

TEST_F(CudaKernels, MoeSelectMatchesRefWithV3Routing) {
  TestRng rng(5);
  const std::int64_t tokens = 33, experts = 256;
  const std::vector<float> logits = rng.normals(static_cast<std::size_t>(tokens * experts), 2.0f);
  const std::vector<float> bias = rng.normals(static_cast<std::size_t>(experts), 0.1f);
  const MoeRouting routing{.experts = experts, .top_k = 8, .n_group = 8, .topk_group = 4,
                           .routed_scaling_factor = 2.5f, .bias = bias.data()};
  std::vector<std::int32_t> want_i(static_cast<std::size_t>(tokens * 8)), got_i(want_i.size());
  std::vector<float> want_w(want_i.size()), got_w(want_i.size());
  MoeSelectParams p{.logits = logits.data(), .indices = want_i.data(), .weights = want_w.data(), .tokens = tokens,
                    .logits_stride = experts, .routing = routing};
  ref::moe_select(p);
  p.indices = got_i.data();
  p.weights = got_w.data();
  backend().moe_select(p);
  EXPECT_EQ(got_i, want_i);
  EXPECT_TRUE(within(compare(got_w, want_w), 1e-6, 1e-6));  // expf vs std::exp in the sigmoid
}

TEST_F(CudaKernels, ArgmaxSkipsNanAndBreaksTiesLow) {
  TestRng rng(6);
  const std::int64_t rows = 4, vocab = 129280;
  std::vector<float> logits = rng.normals(static_cast<std::size_t>(rows * vocab), 1.0f);
  logits[5] = std::numeric_limits<float>::quiet_NaN();
  logits[static_cast<std::size_t>(vocab + 100)] = 50.0f;  // a tie: the lower id wins
  logits[static_cast<std::size_t>(vocab + 90000)] = 50.0f;
  std::vector<std::int32_t> want(rows), got(rows);
  ArgmaxParams p{.logits = logits.data(), .tokens = want.data(), .rows = rows, .vocab = vocab, .logits_stride = vocab};
  ref::argmax(p);
  p.tokens = got.data();
  backend().argmax(p);
  EXPECT_EQ(got, want);
  EXPECT_EQ(got[1], 100);
}

TEST_F(CudaKernels, SampleMatchesRef) {
  TestRng rng(7);
  const std::int64_t rows = 3, vocab = 1000;
  const std::vector<float> logits = rng.normals(static_cast<std::size_t>(rows * vocab), 2.0f);
  const std::vector<SamplerConfig> configs = {{.temperature = 0.0f},
                                              {.temperature = 0.7f, .top_k = 40, .seed = 9},
                                              {.temperature = 1.0f, .top_p = 0.9f, .seed = 11}};
  const std::vector<std::uint64_t> counters = {0, 5, 17};
  std::vector<std::int32_t> want(rows), got(rows);
  SampleParams p{.logits = logits.data(), .configs = configs.data(), .counters = counters.data(), .tokens = want.data(),
                 .rows = rows, .vocab = vocab, .logits_stride = vocab};
  ref::sample(p);
  p.tokens = got.data();
  backend().sample(p);
  EXPECT_EQ(got, want);
}

TEST_F(CudaKernels, BadShapesThrowBeforeAnyLaunch) {
  std::vector<float> x(128);
  std::vector<fp8_e4m3> y(128);
  std::vector<float> s(1);
  EXPECT_THROW(backend().act_quant({.x = x.data(), .y = y.data(), .scales = s.data(), .rows = 1, .cols = 100,
                                    .x_stride = 128, .y_stride = 128, .scale_row_stride = 1}),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu::cuda
