// A backend is a table of kernel entry points with one signature per kernel family (the params
// structs of gpu/*.hpp). The engine calls kernels only through a Backend, so `--backend ref|cpu|
// cuda` is a choice of table, and tests run the same model code over any of them. Tables are
// immutable and live for the whole process; share them freely.
#pragma once

#include <string_view>

#include "gpu/activation.hpp"
#include "gpu/gemm.hpp"
#include "gpu/mla.hpp"
#include "gpu/moe_gate.hpp"
#include "gpu/norm.hpp"
#include "gpu/quant.hpp"
#include "gpu/rope.hpp"
#include "gpu/sampling.hpp"

namespace sy::gpu {

struct Backend {
  std::string_view name;
  void (*rms_norm)(const RmsNormParams&);
  void (*apply_rope)(const RopeParams&);
  void (*act_quant)(const ActQuantParams&);
  void (*fp8_gemm)(const Fp8GemmParams&);
  void (*fp8_dequant_gemm)(const Fp8DequantGemmParams&);
  void (*bf16_gemm)(const Bf16GemmParams&);
  void (*swiglu)(const SwigluParams&);
  void (*moe_select)(const MoeSelectParams&);
  void (*argmax)(const ArgmaxParams&);
  void (*sample)(const SampleParams&);
  void (*mla_cache_write)(const MlaCacheWriteParams&);
  void (*mla_decode)(const MlaDecodeParams&);
  void (*mla_prefill)(const MlaPrefillParams&);
  void (*mla_absorb_q)(const MlaAbsorbQParams&);
  void (*mla_output_up)(const MlaOutputUpParams&);
  void (*mla_kv_up)(const MlaKvUpParams&);
};
// Count check: adding a kernel to Backend breaks the build until every table (ref, cpu, cuda)
// fills it in. Update together with the tables.
inline constexpr int kBackendKernelCount = 16;
static_assert(sizeof(Backend) == sizeof(std::string_view) + kBackendKernelCount * sizeof(void (*)()),
              "Backend changed: update kBackendKernelCount and every backend's table");

}  // namespace sy::gpu
