// The Vulkan renderer core (issue 4), headless: runs on lavapipe in CI with the validation layer on.
// If Vulkan cannot start, every [render] test fails and says why — it never skips silently.
#ifdef ATTNSCOPE_HAVE_UI
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <memory>
#include <map>
#include <numeric>

#include "engine/error.h"
#include "ui/render/attention_map_renderer.h"
#include "ui/render/vulkan_context.h"
#include "ui/view/headless.h"
#include "ui/view/synthetic_session.h"
#include "render_support.h"

#ifdef ATTNSCOPE_HAVE_IMGUI
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_vulkan.h>
#endif

using namespace attn;
using namespace attn::render;
using namespace attn::view;
using namespace attn::testing;

namespace {

const Session& session_with(SyntheticPattern pattern, int64_t tokens) {
    static std::map<std::pair<int, int64_t>, std::unique_ptr<Session>> sessions;
    auto& slot = sessions[{static_cast<int>(pattern), tokens}];
    if (!slot) {
        SyntheticOptions options;
        options.tokens = tokens;
        options.heads = {pattern};
        slot = std::make_unique<Session>(make_synthetic_session(options));
    }
    return *slot;
}

}  // namespace

TEST_CASE("synthetic sessions: rows sum to 1 and the overview is exact", "[render]") {
    SyntheticOptions options;
    options.tokens = 1000;
    options.layers = 2;
    const Session session = make_synthetic_session(options);
    const CpuTileSource source(*session.capture);
    const CaptureShape& shape = session.capture->shape();
    REQUIRE(session.capture->overview_complete());
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head)
            for (int64_t q : {0, 1, 2, 127, 128, 500, 999}) {
                const std::vector<float> row = source.row(layer, head, q);
                const double sum = std::accumulate(row.begin(), row.end(), 0.0);
                INFO("layer " << layer << " head " << head << " query " << q);
                REQUIRE(sum == Approx(1.0).margin(1e-4));
            }
    for (int head = 0; head < shape.n_head; ++head)
        for (auto [qb, kb] : {std::pair<int64_t, int64_t>{0, 0}, {3, 0}, {3, 2}, {7, 7}, {7, 1}}) {
            const double exact = source.mass(0, head, qb * 128, (qb + 1) * 128, kb * 128, (kb + 1) * 128);
            INFO("head " << head << " block " << qb << "," << kb);
            REQUIRE(session.capture->overview_sum(0, head, qb, kb) == Approx(exact).epsilon(1e-4).margin(1e-6));
        }
    // The patterns are what they claim: previous-token mass on i−1, sink mass on key 0.
    const std::vector<float> prev = source.row(0, 0, 700);
    REQUIRE(prev[699] > 0.9f);
    const std::vector<float> sink = source.row(0, 1, 700);
    REQUIRE(sink[0] > 0.9f);
}

TEST_CASE("LOD: the coarsest level whose cell is at most one pixel", "[render]") {
    REQUIRE(top_level(256) == 0);
    REQUIRE(top_level(257) == 1);
    REQUIRE(top_level(50000) == 8);
    REQUIRE(lod_level(0.25, 8) == 0);  // zoomed in: level 0, cells larger than a pixel
    REQUIRE(lod_level(1.0, 8) == 0);
    REQUIRE(lod_level(1.99, 8) == 0);
    REQUIRE(lod_level(2.0, 8) == 1);
    REQUIRE(lod_level(3.9, 8) == 1);
    REQUIRE(lod_level(4.0, 8) == 2);
    REQUIRE(lod_level(50000.0 / 1440, 8) == 5);  // 50k tokens fitted into 1440 px
    REQUIRE(lod_level(1e6, 8) == 8);             // clamped to the top
}

TEST_CASE("visible tiles: lower triangle only, nearest the centre first", "[render]") {
    ViewTransform view;
    view.width = 512, view.height = 512;
    view.fit(2048);  // 4 tokens per pixel → level 2, 2×2 tiles of 1024 tokens
    const int level = lod_level(view.keys_per_pixel, top_level(2048));
    REQUIRE(level == 2);
    const std::vector<TileCoord> tiles = visible_tiles(view, 2048, level);
    REQUIRE(tiles.size() == 3);  // (0,0), (0,1), (1,1); (1,0) is above the diagonal
    for (const TileCoord& t : tiles) REQUIRE(t.tx <= t.ty);

    view.show(1000, 1000, 1064, 1064);
    REQUIRE(lod_level(view.keys_per_pixel, top_level(2048)) == 0);
    const std::vector<TileCoord> zoomed = visible_tiles(view, 2048, 0);
    REQUIRE(zoomed.size() == 3);  // tokens 1000..1064 straddle the 1024 boundary: (3,3), (3,4), (4,4)
    for (const TileCoord& t : zoomed) REQUIRE((t == TileCoord{0, 3, 3} || t == TileCoord{0, 3, 4} || t == TileCoord{0, 4, 4}));
}

