#pragma once
#include <string>

namespace attn::cli {

struct LiveBenchOptions {
    std::string model = "default";
    std::string prompt = "The quick brown fox jumps over the lazy dog. Tell me a story about it.";
    std::string size = "1920x1080";
    int tokens = 48;
    bool validation = false;
    bool json_only = false;
    std::string runtime_priority = "background";  // normal, low or background (the model's threads)
    bool full_redraw = false;  // every frame drawn whole (as before frame damage): for comparison
    std::string present = "auto";  // auto, swapchain or x11-shm
};

// Frame times of the whole debugger while the cpu backend decodes live (see bench_live.cpp).
void run_live_render_bench(const LiveBenchOptions& options);

}  // namespace attn::cli
