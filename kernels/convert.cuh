#pragma once
// Element type conversions: fp32 → bf16 (weights at load, round to nearest even) and bf16 → fp32
// (the capture's Q and K: the CaptureStore holds fp32, and the values it holds must be exactly the
// bf16 values the attention kernels used, so the CPU tiles recompute the GPU's P).
// CPU twin: none needed — both directions are exact definitions (bf16 ⊂ fp32; RNE rounding), the
// parity tests compare against host rounding in tests/test_cuda_ops.cpp's to_bf16_bits.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

void f32_to_bf16(const float* x, __nv_bfloat16* y, int64_t n, cudaStream_t stream);
void bf16_to_f32(const __nv_bfloat16* x, float* y, int64_t n, cudaStream_t stream);

}  // namespace attn::gpu
