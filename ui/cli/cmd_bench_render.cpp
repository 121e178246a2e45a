// `attnscope bench render`: headless scripted pan and zoom over a synthetic session (default 50k
// tokens): frame times, time from each zoom until every visible tile is exact, tile production
// rate and cache memory. Prints a table, then one JSON object on the last line.
#include <CLI/CLI.hpp>

#include "engine/bench_stats.h"
#include "engine/error.h"

#ifdef ATTNSCOPE_HAVE_UI
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/session_file.h"
#include "ui/cli/bench_live.h"
#include "ui/view/headless.h"
#include "ui/view/synthetic_session.h"
#endif

namespace attn::cli {

#ifdef ATTNSCOPE_HAVE_UI
namespace {

using Clock = std::chrono::steady_clock;


struct BenchRenderCommand {
    int64_t tokens = 50000;
    std::string session_path;  // a real captured session instead of the synthetic one
    int layer = -1;            // with --session: default the middle layer
    std::string size = "2560x1440";
    int head = 2;  // the synthetic "induction" head: sink, diagonal band and stripes
    double exact_timeout_s = 20;
    int pan_frames = 60;
    int cache_mb = 256;
    bool validation = false;
    bool json_only = false;
    bool live = false;
    int live_tokens = 48;
    std::string runtime_priority = "background";
    bool full_redraw = false;
    std::string present = "auto";

    void run() const {
        if (live) {
#ifdef ATTNSCOPE_HAVE_APP
            LiveBenchOptions options;
            options.tokens = live_tokens;
            if (size != "2560x1440") options.size = size;
            options.validation = validation;
            options.json_only = json_only;
            options.runtime_priority = runtime_priority;
            options.full_redraw = full_redraw;
            options.present = present;
            run_live_render_bench(options);
            return;
#else
            fail("bench render --live needs the windowed debugger, which this build lacks");
#endif
        }
        unsigned width = 0, height = 0;
        char x = 0;
        std::istringstream in(size);
        if (!(in >> width >> x >> height) || x != 'x' || width == 0 || height == 0)
            fail("--size '", size, "' must be WIDTHxHEIGHT");
        const auto gen_start = Clock::now();
        Session session;
        if (session_path.empty()) {
            view::SyntheticOptions synthetic;
            synthetic.tokens = tokens;
            session = view::make_synthetic_session(synthetic);
        } else {
            session = load_session(session_path);
            if (!session.capture || session.capture->positions() == 0) fail(session_path, ": the session holds no capture");
        }
        const double gen_seconds = std::chrono::duration<double>(Clock::now() - gen_start).count();
        const int64_t positions = session.capture->positions();
        const CaptureShape& shape = session.capture->shape();
        const int shown_layer = session_path.empty() ? 0 : (layer >= 0 ? layer : shape.n_layer / 2);
        const int shown_head = session_path.empty() ? head : std::min(head, shape.n_head - 1);
        if (shown_layer >= shape.n_layer) fail("--layer ", shown_layer, " is out of range (0..", shape.n_layer - 1, ")");

        render::VulkanContextOptions context_options;
        context_options.validation = validation;
        render::VulkanContext context(context_options);
        view::HeadlessOptions options;
        options.width = width, options.height = height;
        options.layer = shown_layer;
        options.head = shown_head;
        options.cache.budget_bytes = static_cast<uint64_t>(cache_mb) << 20;
        view::HeadlessView view(context, session, options);

        std::vector<double> rendered_ms, all_ms, draw_only_ms;
        std::vector<double> to_exact_ms;
        std::vector<int> zoom_levels;
        int not_exact = 0;
        auto frame = [&] {
            const render::FrameStats s = view.frame();
            all_ms.push_back(s.cpu_ms);
            if (s.rendered) rendered_ms.push_back(s.cpu_ms);
            if (s.rendered && s.uploads == 0 && s.colorized == 0) draw_only_ms.push_back(s.cpu_ms);
            return s;
        };
        // After a zoom: frames (as an idle UI would draw them) until every visible tile is exact.
        auto settle = [&] {
            const auto start = Clock::now();
            render::FrameStats s = frame();
            zoom_levels.push_back(s.level);
            while (!s.all_exact() && std::chrono::duration<double>(Clock::now() - start).count() < exact_timeout_s) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                s = frame();
            }
            if (s.all_exact())
                to_exact_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
            else
                ++not_exact;
        };
        auto pan = [&](double dx, double dy) {
            for (int i = 0; i < pan_frames; ++i) {
                view.view().pan_pixels(dx, dy);
                frame();
            }
        };

