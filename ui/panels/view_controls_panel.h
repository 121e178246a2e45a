#pragma once
// View controls: sum/max plane, colormap, log/linear scale, value range (auto, locked, manual),
// fit and go-to token. Immediate mode: draws into the current ImGui window, edits the model.
#include "ui/app/debugger_model.h"

namespace attn::panels {

struct ViewControlsState {
    long long goto_token = 0;  // the go-to field's value
};

// current_range: the range the map used last frame (shown, and the starting point of a manual range).
void draw_view_controls_panel(app::DebuggerModel& model, ViewControlsState& state, const render::ColorRange& current_range);

}  // namespace attn::panels
