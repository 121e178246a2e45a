#pragma once
// Decode attention (flash-decoding): one query per head at position L − 1 over a KV cache of
// L keys, split along the keys; each split writes a partial (m, l, unnormalised O) and a combine
// kernel merges them into O and the row LSE. Plain C++ header (see flash_attention.cuh).
#include <cstddef>
#include <cstdint>

#include "kernels/flash_attention.cuh"

namespace attn::gpu {

struct DecodeAttentionParams {
    const void* q = nullptr;  // bf16 [n_head, head_dim] (the new token, post-RoPE)
    const void* k = nullptr;  // bf16 [L, n_kv_head, head_dim] (the cache, new token's key included)
    const void* v = nullptr;  // bf16 [L, n_kv_head, head_dim]
    void* o = nullptr;        // out_type [n_head, head_dim]
    float* lse = nullptr;     // [n_head], natural log; may be null
    OutType out_type = OutType::Bf16;
    int64_t L = 0;            // keys; the query sits at position L − 1
    int n_head = 0, n_kv_head = 0, head_dim = 0;  // head_dim 64 or 128
    float scale = 0.f;
    int sliding_window = 0;
    int64_t kv_stride = 0;    // elements per cache position (0 = n_kv_head * head_dim)
    int n_splits = 0;         // 0 = choose from the SM count and L
};

// Splits the launch will use (after resolving n_splits = 0) and the fp32 scratch it needs.
int decode_attention_splits(const DecodeAttentionParams& params);
size_t decode_attention_workspace_bytes(const DecodeAttentionParams& params);
void decode_attention(const DecodeAttentionParams& params, void* workspace, size_t workspace_bytes,
                      Stream stream = nullptr);

}  // namespace attn::gpu
