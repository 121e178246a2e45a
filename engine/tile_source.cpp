#include "engine/tile_source.h"

#include <cblas.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <functional>
#include <mutex>

#include "engine/error.h"
#include "engine/parallel.h"

namespace attn {

namespace {

constexpr int64_t kSlab = 1024;  // queries or keys per GEMM block (bounds the scores buffer to 4 MiB)

// Visits P over queries [q0, q1) × keys [k0, k1) in blocks: visitor(i0, rows, j0, cols, p) with p
// row-major [rows × cols] holding exact probabilities (0 where masked). The scores GEMM runs on the
// calling thread (OpenBLAS threads it); the exponentials are spread over the pool by row.
// Runs fn(i) for i in [0, n): on the shared pool, or inline.
void for_range(int64_t n, bool inline_work, const std::function<void(int64_t)>& fn) {
    if (inline_work) {
        for (int64_t i = 0; i < n; ++i) fn(i);
    } else {
        ThreadPool::current().parallel_for(n, fn);
    }
}

template <typename Visitor>
void for_each_probability_block(const CaptureStore& store, int layer, int head, int64_t q0, int64_t q1, int64_t k0,
                                int64_t k1, Visitor&& visitor, bool inline_work = false) {
    const CaptureShape& shape = store.shape();
    const int hd = shape.head_dim;
    const int kvh = shape.kv_head_of(head);
    const int q_stride = shape.n_head * hd, k_stride = shape.n_kv_head * hd;
    // Sized to the request, uninitialised (every element used is written by the GEMM): a single
    // row — what diffs, watchpoints and hovers ask for — must not pay for a 4 MiB zeroed slab.
    const int64_t most_rows = std::min(q1 - q0, kSlab), most_cols = std::min(std::max<int64_t>(k1 - k0, 0), kSlab);
    if (most_rows <= 0 || most_cols <= 0) return;
    const std::unique_ptr<float[]> block(new float[static_cast<size_t>(most_rows * most_cols)]);
    for (int64_t i0 = q0; i0 < q1;) {
        const int64_t rows = std::min({q1 - i0, kSlab, store.contiguous_from(i0)});
        // Keys after the last query of the slab are all masked: skip them.
        const int64_t key_end = std::min(k1, i0 + rows);
        for (int64_t j0 = k0; j0 < key_end;) {
            const int64_t cols = std::min({key_end - j0, kSlab, store.contiguous_from(j0)});
            if (shape.sliding_window > 0 && j0 + cols - 1 < i0 - shape.sliding_window + 1) {
                j0 += cols;  // the whole key block is outside every query's window
                continue;
            }
            // (A 1-row GEMM rather than sgemv on purpose: OpenBLAS threads sgemv at these sizes, and
            // callers already spread rows over the pool: diff_steps at 3000 tokens took 85–106 ms that way, 16–18 ms so.)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(cols), hd,
                        shape.scale, store.q(layer, i0) + int64_t(head) * hd, q_stride,
                        store.k(layer, j0) + int64_t(kvh) * hd, k_stride, 0.0f, block.get(), static_cast<int>(cols));
            for_range((rows + 63) / 64, inline_work, [&](int64_t group) {
                const int64_t r_end = std::min(rows, (group + 1) * 64);
                for (int64_t r = group * 64; r < r_end; ++r) {
                    const int64_t i = i0 + r;
                    const float lse = store.lse(layer, i, head);
                    float* p = block.get() + r * cols;
                    for (int64_t c = 0; c < cols; ++c)
                        p[c] = shape.visible(i, j0 + c) ? std::exp(p[c] - lse) : 0.0f;
                }
            });
            visitor(i0, rows, j0, cols, static_cast<const float*>(block.get()));
            j0 += cols;
        }
        i0 += rows;
    }
}

void check_request(const CaptureStore& store, int layer, int head) {
    const CaptureShape& s = store.shape();
    if (layer < 0 || layer >= s.n_layer) fail("layer ", layer, " is out of range (0..", s.n_layer - 1, ")");
    if (head < 0 || head >= s.n_head) fail("head ", head, " is out of range (0..", s.n_head - 1, ")");
}

}  // namespace

CpuTileSource::CpuTileSource(const CaptureStore& store, int threads) : store_(store), threads_(threads) {}

