#pragma once
// Timeline: a slider over every step of the session (live or reopened); scrubbing makes every
// view show that step (the map clipped to the matrix as it was, its query row selected, the step
// inspector and the diff on it). Play/pause with a speed, frame by frame, "follow" (stick to the
// latest step while a run goes on), keyframes (mark with a name, jump), and the generated token
// stream with the current token highlighted (click a token to go to its step).
#include <chrono>
#include <functional>
#include <string>

#include "ui/app/debugger_model.h"

namespace attn::panels {

struct TimelineState {
    bool playing = false;
    float steps_per_second = 4;
    std::chrono::steady_clock::time_point last_advance{};
    std::string keyframe_name = "keyframe";
};

struct TimelineActions {
    // Where keyframes go: the live runner (recorded with the session) or the session in memory.
    std::function<void(int64_t step, const std::string& name)> add_keyframe;
};

void draw_timeline_panel(app::DebuggerModel& model, TimelineState& state, const TimelineActions& actions);
// Advances playback (call once per frame, also when the panel is hidden).
void advance_timeline(app::DebuggerModel& model, TimelineState& state);

}  // namespace attn::panels
