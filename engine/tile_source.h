#pragma once
// Exact attention on demand from a CaptureStore (DESIGN.md §2, TileSource, cpu):
//   P[l, h, i, j] = exp(scale · q_i · k_j − LSE_i) for visible (i, j), else 0.
#include <cstdint>
#include <vector>

#include "engine/capture_store.h"

namespace attn {

// A cell aggregates 2^level keys × 2^row_level() queries. The map asks for square cells from
// query 0; the waterfall asks for the decode steps' rows only (first_query = the prompt length),
// with fewer queries per cell than keys (a few hundred steps against tens of thousands of keys).
struct TileRequest {
    int layer = 0, head = 0;
    int level = 0;    // each cell spans 2^level keys (and 2^level queries unless row_level_delta says otherwise)
    int64_t tx = 0;   // tile column (keys)
    int64_t ty = 0;   // tile row (queries from first_query)
    int row_level_delta = 0;  // row level − level
    int64_t first_query = 0;  // the query of the tile grid's row 0

    int row_level() const { return level + row_level_delta; }
    bool square() const { return row_level_delta == 0 && first_query == 0; }
};

struct Tile {
    static constexpr int kEdge = 256;
    TileRequest request;
    std::vector<float> sum;  // [row (query) * kEdge + col (key)], attention mass of the block
    std::vector<float> max;  // peak probability in the block
    int valid_rows = 0, valid_cols = 0;  // cells that cover at least one position
};

class CpuTileSource {
public:
    // threads = 0: all hardware threads.
    explicit CpuTileSource(const CaptureStore& store, int threads = 0);

    // Exact probabilities of query i over keys 0..i (zeros where masked by a sliding window).
    std::vector<float> row(int layer, int head, int64_t query) const;
    // inline_work: compute on the calling thread only (for callers that already run many tiles in
    // parallel, like the tile cache's producers, and want the work at their thread's priority).
    Tile tile(const TileRequest& request, bool inline_work = false) const;
    // Σ P over queries [q0, q1) × keys [k0, k1) (visible pairs only).
    double mass(int layer, int head, int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;

    // Tiles at this level and above are aggregated from the pooled overview (exact sums and maxes
    // of the same P, since the 128-token blocks nest inside the cells).
    static constexpr int kFirstOverviewLevel = 7;
    static int64_t tiles_across(int64_t positions, int level);
    // Whether tile() reads this request from the pooled overview (given a complete one): its cells
    // must hold whole 128-token blocks on both axes.
    static bool overview_serves(const TileRequest& request);

private:
    void scores_block(int layer, int head, int64_t q0, int64_t nq, int64_t k0, int64_t nk, float* out) const;
    Tile tile_from_overview(const TileRequest& request, bool inline_work) const;
    Tile tile_exact(const TileRequest& request, bool inline_work) const;

    const CaptureStore& store_;
    int threads_;
};

// Cells of tile `tile_index` (at 2^level positions per cell) that cover at least one of `count`
// positions: 256 except in the last tile.
int cells_covering(int64_t count, int level, int64_t tile_index);

// Recomputes the pooled overview of every (layer, head) from Q, K and LSE (for sessions
// recovered from a file cut short before its footer, or after CaptureStore::truncate).
void rebuild_overview(CaptureStore& store, int threads = 0);
// Adds the overview of query rows [q_begin, q_end) of every (layer, head), computed from Q, K, LSE.
void accumulate_overview_rows(CaptureStore& store, int64_t q_begin, int64_t q_end);

}  // namespace attn
