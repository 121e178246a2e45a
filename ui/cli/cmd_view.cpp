// `attnscope view`: the attention debugger. It opens a session file, a generated session, or
// captures one first (on the default model unless --model says otherwise). With a display it opens
// the window (GLFW + ImGui); with --headless, or where there is no display, it renders offscreen —
// scripted, with a screenshot — which is also how tests and benchmarks drive it.
#include <CLI/CLI.hpp>

#include "engine/error.h"

#ifdef ATTNSCOPE_HAVE_UI
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include <filesystem>

#include "engine/generation.h"
#include "engine/session_file.h"
#include "engine/pii.h"
#include "ui/cli/generation_options.h"
#include "ui/view/headless.h"
#include "ui/view/synthetic_session.h"
#endif
#ifdef ATTNSCOPE_HAVE_APP
#include "ui/app/private_display.h"
#include "ui/app/windowed_view.h"
#endif

namespace attn::cli {

#ifdef ATTNSCOPE_HAVE_UI
namespace {

std::pair<uint32_t, uint32_t> parse_size(const std::string& text) {
    unsigned w = 0, h = 0;
    char x = 0, extra = 0;
    std::istringstream in(text);
    if (!(in >> w >> x >> h) || (x != 'x' && x != 'X') || (in >> extra) || w == 0 || h == 0 || w > 16384 || h > 16384)
        fail("--size '", text, "' must be WIDTHxHEIGHT, e.g. 2560x1440");
    return {w, h};
}

struct ViewCommand {
    std::string session_path;
    int64_t synthetic_tokens = 0;
    int64_t synthetic_steps = 0;
    bool headless = false;
    bool waterfall = false;
    std::string size = "1280x720";
    std::string script_path, screenshot;
    int frames = -1;  // windowed: run until closed; headless: one frame
    int layer = 0, head = 0;
    int64_t select_query = -1;
    std::string plane = "max", colormap = "viridis", scale = "log";
    int cache_mb = 256;
    bool validation = false;
    bool no_pii_masking = false;
    std::string rules_path, ontology_path;
    bool full_redraw = false;
    std::string present = "auto";
    std::string key_path;
    GenerationOptions capture;  // used when neither a session nor --synthetic is given

    // The session to show: a file, a generated one, or a fresh capture (saved in the sessions cache).
    Session obtain_session(std::string& shown_path) {
        if (synthetic_tokens > 0) {
            view::SyntheticOptions options;
            options.tokens = synthetic_tokens;
            options.decode_steps = synthetic_steps;
            shown_path = (sessions_dir() / ("synthetic-" + std::to_string(synthetic_tokens))).string();
            return view::make_synthetic_session(options);
        }
        if (!session_path.empty()) {
            shown_path = session_path;
            return load_session(session_path);
        }
        if (capture.prompt.empty() && capture.prompt_file.empty()) {
            capture.prompt = "Explain in two sentences why the sky is blue.";
            capture.chat = true;
        }
        auto model = Model::load(resolve_model_path(capture.model));
        auto backend = make_backend(parse_backend_kind(capture.backend), *model);
        GenerationCallbacks callbacks;
        callbacks.prefill_progress = prefill_progress_bar(!capture.quiet);
        callbacks.on_step = [](const Session&, const StepRecord& step) {
            std::fwrite(step.text.data(), 1, step.text.size(), stdout);
            std::fflush(stdout);
        };
        Session session = generate(*model, *backend, capture.request(true), callbacks);
        std::fputc('\n', stdout);
        shown_path = (sessions_dir() / "last-capture.attn").string();
        save_session(shown_path, session);
        std::printf("session saved to %s\n", shown_path.c_str());
        return session;
    }

    static std::filesystem::path sessions_dir() {
        const auto dir = std::filesystem::path(models_cache_dir()).parent_path() / "sessions";
        std::filesystem::create_directories(dir);
        return dir;
    }

#ifdef ATTNSCOPE_HAVE_APP
    std::string record_path;
    // The window's options that don't depend on where the session comes from.
    app::WindowedViewOptions window_options() const {
        app::WindowedViewOptions window;
        if (!size.empty() && size != "1280x720") window.size = size;
        window.script_path = script_path;
        window.screenshot = screenshot;
        window.frames = std::max(frames, 0);
        window.layer = layer, window.head = head;
        window.select_query = select_query;
        window.plane = plane, window.colormap = colormap, window.scale = scale;
        window.cache_mb = cache_mb;
        window.validation = validation;
        window.rules_path = rules_path;
        window.ontology_path = ontology_path;
        window.full_redraw = full_redraw;
        window.present = present;
        window.export_key_path = key_path;
        return window;
    }