TEST_CASE("tile addressing: ancestors contain their descendants", "[render]") {
    const TileKey key{0, 0, 0, 5, 7, Plane::Max};
    REQUIRE(key.ancestor(1) == TileKey{0, 0, 1, 2, 3, Plane::Max});
    REQUIRE(key.ancestor(2) == TileKey{0, 0, 2, 1, 1, Plane::Max});
    REQUIRE(key.ancestor(3) == TileKey{0, 0, 3, 0, 0, Plane::Max});
    REQUIRE(TileKeyHash{}(key) != TileKeyHash{}(key.ancestor(1)));
}

TEST_CASE("headless screenshot: previous-token head, top level and after a zoom", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::PreviousToken, 2048);
    HeadlessView view(context, session, small_view(512, 512));

    // Top level: 2048 tokens in 512 px, 4 tokens per pixel (level 2).
    const FrameStats top = view.wait_exact(60);
    REQUIRE(top.all_exact());
    REQUIRE(top.level == 2);
    std::vector<uint8_t> pixels = view.renderer().read_pixels();
    int bright_diagonal = 0;
    for (int y = 8; y < 512; y += 16) {
        INFO("row " << y);
        if (is_bright(pixel(pixels, 512, y, y)) || is_bright(pixel(pixels, 512, y - 1, y))) ++bright_diagonal;
        REQUIRE(is_empty(pixel(pixels, 512, std::min(511, y + 4), y)));  // above the diagonal
        if (y > 64) REQUIRE(is_dark(pixel(pixels, 512, y / 2, y)));     // far below it
    }
    REQUIRE(bright_diagonal == 32);
    REQUIRE(is_empty(pixel(pixels, 512, 500, 10)));

    // Zoom to 64 tokens (8 px per token, level 0): the cell left of the diagonal is bright.
    view.run(parse_script("show 1000 1000 1064 1064\nwait_exact 60\nscreenshot " +
                              std::string("render_test_prev_zoom.png") + "\n",
                          "test"),
             stdout);
    REQUIRE(view.last_frame().all_exact());
    REQUIRE(view.last_frame().level == 0);
    pixels = view.renderer().read_pixels();
    for (int q = 1001; q < 1063; q += 3) {
        const int y = (q - 1000) * 8 + 4;
        INFO("query " << q);
        REQUIRE(is_bright(pixel(pixels, 512, y - 8, y)));   // key q − 1
        REQUIRE(!is_bright(pixel(pixels, 512, y, y)));      // key q
        REQUIRE(is_empty(pixel(pixels, 512, y + 8, y)));    // key q + 1: causal mask
    }
    std::remove("render_test_prev_zoom.png");
    require_no_validation_errors();
}

TEST_CASE("headless screenshot: sink column", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::Sink, 2048);
    HeadlessView view(context, session, small_view(512, 512));
    REQUIRE(view.wait_exact(60).all_exact());
    std::vector<uint8_t> pixels = view.renderer().read_pixels();
    for (int y = 4; y < 512; y += 8) {
        INFO("row " << y);
        REQUIRE(is_bright(pixel(pixels, 512, 0, y)));  // key 0
        if (y > 32) REQUIRE(!is_bright(pixel(pixels, 512, y / 2, y)));
        if (y < 500) REQUIRE(is_empty(pixel(pixels, 512, y + 8, y)));
    }
    // Zoomed into the middle of the matrix the sink is off screen: the area is uniform and dim.
    view.view().show(1000, 1200, 1064, 1264);
    REQUIRE(view.wait_exact(60).all_exact());
    pixels = view.renderer().read_pixels();
    REQUIRE(!is_bright(pixel(pixels, 512, 256, 256)));
    REQUIRE(!is_empty(pixel(pixels, 512, 256, 256)));
    require_no_validation_errors();
}

TEST_CASE("missing tiles draw their nearest cached ancestor", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::PreviousToken, 2048);
    HeadlessView view(context, session, small_view(256, 256));
    view.wait_exact(60);  // level 3 top tile (2048 tokens in 256 px = 8 tokens/pixel) is resident
    const TileKey top{0, 0, 3, 0, 0, Plane::Max};
    REQUIRE(view.cache().find(top) != nullptr);
    const TileKey deep{0, 0, 0, 6, 7, Plane::Max};
    REQUIRE(view.cache().find(deep) == nullptr);
    const auto ancestor = view.cache().nearest_ancestor(deep, 3, true);
    REQUIRE(ancestor);
    REQUIRE(ancestor->first == top);

    // The first frame after a deep zoom draws something for every visible tile (no holes).
    view.view().show(1700, 1900, 1760, 1960);
    const FrameStats first = view.frame();
    REQUIRE(first.missing_tiles == 0);
    REQUIRE(first.exact_tiles + first.fallback_tiles == first.visible_tiles);
    require_no_validation_errors();
}

