#include "ui/render/view_transform.h"

#include <algorithm>
#include <cmath>

#include "engine/tile_source.h"

namespace attn::render {

namespace {
constexpr double kFinestScale = 1.0 / 256, kCoarsestScale = 1e9;  // tokens per pixel
}  // namespace

void ViewTransform::show(double k0, double r0, double k1, double r1) {
    const double w = std::max(k1 - k0, 1e-3), h = std::max(r1 - r0, 1e-3);
    keys_per_pixel = rows_per_pixel = std::max(w / width, h / height);
    origin_key = (k0 + k1) / 2 - keys_per_pixel * width / 2;
    origin_row = (r0 + r1) / 2 - rows_per_pixel * height / 2;
}

void ViewTransform::fill(double k0, double r0, double k1, double r1) {
    keys_per_pixel = std::clamp(std::max(k1 - k0, 1e-3) / width, kFinestScale, kCoarsestScale);
    rows_per_pixel = std::clamp(std::max(r1 - r0, 1e-3) / height, kFinestScale, kCoarsestScale);
    origin_key = (k0 + k1) / 2 - keys_per_pixel * width / 2;
    origin_row = (r0 + r1) / 2 - rows_per_pixel * height / 2;
}

void ViewTransform::fit(const MatrixExtent& extent, bool square_cells) {
    const double keys = static_cast<double>(extent.keys), rows = static_cast<double>(std::max<int64_t>(extent.rows, 1));
    if (square_cells) show(0, 0, keys, rows);
    else fill(0, 0, keys, rows);
}

void ViewTransform::zoom_at(double px, double py, double key_factor, double row_factor) {
    const double key = key_at(px), row = row_at(py);
    keys_per_pixel = std::clamp(keys_per_pixel / key_factor, kFinestScale, kCoarsestScale);
    rows_per_pixel = std::clamp(rows_per_pixel / row_factor, kFinestScale, kCoarsestScale);
    origin_key = key - px * keys_per_pixel;
    origin_row = row - py * rows_per_pixel;
}

void ViewTransform::pan_pixels(double dx, double dy) {
    origin_key -= dx * keys_per_pixel;
    origin_row -= dy * rows_per_pixel;
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

CellLevels lod_levels(const ViewTransform& view, const MatrixExtent& extent) {
    return {lod_level(view.keys_per_pixel, top_level(extent.keys)), lod_level(view.rows_per_pixel, top_level(extent.rows))};
}

int generations_to_top(const CellLevels& levels, const MatrixExtent& extent) {
    return std::max({0, top_level(extent.keys) - levels.key, top_level(extent.rows) - levels.row});
}

std::vector<TileCoord> visible_tiles(const ViewTransform& view, const MatrixExtent& extent, const CellLevels& levels) {
    std::vector<TileCoord> out;
    const double key_span = static_cast<double>(int64_t(Tile::kEdge) << levels.key);
    const int64_t row_span = int64_t(Tile::kEdge) << levels.row;
    const int64_t across = CpuTileSource::tiles_across(extent.keys, levels.key);
    const int64_t down = CpuTileSource::tiles_across(extent.rows, levels.row);
    auto first = [](double t, double span, int64_t count) {
        return std::clamp<int64_t>(static_cast<int64_t>(std::floor(t / span)), 0, count);
    };
    auto last = [](double t, double span, int64_t count) {
        return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(t / span)), 0, count);
    };
    const int64_t tx0 = first(view.key_at(0), key_span, across), tx1 = last(view.key_at(view.width), key_span, across);
    const int64_t ty0 = first(view.row_at(0), static_cast<double>(row_span), down);
    const int64_t ty1 = last(view.row_at(view.height), static_cast<double>(row_span), down);
    const double cx = view.key_at(view.width / 2.0) / key_span - 0.5;
    const double cy = view.row_at(view.height / 2.0) / static_cast<double>(row_span) - 0.5;
    for (int64_t ty = ty0; ty < ty1; ++ty) {
        // Keys after the tile's last query are masked for all its rows.
        const int64_t last_query = extent.query_of_row(std::min((ty + 1) * row_span, extent.rows) - 1);
        const int64_t causal_tiles = last_query / static_cast<int64_t>(key_span) + 1;
        for (int64_t tx = tx0; tx < std::min(tx1, causal_tiles); ++tx) out.push_back({levels.key, tx, ty});
    }
    std::sort(out.begin(), out.end(), [&](const TileCoord& a, const TileCoord& b) {
        const double da = std::hypot(a.tx - cx, a.ty - cy), db = std::hypot(b.tx - cx, b.ty - cy);
        return da != db ? da < db : (a.ty != b.ty ? a.ty < b.ty : a.tx < b.tx);
    });
    return out;
}

std::vector<TileCoord> visible_tiles(const ViewTransform& view, int64_t positions, int level) {
    return visible_tiles(view, MatrixExtent::square(positions), {level, level});
}

}  // namespace attn::render
