// The CUDA backend ("cuda"), for Hopper (sm_90a). Two faces over the same kernels:
//  * device entry points, sy::gpu::cuda::*(params, stream): every pointer in params is device
//    memory; the call launches on `stream` (nullptr: the legacy default stream) and returns without
//    waiting. Benchmarks, GPU tests and (later) a device-resident engine use these.
//  * the Backend table, sy::gpu::cuda::backend(): host-pointer entry points with the same contract
//    as ref/cpu, which stage every operand through stream-ordered device allocations, run the device
//    entry point and copy results back before returning. It lets today's host-memory Engine run on a
//    GPU unchanged (correct, slow: weights travel on every call). See gpu/cuda/README.md.
// Host-side checks (shapes, strides, alignment) run before every launch and throw
// std::invalid_argument; CUDA errors throw sy::gpu::cuda::CudaError. Data the device reads (page
// ids, positions, cu_seqlens) is trusted by the device entry points and checked on the host by the
// staged table. Thread-safe: no shared mutable state beyond per-thread library handles.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "gpu/backend.hpp"

struct CUstream_st;  // cudaStream_t without the CUDA headers

namespace sy::gpu::cuda {

using Stream = CUstream_st*;

// A failed CUDA runtime or library call, with the call and the library's message.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whether a CUDA device can be used here: "" when yes, else why not ("no CUDA device: <error
// string>"). Cheap after the first call.
std::string device_problem();

// The staged host-pointer table. Throws std::runtime_error naming the problem when no device can
// be used (so `--backend cuda` fails up front, not at the first kernel).
const Backend& backend();

// ---- Device entry points (all pointers are device memory) ----
void rms_norm(const RmsNormParams& p, Stream s);
void apply_rope(const RopeParams& p, Stream s);
void act_quant(const ActQuantParams& p, Stream s);
void swiglu(const SwigluParams& p, Stream s);
void moe_select(const MoeSelectParams& p, Stream s);
void argmax(const ArgmaxParams& p, Stream s);
// TODO(perf): copies the rows to the host and runs ref::sample there (synchronizes `s`); a device
// top-k/top-p sampler is left to do.
void sample(const SampleParams& p, Stream s);
void bf16_gemm(const Bf16GemmParams& p, Stream s);
void fp8_dequant_gemm(const Fp8DequantGemmParams& p, Stream s);
void fp8_gemm(const Fp8GemmParams& p, Stream s);
void mla_cache_write(const MlaCacheWriteParams& p, Stream s);
void mla_decode(const MlaDecodeParams& p, Stream s);
void mla_prefill(const MlaPrefillParams& p, Stream s);
void mla_absorb_q(const MlaAbsorbQParams& p, Stream s);
void mla_output_up(const MlaOutputUpParams& p, Stream s);
void mla_kv_up(const MlaKvUpParams& p, Stream s);

// Grouped FP8 expert GEMM, DeepGEMM's "contiguous" layout: the rows routed to each expert are
// stacked in one A, each expert's segment padded to a multiple of 128 rows. For every row m whose
// expert_ids[m] = e >= 0:
//   c[m, n] = Σ_kb (Σ_{k∈kb} a[m,k]·b[e][n,k]) · a_scales[m, kb] · b_scales[e][n/128, kb]
// (fp8_gemm's math per expert); rows with expert id -1 (padding) are left untouched.
struct GroupedFp8GemmParams {
  const fp8_e4m3* a = nullptr;          // [m, k] row-major, contiguous (row stride k)
  const float* a_scales = nullptr;      // [m, k/128] row-major, contiguous (act_quant's layout)
  const std::int32_t* expert_ids = nullptr;  // [m]; REQUIRES: constant over each 128-row block
  const fp8_e4m3* b = nullptr;          // [experts, n, k] contiguous weights
  const float* b_scales = nullptr;      // [experts, n/128, k/128] contiguous
  float* c = nullptr;                   // [m, n] row-major, contiguous
  std::int64_t m = 0;        // REQUIRES: a multiple of 128
  std::int64_t n = 0;        // REQUIRES: a multiple of 128
  std::int64_t k = 0;        // REQUIRES: a multiple of 128
  std::int64_t experts = 0;  // REQUIRES: every expert id < experts
};
void grouped_fp8_gemm(const GroupedFp8GemmParams& p, Stream s);

// Which fp8_gemm path the call takes; for tests and benchmarks.
enum class Fp8GemmPath {
  cublaslt,  // cuBLASLt block scaling (VEC128 activations × BLK128x128 weights): needs the
             // activation scales M-major (DeepGEMM's layout: a_scale_row_stride 1, column stride
             // m), m and n multiples of 4, k/128 a multiple of 4, 16-byte aligned rows; falls back
             // to mma when cuBLASLt offers no algorithm
  mma,       // the block-scaled tensor-core kernel of fp8_gemm/ (needs 16-byte aligned rows)
  simt,      // the CUDA-core fallback (any strides)
};
Fp8GemmPath fp8_gemm_path(const Fp8GemmParams& p);

}  // namespace sy::gpu::cuda
