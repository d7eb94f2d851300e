#include "gpu/cpu/kernels.hpp"
#include "gpu/ref/kernels.hpp"

namespace sy::gpu::cpu {

void rms_norm(const RmsNormParams& p) { ref::rms_norm(p); }
void apply_rope(const RopeParams& p) { ref::apply_rope(p); }
void act_quant(const ActQuantParams& p) { ref::act_quant(p); }
void swiglu(const SwigluParams& p) { ref::swiglu(p); }
void moe_select(const MoeSelectParams& p) { ref::moe_select(p); }
void argmax(const ArgmaxParams& p) { ref::argmax(p); }
void sample(const SampleParams& p) { ref::sample(p); }
void mla_cache_write(const MlaCacheWriteParams& p) { ref::mla_cache_write(p); }
void mla_prefill(const MlaPrefillParams& p) { ref::mla_prefill(p); }
void mla_absorb_q(const MlaAbsorbQParams& p) { ref::mla_absorb_q(p); }
void mla_output_up(const MlaOutputUpParams& p) { ref::mla_output_up(p); }
void mla_kv_up(const MlaKvUpParams& p) { ref::mla_kv_up(p); }

const Backend& backend() {
  static constexpr Backend table{
      .name = "cpu",
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

}  // namespace sy::gpu::cpu
