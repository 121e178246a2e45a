// `attnscope bench render --live`: the whole debugger (panels, map, timeline) while the cpu
// backend decodes the default model live: the UI thread's frame times during the run, which must
// stay under 16.7 ms at p99 (the model runs on its own thread). Runs on a private Xvfb when there
// is no display. Prints a table, then one JSON object on the last line.
#ifdef ATTNSCOPE_HAVE_APP
#include "ui/cli/bench_live.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "engine/bench_stats.h"
#include "engine/error.h"
#include "engine/model.h"
#include "ui/app/private_display.h"
#include "ui/app/windowed_view.h"

namespace attn::cli {

namespace {
constexpr int kIdleFrames = 90;
}

void run_live_render_bench(const LiveBenchOptions& o) {
    std::unique_ptr<app::PrivateDisplay> display;
    if (!std::getenv("DISPLAY") && !std::getenv("WAYLAND_DISPLAY")) {
        const auto xvfb = app::find_in_path("Xvfb");
        if (!xvfb) fail("bench render --live needs a display or Xvfb (Debian: xvfb)");
        display = std::make_unique<app::PrivateDisplay>(*xvfb, 3840, 2160);
        if (display->display().empty()) fail("bench render --live: Xvfb did not start");
        ::setenv("DISPLAY", display->display().c_str(), 1);
    }
    auto model = Model::load(resolve_model_path(o.model));
    const std::string script = (std::filesystem::temp_directory_path() / ("attnscope-live-bench-" + std::to_string(::getpid()))).string();
    {
        std::ofstream out(script);
        // Idle frames first (the same UI with the model paused) to split the UI's own cost from
        // the cost of sharing the machine with the decoding model.
        out << "wait_idle\nwait " << kIdleFrames << "\nrun " << o.tokens << "\nwait 5\nwait_idle\n";
    }
    app::WindowedViewOptions window;
    window.size = o.size;
    window.model = model.get();
    window.backend = BackendKind::Cpu;
    window.live_request.prompt = o.prompt;
    window.live_request.sampling.max_new_tokens = o.tokens;
    window.live_request.sampling.stop_at_eos = false;
    window.script_path = script;
    window.frames = 1;
    window.vsync = false;
    window.validation = o.validation;
    window.full_redraw = o.full_redraw;
    window.present = o.present;
    if (o.runtime_priority == "normal") window.runtime_priority = ThreadPriority::Normal;
    else if (o.runtime_priority == "low") window.runtime_priority = ThreadPriority::Low;
    else if (o.runtime_priority == "background") window.runtime_priority = ThreadPriority::Background;
    else fail("--runtime-priority must be normal, low or background, not '", o.runtime_priority, "'");
    app::WindowedViewReport report;
    window.report = &report;
    const int rc = app::run_windowed_view(window);
    std::filesystem::remove(script);
    if (rc != 0) fail("bench render --live: the debugger exited with ", rc);

    // Frames in which nothing changed are neither drawn nor presented (frame_damage.h) and cost
    // well under a millisecond; the target is about the frames that were drawn.
    size_t deferred = 0;
    double decode_begin_s = -1, decode_end_s = 0;  // the first and last frame while the model was busy
    std::vector<double> drawn, drawn_build, drawn_wait, drawn_present, drawn_damage, all_busy, idle_drawn;
    for (size_t i = 0; i < report.frame_ms.size(); ++i) {
        const bool is_drawn = report.frame_drawn[i] != 0;
        if (report.frame_live_busy[i]) {
            all_busy.push_back(report.frame_ms[i]);
            deferred += report.frame_deferred[i];
            if (decode_begin_s < 0) decode_begin_s = report.frame_start_s[i];
            decode_end_s = report.frame_start_s[i] + report.frame_ms[i] / 1000.0;
            if (!is_drawn) continue;
            drawn.push_back(report.frame_ms[i]);
            drawn_build.push_back(report.build_ms[i]);
            drawn_wait.push_back(report.wait_ms[i]);
            drawn_present.push_back(report.present_ms[i]);
            drawn_damage.push_back(100.0 * report.damaged_fraction[i]);
        } else if (i > 10 && is_drawn) {
            idle_drawn.push_back(report.frame_ms[i]);  // after start-up: the model paused (mostly the 'wait' before the run)
        }
    }
    // Every drawn frame reaches the window (x11-shm: through the put thread), so this is what the
    // window showed, not only what the UI thread got through.
    const double decode_s = std::max(0.0, decode_end_s - decode_begin_s);
    const double drawn_per_second = decode_s > 0 ? double(drawn.size()) / decode_s : 0.0;
    const double max_drawn = drawn.empty() ? 0.0 : *std::max_element(drawn.begin(), drawn.end());
    const nlohmann::json result = {
        {"bench", "render_live"},   {"device", report.device},          {"size", o.size},
        {"runtime_priority", o.runtime_priority}, {"full_redraw", o.full_redraw}, {"present", report.present},
        {"tokens", o.tokens},       {"steps", report.live_steps},
        {"frames_while_decoding", all_busy.size()}, {"drawn_frames_while_decoding", drawn.size()},
        {"deferred_frames_while_decoding", deferred}, {"decoding_s", decode_s},
        {"drawn_frames_per_second", drawn_per_second},
        {"p50_ms", percentile(drawn, 50)}, {"p99_ms", percentile(drawn, 99)}, {"max_ms", max_drawn},
        {"all_frames_p50_ms", percentile(all_busy, 50)}, {"all_frames_p99_ms", percentile(all_busy, 99)},
        {"damaged_percent_p50", percentile(drawn_damage, 50)}, {"damaged_percent_p99", percentile(drawn_damage, 99)},
        {"build_p50_ms", percentile(drawn_build, 50)}, {"build_p99_ms", percentile(drawn_build, 99)},
        {"wait_p50_ms", percentile(drawn_wait, 50)},   {"wait_p99_ms", percentile(drawn_wait, 99)},
        {"present_p50_ms", percentile(drawn_present, 50)}, {"present_p99_ms", percentile(drawn_present, 99)},
        {"idle_drawn_frames", idle_drawn.size()}, {"idle_p50_ms", percentile(idle_drawn, 50)},
        {"idle_p99_ms", percentile(idle_drawn, 99)}, {"frames_total", report.frame_ms.size()}, {"target_p99_ms", 16.7}};
    if (!o.json_only) {
        std::printf("debugger frame time while the cpu backend decodes (%s, %s, presenting through %s)\n",
                    report.device.c_str(), o.size.c_str(), report.present.c_str());
        std::printf("  %-28s %10lld\n", "steps decoded", static_cast<long long>(report.live_steps));
        std::printf("  %-28s %10zu (%zu drawn; the others changed nothing on screen)\n", "frames while decoding",
                    all_busy.size(), drawn.size());
        std::printf("  %-28s %10.1f per second over %.1f s of decoding\n", "frames drawn and shown", drawn_per_second,
                    decode_s);
        if (deferred > 0)
            std::printf("  %-28s %10zu (every frame slot busy: their changes went out with the next drawn frame)\n",
                        "frames deferred", deferred);
        std::printf("  %-28s %10.2f ms\n", "drawn frames p50", percentile(drawn, 50));
        std::printf("  %-28s %10.2f ms   (target 16.7)\n", "drawn frames p99", percentile(drawn, 99));
        std::printf("  %-28s %10.2f ms\n", "drawn frames max", max_drawn);
        std::printf("  %-28s %10.2f ms p50, %.2f ms p99\n", "all frames", percentile(all_busy, 50), percentile(all_busy, 99));
        std::printf("  %-28s %10.1f %% p50, %.1f %% p99\n", "window area redrawn", percentile(drawn_damage, 50),
                    percentile(drawn_damage, 99));
        std::printf("  %-28s %10.2f ms p50, %.2f ms p99 (the rest renders and presents)\n", "of which building the UI",
                    percentile(drawn_build, 50), percentile(drawn_build, 99));
        std::printf("  %-28s %10.2f ms p50, %.2f ms p99 (for a frame slot and a swapchain image)\n", "of which waiting",
                    percentile(drawn_wait, 50), percentile(drawn_wait, 99));
        std::printf("  %-28s %10.2f ms p50, %.2f ms p99\n", "of which presenting", percentile(drawn_present, 50),
                    percentile(drawn_present, 99));
        std::printf("  %-28s %10.2f ms p50, %.2f ms p99 (%zu drawn frames, model paused)\n", "idle frames",
                    percentile(idle_drawn, 50), percentile(idle_drawn, 99), idle_drawn.size());
    }
    std::printf("%s\n", result.dump().c_str());
}

}  // namespace attn::cli
#endif
