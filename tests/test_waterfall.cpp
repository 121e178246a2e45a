// The waterfall (decode step × key, issue 5): anisotropic tiles from Q/K/LSE, the level of detail
// per axis, headless screenshots of sessions whose steps attend to a known key, hover, live growth,
// the `view --waterfall` command, and the ImGui widget. Headless on lavapipe with the validation
// layer on, like the [render] tests.
#ifdef ATTNSCOPE_HAVE_UI
#include <catch2/catch.hpp>
#include <stb_image.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "crafted_session.h"
#include "engine/error.h"
#include "engine/tile_source.h"
#include "render_support.h"
#include "test_support.h"
#include "ui/view/headless.h"
#include "ui/view/synthetic_session.h"

#ifdef ATTNSCOPE_HAVE_APP
#include <GLFW/glfw3.h>
#include <imgui.h>

#include "ui/app/debugger_model.h"
#include "ui/app/waterfall_view.h"
#endif

using namespace attn;
using namespace attn::render;
using namespace attn::view;
using namespace attn::testing;

namespace {

constexpr int64_t kAttendedKey = 5;

// Sessions are built once per test binary (the 4k-token synthetic ones take a moment).
template <typename Make>
const Session& built_once(const std::string& name, Make make) {
    static std::map<std::string, std::unique_ptr<Session>> sessions;
    std::unique_ptr<Session>& slot = sessions[name];
    if (!slot) slot = std::make_unique<Session>(make());
    return *slot;
}

// A prompt of uniform rows, then decode steps: head 0's steps all attend to key 5, head 1's to the
// previous token.
const Session& stepping_session(int64_t prompt, int64_t steps) {
    return built_once(cat("stepping ", prompt, " ", steps), [&] {
        CraftedSpec spec;
        for (int64_t i = 0; i < prompt + steps; ++i) spec.words.push_back(" t" + std::to_string(i));
        spec.prompt_tokens = prompt;
        spec.n_layer = 1;
        spec.n_head = 2;
        spec.focus = [prompt](int, int head, int64_t query) -> std::vector<int64_t> {
            if (query < prompt) return {};
            return {head == 0 ? kAttendedKey : query - 1};
        };
        return make_crafted_session(spec);
    });
}

const Session& synthetic_with_steps(int64_t tokens, int64_t steps) {
    return built_once(cat("synthetic ", tokens, " ", steps), [&] {
        SyntheticOptions options;
        options.tokens = tokens;
        options.decode_steps = steps;
        return make_synthetic_session(options);
    });
}

// Sum and max of exact rows over queries [q0, q1) × keys [k0, k1), visible pairs only.
struct BlockAggregate {
    double sum = 0;
    float max = 0;
};
BlockAggregate aggregate_rows(const CpuTileSource& source, int layer, int head, int64_t q0, int64_t q1, int64_t k0,
                              int64_t k1) {
    BlockAggregate a;
    for (int64_t q = q0; q < q1; ++q) {
        const std::vector<float> row = source.row(layer, head, q);
        for (int64_t k = k0; k < std::min(k1, q + 1); ++k) {
            a.sum += row[static_cast<size_t>(k)];
            a.max = std::max(a.max, row[static_cast<size_t>(k)]);
        }
    }
    return a;
}

// Every `stride`-th cell of an anisotropic tile against the exact rows it aggregates.
void check_tile_against_rows(const CpuTileSource& source, const TileRequest& request, int64_t positions, int stride) {
    const Tile tile = source.tile(request);
    const int64_t key_cell = int64_t(1) << request.level, row_cell = int64_t(1) << request.row_level();
    const int64_t rows = positions - request.first_query;
    CHECK(tile.valid_rows == cells_covering(rows, request.row_level(), request.ty));
    CHECK(tile.valid_cols == cells_covering(positions, request.level, request.tx));
    for (int r = 0; r < tile.valid_rows; r += stride)
        for (int c = 0; c < tile.valid_cols; c += stride) {
            const int64_t q0 = request.first_query + (request.ty * Tile::kEdge + r) * row_cell;
            const int64_t k0 = (request.tx * Tile::kEdge + c) * key_cell;
            const BlockAggregate exact =
                aggregate_rows(source, request.layer, request.head, q0, std::min(q0 + row_cell, positions), k0,
                               std::min(k0 + key_cell, positions));
            INFO("level " << request.level << " row level " << request.row_level() << " from query "
                          << request.first_query << ", tile " << request.tx << "," << request.ty << " cell " << r
                          << "," << c);
            const size_t at = static_cast<size_t>(r) * Tile::kEdge + static_cast<size_t>(c);
            CHECK(tile.sum[at] == Approx(exact.sum).epsilon(1e-4).margin(1e-6));
            CHECK(tile.max[at] == Approx(exact.max).epsilon(1e-5).margin(1e-7));
            if (k0 > q0 + row_cell - 1) CHECK(tile.sum[at] == 0.0f);  // right of every query of the cell
        }
}

}  // namespace

