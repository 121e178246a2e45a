#pragma once
// RoPE in place on x[rows, heads, head_dim]; row r is at position pos0 + r. inv_freq (device,
// head_dim / 2 floats) comes from attn::ops::rope_inverse_frequencies, so scaling (linear, llama3,
// GGUF frequency factors) is the CPU's. Angles and rotations in fp32 (accurate sincosf).
// CPU twin: attn::ops::rope (engine/ops_cpu.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

// Pairing of rotated elements: (2i, 2i+1) for GGUF/interleaved, (i, i + head_dim/2) for HF/half-split.
enum class RopeLayout { Interleaved, HalfSplit };

void rope(float* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq, RopeLayout layout,
          cudaStream_t stream);
void rope(__nv_bfloat16* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq,
          RopeLayout layout, cudaStream_t stream);

}  // namespace attn::gpu