    // Live decoding: the model runs in the debugger, step by step (returns false without a display,
    // headless included when no Xvfb is installed, so the caller can capture and render offscreen).
    bool run_live() {
        if (capture.prompt.empty() && capture.prompt_file.empty()) {
            capture.prompt = "Explain in two sentences why the sky is blue.";
            capture.chat = true;
        }
        std::unique_ptr<app::PrivateDisplay> display;
        std::optional<std::string> old_display;
        if (headless) {
            // The full UI, panels included, on a private X server: scripted live runs need it.
            const auto xvfb = app::find_in_path("Xvfb");
            if (!xvfb) return false;
            const auto [w, h] = parse_size(size);
            display = std::make_unique<app::PrivateDisplay>(*xvfb, static_cast<int>(w) + 64, static_cast<int>(h) + 64);
            if (display->display().empty()) return false;
            ::setenv("DISPLAY", display->display().c_str(), 1);
            ::unsetenv("WAYLAND_DISPLAY");
        }
        auto model = Model::load(resolve_model_path(capture.model));
        app::WindowedViewOptions window = window_options();
        if (headless) {
            window.size = size;
            window.frames = std::max(frames, 1);  // headless runs end after the script
        }
        window.model = model.get();
        window.backend = parse_backend_kind(capture.backend);
        window.live_request = capture.request(true);
        window.record_path = record_path.empty() ? (sessions_dir() / "live.attn").string() : record_path;
        std::fprintf(stderr, "attnscope: live session recorded to %s\n", window.record_path.c_str());
        const int rc = app::run_windowed_view(window);
        if (rc == 2) return false;
        if (rc != 0) throw CLI::RuntimeError(rc);
        return true;
    }
#endif

    void run() {
        // Personal data is masked in every display and export unless switched off for this run.
        if (no_pii_masking) set_privacy_defaults(PrivacySettings{false});
        if (waterfall && !headless) {
            // The window has no waterfall panel yet: the waterfall is rendered offscreen.
            std::fprintf(stderr, "attnscope: --waterfall renders offscreen (as with --headless)\n");
            headless = true;
        }
#ifdef ATTNSCOPE_HAVE_APP
        if (session_path.empty() && synthetic_tokens == 0 && !waterfall && run_live()) return;
#endif
        std::string shown_path;
        const Session session = obtain_session(shown_path);
        std::string png = screenshot;
        if (!headless) {
#ifdef ATTNSCOPE_HAVE_APP
            app::WindowedViewOptions window = window_options();
            window.session = &session;
            window.session_path = session_path;  // exports name (and hash) the file it came from
            const int rc = app::run_windowed_view(window);
            if (rc == 0) return;
            if (rc != 2) throw CLI::RuntimeError(rc);  // the reason is already printed
            // No display: fall through to an offscreen rendering, as a headless machine should.
#endif
            if (png.empty()) png = shown_path + ".png";
            std::fprintf(stderr, "no display: rendering offscreen instead\n");
        }
        std::vector<view::ScriptAction> actions;
        if (!script_path.empty()) {
            std::ifstream in(script_path, std::ios::binary);
            if (!in) fail(script_path, ": cannot open the script");
            std::ostringstream text;
            text << in.rdbuf();
            actions = view::parse_script(text.str(), script_path);
        }

        const auto [width, height] = parse_size(size);
        render::VulkanContextOptions context_options;
        const char* env_validation = std::getenv("ATTNSCOPE_VALIDATION");
        context_options.validation = validation || (env_validation && std::string(env_validation) == "1") ||
                                     ATTNSCOPE_VALIDATION_LAYER_DEFAULT;
        render::VulkanContext context(context_options);

        view::HeadlessOptions options;
        options.width = width, options.height = height;
        options.layer = layer, options.head = head;
        options.cache.budget_bytes = static_cast<uint64_t>(cache_mb) << 20;
        if (plane != "sum" && plane != "max") fail("--plane must be sum or max");
        options.settings.plane = plane == "sum" ? render::Plane::Sum : render::Plane::Max;
        const auto map = render::parse_colormap(colormap);
        if (!map) fail("--colormap '", colormap, "' is not one of viridis, magma, diverging");
        options.settings.colormap = *map;
        if (scale != "log" && scale != "linear") fail("--scale must be log or linear");
        options.settings.scale = scale == "log" ? render::ValueScale::Log : render::ValueScale::Linear;
        options.waterfall = waterfall;

        view::HeadlessView view(context, session, options);
        view.run(actions, stdout);
        const auto settle_start = std::chrono::steady_clock::now();
        for (int i = 0; i < (frames < 0 ? 1 : frames); ++i) view.frame();
        std::optional<double> exact_ms;  // from the end of the script to every visible tile exact
        if (!png.empty()) {
            // A screenshot shows exact tiles, not stand-ins, unless they take longer than a minute.
            if (view.wait_exact(60).all_exact())
                exact_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - settle_start).count();
            view.screenshot(png);
        }
        const render::FrameStats& last = view.last_frame();
        nlohmann::json summary = {{"device", context.device_description()},
                                  {"positions", session.capture->positions()},
                                  {"level", last.level},
                                  {"row_level", last.row_level},
                                  {"waterfall", view.waterfall()},
                                  {"rows", view.extent().rows},
                                  {"visible_tiles", last.visible_tiles},
                                  {"exact_tiles", last.exact_tiles},
                                  {"validation_errors", context.validation_errors().size()}};
        if (!png.empty()) summary["screenshot"] = png;
        if (exact_ms) summary["exact_ms"] = *exact_ms;
        std::printf("%s\n", summary.dump().c_str());
        if (!png.empty() && png != screenshot)
            std::printf("rendered %s to %s\n", shown_path.c_str(), png.c_str());
        if (!context.validation_errors().empty())
            fail("the Vulkan validation layer reported ", context.validation_errors().size(), " error(s)");
    }
};

}  // namespace
#endif

