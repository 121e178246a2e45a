#pragma once
// Layer/head selector: sliders for the shown (layer, head) and a layers × heads grid of the
// attention entropy of the selected query's row (bits; low = focused, high = diffuse). Clicking a
// grid cell shows that head. The grid is filled incrementally under a per-frame time budget, the
// shown layer first, so a 50k-token row never stalls a frame.
#include <cstdint>
#include <vector>

#include "ui/app/debugger_model.h"

namespace attn::panels {

class HeadEntropyGrid {
public:
    // Computes rows until budget_ms is spent (at least one row per call when work remains).
    void update(const app::DebuggerModel& model, double budget_ms);
    bool complete() const { return remaining_ == 0; }
    int64_t query() const { return query_; }
    // NaN where not computed yet.
    float bits(int layer, int head) const { return bits_[static_cast<size_t>(layer * heads_ + head)]; }
    float max_bits() const { return max_bits_; }

private:
    int64_t query_ = -1;
    int layers_ = 0, heads_ = 0, first_layer_ = 0;
    std::vector<float> bits_;
    size_t next_ = 0, remaining_ = 0;
    float max_bits_ = 0;
};

void draw_head_selector_panel(app::DebuggerModel& model, HeadEntropyGrid& grid);

}  // namespace attn::panels
