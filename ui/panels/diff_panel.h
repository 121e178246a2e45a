#pragma once
// Step diff: pick two steps (default: the shown step and the one before). For every (layer, head)
// the change of the query's attention distribution — Jensen–Shannon divergence and L1 over the
// shared keys, and the mass the later row puts on keys the earlier one could not see — computed
// on a worker thread; the heads ranked by how far their focus moved (click one to show it); the
// shown head's per-key gains and losses go to the map (a band under the later row) and the token
// strip (diverging colours).
#include <cstdint>
#include <future>
#include <memory>
#include <optional>

#include "engine/attention_metrics.h"
#include "engine/live_runner.h"
#include "ui/app/debugger_model.h"

namespace attn::panels {

struct DiffState {
    bool enabled = true;
    bool follow = true;  // A = shown step − 1, B = shown step
    int step_a = 0, step_b = 1;
    std::future<StepDiff> pending;
    std::optional<StepDiff> result;
    int64_t requested_a = -2, requested_b = -2;  // queries of the diff in flight or shown
    const CaptureStore* requested_store = nullptr;
    int delta_layer = -1, delta_head = -1;
};

void draw_diff_panel(app::DebuggerModel& model, DiffState& state);
// Keeps the diff and the key deltas current (call once per frame, also when the panel is hidden).
// A live run's findings already hold each step's diff against the previous position: that one is
// taken from them, not computed again.
void update_diff(app::DebuggerModel& model, DiffState& state, const std::vector<StepFindings>& findings = {});

}  // namespace attn::panels
