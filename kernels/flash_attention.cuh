#pragma once
// Fused causal prefill attention (DESIGN.md §3): O, the row LSE and — in the same pass — the
// pooled overview (sum and max of P over 128×128-token blocks).
//
// This header is plain C++ (no CUDA headers) so host-only translation units (tests, the
// runtime) can include it. Device pointers are passed as void* / float*.
#include <cstddef>
#include <cstdint>
#include <string>

struct CUstream_st;

namespace attn::gpu {

using Stream = CUstream_st*;  // == cudaStream_t

enum class OutType { Bf16, F32 };

// All pointers are device pointers. Strides are in elements per token (0 = dense default).
struct FlashAttentionParams {
    const void* q = nullptr;  // bf16 [T, n_head, head_dim]: queries at absolute positions [pos0, pos0 + T)
    const void* k = nullptr;  // bf16 [T_kv, n_kv_head, head_dim]: keys at positions [0, T_kv)
    const void* v = nullptr;  // bf16 [T_kv, n_kv_head, head_dim]
    void* o = nullptr;        // out_type [T, n_head, head_dim]
    float* lse = nullptr;     // [T, n_head], natural log of Σ_visible exp(scale·q·k); may be null
    OutType out_type = OutType::Bf16;

    // Pooled overview, per head a packed lower triangle over ABSOLUTE 128-token blocks:
    // entry h * overview_head_stride + qb*(qb+1)/2 + kb. The kernel ADDS sums (atomicAdd) and
    // max-combines maxes (P ≥ 0, so int ordering of the float bits), so a query block split
    // across prefill chunks accumulates correctly. The caller zeroes new entries once.
    bool emit_overview = false;  // the switch that turns emission off (its cost is then zero)
    float* overview_sum = nullptr;
    float* overview_max = nullptr;
    int64_t overview_head_stride = 0;

    int64_t T = 0;      // query rows
    int64_t pos0 = 0;   // absolute position of query row 0 (chunked prefill)
    int64_t T_kv = 0;   // keys available; normally pos0 + T
    int n_head = 0, n_kv_head = 0, head_dim = 0;  // head_dim 64 or 128
    float scale = 0.f;
    int sliding_window = 0;  // 0 = full causal; else query i sees keys j with i - j < window
    int64_t q_stride = 0, kv_stride = 0, o_stride = 0, lse_stride = 0;
};

// Scratch needed by the emitting kernel (0 when emission is off). Depends on the device's SM count.
size_t flash_attention_workspace_bytes(const FlashAttentionParams& params);
// Launches on `stream`; throws attn::Error on bad parameters or a CUDA error (file:line).
void flash_attention_forward(const FlashAttentionParams& params, void* workspace, size_t workspace_bytes,
                             Stream stream = nullptr);

// Thin host helpers so host-only code (tests) needs no CUDA headers.
bool attention_device_available(std::string* why_not);
namespace dev {
void* alloc(size_t bytes);
void free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void fill_nan(void* p, size_t bytes);   // poison: every byte 0xFF (NaN for f32 and bf16)
void zero(void* p, size_t bytes);
void synchronize();
}  // namespace dev

}  // namespace attn::gpu
