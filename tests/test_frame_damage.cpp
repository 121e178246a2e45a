// Frame damage (ui/app/frame_damage.h): which cells of the window changed between two ImGui frames,
// the rectangles made of them, and the draw commands clipped to those rectangles. Real ImGui frames
// (a context with its default font, no GPU needed).
#ifdef ATTNSCOPE_HAVE_APP
#include <catch2/catch.hpp>
#include <imgui.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "ui/app/frame_damage.h"

namespace {

using attn::app::FrameDamage;
using attn::app::UnderLayer;

constexpr VkExtent2D kExtent{640, 480};

// One ImGui context for a test; frame() builds a frame with `ui` and returns its draw data.
class ImGuiFrames {
public:
    ImGuiFrames() {
        context_ = ImGui::CreateContext();
        ImGuiIO& io = ImGui::GetIO();
        io.DisplaySize = ImVec2(float(kExtent.width), float(kExtent.height));
        io.IniFilename = nullptr;
        unsigned char* pixels = nullptr;
        int w = 0, h = 0;
        io.Fonts->GetTexDataAsRGBA32(&pixels, &w, &h);
    }
    ~ImGuiFrames() { ImGui::DestroyContext(context_); }
    ImDrawData& frame(const std::function<void()>& ui) {
        ImGui::GetIO().DeltaTime = 1.f / 60.f;
        ImGui::NewFrame();
        ui();
        ImGui::Render();
        return *ImGui::GetDrawData();
    }

private:
    ImGuiContext* context_ = nullptr;
};

// Two fixed windows: a label on the left, a longer text block on the right.
void two_windows(const std::string& left, const std::string& right) {
    ImGui::SetNextWindowPos(ImVec2(0, 0));
    ImGui::SetNextWindowSize(ImVec2(200, 480));
    ImGui::Begin("left", nullptr, ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoResize);
    ImGui::TextUnformatted(left.c_str());
    ImGui::End();
    ImGui::SetNextWindowPos(ImVec2(300, 100));
    ImGui::SetNextWindowSize(ImVec2(300, 300));
    ImGui::Begin("right", nullptr, ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoResize);
    ImGui::TextUnformatted(right.c_str());
    ImGui::End();
}

bool inside(const VkRect2D& r, int x0, int y0, int x1, int y1) {
    return r.offset.x >= x0 && r.offset.y >= y0 && r.offset.x + int(r.extent.width) <= x1 &&
           r.offset.y + int(r.extent.height) <= y1;
}

}  // namespace

TEST_CASE("frame damage: the first frame is whole, an identical frame has none, a changed text only its cells", "[render][damage]") {
    ImGuiFrames frames;
    FrameDamage damage;
    const auto& first = damage.update(frames.frame([] { two_windows("step 1", "token: Paris"); }), {}, kExtent);
    REQUIRE(first.size() == 1);
    CHECK(damage.full());
    CHECK(damage.damaged_fraction() == Approx(1.0));

    CHECK(damage.update(frames.frame([] { two_windows("step 1", "token: Paris"); }), {}, kExtent).empty());
    CHECK(damage.damaged_fraction() == 0.0);

    // The left label changes: damage stays inside the left window's top rows.
    const std::vector<VkRect2D> changed = damage.update(frames.frame([] { two_windows("step 2", "token: Paris"); }), {}, kExtent);
    REQUIRE_FALSE(changed.empty());
    CHECK_FALSE(damage.full());
    for (const VkRect2D& r : changed) {
        INFO("rect " << r.offset.x << "," << r.offset.y << " " << r.extent.width << "x" << r.extent.height);
        CHECK(inside(r, 0, 0, 224, 64));  // the cells holding the label (cells are 32 px)
    }
    CHECK(damage.damaged_fraction() < 0.05);

    // The right window's text: damage inside the right window only.
    const std::vector<VkRect2D> right =
        damage.update(frames.frame([] { two_windows("step 2", "token: Berlin"); }), {}, kExtent);
    REQUIRE_FALSE(right.empty());
    for (const VkRect2D& r : right) CHECK(inside(r, 288, 96, 608, 416));
}

TEST_CASE("frame damage: a layer under the UI damages its rectangle when its version or place changes", "[render][damage]") {
    ImGuiFrames frames;
    FrameDamage damage;
    UnderLayer map{VkRect2D{{256, 64}, {192, 128}}, 1};
    damage.update(frames.frame([] { two_windows("a", "b"); }), std::span<const UnderLayer>(&map, 1), kExtent);
    CHECK(damage.update(frames.frame([] { two_windows("a", "b"); }), std::span<const UnderLayer>(&map, 1), kExtent).empty());

    map.version = 2;  // new pixels: exactly the layer's cells
    const std::vector<VkRect2D> redrawn =
        damage.update(frames.frame([] { two_windows("a", "b"); }), std::span<const UnderLayer>(&map, 1), kExtent);
    int64_t area = 0;
    for (const VkRect2D& r : redrawn) {
        CHECK(inside(r, 256, 64, 448, 192));
        area += int64_t(r.extent.width) * r.extent.height;
    }
    CHECK(area == 192 * 128);

    map.rect.offset.x = 320;  // moved: the old and the new place
    const std::vector<VkRect2D> moved =
        damage.update(frames.frame([] { two_windows("a", "b"); }), std::span<const UnderLayer>(&map, 1), kExtent);
    area = 0;
    for (const VkRect2D& r : moved) area += int64_t(r.extent.width) * r.extent.height;
    CHECK(area == (512 - 256) * 128);

    damage.invalidate();
    damage.update(frames.frame([] { two_windows("a", "b"); }), std::span<const UnderLayer>(&map, 1), kExtent);
    CHECK(damage.full());
}

