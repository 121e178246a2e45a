#include "ui/app/map_view.h"

#include <algorithm>

#include "engine/error.h"

namespace attn::app {

MapView::MapView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache)
    : MatrixView(context, model, cache, {"##attention_map", /*square_cells=*/true, /*keys_need_hover=*/false}) {}

void MapView::take_requests() {
    if (model_.fit_requested) {
        fit();
        model_.fit_requested = false;
    }
    if (model_.goto_token) {
        const double t = static_cast<double>(std::clamp<int64_t>(*model_.goto_token, 0, model_.shown_positions() - 1));
        // Show ~48 tokens around the diagonal cell (t, t) and select that row.
        view_.show(t - 24, t - 24, t + 25, t + 25);
        model_.select_query(static_cast<int64_t>(t));
        model_.goto_token.reset();
    }
}

std::string MapView::describe_row(const view::HoverInfo& hover) const {
    return cat("query ", hover.query, "  ", model_.token_display(hover.query));
}

}  // namespace attn::app
