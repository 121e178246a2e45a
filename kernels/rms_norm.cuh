#pragma once
// RMSNorm over rows: y[r, :] = w ⊙ (x[r, :] · rsqrt(mean(x[r, :]²) + eps)), fp32 statistics.
// CPU twin: attn::ops::rms_norm (engine/ops_cpu.h). x and y may alias.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps, cudaStream_t stream);
void rms_norm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t rows, int64_t d, float eps,
              cudaStream_t stream);
// fp32 residual stream in, bf16 normalised activations out (the input of the next GEMM).
void rms_norm(const float* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t rows, int64_t d, float eps,
              cudaStream_t stream);

}  // namespace attn::gpu
