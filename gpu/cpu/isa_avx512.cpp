// The AVX-512 instantiation of isa_impl.hpp (this file alone is compiled with -mavx512f/bw/vl).
// FP8 weights decode with a bit trick instead of a table: e4m3's sign, exponent and mantissa
// move into an fp16's (exponent bias 15 instead of 7, so the value is 2^-8 of the e4m3 one,
// subnormals included) and vcvtph2ps widens them; kFp8Factor = 256 is folded into the block
// scale. The trick maps the e4m3 NaN code to 480; checkpoint weights never hold it.
#include <immintrin.h>

#include "gpu/cpu/isa_impl.hpp"

namespace sy::gpu::cpu::detail {
namespace {

struct V512 {
  using reg = __m512;
  static constexpr int W = 16;
  static constexpr float kFp8Factor = 256.0f;
  static constexpr int kGemvMg = 4;  // 16 accumulators
  static constexpr int kTileMg = 6;  // 6 × 4 = 24 accumulators
  static constexpr int kMlaHb = 8;  // scores: 2 tokens × 8 heads; accumulate: 8 heads × 2 vectors
  static constexpr int kMlaDv = 2;

  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg bcast(float x) { return _mm512_set1_ps(x); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(reg v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
  }
  static reg decode_fp8(const std::uint8_t* p) {
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i sign = _mm256_and_si256(_mm256_slli_epi16(w, 8), _mm256_set1_epi16(static_cast<short>(0x8000)));
    const __m256i rest = _mm256_and_si256(_mm256_slli_epi16(w, 7), _mm256_set1_epi16(0x3F80));
    return _mm512_cvtph_ps(_mm256_or_si256(sign, rest));
  }
  static reg decode_bf16(const std::uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  // Cephes expf: e^x = 2^n · e^r, |r| <= ln2/2, degree-6 polynomial; ~1 ulp on [-87, 88].
  static reg exp(reg x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3365447505531f));
    const reg n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                       _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
    reg y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  }
};

}  // namespace

const IsaKernels& avx512_kernels() {
  static constexpr IsaKernels table{
      .isa = Isa::avx512, .gemv = &gemv<V512>, .gemm_tile = &gemm_tile<V512>, .mla_task = &mla_task<V512>};
  return table;
}

}  // namespace sy::gpu::cpu::detail