TEST_CASE("anisotropic tiles from a query origin equal sums and maxes of exact rows", "[waterfall]") {
    // 2700 prompt tokens and 300 decode steps; heads with spread-out attention (band, induction).
    const Session& session = synthetic_with_steps(3000, 300);
    REQUIRE(session.prompt_tokens == 2700);
    REQUIRE(session.steps.size() == 300);
    const CpuTileSource source(*session.capture);
    const int64_t n = session.capture->positions(), prompt = session.prompt_tokens;
    // One step per row, 8 keys per cell (the waterfall's usual shape).
    for (int head : {2, 3})
        for (int64_t tx : {0, 1})
            check_tile_against_rows(source, {0, head, 3, tx, 0, -3, prompt}, n, 9);
    // The last key tile, where the diagonal runs through the steps.
    check_tile_against_rows(source, {0, 3, 0, 11, 0, 0, prompt}, n, 5);
    // More rows than keys per cell, and a second tile row.
    check_tile_against_rows(source, {0, 2, 2, 2, 0, -1, prompt}, n, 7);
    check_tile_against_rows(source, {0, 3, 3, 1, 1, -3, 2500}, n, 11);
    // Step 0 (query 2700) sees keys 0..2700, all in key tile 0: its row of cells holds its whole mass, 1.
    const Tile whole = source.tile({0, 1, 4, 0, 0, -4, prompt});
    double row_mass = 0;
    for (int c = 0; c < whole.valid_cols; ++c) row_mass += whole.sum[static_cast<size_t>(c)];
    CHECK(row_mass == Approx(1.0).epsilon(1e-4));

    // Out of range: rows past the last step, an origin past the end.
    CHECK_THROWS_WITH(source.tile({0, 0, 3, 0, 2, -3, prompt}), Catch::Contains("does not exist"));
    CHECK_THROWS_WITH(source.tile({0, 0, 3, 0, 0, -3, n}), Catch::Contains("query " + std::to_string(n)));
    CHECK_THROWS_WITH(source.tile({0, 0, 0, 0, 0, -1, prompt}), Catch::Contains("row level -1"));
}

TEST_CASE("anisotropic tiles read from the overview when its blocks nest in the cells", "[waterfall]") {
    // A 128-aligned origin and at least 128 queries and keys per cell: the pooled overview serves.
    const Session& session = synthetic_with_steps(4096, 1024);
    REQUIRE(session.capture->overview_complete());
    const CpuTileSource source(*session.capture);
    const TileRequest request{0, 2, 8, 0, 0, -1, session.prompt_tokens};
    REQUIRE(CpuTileSource::overview_serves(request));
    CHECK_FALSE(CpuTileSource::overview_serves({0, 2, 8, 0, 0, -1, session.prompt_tokens + 1}));
    CHECK_FALSE(CpuTileSource::overview_serves({0, 2, 8, 0, 0, -2, session.prompt_tokens}));
    check_tile_against_rows(source, request, session.capture->positions(), 3);
}

