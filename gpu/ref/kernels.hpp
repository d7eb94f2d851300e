// The reference backend: plain, single-threaded C++ over host memory, written to be read as the
// specification of each kernel (the math is documented on the params structs in gpu/*.hpp). Always
// built; every other backend (cpu/, cuda/) is tested against it, and it runs the tiny test models.
// Each function validates its params (std::invalid_argument), also checking data the fast backends
// trust (page ids, positions). Stateless; safe to call from several threads on disjoint outputs.
#pragma once

#include "gpu/activation.hpp"
#include "gpu/gemm.hpp"
#include "gpu/mla.hpp"
#include "gpu/moe_gate.hpp"
#include "gpu/norm.hpp"
#include "gpu/quant.hpp"
#include "gpu/rope.hpp"
#include "gpu/sampling.hpp"

namespace sy::gpu::ref {

// norm.cpp
void rms_norm(const RmsNormParams& p);

// rope.cpp
void apply_rope(const RopeParams& p);

// quant.cpp
void act_quant(const ActQuantParams& p);
void weight_quant(const WeightQuantParams& p);
void weight_dequant(const WeightDequantParams& p);

// gemm.cpp
void fp8_gemm(const Fp8GemmParams& p);
void fp8_dequant_gemm(const Fp8DequantGemmParams& p);
void bf16_gemm(const Bf16GemmParams& p);

// activation.cpp
void swiglu(const SwigluParams& p);

// moe_gate.cpp
void moe_select(const MoeSelectParams& p);
void moe_gate(const MoeGateParams& p);

// sampling.cpp
void argmax(const ArgmaxParams& p);
void sample(const SampleParams& p);

// mla.cpp
void mla_cache_write(const MlaCacheWriteParams& p);
void mla_decode(const MlaDecodeParams& p);
void mla_prefill(const MlaPrefillParams& p);
void mla_absorb_q(const MlaAbsorbQParams& p);
void mla_output_up(const MlaOutputUpParams& p);
void mla_kv_up(const MlaKvUpParams& p);

}  // namespace sy::gpu::ref

#include "gpu/backend.hpp"

namespace sy::gpu::ref {

// The reference backend as a table ("ref").
const Backend& backend();

}  // namespace sy::gpu::ref
