#pragma once
// SwiGLU: out[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + exp(−g)), fp32 math.
// CPU twin: attn::ops::swiglu (engine/ops_cpu.h). out may alias gate or up.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

void swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
void swiglu(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* out, int64_t n, cudaStream_t stream);

}  // namespace attn::gpu