TEST_CASE("level of detail per axis: keys and steps each at most one pixel per cell", "[waterfall]") {
    // 50k keys and 200 steps in 1600×400 pixels: 31 keys per pixel (level 4), 2 pixels per step (level 0).
    const MatrixExtent extent{50000, 200, 49800};
    ViewTransform view;
    view.width = 1600, view.height = 400;
    view.fill(0, 0, 50000, 200);
    CHECK(view.keys_per_pixel == Approx(31.25));
    CHECK(view.rows_per_pixel == Approx(0.5));
    CellLevels levels = lod_levels(view, extent);
    CHECK(levels == CellLevels{4, 0});
    CHECK(generations_to_top(levels, extent) == 4);  // 50k keys fit one tile at level 8
    CHECK(visible_tiles(view, extent, levels).size() == 13);  // 50000 / 4096 keys, one tile row

    // Zooming one axis leaves the other's level alone.
    view.zoom_at(800, 200, 8.0, 1.0);  // keys only: 3.9 keys per pixel
    CHECK(lod_levels(view, extent) == CellLevels{1, 0});
    view.zoom_at(800, 200, 1.0, 0.25);  // steps only: 2 steps per pixel, but all 200 fit one tile at level 0
    CHECK(lod_levels(view, extent) == CellLevels{1, 0});
    // 1000 steps in 400 pixels: 2.5 steps per pixel, two steps per cell.
    const MatrixExtent long_run{50000, 1000, 49000};
    view.fill(0, 0, 50000, 1000);
    CHECK(lod_levels(view, long_run) == CellLevels{4, 1});
    CHECK(generations_to_top(CellLevels{4, 1}, long_run) == 4);

    // The map's square view: both levels are the old single level.
    ViewTransform square;
    square.width = square.height = 512;
    square.fit(50000);
    const int level = lod_level(square.keys_per_pixel, top_level(50000));
    CHECK(lod_levels(square, MatrixExtent::square(50000)) == CellLevels{level, level});

    // Tiles entirely right of their last query are left out: steps of queries 300..811 over 812 keys.
    ViewTransform all;
    all.width = 812, all.height = 512;
    all.fill(0, 0, 812, 512);
    const std::vector<TileCoord> tiles = visible_tiles(all, MatrixExtent{812, 512, 300}, {0, 0});
    CHECK(tiles.size() == 7);  // tile row 0 (queries ≤ 555) reaches key tile 2; row 1 (≤ 811) key tile 3
    for (const TileCoord& t : tiles) CHECK(!(t.ty == 0 && t.tx == 3));
}

TEST_CASE("waterfall screenshot: every step's attention to key 5 is a bright column, nothing right of its query",
          "[waterfall]") {
    VulkanContext& context = vulkan();
    const int64_t prompt = 100, steps = 200;
    const Session& session = stepping_session(prompt, steps);
    HeadlessOptions options = small_view(600, 400);
    options.waterfall = true;
    HeadlessView view(context, session, options);
    // Fitted: 300 keys and 200 steps in 600×400 pixels, 2×2 pixels per cell.
    REQUIRE(view.extent() == MatrixExtent{prompt + steps, steps, prompt});
    const FrameStats stats = view.wait_exact(60);
    REQUIRE(stats.all_exact());
    CHECK(stats.level == 0);
    CHECK(stats.row_level == 0);
    std::vector<uint8_t> pixels = view.renderer().read_pixels();
    auto at = [&](int64_t key, int64_t step) { return pixel(pixels, 600, static_cast<int>(key * 2 + 1), static_cast<int>(step * 2 + 1)); };
    for (int64_t t = 0; t < steps; t += 3) {
        const int64_t query = prompt + t;
        INFO("step " << t);
        REQUIRE(is_bright(at(kAttendedKey, t)));
        REQUIRE(is_dark(at(50, t)));
        REQUIRE(is_dark(at(query, t)));  // its own key: visible, but not attended
        if (query + 1 < prompt + steps) REQUIRE(is_empty(at(query + 1, t)));
        if (query + 20 < prompt + steps) REQUIRE(is_empty(at(query + 20, t)));
    }

    // The previous-token head: a diagonal one key left of each step's query.
    view.run(parse_script("head 1\nwait_exact 60\n", "test"), stdout);
    REQUIRE(view.last_frame().all_exact());
    pixels = view.renderer().read_pixels();
    for (int64_t t = 1; t < steps; t += 3) {
        const int64_t query = prompt + t;
        INFO("step " << t);
        REQUIRE(is_bright(at(query - 1, t)));
        REQUIRE(!is_bright(at(query, t)));
        REQUIRE(!is_bright(at(kAttendedKey, t)));
        if (query + 1 < prompt + steps) REQUIRE(is_empty(at(query + 1, t)));
    }

    // Keys zoomed out 4× (2 keys per pixel, level 1; still one row per step): the column survives.
    view.run(parse_script("head 0\nzoom_keys 0.25 0 0\nwait_exact 60\n", "test"), stdout);
    REQUIRE(view.last_frame().all_exact());
    CHECK(view.last_frame().level == 1);
    CHECK(view.last_frame().row_level == 0);
    pixels = view.renderer().read_pixels();
    for (int64_t t = 0; t < steps; t += 5) REQUIRE(is_bright(pixel(pixels, 600, 2, static_cast<int>(t * 2 + 1))));
    require_no_validation_errors();
}

