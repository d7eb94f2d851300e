// The AVX2 + FMA + F16C instantiation of isa_impl.hpp (this file alone is compiled with -mavx2
// -mfma -mf16c). FP8 decodes with the same fp16 bit trick as isa_avx512.cpp (see there).
#include <immintrin.h>

#include "gpu/cpu/isa_impl.hpp"

namespace sy::gpu::cpu::detail {
namespace {

struct V256 {
  using reg = __m256;
  static constexpr int W = 8;
  static constexpr float kFp8Factor = 256.0f;
  static constexpr int kGemvMg = 2;  // 8 accumulators of 16 registers
  static constexpr int kTileMg = 2;
  static constexpr int kMlaHb = 4;  // scores: 2 tokens × 4 heads; accumulate: 4 heads × 2 vectors
  static constexpr int kMlaDv = 2;

  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg bcast(float x) { return _mm256_set1_ps(x); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(reg v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
  }
  static reg decode_fp8(const std::uint8_t* p) {
    const __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m128i sign = _mm_and_si128(_mm_slli_epi16(w, 8), _mm_set1_epi16(static_cast<short>(0x8000)));
    const __m128i rest = _mm_and_si128(_mm_slli_epi16(w, 7), _mm_set1_epi16(0x3F80));
    return _mm256_cvtph_ps(_mm_or_si128(sign, rest));
  }
  static reg decode_bf16(const std::uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  // Cephes expf, as in isa_avx512.cpp.
  static reg exp(reg x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365447505531f));
    const reg n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    reg y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
};

}  // namespace

const IsaKernels& avx2_kernels() {
  static constexpr IsaKernels table{
      .isa = Isa::avx2, .gemv = &gemv<V256>, .gemm_tile = &gemm_tile<V256>, .mla_task = &mla_task<V256>};
  return table;
}

}  // namespace sy::gpu::cpu::detail
