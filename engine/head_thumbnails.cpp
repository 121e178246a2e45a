#include "engine/head_thumbnails.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/attention_metrics.h"
#include "engine/error.h"

namespace attn {

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Pools an n × n lower-triangular matrix given by value(q, k) into at most cells × cells maxima.
template <typename Value>
HeadThumbnail pool_triangle(int64_t n, int cells, Value value) {
    HeadThumbnail t;
    t.rows = t.cols = static_cast<int>(std::min<int64_t>(cells, n));
    t.max.assign(size_t(t.rows) * t.cols, kNaN);
    for (int64_t q = 0; q < n; ++q) {
        const int r = static_cast<int>(q * t.rows / n);
        for (int64_t k = 0; k <= q; ++k) {
            const int c = static_cast<int>(k * t.cols / n);
            float& cell = t.max[size_t(r) * t.cols + c];
            const float v = value(q, k);
            if (std::isnan(cell) || v > cell) cell = v;
        }
    }
    return t;
}

}  // namespace

std::vector<HeadThumbnail> matrix_thumbnails(const CpuTileSource& source, const CaptureStore& store, int64_t positions,
                                             int cells, int threads) {
    if (cells < 1) fail("a thumbnail needs at least one cell");
    positions = std::min(positions, store.positions());
    const CaptureShape& shape = store.shape();
    std::vector<HeadThumbnail> out(size_t(shape.n_layer) * shape.n_head);
    if (positions <= 0) return out;
    const bool exact = positions <= kExactThumbnailPositions || store.overview_blocks() == 0;
    if (exact && positions > 4 * kExactThumbnailPositions)
        fail("the session has no pooled overview to make thumbnails from");
    const int64_t blocks = (positions + CaptureStore::kOverviewBlock - 1) / CaptureStore::kOverviewBlock;
    for_each_parallel(static_cast<int64_t>(out.size()), threads, [&](int64_t i) {
        const int layer = static_cast<int>(i / shape.n_head), head = static_cast<int>(i % shape.n_head);
        if (exact) {
            std::vector<std::vector<float>> rows(static_cast<size_t>(positions));
            for (int64_t q = 0; q < positions; ++q) rows[q] = source.row(layer, head, q);
            out[i] = pool_triangle(positions, cells, [&](int64_t q, int64_t k) { return rows[q][k]; });
        } else {
            const CaptureStore::OverviewReader reader = store.overview_reader(layer, head);
            const int64_t covered = std::min(blocks, store.overview_blocks());
            out[i] = pool_triangle(covered, cells, [&](int64_t qb, int64_t kb) { return reader.max(qb, kb); });
        }
    });
    return out;
}

std::vector<HeadThumbnail> row_thumbnails(const CpuTileSource& source, const CaptureStore& store, int64_t query,
                                          int cells, int threads) {
    if (cells < 1) fail("a thumbnail needs at least one cell");
    if (query < 0 || query >= store.positions()) fail("query ", query, " is not captured (", store.positions(), " positions)");
    const CaptureShape& shape = store.shape();
    std::vector<HeadThumbnail> out(size_t(shape.n_layer) * shape.n_head);
    const int64_t keys = query + 1;
    for_each_parallel(static_cast<int64_t>(out.size()), threads, [&](int64_t i) {
        const std::vector<float> row = source.row(static_cast<int>(i / shape.n_head), static_cast<int>(i % shape.n_head), query);
        HeadThumbnail& t = out[i];
        t.rows = 1;
        t.cols = static_cast<int>(std::min<int64_t>(cells, keys));
        t.max.assign(size_t(t.cols), kNaN);
        for (int64_t k = 0; k < keys; ++k) {
            float& cell = t.max[size_t(k * t.cols / keys)];
            if (std::isnan(cell) || row[k] > cell) cell = row[k];
        }
    });
    return out;
}

}  // namespace attn