        const auto bench_start = Clock::now();
        const uint64_t produced_before = view.cache().stats().produced;
        const double w = width, h = height, n = static_cast<double>(positions);
        view.view().fit(positions);
        settle();
        pan(4, 0);
        // Zoom in by 4× four times towards points on the diagonal band, panning along it at each level.
        const double targets[][2] = {{0.62, 0.64}, {0.30, 0.33}, {0.80, 0.81}, {0.45, 0.46}};
        for (int step = 0; step < 4; ++step) {
            const double key = targets[step][0] * n, query = targets[step][1] * n;
            const double span = n / std::pow(4.0, step + 1);
            view.view().show(key - span / 2, query - span / 2 * h / w, key + span / 2, query + span / 2 * h / w);
            settle();
            pan(-6, -6);
        }
        // Zoom out in steps of 4 around the screen centre.
        for (int step = 0; step < 3; ++step) {
            view.view().zoom_at(w / 2, h / 2, 0.25);
            settle();
            pan(8, 8);
        }
        const double bench_seconds = std::chrono::duration<double>(Clock::now() - bench_start).count();
        const render::TileCacheStats cache_stats = view.cache().stats();
        const uint64_t produced = cache_stats.produced - produced_before;

        double sum = 0;
        for (double v : rendered_ms) sum += v;
        const double mean = rendered_ms.empty() ? 0 : sum / static_cast<double>(rendered_ms.size());
        nlohmann::json out;
        out["device"] = context.device_description();
        out["size"] = size;
        out["frames"] = all_ms.size();
        out["rendered_frames"] = rendered_ms.size();
        out["p50_ms"] = percentile(rendered_ms, 50);
        out["p95_ms"] = percentile(rendered_ms, 95);
        out["p99_ms"] = percentile(rendered_ms, 99);
        out["max_ms"] = percentile(rendered_ms, 100);
        out["fps"] = mean > 0 ? 1000.0 / mean : 0;
        out["all_frames_p99_ms"] = percentile(all_ms, 99);
        // Frames that only redraw (view moved; no tile arrived or was recoloured).
        out["draw_only_p50_ms"] = percentile(draw_only_ms, 50);
        out["draw_only_p99_ms"] = percentile(draw_only_ms, 99);
        out["time_to_exact_ms"] = percentile(to_exact_ms, 50);
        out["time_to_exact_max_ms"] = percentile(to_exact_ms, 100);
        out["time_to_exact_each_ms"] = to_exact_ms;
        out["zoom_levels"] = zoom_levels;
        out["zooms_not_exact_within_timeout"] = not_exact;
        out["exact_timeout_s"] = exact_timeout_s;
        out["tiles_produced"] = produced;
        out["tiles_per_s"] = bench_seconds > 0 ? static_cast<double>(produced) / bench_seconds : 0;
        out["tile_ms_mean"] = cache_stats.produced ? 1000.0 * cache_stats.produce_seconds / static_cast<double>(cache_stats.produced) : 0;
        out["cache_bytes"] = view.cache().resident_bytes();
        out["cache_gpu_bytes_allocated"] = view.cache().gpu_bytes();
        out["cache_evictions"] = cache_stats.evicted;
        out["requests_cancelled"] = cache_stats.cancelled;
        out["session"] = session_path.empty() ? "synthetic" : session_path;
        out["tokens"] = positions;
        out["layer"] = shown_layer;
        out["head"] = shown_head;
        out["session_load_s"] = gen_seconds;
        out["bench_seconds"] = bench_seconds;
        out["validation_errors"] = context.validation_errors().size();
        if (!json_only) {
            std::printf("render bench: %s, %lld tokens, layer %d head %d, %s, %s\n",
                        session_path.empty() ? "synthetic session" : session_path.c_str(),
                        static_cast<long long>(positions), shown_layer, shown_head, size.c_str(),
                        context.device_description().c_str());
            std::printf("  frames          %zu (%zu re-rendered; unchanged frames are skipped)\n", all_ms.size(),
                        rendered_ms.size());
            std::printf("  frame time      p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  (%.1f fps)\n", percentile(rendered_ms, 50),
                        percentile(rendered_ms, 95), percentile(rendered_ms, 99), mean > 0 ? 1000.0 / mean : 0);
            std::printf("  zoom → exact    median %.0f ms  max %.0f ms  (%d zooms not exact within %.0f s)\n",
                        percentile(to_exact_ms, 50), percentile(to_exact_ms, 100), not_exact, exact_timeout_s);
            std::printf("  tiles           %llu produced, %.1f tiles/s, %.1f ms each on average\n",
                        static_cast<unsigned long long>(produced), out["tiles_per_s"].get<double>(),
                        out["tile_ms_mean"].get<double>());
            std::printf("  cache           %.1f MiB resident, %.1f MiB allocated\n",
                        static_cast<double>(view.cache().resident_bytes()) / (1 << 20),
                        static_cast<double>(view.cache().gpu_bytes()) / (1 << 20));
        }
        std::printf("%s\n", out.dump().c_str());
    }
};

}  // namespace
#endif