void add_view_command(CLI::App& app) {
#ifdef ATTNSCOPE_HAVE_UI
    auto cmd = std::make_shared<ViewCommand>();
    CLI::App* view = app.add_subcommand(
        "view", "Attention debugger: a session, --synthetic N, or a fresh capture (--model/--prompt; default: a demo)");
    view->add_option("session", cmd->session_path, "Session file (.attn)");
    view->add_option("--synthetic", cmd->synthetic_tokens, "Use a generated session of N tokens instead of a file")
        ->check(CLI::Range(int64_t(1), int64_t(65536)));
    view->add_flag("--headless", cmd->headless, "Render offscreen, without a window or display");
    view->add_flag("--waterfall", cmd->waterfall,
                   "Show the waterfall: one row per decode step over every key (rendered offscreen; script: 'waterfall on')");
    view->add_option("--synthetic-steps", cmd->synthetic_steps,
                     "With --synthetic: the last N tokens are decode steps (rows of the waterfall)")
        ->check(CLI::NonNegativeNumber);
    view->add_option("--size", cmd->size, "Viewport WIDTHxHEIGHT (default 1280x720)");
    view->add_option("--script", cmd->script_path, "File of UI actions, one per line (see ui/view/headless.h)");
    view->add_option("--screenshot", cmd->screenshot, "Write the final frame as a PNG (after tiles are exact)");
    view->add_option("--frames", cmd->frames,
                     "Frames to render after the script, then quit (default: until closed; headless: 1)")
        ->check(CLI::NonNegativeNumber);
    view->add_option("--select", cmd->select_query, "Start with this query row selected");
    cmd->capture.add_to(*view);
    view->add_option("--layer", cmd->layer, "Layer shown first");
    view->add_option("--head", cmd->head, "Head shown first");
    view->add_option("--plane", cmd->plane, "sum (attention mass) or max (peak) per cell (default max)");
    view->add_option("--colormap", cmd->colormap, "viridis, magma or diverging (default viridis)");
    view->add_option("--scale", cmd->scale, "log or linear (default log)");
    view->add_option("--cache-mb", cmd->cache_mb, "Tile cache budget in MiB (default 256)")->check(CLI::PositiveNumber);
    view->add_flag("--no-pii-masking", cmd->no_pii_masking,
                   "Show personal data (ID, phone and card numbers, e-mail and IP addresses) instead of ●●●● [TYPE]");
    view->add_option("--rules", cmd->rules_path, "Rules file checked on the session and live (engine/rules.h; the Rules panel)");
    view->add_option("--ontology", cmd->ontology_path, "Ontology file: matches labelled in the text view, anomalies listed");
    view->add_flag("--validation", cmd->validation, "Enable the Vulkan validation layer (also ATTNSCOPE_VALIDATION=1)");
    view->add_option("--key", cmd->key_path,
                     "Window: sign every export (tables, PNGs, projections, counterfactuals) with this secret key; "
                     "each export always gets FILE.provenance.json");
    view->add_flag("--full-redraw", cmd->full_redraw,
                   "Window: draw and present every frame whole, not only what changed (for comparison)");
    view->add_option("--present", cmd->present,
                     "Window: auto, swapchain or x11-shm (X11 shared memory, only what changed; auto uses it when "
                     "Vulkan renders on the CPU)")
        ->check(CLI::IsMember({"auto", "swapchain", "x11-shm"}));
#ifdef ATTNSCOPE_HAVE_APP
    view->add_option("--record", cmd->record_path,
                     "Live decoding: the session file every step is appended to (default: the sessions cache's live.attn)");
#endif
    view->callback([cmd] { cmd->run(); });
#else
    CLI::App* view = app.add_subcommand("view", "Attention debugger (not in this build)");
    view->allow_extras();
    view->callback([] {
        fail("this attnscope was built without the Vulkan debugger (Vulkan headers or glslc were missing at build "
             "time; see the CMake output 'attnscope: Vulkan UI disabled')");
    });
#endif
}

}  // namespace attn::cli
