#pragma once
// Embedding lookup: out[t, :] = table[ids[t], :] (+ pos_table[pos0 + t, :] for GPT-2's learned
// positions when pos_table is not null), summed in fp32. table is {vocab, d} row-major on the
// device, ids int32 on the device. An id outside [0, vocab) yields a NaN row rather than an
// out-of-bounds read (the host validates ids before launching; this is the backstop).
// CPU twin: attn::ops::embedding (+ attn::ops::add_inplace for positions), engine/ops_cpu.h.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attn::gpu {

void embedding(const float* table, const float* pos_table, const int32_t* ids, int64_t n, int64_t vocab, int64_t d,
               int64_t pos0, float* out, cudaStream_t stream);
void embedding(const __nv_bfloat16* table, const __nv_bfloat16* pos_table, const int32_t* ids, int64_t n,
               int64_t vocab, int64_t d, int64_t pos0, __nv_bfloat16* out, cudaStream_t stream);
// bf16 weights into an fp32 residual stream.
void embedding(const __nv_bfloat16* table, const __nv_bfloat16* pos_table, const int32_t* ids, int64_t n,
               int64_t vocab, int64_t d, int64_t pos0, float* out, cudaStream_t stream);

}  // namespace attn::gpu
