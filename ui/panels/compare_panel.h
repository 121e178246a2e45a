#pragma once
// Head comparison (issue 6, "Comparison"): two or more heads side by side, each a full map (its own
// MatrixView: level-of-detail exact tiles on the GPU), with one zoom and pan shared by all, and the
// difference map of two of them (A − B) in the diverging colormap. Optionally the same head of a
// second session (a file of the same architecture: e.g. another prompt or another model), drawn as
// one more map.
//
// The difference is not drawn through the GPU tile pyramid (its tiles would need a producer that
// subtracts two heads, which the tile cache does not have): a worker computes exact CpuTileSource
// tiles of both heads at the level where the visible region is at most ~200 cells across, and the
// panel draws A − B (sum of P per cell, divided by the cell's queries: the mass per query row) as
// ImGui rectangles, in the same transform as the maps. It follows every zoom and pan at that
// resolution; the last grid stays up while the next one computes.
#include <array>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/text_segments.h"
#include "ui/app/matrix_view.h"
#include "ui/panels/async_value.h"

namespace attn::panels {

// A map of one head of the comparison: the model's settings, except its own (layer, head).
class CompareView : public app::MatrixView {
public:
    CompareView(render::VulkanContext& context, app::DebuggerModel& model, const render::TileCacheOptions& cache, int slot);
    render::MatrixExtent extent() const override { return render::MatrixExtent::square(model_.shown_positions()); }
    void fit() override { view_.fit(model_.shown_positions()); }
    app::DebuggerModel& model() { return model_; }

private:
    void row_clicked(int64_t row) override { model_.select_query(row); }
    int64_t highlighted_row() const override { return model_.selected_query; }
    std::string row_label(int64_t row) const override { return model_.token_display(row, 24); }
    std::string describe_row(const view::HoverInfo& hover) const override;
};

struct CompareState {
    std::vector<HeadRef> heads;  // the heads compared (two at least once chosen)
    std::vector<std::unique_ptr<CompareView>> views;  // one per head, then the other session's
    render::ViewTransform shared;  // the zoom and pan every map shows
    bool have_shared = false;
    int diff_a = 0, diff_b = 1;    // which maps the difference subtracts (A − B)

    // The same head in a second session.
    char other_path[512] = {};
    std::future<std::shared_ptr<Session>> loading;
    std::shared_ptr<Session> other;
    std::unique_ptr<CpuTileSource> other_source;
    std::unique_ptr<app::DebuggerModel> other_model;
    std::string other_note;

    struct DiffKey {
        const CaptureStore* a = nullptr;
        int la = 0, ha = 0;
        const CaptureStore* b = nullptr;
        int lb = 0, hb = 0;
        int level = 0;
        int64_t tx0 = 0, ty0 = 0, tx1 = -1, ty1 = -1;
        int64_t positions = 0;
        bool operator==(const DiffKey&) const = default;
    };
    struct DiffGrid {
        int level = 0;
        int64_t cols = 0, rows = 0;        // cells
        int64_t key0 = 0, row0 = 0;         // tokens at cell (0, 0)
        std::vector<float> values;          // A − B per cell (NaN: no visible pair)
        float max_abs = 0;
        double max_a = 0, max_b = 0;        // largest cell of each head (the same units)
    };
    AsyncValue<DiffKey, DiffGrid> diff;
    // Where the difference was drawn (framebuffer pixels x0, y0, x1, y1), for tests.
    std::array<float, 4> diff_rect{};
};

// Each map's (layer, head) and session, in order (slot i of views).
struct CompareSlot {
    app::DebuggerModel* model;
    HeadRef head;
    std::string name;
};
std::vector<CompareSlot> compare_slots(app::DebuggerModel& model, CompareState& state);

void draw_compare_panel(render::VulkanContext& context, app::DebuggerModel& model, CompareState& state,
                        const render::TileCacheOptions& cache, float fb_x, float fb_y);
// The main session changed (live: restart, another branch): the maps get caches over the new source.
void compare_reset_source(CompareState& state);
// Opens a second session (blocking; scripts), or starts loading it in the background (the panel).
void compare_open_session(CompareState& state, const std::string& path, bool wait);
// Blocks until the difference for the current view is there (scripts).
void finish_compare(app::DebuggerModel& model, CompareState& state);
bool compare_settled(app::DebuggerModel& model, CompareState& state);
nlohmann::json compare_json(app::DebuggerModel& model, CompareState& state);
// Drops the maps (their Vulkan objects) before the window goes.
void release_compare(CompareState& state);

}  // namespace attn::panels