void add_bench_render_command(CLI::App& bench) {
#ifdef ATTNSCOPE_HAVE_UI
    auto cmd = std::make_shared<BenchRenderCommand>();
    CLI::App* render = bench.add_subcommand("render", "Vulkan renderer: headless pan/zoom over a synthetic session");
    render->add_option("--tokens", cmd->tokens, "Tokens in the synthetic session (default 50000)")
        ->check(CLI::Range(int64_t(256), int64_t(65536)));
    render->add_option("--session", cmd->session_path, "Bench a real captured session (.attn) instead");
    render->add_option("--layer", cmd->layer, "With --session: the layer shown (default the middle one)");
    render->add_option("--size", cmd->size, "Viewport WIDTHxHEIGHT (default 2560x1440)");
    render->add_option("--head", cmd->head, "Synthetic head: 0 previous-token, 1 sink, 2 induction, 3 local band");
    render->add_option("--exact-timeout", cmd->exact_timeout_s, "Seconds to wait for exact tiles after each zoom");
    render->add_option("--pan-frames", cmd->pan_frames, "Frames of panning after each zoom");
    render->add_option("--cache-mb", cmd->cache_mb, "Tile cache budget in MiB (default 256)");
    render->add_flag("--validation", cmd->validation, "Enable the Vulkan validation layer");
    render->add_flag("--json", cmd->json_only, "Only the JSON line");
    render->add_flag("--live", cmd->live,
                     "The whole debugger while the cpu backend decodes the default model (UI frame times)");
    render->add_option("--live-tokens", cmd->live_tokens, "Tokens decoded during --live (default 48)")
        ->check(CLI::Range(1, 4096));
    render->add_option("--runtime-priority", cmd->runtime_priority,
                       "--live: the model's threads: normal, low (nice 10) or background (SCHED_IDLE, the default)");
    render->add_flag("--full-redraw", cmd->full_redraw,
                     "--live: draw and present every frame whole, not only what changed (for comparison)");
    render->add_option("--present", cmd->present,
                       "--live: auto, swapchain or x11-shm (X11 shared memory; auto uses it for CPU renderers)")
        ->check(CLI::IsMember({"auto", "swapchain", "x11-shm"}));
    render->callback([cmd] { cmd->run(); });
#else
    CLI::App* render = bench.add_subcommand("render", "Vulkan renderer benchmark (not in this build)");
    render->allow_extras();
    render->callback([] { fail("this attnscope was built without the Vulkan renderer (see the CMake output)"); });
#endif
}

}  // namespace attn::cli
