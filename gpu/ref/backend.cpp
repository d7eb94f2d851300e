#include "gpu/ref/kernels.hpp"

namespace sy::gpu::ref {

const Backend& backend() {
  static constexpr Backend table{
      .name = "ref",
      .rms_norm = &rms_norm,
      .apply_rope = &apply_rope,
      .act_quant = &act_quant,
      .fp8_gemm = &fp8_gemm,
      .fp8_dequant_gemm = &fp8_dequant_gemm,
      .bf16_gemm = &bf16_gemm,
      .swiglu = &swiglu,
      .moe_select = &moe_select,
      .argmax = &argmax,
      .sample = &sample,
      .mla_cache_write = &mla_cache_write,
      .mla_decode = &mla_decode,
      .mla_prefill = &mla_prefill,
      .mla_absorb_q = &mla_absorb_q,
      .mla_output_up = &mla_output_up,
      .mla_kv_up = &mla_kv_up,
  };
  return table;
}

}  // namespace sy::gpu::ref
