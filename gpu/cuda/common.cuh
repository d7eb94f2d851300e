// Device helpers shared by the CUDA kernels: scalar decodes of the API's storage types (bf16 and
// fp8_e4m3 are bit-pattern structs in gpu/dtypes.hpp, layout-compatible with __nv_bfloat16 and
// __nv_fp8_e4m3), warp reductions and index arithmetic. Device code only; stateless.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "gpu/dtypes.hpp"

namespace sy::gpu::cuda::dev {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __uint_as_float(static_cast<unsigned>(x.bits) << 16); }
__device__ __forceinline__ float to_float(fp8_e4m3 x) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(x.bits), __NV_E4M3);
  return __half2float(__half(h));
}

// fp32 -> bf16 / e4m3, round to nearest even; e4m3 saturates finite values to ±448 and keeps NaN,
// as gpu/dtypes.hpp does.
__device__ __forceinline__ bf16 to_bf16(float x) {
  const __nv_bfloat16 b = __float2bfloat16_rn(x);
  return bf16{*reinterpret_cast<const std::uint16_t*>(&b)};
}
__device__ __forceinline__ fp8_e4m3 to_fp8(float x) {
  return fp8_e4m3{static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3))};
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the total.
// `scratch` holds 32 floats of shared memory; the call synchronizes the block twice.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x) / 32;
  float total = lane < warps ? scratch[lane] : 0.0f;
  total = warp_sum(total);
  __syncthreads();
  return total;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x) / 32;
  float total = lane < warps ? scratch[lane] : -INFINITY;
  total = warp_max(total);
  __syncthreads();
  return total;
}

}  // namespace sy::gpu::cuda::dev
