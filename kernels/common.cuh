#pragma once
// Device helpers shared by the kernels: bf16 <-> fp32 conversion and block reductions.
// Compiled by nvcc only (kernels/*.cu); the public headers are the per-op .cuh files.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_check.h"

namespace attn::gpu::detail {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// Safe to call repeatedly in one kernel.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads();  // everyone has read partial[] before a next call overwrites it
    return v;
}

// Grid for a 1-D elementwise kernel of n elements with grid-stride loops.
inline unsigned elementwise_blocks(int64_t n, int threads) {
    const int64_t blocks = (n + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

inline void check_rows(const char* op, int64_t rows, int64_t d) {
    if (rows < 0 || d <= 0) fail(op, ": bad shape rows=", rows, " d=", d);
    if (rows > 0x7fffffff) fail(op, ": ", rows, " rows exceed the grid limit");
}

}  // namespace attn::gpu::detail
