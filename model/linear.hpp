// Linear layers and the SwiGLU FFN on top of the Backend's GEMMs, in the engine's two numeric
// modes (DESIGN.md "Numerics"). Shared by the engine's attention and FFN code and the MoE
// executors. Stateless functions; they allocate their scratch per call and borrow the rest.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "gpu/backend.hpp"
#include "model/weights.hpp"

namespace sy::model {

enum class Numerics {
  // Production: FP8 weights × activations quantized per 1×128 tile (act_quant + fp8_gemm), as
  // DeepGEMM does; BF16 KV cache.
  fp8act,
  // Reference: FP8 weights dequantized, fp32 activations (fp8_dequant_gemm); fp32 KV cache.
  dequant,
};
const char* numerics_name(Numerics n);
// "fp8act" | "dequant"; std::invalid_argument naming the value otherwise.
Numerics parse_numerics(std::string_view name);

// y[rows, w.out] = x[rows, w.in] · wᵀ. BF16 weights use bf16_gemm in both modes. REQUIRES (fp8act
// with an FP8 weight): w.in a multiple of 128 (check_fp8act_shapes rejects models that break it).
void linear(const gpu::Backend& backend, Numerics numerics, const LinearWeight& w, const float* x, std::int64_t rows,
            std::int64_t x_stride, float* y, std::int64_t y_stride);

// linear() of an FP8 weight on activations already quantized by act_quant (1x128 tiles): the
// second half of linear()'s fp8act path. xq: [rows, w.in] contiguous e4m3; scales: [rows,
// w.in/128] contiguous. What an expert host runs on the FP8 rows a worker dispatched.
// REQUIRES: w.dtype F8_E4M3, w.in a multiple of 128.
void linear_fp8_input(const gpu::Backend& backend, const LinearWeight& w, const gpu::fp8_e4m3* xq, const float* scales,
                      std::int64_t rows, float* y, std::int64_t y_stride);

// act_quant of x [rows, cols] (stride x_stride) into contiguous xq [rows, cols] and scales
// [rows, cols/128]: exactly the activations linear() feeds an FP8 GEMM.
void quantize_activations(const gpu::Backend& backend, const float* x, std::int64_t rows, std::int64_t cols,
                          std::int64_t x_stride, gpu::fp8_e4m3* xq, float* scales);

// Whether swiglu_ffn quantizes its input once for FP8 gate and up projections (numerics fp8act
// and FP8 gate/up weights): then swiglu_ffn_fp8_input on quantize_activations' output gives
// bit for bit the same result, which is what lets an expert host take FP8 rows.
bool swiglu_takes_fp8_input(Numerics numerics, const SwiGluWeights& w);

// swiglu_ffn on pre-quantized input. REQUIRES: swiglu_takes_fp8_input(fp8act, w).
void swiglu_ffn_fp8_input(const gpu::Backend& backend, const SwiGluWeights& w, const gpu::fp8_e4m3* xq,
                          const float* scales, std::int64_t rows, float* out);

// down(silu(gate x) ⊙ up x). x: [rows, in] stride x_stride; out: [rows, down.out] contiguous.
void swiglu_ffn(const gpu::Backend& backend, Numerics numerics, const SwiGluWeights& w, const float* x,
                std::int64_t rows, std::int64_t x_stride, float* out);

// Throws std::invalid_argument naming the first FP8 weight whose input dim is not a multiple of
// 128 (act_quant's 1×128 tiles need it), when numerics is fp8act. `what` names the model.
void check_fp8act_shapes(const ModelWeights& weights, Numerics numerics, const std::string& what);

}  // namespace sy::model
