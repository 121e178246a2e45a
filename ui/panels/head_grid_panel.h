#pragma once
// Head grid: every (layer, head) as a thumbnail — the whole causal matrix pooled from the overview,
// or the shown step's row — in a layers × heads grid. Thumbnails are computed on a worker thread
// (a 50k-token session never stalls a frame; the previous grid stays up meanwhile). Ctrl+wheel or
// the slider zooms; hover names the head; click opens it in the map. A label filter (set from the
// heads table) dims the heads without that label.
#include <cstdint>
#include <future>
#include <string>
#include <vector>

#include "engine/head_thumbnails.h"
#include "ui/app/debugger_model.h"

namespace attn::panels {

struct HeadGridState {
    bool current_step = false;  // false: the whole matrix; true: the shown step's query row
    float thumb_px = 40;
    int cells = 24;
    // What `thumbs` (or the pending computation) shows.
    struct Key {
        const CaptureStore* store = nullptr;
        int64_t positions = -1, query = -1;
        bool current_step = false;
        int cells = 0;
        bool operator==(const Key&) const = default;
    };
    Key shown, computing;
    std::vector<HeadThumbnail> thumbs;
    std::future<std::vector<HeadThumbnail>> pending;
    std::string note;  // why the last computation failed
    // Label filter (the heads table's): per head, layer-major, 1 = passes. Empty: no filter. Heads
    // left out are dimmed (the grid keeps its layers × heads shape) and the header says how many pass.
    std::vector<uint8_t> filter;
    std::string filter_name;
};

// Returns true when a head was clicked (it is now the model's selected layer and head).
bool draw_head_grid_panel(app::DebuggerModel& model, HeadGridState& state);

// Blocks until the thumbnails for the model's current state are ready (scripts and tests).
void finish_head_grid(const app::DebuggerModel& model, HeadGridState& state);

}  // namespace attn::panels
