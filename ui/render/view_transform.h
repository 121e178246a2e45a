#pragma once
// Which part of the (row × key) matrix is on screen, and the level-of-detail rule.
// Token space: x = key position, y = row. The map's rows are the queries themselves (row r is
// query r; queries grow downwards, so the causal lower triangle is the bottom-left half) and its
// cells are square on screen. The waterfall's rows are the decode steps (row r is query
// first_query + r), and each axis has its own scale: a few hundred steps fill the height while
// tens of thousands of keys fill the width.
#include <cstdint>
#include <vector>

namespace attn::render {

// The part of the attention matrix a view shows: keys [0, keys) × rows [0, rows), row r being
// query first_query + r.
struct MatrixExtent {
    int64_t keys = 0;
    int64_t rows = 0;
    int64_t first_query = 0;

    // The whole causal matrix of `positions` tokens (the map).
    static MatrixExtent square(int64_t positions) { return {positions, positions, 0}; }
    int64_t query_of_row(int64_t row) const { return first_query + row; }
    int64_t row_of_query(int64_t query) const { return query - first_query; }
    bool operator==(const MatrixExtent&) const = default;
};

struct ViewTransform {
    double origin_key = 0;      // key coordinate at the left edge of pixel column 0
    double origin_row = 0;      // row coordinate at the top edge of pixel row 0
    double keys_per_pixel = 1;  // > 0
    double rows_per_pixel = 1;  // > 0; equal to keys_per_pixel while cells are square
    int width = 1, height = 1;  // viewport, pixels

    double key_at(double px) const { return origin_key + px * keys_per_pixel; }
    double row_at(double py) const { return origin_row + py * rows_per_pixel; }
    double pixel_x(double key) const { return (key - origin_key) / keys_per_pixel; }
    double pixel_y(double row) const { return (row - origin_row) / rows_per_pixel; }

    // Shows keys [k0, k1) × rows [r0, r1) as large as fits with square cells, centred.
    void show(double k0, double r0, double k1, double r1);
    // Shows keys [k0, k1) × rows [r0, r1) filling the viewport, each axis scaled on its own.
    void fill(double k0, double r0, double k1, double r1);
    void fit(int64_t positions) { show(0, 0, static_cast<double>(positions), static_cast<double>(positions)); }
    // The whole extent: with square cells (the map), or filling the viewport (the waterfall).
    void fit(const MatrixExtent& extent, bool square_cells);
    // factor > 1 zooms in, keeping the token under pixel (px, py) in place.
    void zoom_at(double px, double py, double factor) { zoom_at(px, py, factor, factor); }
    // Each axis by its own factor (1 leaves that axis alone).
    void zoom_at(double px, double py, double key_factor, double row_factor);
    void pan_pixels(double dx, double dy);  // content moves with the drag
    bool operator==(const ViewTransform&) const = default;
};

// Coarsest level whose single tile covers every position.
int top_level(int64_t positions);
// The level drawn: the coarsest whose cells are no larger than one pixel (level 0 when zoomed
// in past one token per pixel), clamped to [0, top].
int lod_level(double tokens_per_pixel, int top);

// The levels drawn, one per axis: a cell spans 2^key keys and 2^row rows, each at most one pixel
// on its own axis (the map's square view gives equal levels).
struct CellLevels {
    int key = 0, row = 0;
    int row_level_delta() const { return row - key; }
    bool operator==(const CellLevels&) const = default;
};
CellLevels lod_levels(const ViewTransform& view, const MatrixExtent& extent);
// How many levels up from `levels` the tile covering the whole extent is (both axes go up together).
int generations_to_top(const CellLevels& levels, const MatrixExtent& extent);

struct TileCoord {
    int level = 0;  // the key level; the row level is the frame's
    int64_t tx = 0, ty = 0;
    bool operator==(const TileCoord&) const = default;
};

// Tiles at `levels` that intersect the view and the causal part of the extent: tiles whose first
// key comes after their last query (entirely above the diagonal) are left out — they are empty.
// Ordered nearest the view centre first.
std::vector<TileCoord> visible_tiles(const ViewTransform& view, const MatrixExtent& extent, const CellLevels& levels);
// The map: the whole matrix of `positions` tokens at one level on both axes.
std::vector<TileCoord> visible_tiles(const ViewTransform& view, int64_t positions, int level);

}  // namespace attn::render