TEST_CASE("waterfall hover: the step under the pixel and its exact probability", "[waterfall]") {
    VulkanContext& context = vulkan();
    const int64_t prompt = 100, steps = 200;
    const Session& session = stepping_session(prompt, steps);
    HeadlessOptions options = small_view(600, 400);
    options.waterfall = true;
    HeadlessView view(context, session, options);
    view.wait_exact(60);
    for (int64_t t : {0, 37, 199}) {
        const HoverInfo h = view.hover(kAttendedKey * 2 + 1, static_cast<double>(t * 2 + 1));
        INFO("step " << t);
        REQUIRE(h.inside);
        CHECK(h.step == t);
        CHECK(h.query == prompt + t);
        CHECK(h.key == kAttendedKey);
        const std::vector<float> row = view.source().row(0, 0, prompt + t);
        CHECK(h.probability == row[kAttendedKey]);
        CHECK(h.probability > 0.99f);
        CHECK(h.rank == 1);
        CHECK(h.level == 0);
        CHECK(h.row_level == 0);
        CHECK(h.query_token == " t" + std::to_string(prompt + t));
        CHECK(h.key_token == " t5");
    }
    // Right of step 10's query: masked.
    const HoverInfo masked = view.hover(2 * (prompt + 10 + 3) + 1, 21);
    CHECK(masked.step == 10);
    CHECK_FALSE(masked.inside);

    // Coarser keys (2 per pixel, level 1): the cell aggregates keys 4 and 5 of one step's row.
    view.view().zoom_at(0, 0, 0.25, 1.0);
    const HoverInfo coarse = view.hover(2, 2 * 50 + 1);
    REQUIRE(coarse.inside);
    CHECK(coarse.level == 1);
    CHECK(coarse.row_level == 0);
    CHECK(coarse.step == 50);
    CHECK(coarse.key == kAttendedKey);
    const std::vector<float> row = view.source().row(0, 0, prompt + 50);
    CHECK(coarse.cell_sum == Approx(row[4] + row[5]).epsilon(1e-5));
    CHECK(coarse.cell_max == std::max(row[4], row[5]));
    require_no_validation_errors();
}

TEST_CASE("waterfall growth: one more decode step refreshes the bottom rows", "[waterfall]") {
    VulkanContext& context = vulkan();
    const int64_t prompt = 100, steps = 60;
    const Session& full = stepping_session(prompt, steps);
    // The session as it was one step earlier: live decoding appends the last row.
    Session growing;
    growing.tokens = full.tokens;
    growing.text = full.text;
    growing.prompt_tokens = prompt;
    growing.steps.assign(full.steps.begin(), full.steps.end() - 1);
    growing.capture = std::make_shared<CaptureStore>(full.capture->shape());
    copy_captured_rows(*full.capture, *growing.capture, 0, prompt + steps - 1);
    HeadlessOptions options = small_view(320, 256);
    options.waterfall = true;
    HeadlessView view(context, growing, options);
    REQUIRE(view.extent().rows == steps - 1);
    // Room below for the next step: 160 keys × 64 steps, 2×4 pixels per cell.
    view.view().fill(0, 0, 160, 64);
    REQUIRE(view.wait_exact(60).all_exact());
    const TileKey key{0, 0, 0, 0, 0, Plane::Max, 0, prompt};
    REQUIRE(view.cache().find(key));
    CHECK(view.cache().find(key)->valid_rows == steps - 1);
    std::vector<uint8_t> pixels = view.renderer().read_pixels();
    const int new_row_y = static_cast<int>((steps - 1) * 4 + 2);
    REQUIRE(is_empty(pixel(pixels, 320, kAttendedKey * 2 + 1, new_row_y)));

    // One step arrives: its query row is captured and its record appended.
    const int64_t position = prompt + steps - 1;
    copy_captured_rows(*full.capture, *growing.capture, position, 1);
    growing.steps.push_back(full.steps.back());
    view.cache().invalidate_rows_from(position);
    view.renderer().set_extent(waterfall_extent(growing));
    REQUIRE(view.extent().rows == steps);
    REQUIRE(view.cache().find(key)->stale);  // drawn until its replacement arrives
    REQUIRE(view.wait_exact(60).all_exact());
    CHECK_FALSE(view.cache().find(key)->stale);
    CHECK(view.cache().find(key)->valid_rows == steps);
    pixels = view.renderer().read_pixels();
    CHECK(is_bright(pixel(pixels, 320, kAttendedKey * 2 + 1, new_row_y)));
    CHECK(is_dark(pixel(pixels, 320, 50 * 2 + 1, new_row_y)));
    CHECK(is_empty(pixel(pixels, 320, (prompt + 15) * 2 + 1, 10 * 4 + 2)));  // right of step 10's query
    CHECK(is_bright(pixel(pixels, 320, kAttendedKey * 2 + 1, new_row_y - 8)));              // the rows above stay
    const HoverInfo h = view.hover(kAttendedKey * 2 + 1, new_row_y);
    CHECK(h.step == steps - 1);
    CHECK(h.probability == view.source().row(0, 0, position)[kAttendedKey]);
    require_no_validation_errors();
}

