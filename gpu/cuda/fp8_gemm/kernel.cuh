// The block-scaled FP8 GEMM kernel (config.hpp for the tiling). Per k step: cp.async brings the
// next A and B tiles (128 rows × 128 bytes each, zero-filled past m/n) while 8 warps run
// mma.sync.m16n8k32 e4m3 → fp32 on the current ones; then each thread scales its partial sums and
// adds them to its accumulators. Accumulation order within a 128-block is the tensor core's, so
// results match the reference to fp32 rounding, not bit for bit.
// TODO(perf): wgmma + TMA with a deeper pipeline and warp specialization (DeepGEMM's shape); on
// Hopper mma.sync reaches only part of the FP8 peak.
#pragma once

#include <cstdint>

#include "gpu/cuda/fp8_gemm/config.hpp"
#include "gpu/cuda/fp8_gemm/launch.hpp"

namespace sy::gpu::cuda::impl::fp8_gemm {

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// grid (ceil(n/kTileN), ceil(m/kTileM)), block kThreads, kSmemBytes dynamic shared memory.
__global__ void __launch_bounds__(kThreads, 1) fp8_gemm_kernel(Args args) {
  extern __shared__ __align__(16) unsigned char smem[];
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
  std::int64_t expert = 0;
  if (args.expert_ids != nullptr) {
    expert = args.expert_ids[m0];
    if (expert < 0) return;  // a padding tile
  }
  const fp8_e4m3* b = args.b + expert * args.b_expert_stride;
  const float* b_scales = args.b_scales + expert * args.b_scale_expert_stride;
  const std::int64_t k_blocks = args.k / kTileK;

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m = warp / kWarpsN;  // 0..1
  const int warp_n = warp % kWarpsN;  // 0..3
  const int g = lane / 4;             // mma groupID
  const int t = lane % 4;             // mma threadID_in_group

  auto load_stage = [&](int stage, std::int64_t kb) {
    unsigned char* a_s = smem + stage * kStageBytes;
    unsigned char* b_s = a_s + kTileM * kRowBytes;
    const std::int64_t k0 = kb * kTileK;
    // 128 rows × 8 chunks of 16 bytes per operand: 4 chunks of A and 4 of B per thread.
    for (int i = tid; i < kTileM * (kTileK / 16); i += kThreads) {
      const int r = i / (kTileK / 16);
      const int c = i % (kTileK / 16);
      const std::int64_t m = m0 + r;
      const bool ok = m < args.m;
      cp_async_16(a_s + r * kRowBytes + c * 16, args.a + (ok ? m : 0) * args.lda + k0 + c * 16, ok);
    }
    for (int i = tid; i < kTileN * (kTileK / 16); i += kThreads) {
      const int r = i / (kTileK / 16);
      const int c = i % (kTileK / 16);
      const std::int64_t n = n0 + r;
      const bool ok = n < args.n;
      cp_async_16(b_s + r * kRowBytes + c * 16, b + (ok ? n : 0) * args.ldb + k0 + c * 16, ok);
    }
  };

  constexpr int kTm = kWarpTileM / kMmaM;  // 4
  constexpr int kTn = kWarpTileN / kMmaN;  // 4
  float acc[kTm][kTn][4] = {};

  load_stage(0, 0);
  cp_async_commit();
  for (std::int64_t kb = 0; kb < k_blocks; ++kb) {
    if (kb + 1 < k_blocks) {
      load_stage(static_cast<int>((kb + 1) % kStages), kb + 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const unsigned char* a_s = smem + (kb % kStages) * kStageBytes;
    const unsigned char* b_s = a_s + kTileM * kRowBytes;
    float part[kTm][kTn][4] = {};
#pragma unroll
    for (int kc = 0; kc < kTileK; kc += kMmaK) {
      unsigned af[kTm][4];
#pragma unroll
      for (int i = 0; i < kTm; ++i) {
        const unsigned char* base = a_s + (warp_m * kWarpTileM + i * kMmaM + g) * kRowBytes + kc + t * 4;
        af[i][0] = *reinterpret_cast<const unsigned*>(base);
        af[i][1] = *reinterpret_cast<const unsigned*>(base + 8 * kRowBytes);
        af[i][2] = *reinterpret_cast<const unsigned*>(base + 16);
        af[i][3] = *reinterpret_cast<const unsigned*>(base + 8 * kRowBytes + 16);
      }
      // B fragments one column tile at a time: fewer live registers beside 128 accumulators.
#pragma unroll
      for (int j = 0; j < kTn; ++j) {
        const unsigned char* base = b_s + (warp_n * kWarpTileN + j * kMmaN + g) * kRowBytes + kc + t * 4;
        const unsigned bf[2] = {*reinterpret_cast<const unsigned*>(base), *reinterpret_cast<const unsigned*>(base + 16)};
#pragma unroll
        for (int i = 0; i < kTm; ++i) mma_e4m3(part[i][j], af[i], bf);
      }
    }
    // acc += partial · a_scale(row) · b_scale(n0/128, kb): one weight block covers the tile's columns.
    const float sb = b_scales[(n0 / kTileN) * k_blocks + kb];
#pragma unroll
    for (int i = 0; i < kTm; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const std::int64_t m = m0 + warp_m * kWarpTileM + i * kMmaM + g + half * 8;
        const float sa = m < args.m ? args.a_scales[m * args.a_scale_m + kb * args.a_scale_k] : 0.0f;
#pragma unroll
        for (int j = 0; j < kTn; ++j) {
          acc[i][j][2 * half] = __fadd_rn(acc[i][j][2 * half], __fmul_rn(__fmul_rn(part[i][j][2 * half], sa), sb));
          acc[i][j][2 * half + 1] =
              __fadd_rn(acc[i][j][2 * half + 1], __fmul_rn(__fmul_rn(part[i][j][2 * half + 1], sa), sb));
        }
      }
    }
    __syncthreads();  // this stage is refilled two steps on
  }

#pragma unroll
  for (int i = 0; i < kTm; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const std::int64_t m = m0 + warp_m * kWarpTileM + i * kMmaM + g + half * 8;
      if (m >= args.m) continue;
      float* c = args.c + m * args.ldc;
#pragma unroll
      for (int j = 0; j < kTn; ++j) {
        const std::int64_t n = n0 + warp_n * kWarpTileN + j * kMmaN + t * 2;
        if (n < args.n) c[n] = acc[i][j][2 * half];
        if (n + 1 < args.n) c[n + 1] = acc[i][j][2 * half + 1];
      }
    }
  }
}

}  // namespace sy::gpu::cuda::impl::fp8_gemm
