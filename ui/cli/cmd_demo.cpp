// `attnscope demo`: the default model on a built-in prompt, prefilled and decoded at a watchable
// pace while the views follow — the map zooms to where the current token attends, the head whose
// focus moved most is shown, a caption says what happened — looping until the window is closed.
// With --headless the full UI runs on a private X server (Xvfb) and --screenshot / --sequence
// write what it showed.
#include <CLI/CLI.hpp>

#include "engine/error.h"

#ifdef ATTNSCOPE_HAVE_APP
#include <cstdio>
#include <cstdlib>

#include "engine/model.h"
#include "ui/app/private_display.h"
#include "ui/app/windowed_view.h"
#endif

namespace attn::cli {

#ifdef ATTNSCOPE_HAVE_APP
namespace {

// A prompt whose continuation shows copying (induction), a sink, and local heads at work.
constexpr const char* kDemoPrompt =
    "Alice keeps the red key in the blue box. Bob keeps the green key in the yellow box. "
    "Question: where does Alice keep the red key? Answer:";

struct DemoCommand {
    std::string model = "default";
    std::string backend = "auto";
    std::string prompt = kDemoPrompt;
    std::string size = "1600x900";
    bool headless = false;
    int frames = 0;
    std::string screenshot, sequence_dir;
    double steps_per_second = 3;
    int tokens = 24;
    std::string present = "auto";

    void run() const {
        std::unique_ptr<app::PrivateDisplay> display;
        if (headless) {
            const auto xvfb = app::find_in_path("Xvfb");
            if (!xvfb) fail("demo --headless runs the whole UI on a private X server: install Xvfb (Debian: xvfb)");
            display = std::make_unique<app::PrivateDisplay>(*xvfb, 3840, 2160);
            if (display->display().empty()) fail("demo --headless: Xvfb did not start");
            ::setenv("DISPLAY", display->display().c_str(), 1);
            ::unsetenv("WAYLAND_DISPLAY");
        }
        auto loaded = Model::load(resolve_model_path(model));
        app::WindowedViewOptions window;
        window.size = size;
        window.model = loaded.get();
        window.backend = parse_backend_kind(backend);
        window.live_request.prompt = prompt;
        window.live_request.sampling.max_new_tokens = tokens;
        window.live_request.sampling.stop_at_eos = true;
        window.live_request.sampling.chat = true;  // the default model is an instruct model
        window.demo = true;
        window.demo_steps_per_second = steps_per_second;
        window.screenshot = screenshot;
        window.sequence_dir = sequence_dir;
        window.frames = headless ? std::max(frames, 1) : frames;
        window.layer = 0, window.head = 0;
        window.present = present;
        const int rc = app::run_windowed_view(window);
        if (rc == 2) fail("demo: no display; run it with --headless to render to PNG files");
        if (rc != 0) throw CLI::RuntimeError(rc);
        if (!screenshot.empty()) std::printf("screenshot written to %s\n", screenshot.c_str());
    }
};

}  // namespace
#endif

void add_demo_command(CLI::App& app) {
#ifdef ATTNSCOPE_HAVE_APP
    auto cmd = std::make_shared<DemoCommand>();
    CLI::App* demo = app.add_subcommand("demo", "Demo: the default model decodes a built-in prompt while the views follow");
    demo->add_option("--model", cmd->model, "Model file or directory (default: the default model)");
    demo->add_option("--backend", cmd->backend, "cpu, cuda or auto (default auto)");
    demo->add_option("--prompt", cmd->prompt, "Another prompt instead of the built-in one");
    demo->add_option("-n,--max-tokens", cmd->tokens, "Tokens per loop (default 24)")->check(CLI::Range(1, 4096));
    demo->add_option("--steps-per-second", cmd->steps_per_second, "Decode pace (default 3)")->check(CLI::PositiveNumber);
    demo->add_option("--size", cmd->size, "Window WIDTHxHEIGHT (default 1600x900)");
    demo->add_flag("--headless", cmd->headless, "Run the UI on a private Xvfb (no window); use with --frames");
    demo->add_option("--frames", cmd->frames, "Quit after this many frames (headless: at least 1)")->check(CLI::NonNegativeNumber);
    demo->add_option("--screenshot", cmd->screenshot, "Write the last frame as a PNG");
    demo->add_option("--sequence", cmd->sequence_dir, "Also write every frame as DIR/NNNNN.png");
    demo->add_option("--present", cmd->present, "auto, swapchain or x11-shm (X11 shared memory; auto: for CPU renderers)")
        ->check(CLI::IsMember({"auto", "swapchain", "x11-shm"}));
    demo->callback([cmd] { cmd->run(); });
#else
    CLI::App* demo = app.add_subcommand("demo", "Demo mode (not in this build: no Vulkan/ImGui debugger)");
    demo->allow_extras();
    demo->callback([] { fail("this attnscope was built without the debugger's window (Vulkan/ImGui missing at build time)"); });
#endif
}

}  // namespace attn::cli
