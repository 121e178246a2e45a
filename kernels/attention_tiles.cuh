#pragma once
// Exact attention on demand on the GPU (DESIGN.md §2, TileSource, cuda): the twin of
// CpuTileSource. From one layer's post-RoPE Q, K and LSE in device memory,
//   P[h, i, j] = exp(scale · q_i · k_j − LSE_i) for visible (i, j), else 0,
// aggregated into 256×256-cell tiles (sum and max over 2^level × 2^level blocks), rows and
// region masses. Plain C++ header (see flash_attention.cuh).
#include <cstddef>
#include <cstdint>

#include "kernels/flash_attention.cuh"

namespace attn::gpu {

struct TileInputs {
    const void* q = nullptr;    // [positions, n_head, head_dim] (q_stride elements per position)
    const void* k = nullptr;    // [positions, n_kv_head, head_dim] (k_stride elements per position)
    const float* lse = nullptr; // [positions, n_head] (lse_stride), natural log
    bool bf16 = false;          // element type of q and k: bf16, else fp32
    int64_t positions = 0;
    int n_head = 0, n_kv_head = 0, head_dim = 0;  // head_dim ≤ 256
    float scale = 0.f;
    int sliding_window = 0;
    int64_t q_stride = 0, k_stride = 0, lse_stride = 0;  // 0 = dense
};

constexpr int kTileEdge = 256;  // == attn::Tile::kEdge

// Fills sum and max (device, kTileEdge² floats each, [query cell row * 256 + key cell col]) with the
// exact tile (head, level, tx, ty); cells outside the matrix or above the diagonal are 0. Every
// level is computed exactly from Q and K (the overview shortcut for coarse levels is the caller's).
void attention_tile(const TileInputs& in, int head, int level, int64_t tx, int64_t ty, float* sum, float* max,
                    Stream stream = nullptr);
// probs (device, query + 1 floats) = P[head, query, 0..query].
void attention_row(const TileInputs& in, int head, int64_t query, float* probs, Stream stream = nullptr);
// Σ P over queries [q0, q1) × keys [k0, k1) (clamped to the matrix). Synchronises `stream`.
double attention_mass(const TileInputs& in, int head, int64_t q0, int64_t q1, int64_t k0, int64_t k1,
                      Stream stream = nullptr);

}  // namespace attn::gpu
