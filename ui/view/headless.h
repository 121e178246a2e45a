#pragma once
// Headless attention view: renders a session offscreen (no window, no display) and drives it with
// a script of UI actions. This is how tests and benchmarks run the debugger.
//
// Script format: one action per line; '#' starts a comment; blank lines are ignored.
// Pixel coordinates are in the --size viewport, (0, 0) at the top left; tokens are positions.
//
//   fit                          show the whole matrix
//   show K0 Q0 K1 Q1             zoom to keys [K0, K1) × queries [Q0, Q1) (aspect kept, centred);
//                                in the waterfall Q0, Q1 are decode steps and each axis fills the view
//   zoom FACTOR [PX PY]          zoom in by FACTOR (< 1 zooms out) around a pixel (default: centre)
//   zoom_keys FACTOR [PX PY]     the waterfall: zoom the key axis only
//   zoom_rows FACTOR [PX PY]     the waterfall: zoom the step axis only
//   waterfall on|off             show the decode steps' rows (step × key, from the session's steps)
//                                instead of the whole matrix, fitted
//   pan DX DY                    drag the content by DX, DY pixels
//   layer L | head H             select the head shown
//   plane sum|max                attention mass or peak per cell
//   colormap viridis|magma|diverging
//   scale log|linear
//   range auto | lock | LOW HIGH (LOW/HIGH are log10 values under the log scale)
//   hover PX PY                  print what is under the pixel (JSON line: query, key, exact p, rank, cell)
//   wait N                       render N frames
//   wait_exact [SECONDS]         render until every visible tile is exact (default timeout 60 s)
//   screenshot PATH              write the current frame as a PNG
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/session.h"
#include "engine/tile_source.h"
#include "ui/render/attention_map_renderer.h"

namespace attn::view {

struct ScriptAction {
    std::string verb;
    std::vector<std::string> args;
    int line = 0;
};

// Throws attn::Error naming source:line for unknown verbs or wrong argument counts.
std::vector<ScriptAction> parse_script(const std::string& text, const std::string& source_name);
// Numeric argument `index` of an action (attn::Error naming the script line if it isn't a number).
double script_number(const ScriptAction& action, size_t index);
// Applies an action that changes what is shown (fit, show, zoom, zoom_keys, zoom_rows, pan, layer,
// head, plane, colormap, scale, range) — shared by the headless and the windowed runners. Returns
// false for the verbs the runner handles itself (hover, wait, wait_exact, screenshot, waterfall).
// square_cells: the map (one scale for both axes); otherwise the waterfall (one scale per axis).
bool apply_view_action(const ScriptAction& action, const render::MatrixExtent& extent, bool square_cells,
                       const CaptureShape& shape, render::ViewTransform& view, render::RenderSettings& settings);
// The map of `positions` tokens.
bool apply_view_action(const ScriptAction& action, int64_t positions, const CaptureShape& shape,
                       render::ViewTransform& view, render::RenderSettings& settings);

// The waterfall's part of the matrix: one row per decode step whose query row is captured (and
// has its token), over the keys those queries see.
render::MatrixExtent waterfall_extent(const Session& session);

struct HoverInfo {
    bool inside = false;       // on a cell of the lower triangle
    int64_t query = -1, key = -1;
    float probability = 0;     // exact, from CpuTileSource::row
    int64_t rank = 0;          // 1 = the largest probability in the query's row
    int level = 0;             // key level drawn: the cell aggregates 2^level keys
    int row_level = 0;         // row level drawn: … and 2^row_level queries (the map: equal to level)
    int64_t step = -1;         // the decode step whose row the query is (-1: a prompt row)
    float cell_sum = 0, cell_max = 0;
    std::string query_token, key_token;
};

struct HeadlessOptions {
    uint32_t width = 1280, height = 720;
    int layer = 0, head = 0;
    render::TileCacheOptions cache;
    render::RenderSettings settings;
    bool waterfall = false;  // start with the waterfall (decode step × key) instead of the map
};

class HeadlessView {
public:
    // context must outlive the view; the session's capture must too.
    HeadlessView(render::VulkanContext& context, const Session& session, const HeadlessOptions& options);
    ~HeadlessView();

    render::FrameStats frame();
    // Renders frames until every visible tile is exact or the timeout passes; returns the last stats.
    render::FrameStats wait_exact(double timeout_seconds = 60);
    void screenshot(const std::string& path);
    HoverInfo hover(double px, double py) const;
    // Switches between the map (the whole matrix) and the waterfall (the decode steps' rows), fitted.
    void set_waterfall(bool on);
    bool waterfall() const { return waterfall_; }
    const render::MatrixExtent& extent() const { return renderer_->extent(); }
    // Runs the actions in order; hover results and notes go to `log` (one JSON object per hover).
    void run(const std::vector<ScriptAction>& actions, std::FILE* log);

    render::ViewTransform& view() { return view_; }
    render::RenderSettings& settings() { return settings_; }
    render::AttentionMapRenderer& renderer() { return *renderer_; }
    render::TileCache& cache() { return *cache_; }
    const CpuTileSource& source() const { return source_; }
    const render::FrameStats& last_frame() const { return last_; }

private:
    std::string token_text(int64_t position) const;

    const Session& session_;
    CpuTileSource source_;
    std::unique_ptr<render::TileCache> cache_;
    std::unique_ptr<render::AttentionMapRenderer> renderer_;
    render::ViewTransform view_;
    render::RenderSettings settings_;
    render::FrameStats last_;
    bool waterfall_ = false;
};

std::string hover_json(const HoverInfo& hover);

}  // namespace attn::view