TEST_CASE("waterfall: a session without decode steps has no waterfall and says so", "[waterfall]") {
    VulkanContext& context = vulkan();
    SyntheticOptions options;
    options.tokens = 300;
    const Session session = make_synthetic_session(options);
    HeadlessView view(context, session, small_view(128, 128));
    REQUIRE_THROWS_WITH(view.set_waterfall(true), Catch::Contains("no captured decode step"));
    CHECK_FALSE(view.waterfall());
    REQUIRE_THROWS_WITH(view.run(parse_script("zoom_keys 2\n", "s.txt"), stdout), Catch::Contains("waterfall"));
    require_no_validation_errors();
}

TEST_CASE("view --waterfall renders the decode steps offscreen and hovers a step", "[waterfall]") {
    TempDir dir("waterfall_cli");
    const std::string shot = dir.file("waterfall.png"), script = dir.file("script.txt");
    {
        std::ofstream out(script);
        // Step 100 is query 924; in 512×256 pixels, 2 keys per pixel and 1.28 pixels per step.
        out << "wait_exact 60\nhover 461 128\n";
    }
    const CliResult r = run_cli("view --synthetic 1024 --synthetic-steps 200 --waterfall --headless --size 512x256 "
                                "--validation --script " + script + " --screenshot " + shot);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::istringstream lines(r.out);
    std::string line;
    nlohmann::json hover, summary;
    while (std::getline(lines, line)) {
        if (line.empty() || line[0] != '{') continue;
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j.contains("hover")) hover = j["hover"];
        if (j.contains("screenshot")) summary = j;
    }
    REQUIRE(hover.is_object());
    CHECK(hover["step"] == 100);
    CHECK(hover["query"] == 924);
    CHECK(hover["key"] == 923);  // the previous token: synthetic head 0's peak
    CHECK(hover["rank"] == 1);
    REQUIRE(summary.is_object());
    CHECK(summary["waterfall"] == true);
    CHECK(summary["rows"] == 200);
    CHECK(summary["level"] == 1);
    CHECK(summary["row_level"] == 0);
    CHECK(summary["validation_errors"] == 0);
    CHECK(summary["exact_tiles"] == summary["visible_tiles"]);

    int w = 0, h = 0, channels = 0;
    unsigned char* png = stbi_load(shot.c_str(), &w, &h, &channels, 4);
    REQUIRE(png);
    const std::vector<uint8_t> pixels(png, png + static_cast<size_t>(w) * h * 4);
    stbi_image_free(png);
    REQUIRE(w == 512);
    REQUIRE(h == 256);
    for (int t = 2; t < 200; t += 9) {
        const int y = static_cast<int>((t + 0.5) * 1.28), query = 824 + t;
        INFO("step " << t);
        CHECK(is_bright(pixel(pixels, 512, (query - 1) / 2, y)));
        CHECK(is_empty(pixel(pixels, 512, (query + 3) / 2, y)));
    }
}

#ifdef ATTNSCOPE_HAVE_APP
namespace {

// One ImGui frame (no platform backend: the test sets the inputs) with the widget filling a window.
void imgui_frame(app::WaterfallView& widget) {
    ImGui::GetIO().DeltaTime = 1.0f / 60;
    ImGui::NewFrame();
    ImGui::SetNextWindowPos(ImVec2(0, 0));
    ImGui::SetNextWindowSize(ImVec2(900, 500));
    ImGui::Begin("waterfall", nullptr, ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoBackground);
    widget.draw(1, 1);
    ImGui::End();
    ImGui::Render();
}

}  // namespace

