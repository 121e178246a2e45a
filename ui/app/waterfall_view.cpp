#include "ui/app/waterfall_view.h"

#include "engine/error.h"
#include "ui/view/headless.h"

namespace attn::app {

WaterfallView::WaterfallView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache)
    : MatrixView(context, model, cache, {"##attention_waterfall", /*square_cells=*/false, /*keys_need_hover=*/true}) {}

render::MatrixExtent WaterfallView::extent() const { return view::waterfall_extent(model_.session()); }

void WaterfallView::fit() {
    fitted_extent_ = extent();
    view_.fit(fitted_extent_, /*square_cells=*/false);
    fitted_view_ = view_;
}

void WaterfallView::take_requests() {
    if (extent() != fitted_extent_ && view_ == fitted_view_) fit();
}

int64_t WaterfallView::highlighted_row() const {
    const int64_t step = model_.selected_query - model_.session().prompt_tokens;
    return model_.selected_query >= 0 && step >= 0 && step < model_.steps() ? step : -1;
}

std::string WaterfallView::row_label(int64_t step) const {
    return cat(step, " ", model_.token_display(model_.query_of(step), 20));
}

std::string WaterfallView::describe_row(const view::HoverInfo& hover) const {
    return cat("step  ", hover.step, "  (query ", hover.query, ")  ", model_.token_display(hover.query));
}

}  // namespace attn::app
