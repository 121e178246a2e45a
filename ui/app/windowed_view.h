#pragma once
// `attnscope view` with a window: the entry point the view command calls when --headless is not
// given. The fields mirror the command's options (ui/cli/cmd_view.cpp).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/decoder.h"
#include "engine/live_runner.h"
#include "engine/model.h"
#include "engine/session.h"

namespace attn::app {

struct WindowedViewReport {
    uint64_t frames = 0;
    bool validation = false;
    std::vector<std::string> validation_errors;
    std::string device;
    std::string present;     // how frames reached the window (AppWindow::present_note)
    std::string screenshot;  // written, if one was asked for
    std::vector<double> frame_ms;  // every frame's time on the UI thread (bench render --live)
    std::vector<double> frame_start_s;  // when each frame began, seconds after the first
    std::vector<double> build_ms;  // of which: syncing with the runner and building the UI (the rest renders and presents)
    std::vector<double> wait_ms, present_ms;  // … waiting for a frame slot and image, and presenting
    std::vector<uint8_t> frame_live_busy;  // 1 where the live model was prefilling or decoding meanwhile
    std::vector<uint8_t> frame_drawn;      // 1 where something changed and the frame was drawn and presented
    std::vector<uint8_t> frame_deferred;   // 1 where drawing waited for a later frame (x11-shm: every slot busy)
    std::vector<double> damaged_fraction;  // share of the window redrawn (frame_damage.h)
    int64_t live_steps = 0;        // steps the live run made
    float content_scale = 1.f;     // at the end (a script's 'dpi S' or the monitor changes it)
    int content_scale_changes = 0;
    float font_px = 0;             // ImGui's font size at the end (follows the content scale)
};

struct WindowedViewOptions {
    std::string session_path;          // a .attn file …
    int64_t synthetic_tokens = 0;      // … or a generated session of N tokens
    const Session* session = nullptr;  // … or one the caller already holds (wins over both)
    // … or live decoding: this model runs `live_request` on its own thread and the views follow.
    const Model* model = nullptr;
    BackendKind backend = BackendKind::Auto;
    GenerationRequest live_request;
    std::string record_path;           // live: the session file every step is appended to
    ThreadPriority runtime_priority = ThreadPriority::Background;  // live: the model's threads (engine/parallel.h)
    bool demo = false;                 // demo mode: run at a watchable pace, views follow, captions
    double demo_steps_per_second = 3;
    std::string sequence_dir;          // demo: also write every frame as NNNNN.png here
    std::string size = "1600x900";     // window size in screen coordinates, WIDTHxHEIGHT
    std::string script_path;           // UI actions (ui/view/headless.h's format), one per frame
    std::string screenshot;            // PNG of the whole window (UI included) at the end
    int frames = 0;                    // > 0: quit after this many frames (and after the script)
    int layer = 0, head = 0;
    int64_t select_query = -1;         // >= 0: start with this query row selected (and in view)
    std::string plane = "max", colormap = "viridis", scale = "log";
    int cache_mb = 256;
    std::string rules_path, ontology_path;  // issue 7: rules checked on the session (and live), ontology labels
    bool validation = false;           // also on in debug builds and with ATTNSCOPE_VALIDATION=1
    bool vsync = true;
    std::string export_key_path;       // sign every export with this key (attnscope keygen)
    bool full_redraw = false;          // redraw and present every frame whole (no frame damage)
    std::string present = "auto";      // auto, swapchain or x11-shm (app_window.h)
    WindowedViewReport* report = nullptr;  // filled on return, if given
    // Tests: called before each frame with the GLFWwindow* and the frame number (e.g. to resize).
    std::function<void(void* glfw_window, uint64_t frame)> frame_hook;
};

// Opens the window and runs until it is closed (or `frames` frames). Returns the process exit
// code: 0; 1 on an error (printed); 2 when there is no display (the message suggests --headless);
// 3 when the validation layer reported errors. Never throws.
int run_windowed_view(const WindowedViewOptions& options);

}  // namespace attn::app