int64_t CpuTileSource::tiles_across(int64_t positions, int level) {
    const int64_t span = int64_t(Tile::kEdge) << level;
    return (positions + span - 1) / span;
}

std::vector<float> CpuTileSource::row(int layer, int head, int64_t query) const {
    check_request(store_, layer, head);
    if (query < 0 || query >= store_.positions())
        fail("query ", query, " is out of range (0..", store_.positions() - 1, ")");
    std::vector<float> probs(static_cast<size_t>(query + 1), 0.0f);
    for_each_probability_block(store_, layer, head, query, query + 1, 0, query + 1,
                               [&](int64_t, int64_t, int64_t j0, int64_t cols, const float* p) {
                                   std::copy(p, p + cols, probs.begin() + j0);
                               });
    return probs;
}

double CpuTileSource::mass(int layer, int head, int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
    check_request(store_, layer, head);
    const int64_t n = store_.positions();
    q0 = std::clamp<int64_t>(q0, 0, n), q1 = std::clamp<int64_t>(q1, 0, n);
    k0 = std::clamp<int64_t>(k0, 0, n), k1 = std::clamp<int64_t>(k1, 0, n);
    double total = 0;
    for_each_probability_block(store_, layer, head, q0, q1, k0, k1,
                               [&](int64_t, int64_t rows, int64_t, int64_t cols, const float* p) {
                                   double block = 0;
                                   for (int64_t e = 0; e < rows * cols; ++e) block += p[e];
                                   total += block;
                               });
    return total;
}

int cells_covering(int64_t count, int level, int64_t tile_index) {
    const int64_t cell = int64_t(1) << level;
    const int64_t first = tile_index * Tile::kEdge * cell;
    return static_cast<int>(std::clamp<int64_t>((count - first + cell - 1) / cell, 0, Tile::kEdge));
}

bool CpuTileSource::overview_serves(const TileRequest& request) {
    return request.level >= kFirstOverviewLevel && request.row_level() >= kFirstOverviewLevel &&
           request.first_query % CaptureStore::kOverviewBlock == 0;
}

Tile CpuTileSource::tile(const TileRequest& request, bool inline_work) const {
    check_request(store_, request.layer, request.head);
    if (request.level < 0 || request.level > 40) fail("tile level ", request.level, " is out of range");
    if (request.row_level() < 0 || request.row_level() > 40)
        fail("tile row level ", request.row_level(), " is out of range");
    const int64_t positions = store_.positions();
    if (request.first_query < 0 || request.first_query >= positions)
        fail("tile rows start at query ", request.first_query, ", outside the ", positions, " captured positions");
    const int64_t across = tiles_across(positions, request.level);
    const int64_t down = tiles_across(positions - request.first_query, request.row_level());
    if (request.tx < 0 || request.ty < 0 || request.tx >= across || request.ty >= down)
        fail("tile (", request.tx, ", ", request.ty, ") does not exist at level ", request.level,
             request.square() ? "" : cat(", row level ", request.row_level(), " from query ", request.first_query), " (",
             across, "×", down, " tiles)");
    // The overview only helps once its blocks nest in the cells and it covers every row.
    return overview_serves(request) && store_.overview_complete() ? tile_from_overview(request, inline_work)
                                                                  : tile_exact(request, inline_work);
}

namespace {
Tile empty_tile(const TileRequest& request, int64_t positions) {
    Tile tile;
    tile.request = request;
    tile.sum.assign(Tile::kEdge * Tile::kEdge, 0.0f);
    tile.max.assign(Tile::kEdge * Tile::kEdge, 0.0f);
    tile.valid_rows = cells_covering(positions - request.first_query, request.row_level(), request.ty);
    tile.valid_cols = cells_covering(positions, request.level, request.tx);
    return tile;
}
}  // namespace

