#pragma once
// GELU, tanh approximation (GPT-2's "gelu_new"), fp32 math: y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
// CPU twin: attn::ops::gelu_tanh (engine/ops_cpu.h). y may alias x.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

void gelu_tanh(const float* x, float* y, int64_t n, cudaStream_t stream);
void gelu_tanh(const __nv_bfloat16* x, __nv_bfloat16* y, int64_t n, cudaStream_t stream);

}  // namespace attn::gpu
