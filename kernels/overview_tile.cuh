#pragma once
// A coarse tile (level ≥ 7, cells of ≥ 128 tokens) aggregated from the pooled overview of one
// (layer, head): the 128×128-token blocks nest inside the cells, so the sums and maxes are those of
// the exact P (DESIGN.md §2). Cell (r, c) covers query blocks [qb0, qb0 + 2^level / 128) and key
// blocks likewise, lower triangle only; cells past valid_rows / valid_cols are 0.
// CPU twin: CpuTileSource::tile_from_overview (engine/tile_source.cpp) — same loop order in fp32,
// so the results are bit-identical.
#include <cstdint>

#include "kernels/flash_attention.cuh"

namespace attn::gpu {

// ov_sum / ov_max: device, packed lower triangle over total_blocks query blocks
// (index qb*(qb+1)/2 + kb). out_sum / out_max: device, 256 × 256 floats each.
void overview_tile(const float* ov_sum, const float* ov_max, int64_t total_blocks, int level, int64_t tx, int64_t ty,
                   int valid_rows, int valid_cols, float* out_sum, float* out_max, Stream stream = nullptr);

}  // namespace attn::gpu
