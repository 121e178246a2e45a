#pragma once
// The attention map inside the window: the whole causal matrix of the shown step, square cells
// (see MatrixView for the rendering and the interaction both views share). Click selects the
// query row; the panels' go-to-token and fit requests are taken here.
#include "ui/app/matrix_view.h"

namespace attn::app {

class MapView : public MatrixView {
public:
    MapView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache);

    render::MatrixExtent extent() const override { return render::MatrixExtent::square(model_.shown_positions()); }
    void fit() override { view_.fit(model_.shown_positions()); }

private:
    void take_requests() override;
    void row_clicked(int64_t row) override { model_.select_query(row); }
    int64_t highlighted_row() const override { return model_.selected_query; }
    std::string row_label(int64_t row) const override { return model_.token_display(row, 24); }
    std::string describe_row(const view::HoverInfo& hover) const override;
};

}  // namespace attn::app