TEST_CASE("frame damage: clip_draw_data keeps exactly the commands that overlap the rectangles, clipped to them", "[render][damage]") {
    ImGuiFrames frames;
    ImDrawData& draw = frames.frame([] { two_windows("left", "right"); });
    size_t before = 0;
    for (int l = 0; l < draw.CmdListsCount; ++l) before += size_t(draw.CmdLists[l]->CmdBuffer.Size);
    REQUIRE(before > 0);

    const VkRect2D left_only{{0, 0}, {128, 128}};
    attn::app::clip_draw_data(draw, std::span<const VkRect2D>(&left_only, 1), kExtent);
    size_t after = 0;
    for (int l = 0; l < draw.CmdListsCount; ++l)
        for (const ImDrawCmd& cmd : draw.CmdLists[l]->CmdBuffer) {
            ++after;
            CHECK(cmd.ClipRect.x >= 0.f);
            CHECK(cmd.ClipRect.y >= 0.f);
            CHECK(cmd.ClipRect.z <= 128.f);
            CHECK(cmd.ClipRect.w <= 128.f);
        }
    CHECK(after >= 1);  // the left window's background and text
    CHECK(after < before + 1);

    // Two rectangles in the left window, one over its label and one over empty background: the
    // background is drawn in both, the label's glyphs only in the first; every piece keeps only
    // triangles that reach its rectangle, and the index count adds up.
    ImDrawData& again = frames.frame([] { two_windows("left", "right"); });
    const VkRect2D two[2] = {{{0, 0}, {64, 64}}, {{0, 256}, {64, 64}}};
    attn::app::clip_draw_data(again, two, kExtent);
    size_t pieces_top = 0, pieces_bottom = 0, triangles_top = 0, triangles_bottom = 0;
    int indices = 0;
    for (int l = 0; l < again.CmdListsCount; ++l) {
        const ImDrawList* list = again.CmdLists[l];
        indices += list->IdxBuffer.Size;
        for (const ImDrawCmd& cmd : list->CmdBuffer) {
            const bool top = cmd.ClipRect.w <= 64.f;
            (top ? pieces_top : pieces_bottom) += 1;
            (top ? triangles_top : triangles_bottom) += cmd.ElemCount / 3;
            for (unsigned i = 0; i < cmd.ElemCount; i += 3) {
                float y_min = 1e9f, y_max = -1e9f;
                for (unsigned k = 0; k < 3; ++k) {
                    const float y = list->VtxBuffer[int(cmd.VtxOffset + list->IdxBuffer[int(cmd.IdxOffset + i + k)])].pos.y;
                    y_min = std::min(y_min, y);
                    y_max = std::max(y_max, y);
                }
                CHECK(y_max >= cmd.ClipRect.y);
                CHECK(y_min <= cmd.ClipRect.w);
            }
        }
    }
    CHECK(indices == again.TotalIdxCount);
    CHECK(pieces_top >= 1);
    CHECK(pieces_bottom >= 1);
    CHECK(triangles_top > triangles_bottom);  // the glyphs of "left" are only at the top
}
#endif

#ifdef ATTNSCOPE_HAVE_APP
TEST_CASE("frame damage: the parts of the damage no layer covers", "[render][damage]") {
    const VkRect2D damage[2] = {{{0, 0}, {320, 256}}, {{320, 0}, {64, 64}}};
    const UnderLayer map{VkRect2D{{64, 32}, {128, 96}}, 1};
    const std::vector<VkRect2D> parts = attn::app::uncovered_parts(damage, std::span<const UnderLayer>(&map, 1));
    int64_t area = 0;
    for (const VkRect2D& r : parts) {
        area += int64_t(r.extent.width) * r.extent.height;
        // none of them reaches into the layer
        const bool overlaps = r.offset.x < 64 + 128 && r.offset.x + int(r.extent.width) > 64 && r.offset.y < 32 + 96 &&
                              r.offset.y + int(r.extent.height) > 32;
        CHECK_FALSE(overlaps);
    }
    CHECK(area == 320 * 256 + 64 * 64 - 128 * 96);
    // A layer covering everything leaves nothing; no layer leaves the damage as it was.
    const UnderLayer all{VkRect2D{{0, 0}, {640, 480}}, 1};
    CHECK(attn::app::uncovered_parts(damage, std::span<const UnderLayer>(&all, 1)).empty());
    CHECK(attn::app::uncovered_parts(damage, {}).size() == 2);
}
#endif
