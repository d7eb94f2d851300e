#include "model/linear.hpp"

#include <fmt/format.h>

#include <stdexcept>
#include <vector>

#include "gpu/quant.hpp"

namespace sy::model {

const char* numerics_name(Numerics n) { return n == Numerics::fp8act ? "fp8act" : "dequant"; }

Numerics parse_numerics(std::string_view name) {
  if (name == "fp8act") return Numerics::fp8act;
  if (name == "dequant") return Numerics::dequant;
  throw std::invalid_argument(fmt::format("unknown numerics \"{}\" (choose fp8act or dequant)", name));
}

void linear(const gpu::Backend& backend, Numerics numerics, const LinearWeight& w, const float* x, std::int64_t rows,
            std::int64_t x_stride, float* y, std::int64_t y_stride) {
  if (rows == 0) return;
  if (w.dtype == DType::BF16) {
    backend.bf16_gemm({.a = x,
                       .b = w.bf16(),
                       .c = y,
                       .m = rows,
                       .n = w.out,
                       .k = w.in,
                       .lda = x_stride,
                       .ldb = w.in,
                       .ldc = y_stride});
    return;
  }
  if (numerics == Numerics::dequant) {
    backend.fp8_dequant_gemm({.a = x,
                              .b = w.fp8(),
                              .b_scales = w.scale_inv,
                              .c = y,
                              .m = rows,
                              .n = w.out,
                              .k = w.in,
                              .lda = x_stride,
                              .ldb = w.in,
                              .ldc = y_stride});
    return;
  }
  std::vector<gpu::fp8_e4m3> xq(static_cast<std::size_t>(rows * w.in));
  std::vector<float> scales(static_cast<std::size_t>(rows * (w.in / gpu::kQuantBlock)));
  quantize_activations(backend, x, rows, w.in, x_stride, xq.data(), scales.data());
  linear_fp8_input(backend, w, xq.data(), scales.data(), rows, y, y_stride);
}

void quantize_activations(const gpu::Backend& backend, const float* x, std::int64_t rows, std::int64_t cols,
                          std::int64_t x_stride, gpu::fp8_e4m3* xq, float* scales) {
  if (rows == 0) return;
  backend.act_quant({.x = x,
                     .y = xq,
                     .scales = scales,
                     .rows = rows,
                     .cols = cols,
                     .x_stride = x_stride,
                     .y_stride = cols,
                     .scale_row_stride = cols / gpu::kQuantBlock,
                     .scale_col_stride = 1});
}

void linear_fp8_input(const gpu::Backend& backend, const LinearWeight& w, const gpu::fp8_e4m3* xq, const float* scales,
                      std::int64_t rows, float* y, std::int64_t y_stride) {
  if (rows == 0) return;
  const std::int64_t k_blocks = w.in / gpu::kQuantBlock;
  backend.fp8_gemm({.a = xq,
                    .a_scales = scales,
                    .b = w.fp8(),
                    .b_scales = w.scale_inv,
                    .c = y,
                    .m = rows,
                    .n = w.out,
                    .k = w.in,
                    .lda = w.in,
                    .ldb = w.in,
                    .ldc = y_stride,
                    .a_scale_row_stride = k_blocks,
                    .a_scale_col_stride = 1});
}

bool swiglu_takes_fp8_input(Numerics numerics, const SwiGluWeights& w) {
  return numerics == Numerics::fp8act && w.gate_proj.dtype == DType::F8_E4M3 && w.up_proj.dtype == DType::F8_E4M3 &&
         w.gate_proj.in == w.up_proj.in;
}

namespace {

// silu(gate) ⊙ up into gate, then the down projection.
void swiglu_tail(const gpu::Backend& backend, Numerics numerics, const SwiGluWeights& w, std::int64_t rows,
                 std::vector<float>& gate, std::vector<float>& up, float* out) {
  const std::int64_t inter = w.gate_proj.out;
  backend.swiglu({.gate = gate.data(),
                  .up = up.data(),
                  .out = gate.data(),
                  .rows = rows,
                  .cols = inter,
                  .gate_stride = inter,
                  .up_stride = inter,
                  .out_stride = inter});
  linear(backend, numerics, w.down_proj, gate.data(), rows, inter, out, w.down_proj.out);
}

}  // namespace

void swiglu_ffn_fp8_input(const gpu::Backend& backend, const SwiGluWeights& w, const gpu::fp8_e4m3* xq,
                          const float* scales, std::int64_t rows, float* out) {
  if (rows == 0) return;
  const std::int64_t inter = w.gate_proj.out;
  std::vector<float> gate(static_cast<std::size_t>(rows * inter));
  std::vector<float> up(static_cast<std::size_t>(rows * inter));
  linear_fp8_input(backend, w.gate_proj, xq, scales, rows, gate.data(), inter);
  linear_fp8_input(backend, w.up_proj, xq, scales, rows, up.data(), inter);
  swiglu_tail(backend, Numerics::fp8act, w, rows, gate, up, out);
}

void swiglu_ffn(const gpu::Backend& backend, Numerics numerics, const SwiGluWeights& w, const float* x,
                std::int64_t rows, std::int64_t x_stride, float* out) {
  if (rows == 0) return;
  if (swiglu_takes_fp8_input(numerics, w)) {
    // Quantize once for both projections (act_quant is deterministic: the same as twice).
    const std::int64_t in = w.gate_proj.in;
    std::vector<gpu::fp8_e4m3> xq(static_cast<std::size_t>(rows * in));
    std::vector<float> scales(static_cast<std::size_t>(rows * (in / gpu::kQuantBlock)));
    quantize_activations(backend, x, rows, in, x_stride, xq.data(), scales.data());
    swiglu_ffn_fp8_input(backend, w, xq.data(), scales.data(), rows, out);
    return;
  }
  const std::int64_t inter = w.gate_proj.out;
  std::vector<float> gate(static_cast<std::size_t>(rows * inter));
  std::vector<float> up(static_cast<std::size_t>(rows * inter));
  linear(backend, numerics, w.gate_proj, x, rows, x_stride, gate.data(), inter);
  linear(backend, numerics, w.up_proj, x, rows, x_stride, up.data(), inter);
  swiglu_tail(backend, numerics, w, rows, gate, up, out);
}

namespace {

void check_weight(const LinearWeight& w, const std::string& name, const std::string& what) {
  if (w.dtype == DType::F8_E4M3 && w.in % gpu::kQuantBlock != 0) {
    throw std::invalid_argument(fmt::format(
        "{}: numerics fp8act quantizes activations in 1x128 tiles, but {} has input dim {} (not a multiple of "
        "128); use --numerics dequant for this model",
        what, name, w.in));
  }
}

void check_swiglu(const SwiGluWeights& w, const std::string& name, const std::string& what) {
  check_weight(w.gate_proj, name + ".gate_proj", what);
  check_weight(w.up_proj, name + ".up_proj", what);
  check_weight(w.down_proj, name + ".down_proj", what);
}

}  // namespace

void check_fp8act_shapes(const ModelWeights& weights, Numerics numerics, const std::string& what) {
  if (numerics != Numerics::fp8act) return;
  for (const LayerWeights& l : weights.layers) {
    const std::string p = fmt::format("model.layers.{}.", l.index);
    const AttentionWeights& a = l.attention;
    if (a.q_a_proj) check_weight(*a.q_a_proj, p + "self_attn.q_a_proj", what);
    if (a.q_b_proj) check_weight(*a.q_b_proj, p + "self_attn.q_b_proj", what);
    if (a.q_proj) check_weight(*a.q_proj, p + "self_attn.q_proj", what);
    check_weight(a.kv_a_proj_with_mqa, p + "self_attn.kv_a_proj_with_mqa", what);
    check_weight(a.kv_b_proj, p + "self_attn.kv_b_proj", what);
    check_weight(a.o_proj, p + "self_attn.o_proj", what);
    if (l.dense_mlp) check_swiglu(*l.dense_mlp, p + "mlp", what);
    if (l.moe) {
      // Every expert has the same shapes; the first stands for all.
      if (!l.moe->experts.empty()) check_swiglu(l.moe->experts.front(), p + "mlp.experts.0", what);
      if (l.moe->shared) check_swiglu(*l.moe->shared, p + "mlp.shared_experts", what);
    }
  }
}

}  // namespace sy::model
