#pragma once
// Residual adds and bias broadcast, fp32 math. CPU twin: attn::ops::add_inplace (engine/ops_cpu.h);
// y may alias a or b.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

// y[i] = a[i] + b[i]
void add(const float* a, const float* b, float* y, int64_t n, cudaStream_t stream);
void add(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* y, int64_t n, cudaStream_t stream);
// fp32 residual stream plus a bf16 branch output.
void add(const float* a, const __nv_bfloat16* b, float* y, int64_t n, cudaStream_t stream);

// y[r, c] += bias[c] for a {rows, cols} row-major y (linear layers with a bias, e.g. GPT-2).
void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);
void add_bias(__nv_bfloat16* y, const __nv_bfloat16* bias, int64_t rows, int64_t cols, cudaStream_t stream);
void add_bias(float* y, const __nv_bfloat16* bias, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace attn::gpu
