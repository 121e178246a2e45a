#pragma once
// Which part of the (query × key) matrix is on screen, and the level-of-detail rule.
// Token space: x = key position, y = query position (queries grow downwards, so the causal lower
// triangle is the bottom-left half); cells are square on screen.
#include <cstdint>
#include <vector>

namespace attn::render {

struct ViewTransform {
    double origin_key = 0;        // token coordinate at the left edge of pixel column 0
    double origin_query = 0;      // token coordinate at the top edge of pixel row 0
    double tokens_per_pixel = 1;  // > 0
    int width = 1, height = 1;    // viewport, pixels

    double key_at(double px) const { return origin_key + px * tokens_per_pixel; }
    double query_at(double py) const { return origin_query + py * tokens_per_pixel; }
    double pixel_x(double key) const { return (key - origin_key) / tokens_per_pixel; }
    double pixel_y(double query) const { return (query - origin_query) / tokens_per_pixel; }

    // Shows tokens [k0, k1) × [q0, q1) as large as fits, centred.
    void show(double k0, double q0, double k1, double q1);
    void fit(int64_t positions) { show(0, 0, static_cast<double>(positions), static_cast<double>(positions)); }
    // factor > 1 zooms in, keeping the token under pixel (px, py) in place.
    void zoom_at(double px, double py, double factor);
    void pan_pixels(double dx, double dy);  // content moves with the drag
    bool operator==(const ViewTransform&) const = default;
};

// Coarsest level whose single tile covers every position.
int top_level(int64_t positions);
// The level drawn: the coarsest whose cells are no larger than one pixel (level 0 when zoomed
// in past one token per pixel), clamped to [0, top].
int lod_level(double tokens_per_pixel, int top);

struct TileCoord {
    int level = 0;
    int64_t tx = 0, ty = 0;
    bool operator==(const TileCoord&) const = default;
};

// Tiles of `level` that intersect the view and the causal lower triangle (tiles entirely above the
// diagonal — tx > ty — are left out: they are empty). Ordered nearest the view centre first.
std::vector<TileCoord> visible_tiles(const ViewTransform& view, int64_t positions, int level);

}  // namespace attn::render
