// The fast CPU backend ("cpu"): the serving path on hosts without a GPU and the baseline GPU
// kernels are measured against. Fast implementations: fp8_gemm, fp8_dequant_gemm, bf16_gemm
// (SIMD decode of the weight, GEMV for m <= 8, a tiled kernel beyond) and mla_decode (online
// softmax over cache tiles, split along the cache for long contexts). Every other kernel forwards
// to sy::gpu::ref. Kernels run on the backend's thread pool (gpu/cpu/runtime.hpp: SY_CPU_THREADS,
// SY_CPU_ISA); results do not depend on the thread count, and are batch-invariant: an output
// row's bits depend only on its own inputs (a GEMM row of A, a decode query and its sequence's
// cache) and the weights, never on which other rows or queries share the call (DESIGN.md,
// "Determinism contract"). Each ISA path gives its own bits. Calls from several threads are safe.
#pragma once

#include "gpu/backend.hpp"

namespace sy::gpu::cpu {

// Forwarded to sy::gpu::ref.
void rms_norm(const RmsNormParams& p);
void apply_rope(const RopeParams& p);
void act_quant(const ActQuantParams& p);
void swiglu(const SwigluParams& p);
void moe_select(const MoeSelectParams& p);
void argmax(const ArgmaxParams& p);
void sample(const SampleParams& p);
void mla_cache_write(const MlaCacheWriteParams& p);
void mla_prefill(const MlaPrefillParams& p);
void mla_absorb_q(const MlaAbsorbQParams& p);
void mla_output_up(const MlaOutputUpParams& p);
void mla_kv_up(const MlaKvUpParams& p);

// gemm.cpp. Same results as ref up to fp32 summation order (blocked, vectorized).
void fp8_gemm(const Fp8GemmParams& p);
void fp8_dequant_gemm(const Fp8DequantGemmParams& p);
void bf16_gemm(const Bf16GemmParams& p);

// mla.cpp. Same results as ref up to summation order and a polynomial exp (~1 ulp). The cache
// split points of a query depend only on its position.
void mla_decode(const MlaDecodeParams& p);

// The CPU backend as a table ("cpu").
const Backend& backend();

}  // namespace sy::gpu::cpu
