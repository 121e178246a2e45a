#include "kernels/attention_tiles.cuh"
#include "kernels/common.cuh"
#include "kernels/overview_tile.cuh"

namespace attn::gpu {

namespace {

constexpr int kOvBlock = 128;

__global__ void overview_tile_kernel(const float* ov_sum, const float* ov_max, int64_t total_blocks,
                                     int64_t blocks_per_cell, int64_t tx, int64_t ty, int valid_rows,
                                     int valid_cols, float* out_sum, float* out_max) {
    const int cell = blockIdx.x * blockDim.x + threadIdx.x;
    if (cell >= kTileEdge * kTileEdge) return;
    const int r = cell / kTileEdge, c = cell % kTileEdge;
    float sum = 0.f, peak = 0.f;
    if (r < valid_rows && c < valid_cols) {
        const int64_t qb0 = (ty * kTileEdge + r) * blocks_per_cell;
        const int64_t qb1 = min(total_blocks, qb0 + blocks_per_cell);
        const int64_t kb0 = (tx * kTileEdge + c) * blocks_per_cell;
        const int64_t kb1 = min(total_blocks, kb0 + blocks_per_cell);
        // Same order as the CPU twin (qb outer, kb inner, fp32 adds).
        for (int64_t qb = qb0; qb < qb1; ++qb)
            for (int64_t kb = kb0; kb < min(kb1, qb + 1); ++kb) {
                const int64_t index = qb * (qb + 1) / 2 + kb;
                sum += ov_sum[index];
                peak = fmaxf(peak, ov_max[index]);
            }
    }
    out_sum[cell] = sum;
    out_max[cell] = peak;
}

}  // namespace

void overview_tile(const float* ov_sum, const float* ov_max, int64_t total_blocks, int level, int64_t tx, int64_t ty,
                   int valid_rows, int valid_cols, float* out_sum, float* out_max, Stream stream) {
    if (level < 7 || level > 40) fail("overview_tile: level ", level, " (the overview serves levels ≥ 7)");
    if (!ov_sum || !ov_max || !out_sum || !out_max) fail("overview_tile: null pointer");
    const int64_t blocks_per_cell = (int64_t(1) << level) / kOvBlock;
    constexpr int kThreads = 256;
    overview_tile_kernel<<<kTileEdge * kTileEdge / kThreads, kThreads, 0, stream>>>(
        ov_sum, ov_max, total_blocks, blocks_per_cell, tx, ty, valid_rows, valid_cols, out_sum, out_max);
    CUDA_CHECK_LAUNCH();
}

}  // namespace attn::gpu
