#pragma once
// LayerNorm over rows: y = (x − mean) · rsqrt(var + eps) ⊙ w + b, two-pass fp32 statistics.
// CPU twin: attn::ops::layer_norm (engine/ops_cpu.h). x and y may alias.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t d, float eps,
                cudaStream_t stream);
void layer_norm(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* b, __nv_bfloat16* y,
                int64_t rows, int64_t d, float eps, cudaStream_t stream);
// fp32 residual stream in, bf16 out.
void layer_norm(const float* x, const __nv_bfloat16* w, const __nv_bfloat16* b, __nv_bfloat16* y, int64_t rows,
                int64_t d, float eps, cudaStream_t stream);

}  // namespace attn::gpu
