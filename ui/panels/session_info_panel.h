#pragma once
// Session info: the model and capture shape, positions, prompt/generated split and sampling; for
// the selected query, if it is a generated position, its step: the chosen token, its
// log-probability, the cumulative log-probability and the top alternatives the model considered.
#include <string>

#include "ui/app/debugger_model.h"

namespace attn::panels {

struct SessionInfoExtras {
    std::string source;   // file path or "synthetic"
    std::string device;   // Vulkan device description
    std::string fonts;
    double frame_ms = 0;
    int level = 0, visible_tiles = 0, exact_tiles = 0;
    size_t cache_tiles = 0;
    unsigned long long cache_bytes = 0;
    size_t validation_errors = 0;
    bool validation = false;
};

void draw_session_info_panel(app::DebuggerModel& model, const SessionInfoExtras& extras);

}  // namespace attn::panels