TEST_CASE("LRU eviction under a small budget", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::PreviousToken, 2048);
    HeadlessOptions options = small_view(256, 256);
    options.cache.budget_bytes = 4 * TileCache::kSlotBytes;
    HeadlessView view(context, session, options);
    REQUIRE(view.cache().capacity_slots() == 4);
    // Five level-0 tiles are shown one after another, so at least one must be evicted from four slots
    // whatever else (ancestors) the cache produced in between.
    const std::vector<TileKey> candidates = {{0, 0, 3, 0, 0, Plane::Max}, {0, 0, 0, 0, 0, Plane::Max},
                                             {0, 0, 0, 1, 1, Plane::Max}, {0, 0, 0, 2, 2, Plane::Max},
                                             {0, 0, 0, 3, 3, Plane::Max}};
    std::map<int, uint64_t> last_used;  // candidate index → last frame it was drawn, before the final move
    for (int t = 0; t < 5; ++t) {
        if (t == 4)
            for (size_t i = 0; i < candidates.size(); ++i)
                if (const CachedTile* tile = view.cache().find(candidates[i])) last_used[static_cast<int>(i)] = tile->last_used_frame;
        view.view().show(t * 256.0, t * 256.0, (t + 1) * 256.0, (t + 1) * 256.0);  // exactly tile (t, t) at level 0
        REQUIRE(view.wait_exact(60).all_exact());
        REQUIRE(view.cache().resident_tiles() <= 4);
    }
    REQUIRE(view.cache().find({0, 0, 0, 4, 4, Plane::Max}) != nullptr);
    REQUIRE(view.cache().stats().evicted >= 1);
    // Whatever was evicted was drawn less recently than everything that stayed.
    uint64_t newest_evicted = 0, oldest_kept = UINT64_MAX;
    int evicted = 0;
    for (const auto& [i, frame] : last_used) {
        if (view.cache().find(candidates[static_cast<size_t>(i)])) {
            oldest_kept = std::min(oldest_kept, frame);
        } else {
            newest_evicted = std::max(newest_evicted, frame);
            ++evicted;
        }
    }
    REQUIRE(evicted >= 1);
    REQUIRE(newest_evicted < oldest_kept);
    require_no_validation_errors();
}

TEST_CASE("one colour range shared by all visible tiles", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::Sink, 2048);
    HeadlessView view(context, session, small_view(512, 512));
    view.settings().plane = Plane::Sum;
    view.view().show(0, 0, 2048, 2048);
    const FrameStats stats = view.wait_exact(60);
    REQUIRE(stats.all_exact());
    REQUIRE(stats.visible_tiles == 3);
    float peak = 0;
    uint64_t stamp = 0;
    for (const TileCoord& c : visible_tiles(view.view(), 2048, stats.level)) {
        CachedTile* tile = view.cache().find({0, 0, c.level, c.tx, c.ty, Plane::Sum});
        REQUIRE(tile);
        peak = std::max(peak, tile->max_value);
        if (stamp == 0) stamp = tile->color_stamp;
        REQUIRE(tile->color_stamp == stamp);  // every tile coloured with the same range
    }
    const ColorRange range = view.renderer().current_range();
    REQUIRE(range.log_scale);
    REQUIRE(range.high >= std::log10(peak));
    REQUIRE(range.high < std::log10(peak) + 0.25f + 1e-4f);
    REQUIRE(range.low >= range.high - 6.0f - 1e-4f);  // at most log_decades below the peak
    REQUIRE(range.low < range.high);

    // Locked: zooming in (smaller peaks) keeps the range.
    view.settings().lock_range = true;
    view.view().show(1500, 1500, 1600, 1600);
    view.wait_exact(60);
    REQUIRE(view.renderer().current_range() == range);
    require_no_validation_errors();
}

TEST_CASE("incremental redraw after a pan equals a full redraw", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::PreviousToken, 2048);
    HeadlessView panned(context, session, small_view(384, 256));
    panned.view().show(600, 700, 900, 900);
    REQUIRE(panned.wait_exact(60).all_exact());
    for (int i = 0; i < 5; ++i) {
        panned.view().pan_pixels(17, -11);  // whole pixels: the previous image is reused, shifted
        panned.frame();
    }
    REQUIRE(panned.wait_exact(60).all_exact());
    HeadlessView fresh(context, session, small_view(384, 256));
    fresh.view() = panned.view();
    REQUIRE(fresh.wait_exact(60).all_exact());
    REQUIRE(panned.renderer().read_pixels() == fresh.renderer().read_pixels());
    require_no_validation_errors();
}