TEST_CASE("waterfall widget: fits per axis, zooms one axis with Shift, hover and click go to the step", "[waterfall]") {
    VulkanContext& context = vulkan();
    const int64_t prompt = 100, steps = 200;
    const Session& session = stepping_session(prompt, steps);
    const CpuTileSource source(*session.capture);
    app::DebuggerModel model(session, source);
    ImGuiContext* imgui = ImGui::CreateContext();
    ImGuiIO& io = ImGui::GetIO();
    io.IniFilename = nullptr;  // no imgui.ini left in the working directory
    io.DisplaySize = ImVec2(900, 500);
    unsigned char* font_pixels = nullptr;
    int font_w = 0, font_h = 0;
    io.Fonts->GetTexDataAsRGBA32(&font_pixels, &font_w, &font_h);
    {
        TileCacheOptions cache;
        cache.budget_bytes = 32ull << 20;
        cache.workers = 2;
        app::WaterfallView widget(context, model, cache);
        CHECK(widget.extent() == MatrixExtent{prompt + steps, steps, prompt});
        // Frames as a window would draw them (the widget skips rendering while the GPU is still on
        // its last image), until the tiles are exact, for 30 s at most.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        for (int i = 0; (i < 2 || widget.busy()) && std::chrono::steady_clock::now() < deadline; ++i) {
            imgui_frame(widget);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        REQUIRE(widget.exact());
        // Filled: every step in the height, every key in the width (cells not square).
        const ViewTransform fitted = widget.view();
        CHECK(fitted.rows_per_pixel == Approx(200.0 / fitted.height));
        CHECK(fitted.keys_per_pixel == Approx(300.0 / fitted.width));
        CHECK(widget.stats().row_level == 0);

        // Hover (scripted) at the attended key of step 80: the step, its exact probability; the model follows.
        const double px = fitted.pixel_x(kAttendedKey + 0.5), py = fitted.pixel_y(80.5);
        widget.set_scripted_hover(std::make_pair(px, py));
        imgui_frame(widget);
        CHECK(widget.hover().step == 80);
        CHECK(widget.hover().probability == source.row(0, 0, prompt + 80)[kAttendedKey]);
        CHECK(model.hover.step == 80);
        widget.set_scripted_hover(std::nullopt);
        io.MousePos = ImVec2(-1000, -1000);
        imgui_frame(widget);
        CHECK(model.hover.query == -1);  // the view that published the hover clears it

        // Click step 120: find the screen y the mouse hovers it at (the widget lays itself out), then press and release.
        const float x = 850;
        float y = -1;
        for (float probe = 0; probe < 500 && y < 0; probe += 1) {
            io.MousePos = ImVec2(x, probe);
            imgui_frame(widget);
            if (widget.hover().step == 120) y = probe;
        }
        REQUIRE(y >= 0);
        io.MouseDown[0] = true;
        imgui_frame(widget);
        io.MouseDown[0] = false;
        imgui_frame(widget);
        CHECK(model.shown_step() == 120);
        CHECK(model.selected_query == prompt + 120);

        // Shift+wheel zooms the keys only; Ctrl+wheel the steps only.
        const ViewTransform before = widget.view();
        io.KeyShift = true;
        io.MouseWheel = 1;
        imgui_frame(widget);
        io.KeyShift = false;
        io.MouseWheel = 0;
        CHECK(widget.view().keys_per_pixel == Approx(before.keys_per_pixel / 1.25));
        CHECK(widget.view().rows_per_pixel == before.rows_per_pixel);
        io.KeyCtrl = true;
        io.MouseWheel = 1;
        imgui_frame(widget);
        io.KeyCtrl = false;
        io.MouseWheel = 0;
        CHECK(widget.view().rows_per_pixel == Approx(before.rows_per_pixel / 1.25));
        CHECK(widget.view().keys_per_pixel == Approx(before.keys_per_pixel / 1.25));
        // F fits again (the mouse is over the view).
        io.KeysDown[GLFW_KEY_F] = true;
        imgui_frame(widget);
        io.KeysDown[GLFW_KEY_F] = false;
        imgui_frame(widget);
        CHECK(widget.view().keys_per_pixel == Approx(fitted.keys_per_pixel));
        CHECK(widget.view().rows_per_pixel == Approx(fitted.rows_per_pixel));
    }
    ImGui::DestroyContext(imgui);
    require_no_validation_errors();
}
#endif  // ATTNSCOPE_HAVE_APP

#endif  // ATTNSCOPE_HAVE_UI
