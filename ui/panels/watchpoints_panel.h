#pragma once
// Watchpoints: conditions on head metrics ("entropy of L12H3 < 0.5", "mass(/contract/) < 0.1",
// "top1 < 0.2", "token_prob < 0.2"; grammar in engine/watchpoint.h) that pause a live run and mark
// the step. Parse errors show under the input, with the column. On a reopened session the same
// conditions are evaluated step by step ("Find") and the hits can be jumped to.
#include <string>
#include <vector>

#include "engine/live_runner.h"
#include "ui/app/debugger_model.h"

namespace attn::panels {

struct WatchpointsState {
    std::string input = "entropy of L0H0 < 0.5";
    std::string error;
    std::vector<Watchpoint> list;
    std::vector<int64_t> hits;  // steps, from findings (live) or from Find (a session)
};

// runner may be null (a session opened from a file).
void draw_watchpoints_panel(app::DebuggerModel& model, LiveRunner* runner, const std::vector<StepFindings>& findings,
                            WatchpointsState& state);

}  // namespace attn::panels