TEST_CASE("hover reports the exact probability from row()", "[render]") {
    VulkanContext& context = vulkan();
    const Session& session = session_with(SyntheticPattern::PreviousToken, 2048);
    HeadlessView view(context, session, small_view(512, 512));
    view.view().show(1000, 1000, 1064, 1064);
    view.wait_exact(60);
    const HoverInfo h = view.hover(8 * 20 + 3, 8 * 21 + 3);  // key 1020, query 1021
    REQUIRE(h.inside);
    REQUIRE(h.query == 1021);
    REQUIRE(h.key == 1020);
    const std::vector<float> row = view.source().row(0, 0, 1021);
    REQUIRE(h.probability == row[1020]);
    REQUIRE(h.rank == 1);
    REQUIRE(h.level == 0);
    REQUIRE(h.cell_sum == Approx(h.probability).epsilon(1e-5));
    REQUIRE(h.query_token == " w1021");
    const HoverInfo upper = view.hover(8 * 30, 8 * 10);
    REQUIRE(!upper.inside);
    require_no_validation_errors();
}

TEST_CASE("headless scripts: parse errors name the line", "[render]") {
    REQUIRE(parse_script("fit\n# comment\n\nzoom 2 10 10\nwait 3\n", "s").size() == 3);
    REQUIRE_THROWS_WITH(parse_script("fit\nwarp 3\n", "s.txt"), Catch::Contains("s.txt:2") && Catch::Contains("warp"));
    REQUIRE_THROWS_WITH(parse_script("show 1 2 3\n", "s.txt"), Catch::Contains("takes 4"));
}

#ifdef ATTNSCOPE_HAVE_IMGUI
TEST_CASE("ImGui glue links (core + GLFW + Vulkan backends)", "[render]") {
    IMGUI_CHECKVERSION();
    ImGuiContext* imgui = ImGui::CreateContext();
    REQUIRE(imgui);
    ImGui::GetIO().Fonts->AddFontDefault();
    unsigned char* pixels = nullptr;
    int w = 0, h = 0;
    ImGui::GetIO().Fonts->GetTexDataAsRGBA32(&pixels, &w, &h);
    REQUIRE(w > 0);
    REQUIRE(reinterpret_cast<void*>(&ImGui_ImplVulkan_Init) != nullptr);
    REQUIRE(reinterpret_cast<void*>(&ImGui_ImplGlfw_InitForVulkan) != nullptr);
    ImGui::DestroyContext(imgui);
}
#endif

TEST_CASE("a growing matrix: tiles over new rows are recomputed, shown meanwhile, and exact again", "[render]") {
    // Live decoding appends rows to the capture while the map is on screen.
    VulkanContext& context = vulkan();
    const Session& full = session_with(SyntheticPattern::PreviousToken, 2048);
    Session growing;
    growing.tokens = full.tokens;
    growing.text = full.text;
    growing.capture = std::make_shared<CaptureStore>(full.capture->shape());
    growing.capture->copy_prefix_from(*full.capture, 200);
    HeadlessView view(context, growing, small_view(256, 256));
    view.view().show(0, 0, 256, 256);  // tile (0, 0) at level 0, one token per pixel
    REQUIRE(view.wait_exact(60).all_exact());
    const TileKey key{0, 0, 0, 0, 0, Plane::Max};
    REQUIRE(view.cache().find(key));
    CHECK(view.cache().find(key)->valid_rows == 200);

    // 56 more positions arrive.
    copy_captured_rows(*full.capture, *growing.capture, 200, 56);
    view.cache().invalidate_rows_from(200);
    view.renderer().set_positions(256);
    REQUIRE(view.cache().find(key)->stale);  // still resident: drawn until its replacement arrives
    REQUIRE(view.wait_exact(60).all_exact());
    REQUIRE(view.cache().find(key));
    CHECK_FALSE(view.cache().find(key)->stale);
    CHECK(view.cache().find(key)->valid_rows == 256);
    // The previous-token diagonal now reaches the new rows.
    const std::vector<uint8_t> pixels = view.renderer().read_pixels();
    CHECK(is_bright(pixel(pixels, 256, 239, 240)));
    CHECK(is_empty(pixel(pixels, 256, 250, 240)));  // above the diagonal
    require_no_validation_errors();
}

#endif  // ATTNSCOPE_HAVE_UI
