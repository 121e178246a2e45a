#include "ui/render/view_transform.h"

#include <algorithm>
#include <cmath>

#include "engine/tile_source.h"

namespace attn::render {

void ViewTransform::show(double k0, double q0, double k1, double q1) {
    const double w = std::max(k1 - k0, 1e-3), h = std::max(q1 - q0, 1e-3);
    tokens_per_pixel = std::max(w / width, h / height);
    origin_key = (k0 + k1) / 2 - tokens_per_pixel * width / 2;
    origin_query = (q0 + q1) / 2 - tokens_per_pixel * height / 2;
}

void ViewTransform::zoom_at(double px, double py, double factor) {
    const double key = key_at(px), query = query_at(py);
    tokens_per_pixel = std::clamp(tokens_per_pixel / factor, 1.0 / 256, 1e9);
    origin_key = key - px * tokens_per_pixel;
    origin_query = query - py * tokens_per_pixel;
}

void ViewTransform::pan_pixels(double dx, double dy) {
    origin_key -= dx * tokens_per_pixel;
    origin_query -= dy * tokens_per_pixel;
}

int top_level(int64_t positions) {
    int level = 0;
    while (CpuTileSource::tiles_across(positions, level) > 1) ++level;
    return level;
}

int lod_level(double tokens_per_pixel, int top) {
    // A cell at level L spans 2^L tokens = 2^L / tokens_per_pixel pixels; keep that ≤ 1.
    if (!(tokens_per_pixel >= 1)) return 0;
    const int level = static_cast<int>(std::floor(std::log2(tokens_per_pixel) + 1e-9));
    return std::clamp(level, 0, top);
}

std::vector<TileCoord> visible_tiles(const ViewTransform& view, int64_t positions, int level) {
    std::vector<TileCoord> out;
    const double span = static_cast<double>(int64_t(Tile::kEdge) << level);
    const int64_t across = CpuTileSource::tiles_across(positions, level);
    auto first = [&](double t) { return std::clamp<int64_t>(static_cast<int64_t>(std::floor(t / span)), 0, across); };
    auto last = [&](double t) { return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(t / span)), 0, across); };
    const int64_t tx0 = first(view.key_at(0)), tx1 = last(view.key_at(view.width));
    const int64_t ty0 = first(view.query_at(0)), ty1 = last(view.query_at(view.height));
    const double cx = view.key_at(view.width / 2.0) / span - 0.5, cy = view.query_at(view.height / 2.0) / span - 0.5;
    for (int64_t ty = ty0; ty < ty1; ++ty)
        for (int64_t tx = tx0; tx < std::min(tx1, ty + 1); ++tx) out.push_back({level, tx, ty});
    std::sort(out.begin(), out.end(), [&](const TileCoord& a, const TileCoord& b) {
        const double da = std::hypot(a.tx - cx, a.ty - cy), db = std::hypot(b.tx - cx, b.ty - cy);
        return da != db ? da < db : (a.ty != b.ty ? a.ty < b.ty : a.tx < b.tx);
    });
    return out;
}

}  // namespace attn::render
