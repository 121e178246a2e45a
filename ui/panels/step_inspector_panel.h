#pragma once
// Step inspector: everything recorded for the step the timeline shows — token id and text,
// probability, log-probability and the cumulative log-probability, the top alternatives (each can
// start a branch when a model is live), beam id, KV-cache length and evictions, whether the token
// was forced, and the step's cost (forward pass, attention time per layer). With live findings:
// the watchpoints that fired, the loop alarm, and the heads whose focus moved most (click to show).
#include <functional>
#include <vector>

#include "engine/live_runner.h"
#include "ui/app/debugger_model.h"

namespace attn::panels {

struct StepInspectorActions {
    // Set when a model is live: force `token` at `step` on a new branch.
    std::function<void(int64_t step, int32_t token)> branch;
};

void draw_step_inspector_panel(app::DebuggerModel& model, const std::vector<StepFindings>& findings,
                               const StepInspectorActions& actions);

}  // namespace attn::panels
