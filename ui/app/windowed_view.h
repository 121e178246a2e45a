#pragma once
// `attnscope view` with a window: the entry point the view command calls when --headless is not
// given. The fields mirror the command's options (ui/cli/cmd_view.cpp).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/session.h"

namespace attn::app {

struct WindowedViewReport {
    uint64_t frames = 0;
    bool validation = false;
    std::vector<std::string> validation_errors;
    std::string device;
    std::string screenshot;  // written, if one was asked for
};

struct WindowedViewOptions {
    std::string session_path;          // a .attn file …
    int64_t synthetic_tokens = 0;      // … or a generated session of N tokens
    const Session* session = nullptr;  // … or one the caller already holds (wins over both)
    std::string size = "1600x900";     // window size in screen coordinates, WIDTHxHEIGHT
    std::string script_path;           // UI actions (ui/view/headless.h's format), one per frame
    std::string screenshot;            // PNG of the whole window (UI included) at the end
    int frames = 0;                    // > 0: quit after this many frames (and after the script)
    int layer = 0, head = 0;
    int64_t select_query = -1;         // >= 0: start with this query row selected (and in view)
    std::string plane = "max", colormap = "viridis", scale = "log";
    int cache_mb = 256;
    bool validation = false;           // also on in debug builds and with ATTNSCOPE_VALIDATION=1
    bool vsync = true;
    WindowedViewReport* report = nullptr;  // filled on return, if given
    // Tests: called before each frame with the GLFWwindow* and the frame number (e.g. to resize).
    std::function<void(void* glfw_window, uint64_t frame)> frame_hook;
};

// Opens the window and runs until it is closed (or `frames` frames). Returns the process exit
// code: 0; 1 on an error (printed); 2 when there is no display (the message suggests --headless);
// 3 when the validation layer reported errors. Never throws.
int run_windowed_view(const WindowedViewOptions& options);

}  // namespace attn::app
