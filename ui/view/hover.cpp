#include "ui/view/hover.h"

#include <algorithm>
#include <cmath>

namespace attn::view {

std::string token_text(const Session& session, int64_t position) {
    if (position < 0 || position >= static_cast<int64_t>(session.tokens.size())) return {};
    const Token& t = session.tokens[static_cast<size_t>(position)];
    if (t.end > session.text.size() || t.begin > t.end) return {};
    return session.text.substr(t.begin, t.end - t.begin);
}

int64_t rank_in_row(const std::vector<float>& row, float p) {
    return 1 + std::count_if(row.begin(), row.end(), [&](float v) { return v > p; });
}

int64_t step_of_query(const Session& session, int64_t query) {
    const int64_t step = query - session.prompt_tokens;
    return query >= 0 && step >= 0 && step < static_cast<int64_t>(session.steps.size()) ? step : -1;
}

HoverInfo hover_at(const Session& session, const CpuTileSource& source, const render::ViewTransform& view, int layer,
                   int head, double px, double py) {
    if (!session.capture) return {};
    return hover_at(session, source, view, render::MatrixExtent::square(session.capture->positions()), layer, head, px, py);
}

HoverInfo hover_at(const Session& session, const CpuTileSource& source, const render::ViewTransform& view,
                   const render::MatrixExtent& extent, int layer, int head, double px, double py) {
    HoverInfo info;
    if (!session.capture) return info;
    const render::CellLevels levels = render::lod_levels(view, extent);
    info.level = levels.key;
    info.row_level = levels.row;
    // The token under the pixel's centre.
    const double key = std::floor(view.key_at(px + 0.5)), row = std::floor(view.row_at(py + 0.5));
    if (key < 0 || row < 0 || key >= static_cast<double>(extent.keys) || row >= static_cast<double>(extent.rows)) return info;
    info.key = static_cast<int64_t>(key);
    info.query = extent.query_of_row(static_cast<int64_t>(row));
    info.step = step_of_query(session, info.query);
    info.query_token = token_text(session, info.query);
    info.key_token = token_text(session, info.key);
    if (info.key > info.query) return info;  // causal upper triangle: empty
    info.inside = true;
    const std::vector<float> probabilities = source.row(layer, head, info.query);
    info.probability = probabilities[static_cast<size_t>(info.key)];
    info.rank = rank_in_row(probabilities, info.probability);

    const int64_t key_cell = int64_t(1) << levels.key, row_cell = int64_t(1) << levels.row;
    const int64_t cell_row = static_cast<int64_t>(row);
    if (levels.row >= CpuTileSource::kFirstOverviewLevel) {
        // The same tile the renderer shows (overview-backed where the overview serves it).
        const int64_t key_span = int64_t(Tile::kEdge) << levels.key, row_span = int64_t(Tile::kEdge) << levels.row;
        const Tile tile = source.tile({layer, head, levels.key, info.key / key_span, cell_row / row_span,
                                       levels.row_level_delta(), extent.first_query});
        const size_t index = static_cast<size_t>(((cell_row % row_span) >> levels.row) * Tile::kEdge +
                                                 ((info.key % key_span) >> levels.key));
        info.cell_sum = tile.sum[index];
        info.cell_max = tile.max[index];
        return info;
    }
    // The 2^row_level × 2^level block of exact probabilities (at most 64 rows).
    const int64_t q0 = extent.query_of_row(cell_row / row_cell * row_cell), k0 = info.key / key_cell * key_cell;
    const int64_t q1 = std::min(q0 + row_cell, extent.query_of_row(extent.rows)), k1 = std::min(k0 + key_cell, extent.keys);
    double sum = 0;
    float peak = 0;
    for (int64_t q = q0; q < q1; ++q) {
        if (q < k0) continue;  // the whole row is above the diagonal within this block
        const std::vector<float> r = q == info.query ? probabilities : source.row(layer, head, q);
        for (int64_t k = k0; k < std::min(k1, q + 1); ++k) {
            sum += r[static_cast<size_t>(k)];
            peak = std::max(peak, r[static_cast<size_t>(k)]);
        }
    }
    info.cell_sum = static_cast<float>(sum);
    info.cell_max = peak;
    return info;
}

}  // namespace attn::view
