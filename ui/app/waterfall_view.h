#pragma once
// The waterfall of one (layer, head): decode step × key position, each row that step's attention
// (query row prompt_tokens + step, recomputed from Q/K/LSE like the map, never stored). Every
// captured step is a row, so live decoding adds one row per step (call rows_changed_from as for
// the map). Cells are not square: a few hundred steps fill the height while tens of thousands of
// keys fill the width, each axis with its own level of detail.
//
// Interaction (MatrixView's, per axis): the wheel zooms both axes about the cursor, Shift+wheel
// the keys only, Ctrl+wheel the steps only; drag pans; F fits the whole waterfall; keys act only
// while the mouse is over it. Click goes to the step (the timeline, the map and the panels
// follow); hover shows the step, its token and the exact probability from CpuTileSource::row.
#include "ui/app/matrix_view.h"

namespace attn::app {

class WaterfallView : public MatrixView {
public:
    WaterfallView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache);

    render::MatrixExtent extent() const override;
    void fit() override;

private:
    // Live growth: a waterfall still showing its fitted view fits again as steps are added (one
    // the user zoomed or panned stays where it is).
    void take_requests() override;
    void row_clicked(int64_t step) override { model_.show_step(step); }
    int64_t highlighted_row() const override;
    std::string row_label(int64_t step) const override;
    std::string describe_row(const view::HoverInfo& hover) const override;

    render::ViewTransform fitted_view_;
    render::MatrixExtent fitted_extent_;
};

}  // namespace attn::app