Tile CpuTileSource::tile_exact(const TileRequest& request, bool inline_work) const {
    const int64_t n = store_.positions();
    Tile tile = empty_tile(request, n);
    const int key_level = request.level, row_level = request.row_level();
    const int64_t q0 = request.first_query + request.ty * (int64_t(Tile::kEdge) << row_level);
    const int64_t q1 = std::min(n, q0 + (int64_t(Tile::kEdge) << row_level));
    const int64_t k0 = request.tx * (int64_t(Tile::kEdge) << key_level);
    const int64_t k1 = std::min(n, k0 + (int64_t(Tile::kEdge) << key_level));
    if (k0 >= q1) return tile;  // entirely above the diagonal
    for_each_probability_block(
        store_, request.layer, request.head, q0, q1, k0, k1,
        [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* p) {
            // Rows are aggregated in parallel by groups of whole cell rows, so no two tasks share a cell.
            const int64_t row_cell = int64_t(1) << row_level;
            const int64_t first_cell_row = (i0 - q0) >> row_level, last_cell_row = (i0 + rows - 1 - q0) >> row_level;
            for_range(last_cell_row - first_cell_row + 1, inline_work, [&](int64_t g) {
                const int64_t cell_row = first_cell_row + g;
                const int64_t r_begin = std::max(i0, q0 + cell_row * row_cell) - i0;
                const int64_t r_end = std::min(i0 + rows, q0 + (cell_row + 1) * row_cell) - i0;
                float* sums = tile.sum.data() + cell_row * Tile::kEdge;
                float* maxes = tile.max.data() + cell_row * Tile::kEdge;
                for (int64_t r = r_begin; r < r_end; ++r) {
                    const float* pr = p + r * cols;
                    for (int64_t c = 0; c < cols; ++c) {
                        const int64_t cell_col = (j0 + c - k0) >> key_level;
                        sums[cell_col] += pr[c];
                        maxes[cell_col] = std::max(maxes[cell_col], pr[c]);
                    }
                }
            });
        },
        inline_work);
    return tile;
}

Tile CpuTileSource::tile_from_overview(const TileRequest& request, bool inline_work) const {
    const int64_t n = store_.positions();
    Tile tile = empty_tile(request, n);
    const int64_t block = CaptureStore::kOverviewBlock;
    const int64_t key_blocks_per_cell = (int64_t(1) << request.level) / block;
    const int64_t row_blocks_per_cell = (int64_t(1) << request.row_level()) / block;
    const int64_t first_row_block = request.first_query / block;
    const int64_t total_blocks = (n + block - 1) / block;
    for_range(tile.valid_rows, inline_work, [&](int64_t r) {
        const CaptureStore::OverviewReader overview = store_.overview_reader(request.layer, request.head);
        const int64_t qb0 = first_row_block + (request.ty * Tile::kEdge + r) * row_blocks_per_cell;
        const int64_t qb1 = std::min(total_blocks, qb0 + row_blocks_per_cell);
        for (int64_t c = 0; c < tile.valid_cols; ++c) {
            const int64_t kb0 = (request.tx * Tile::kEdge + c) * key_blocks_per_cell;
            const int64_t kb1 = std::min(total_blocks, kb0 + key_blocks_per_cell);
            float sum = 0.f, peak = 0.f;
            for (int64_t qb = qb0; qb < qb1; ++qb)
                for (int64_t kb = kb0; kb < std::min(kb1, qb + 1); ++kb) {
                    sum += overview.sum(qb, kb);
                    peak = std::max(peak, overview.max(qb, kb));
                }
            tile.sum[r * Tile::kEdge + c] = sum;
            tile.max[r * Tile::kEdge + c] = peak;
        }
    });
    return tile;
}

void rebuild_overview(CaptureStore& store, int) {
    store.clear_overview();
    accumulate_overview_rows(store, 0, store.positions());
}

void accumulate_overview_rows(CaptureStore& store, int64_t q_begin, int64_t q_end) {
    const CaptureShape& shape = store.shape();
    q_end = std::min(q_end, store.positions());
    if (q_begin >= q_end) return;
    store.prepare_overview(q_end);
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head)
            for (int64_t q0 = q_begin; q0 < q_end; q0 += kSlab) {
                const int64_t q1 = std::min(q_end, q0 + kSlab);
                std::vector<float> rows(static_cast<size_t>((q1 - q0) * q1), 0.0f);
                for_each_probability_block(store, layer, head, q0, q1, 0, q1,
                                           [&](int64_t i0, int64_t nr, int64_t j0, int64_t cols, const float* p) {
                                               for (int64_t r = 0; r < nr; ++r)
                                                   std::copy(p + r * cols, p + (r + 1) * cols,
                                                             rows.begin() + (i0 - q0 + r) * q1 + j0);
                                           });
                for (int64_t i = q0; i < q1; ++i)
                    store.accumulate_overview(layer, head, i,
                                              std::span<const float>(rows.data() + (i - q0) * q1, i + 1));
            }
}

}  // namespace attn
