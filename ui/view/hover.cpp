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

HoverInfo hover_at(const Session& session, const CpuTileSource& source, const render::ViewTransform& view, int layer,
                   int head, double px, double py) {
    HoverInfo info;
    if (!session.capture) return info;
    const int64_t n = session.capture->positions();
    info.level = render::lod_level(view.tokens_per_pixel, render::top_level(n));
    // The token under the pixel's centre.
    const double key = std::floor(view.key_at(px + 0.5)), query = std::floor(view.query_at(py + 0.5));
    if (key < 0 || query < 0 || key >= static_cast<double>(n) || query >= static_cast<double>(n)) return info;
    info.key = static_cast<int64_t>(key);
    info.query = static_cast<int64_t>(query);
    info.query_token = token_text(session, info.query);
    info.key_token = token_text(session, info.key);
    if (info.key > info.query) return info;  // causal upper triangle: empty
    info.inside = true;
    const std::vector<float> row = source.row(layer, head, info.query);
    info.probability = row[static_cast<size_t>(info.key)];
    info.rank = rank_in_row(row, info.probability);

    const int64_t cell = int64_t(1) << info.level;
    if (info.level >= CpuTileSource::kFirstOverviewLevel) {
        // The same overview-backed tile the renderer shows.
        const int64_t span = int64_t(Tile::kEdge) << info.level;
        const Tile tile = source.tile({layer, head, info.level, info.key / span, info.query / span});
        const size_t index = static_cast<size_t>(((info.query % span) >> info.level) * Tile::kEdge +
                                                 ((info.key % span) >> info.level));
        info.cell_sum = tile.sum[index];
        info.cell_max = tile.max[index];
        return info;
    }
    // The 2^level × 2^level block of exact probabilities (at most 64 rows).
    const int64_t q0 = info.query / cell * cell, k0 = info.key / cell * cell;
    const int64_t q1 = std::min(q0 + cell, n), k1 = std::min(k0 + cell, n);
    double sum = 0;
    float peak = 0;
    for (int64_t q = q0; q < q1; ++q) {
        if (q < k0) continue;  // the whole row is above the diagonal within this block
        const std::vector<float> r = q == info.query ? row : source.row(layer, head, q);
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
