// FP8 e4m3 block quantization (spec §2.1-2.3, 2.5): activations in 1×128 tiles along the last dim
// (act_quant, done online before every FP8 GEMM) and weights in 128×128 blocks (weight_quant for
// tests and synthetic checkpoints, weight_dequant for the reference numeric path). A scale is the
// dequantization multiplier: x ≈ fp8 · scale (the checkpoint's weight_scale_inv). Each backend
// provides sy::gpu::<backend>::{act_quant, weight_quant, weight_dequant}. Stateless.
#pragma once

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu {

// Tile edge of activation tiles (1×128) and weight blocks (128×128), fixed by the checkpoint
// format (quantization_config.weight_block_size).
inline constexpr std::int64_t kQuantBlock = 128;

// The smallest amax a tile quantizes with, so an all-zero tile gets a finite scale (DeepSeek's
// act_quant since Aug 2025; DeepGEMM and DeepEP use the same margin).
inline constexpr float kQuantAmaxFloor = 1e-4f;

enum class ScaleFormat {
  fp32,   // s = amax / 448 (DeepSeek-V3)
  ue8m0,  // s = 2^ceil(log2(amax / 448)): power-of-two scales (the v3.1 config's scale_fmt)
};

// Per row, per 128 columns: amax = max(max|x|, 1e-4), s = amax/448 (then rounded up to a power of
// two under ue8m0), y = e4m3(x / s) rounded to nearest even.
struct ActQuantParams {
  const float* x = nullptr;  // [rows, cols], row stride x_stride
  fp8_e4m3* y = nullptr;     // [rows, cols], row stride y_stride
  float* scales = nullptr;   // [rows, cols/128]: tile (r, b) at r·scale_row_stride + b·scale_col_stride
  std::int64_t rows = 0;
  std::int64_t cols = 0;  // REQUIRES: a multiple of 128
  std::int64_t x_stride = 0;
  std::int64_t y_stride = 0;
  // Row-major by default. DeepGEMM wants column-major scales (row stride 1, column stride = rows
  // padded to a multiple of 4); the strides let a backend write that layout directly.
  std::int64_t scale_row_stride = 0;
  std::int64_t scale_col_stride = 1;
  ScaleFormat format = ScaleFormat::fp32;
};

// Per 128×128 block: amax = max(max|w|, 1e-4), s = amax/448, q = e4m3(w / s). Edge blocks of a
// ragged shape cover only the real rows/columns (the zero padding of the checkpoint format does
// not change amax).
struct WeightQuantParams {
  const float* w = nullptr;   // [rows, cols], row stride w_stride
  fp8_e4m3* q = nullptr;      // [rows, cols], row stride q_stride
  float* scales = nullptr;    // [ceil(rows/128), ceil(cols/128)] row-major, contiguous
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t w_stride = 0;
  std::int64_t q_stride = 0;
};

// w[i, j] = fp32(q[i, j]) · scales[i/128, j/128], one fp32 multiply per element (kernel.py
// weight_dequant, which then rounds to BF16; we keep fp32).
struct WeightDequantParams {
  const fp8_e4m3* q = nullptr;    // [rows, cols], row stride q_stride
  const float* scales = nullptr;  // [ceil(rows/128), ceil(cols/128)] row-major, contiguous
  float* w = nullptr;             // [rows, cols], row stride w_stride
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t q_stride = 0;
  std::int64_t w_stride = 0;
};

// Number of 128-wide blocks covering n elements.
constexpr std::int64_t quant_blocks(std::int64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

void validate(const ActQuantParams& p);
void validate(const WeightQuantParams& p);
void validate(const WeightDequantParams& p);

}  // namespace sy::gpu
