#pragma once
// One decode step's contribution to the pooled overview (DESIGN.md §1, §3). The fused prefill
// kernel emits the overview for its query rows; decode_attention returns only O and LSE, so this
// op adds the new row i = L − 1 of every head into the device overview:
//   ov_sum[h][tri(qb, kb)] += Σ_{j in block kb, visible} exp(scale·q_h·k_j − LSE_h)
//   ov_max[h][tri(qb, kb)]  = max(ov_max, max_j of the same P)
// with qb = i / 128 and the packed lower-triangle layout of flash_attention.cuh. One CTA owns one
// (head, key block), so no atomics: rows arrive one launch at a time, in order.
// CPU twin: CaptureStore::accumulate_overview over the row of CpuTileSource::row (same P formula).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/flash_attention.cuh"

namespace attn::gpu {

struct OverviewRowParams {
    const void* q = nullptr;    // bf16 [n_head, head_dim], post-RoPE (the values decode_attention used)
    const void* k = nullptr;    // bf16 [L, n_kv_head, head_dim] (kv_stride elements per position)
    const float* lse = nullptr; // [n_head], natural log (decode_attention's output)
    int64_t L = 0;              // keys; the row is query L − 1
    int n_head = 0, n_kv_head = 0, head_dim = 0;  // head_dim ≤ 256, even
    float scale = 0.f;
    int sliding_window = 0;
    int64_t kv_stride = 0;      // 0 = n_kv_head * head_dim
    float* overview_sum = nullptr;  // per head: overview_head_stride floats, packed lower triangle
    float* overview_max = nullptr;
    int64_t overview_head_stride = 0;
};

void overview_accumulate_row(const OverviewRowParams& params, Stream stream = nullptr);

}  // namespace attn::gpu
