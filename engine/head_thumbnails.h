#pragma once
// Thumbnails of every (layer, head) for the head grid (issue 6): a small picture of each head's
// attention, cheap enough for all 270 heads of a 50k-token session.
//
// - Matrix: the causal matrix pooled to at most `cells` × `cells` (max of P per cell). From the
//   pooled overview (128×128-token blocks) — exact maxima, no P recomputed — so a thumbnail has
//   ceil(positions / 128) cells per side when that is fewer than `cells`. Sessions of at most
//   kExactThumbnailPositions tokens have a single overview block; theirs are computed exactly.
// - Row: one query's row (the current step's) binned into at most `cells` key bins (max of P),
//   computed exactly from Q/K/LSE.
// Cells above the diagonal (never attended) are NaN.
#include <cstdint>
#include <vector>

#include "engine/tile_source.h"

namespace attn {

constexpr int64_t kExactThumbnailPositions = 256;

struct HeadThumbnail {
    int rows = 0, cols = 0;
    std::vector<float> max;  // [row * cols + col]; NaN where no visible pair falls in the cell
};

// [layer * n_head + head]; threads as for_each_parallel.
std::vector<HeadThumbnail> matrix_thumbnails(const CpuTileSource& source, const CaptureStore& store, int64_t positions,
                                             int cells, int threads = 0);
std::vector<HeadThumbnail> row_thumbnails(const CpuTileSource& source, const CaptureStore& store, int64_t query,
                                          int cells, int threads = 0);

}  // namespace attn
