// The portable instantiation of isa_impl.hpp: one lane, FP8 decoded through the exact 256-entry
// table, libm's expf. The fallback on CPUs without AVX2, and the plainest reading of the
// blocking the vector paths share.
#include "gpu/cpu/isa_impl.hpp"
#include "gpu/dtypes.hpp"

namespace sy::gpu::cpu::detail {
namespace {

struct V1 {
  using reg = float;
  static constexpr int W = 1;
  static constexpr float kFp8Factor = 1.0f;
  static constexpr int kGemvMg = 4;
  static constexpr int kTileMg = 4;
  static constexpr int kMlaHb = 4;
  static constexpr int kMlaDv = 4;

  static reg zero() { return 0.0f; }
  static reg load(const float* p) { return *p; }
  static void store(float* p, reg v) { *p = v; }
  static reg bcast(float x) { return x; }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static float hsum(reg v) { return v; }
  static reg decode_fp8(const std::uint8_t* p) { return kFp8E4m3ToFloat[*p]; }
  static reg decode_bf16(const std::uint16_t* p) { return __builtin_bit_cast(float, static_cast<std::uint32_t>(*p) << 16); }
  static reg exp(reg x) { return __builtin_expf(x); }
};

}  // namespace

const IsaKernels& scalar_kernels() {
  static constexpr IsaKernels table{
      .isa = Isa::scalar, .gemv = &gemv<V1>, .gemm_tile = &gemm_tile<V1>, .mla_task = &mla_task<V1>};
  return table;
}

const IsaKernels& active_kernels() {
  switch (active_isa()) {
    case Isa::avx512: return avx512_kernels();
    case Isa::avx2: return avx2_kernels();
    case Isa::scalar: break;
  }
  return scalar_kernels();
}

}  // namespace sy::gpu::cpu::detail
