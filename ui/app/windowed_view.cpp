#include "ui/app/windowed_view.h"

#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "engine/error.h"
#include "engine/session_file.h"
#include "ui/app/app_window.h"
#include "ui/app/debugger_model.h"
#include "ui/app/map_view.h"
#include "ui/panels/head_selector_panel.h"
#include "ui/panels/session_info_panel.h"
#include "ui/panels/token_strip_panel.h"
#include "ui/panels/view_controls_panel.h"
#include "ui/view/headless.h"
#include "ui/view/synthetic_session.h"

namespace attn::app {

namespace {

std::pair<int, int> parse_window_size(const std::string& text) {
    unsigned w = 0, h = 0;
    char x = 0, extra = 0;
    std::istringstream in(text);
    if (!(in >> w >> x >> h) || (x != 'x' && x != 'X') || (in >> extra) || w < 64 || h < 64 || w > 16384 || h > 16384)
        fail("--size '", text, "' must be WIDTHxHEIGHT, e.g. 1600x900");
    return {static_cast<int>(w), static_cast<int>(h)};
}


// Runs a headless-format script against the window, one step per frame.
class ScriptDriver {
public:
    explicit ScriptDriver(std::vector<view::ScriptAction> actions) : actions_(std::move(actions)) {}
    bool done() const { return next_ >= actions_.size() && wait_frames_ == 0 && !wait_exact_ && !hover_pending_; }

    // Before the UI is built: applies actions until one needs frames to pass.
    void before_frame(DebuggerModel& model, MapView& map, std::optional<std::string>& screenshot_request) {
        if (wait_frames_ > 0) {
            --wait_frames_;
            return;
        }
        if (wait_exact_) {
            if (!map.stats().all_exact() && std::chrono::steady_clock::now() < deadline_) return;
            wait_exact_ = false;
        }
        const CaptureShape& shape = model.session().capture->shape();
        render::RenderSettings& s = model.settings;
        if (next_ < actions_.size()) map.set_scripted_hover(std::nullopt);  // a hover lasts until the next action
        while (next_ < actions_.size()) {
            const view::ScriptAction& a = actions_[next_++];
            const std::string& v = a.verb;
            if (view::apply_view_action(a, model.positions(), shape, map.view(), s)) continue;
            if (v == "hover") {
                // The tooltip shows from this frame on; the JSON line is printed after the frame.
                map.set_scripted_hover(std::make_pair(view::script_number(a, 0), view::script_number(a, 1)));
                hover_pending_ = true;
                return;
            } else if (v == "wait") {
                wait_frames_ = std::max(0, static_cast<int>(view::script_number(a, 0)) - 1);
                return;
            } else if (v == "wait_exact") {
                wait_exact_ = true;
                deadline_ = std::chrono::steady_clock::now() +
                            std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(a.args.empty() ? 60.0 : view::script_number(a, 0)));
                return;
            } else if (v == "screenshot") {
                screenshot_request = a.args[0];
                return;
            }
        }
    }

    void after_frame(const MapView& map) {
        if (hover_pending_) {
            std::printf("%s\n", view::hover_json(map.hover()).c_str());
            std::fflush(stdout);
            hover_pending_ = false;
        }
    }

private:
    std::vector<view::ScriptAction> actions_;
    size_t next_ = 0;
    int wait_frames_ = 0;
    bool wait_exact_ = false, hover_pending_ = false;
    std::chrono::steady_clock::time_point deadline_;
};

int run(const WindowedViewOptions& options) {
    // Display first: without one, say so before loading a possibly large session.
    GlfwScope glfw;

    std::unique_ptr<Session> owned;
    const Session* session = options.session;
    std::string source_name = "(given)";
    if (!session) {
        if (options.synthetic_tokens > 0) {
            view::SyntheticOptions synthetic;
            synthetic.tokens = options.synthetic_tokens;
            owned = std::make_unique<Session>(view::make_synthetic_session(synthetic));
            source_name = cat("synthetic, ", options.synthetic_tokens, " tokens");
        } else if (!options.session_path.empty()) {
            owned = std::make_unique<Session>(load_session(options.session_path));
            source_name = options.session_path;
        } else {
            fail("view: give a SESSION file or --synthetic N");
        }
        session = owned.get();
    }
    if (!session->capture || session->capture->positions() == 0) fail("the session holds no capture");
    const CaptureShape& shape = session->capture->shape();
    if (options.layer < 0 || options.layer >= shape.n_layer)
        fail("--layer ", options.layer, " is out of range (0..", shape.n_layer - 1, ")");
    if (options.head < 0 || options.head >= shape.n_head)
        fail("--head ", options.head, " is out of range (0..", shape.n_head - 1, ")");

    std::vector<view::ScriptAction> actions;
    if (!options.script_path.empty()) {
        std::ifstream in(options.script_path, std::ios::binary);
        if (!in) fail(options.script_path, ": cannot open the script");
        std::ostringstream text;
        text << in.rdbuf();
        actions = view::parse_script(text.str(), options.script_path);
    }

    const auto [width, height] = parse_window_size(options.size);
    AppWindowOptions window_options;
    window_options.width = width;
    window_options.height = height;
    window_options.title = cat("attnscope — ", source_name);
    const char* env = std::getenv("ATTNSCOPE_VALIDATION");
    window_options.validation = options.validation || (env && std::string(env) == "1") ||
                                (ATTNSCOPE_VALIDATION_LAYER_DEFAULT && !(env && std::string(env) == "0"));
    window_options.vsync = options.vsync;
    AppWindow window(window_options);
    render::VulkanContext& context = window.context();
    if (!window.blit_supported() && window.swapchain_format() != VK_FORMAT_R8G8B8A8_UNORM)
        fail("the Vulkan device can neither blit RGBA8 into the swapchain format nor copy into it");

    CpuTileSource source(*session->capture);
    DebuggerModel model(*session, source);
    model.settings.layer = options.layer;
    model.settings.head = options.head;
    if (options.plane != "sum" && options.plane != "max") fail("--plane must be sum or max");
    model.settings.plane = options.plane == "sum" ? render::Plane::Sum : render::Plane::Max;
    const auto map_kind = render::parse_colormap(options.colormap);
    if (!map_kind) fail("--colormap '", options.colormap, "' is not one of viridis, magma, diverging");
    model.settings.colormap = *map_kind;
    if (options.scale != "log" && options.scale != "linear") fail("--scale must be log or linear");
    model.settings.scale = options.scale == "log" ? render::ValueScale::Log : render::ValueScale::Linear;

    if (options.select_query >= model.positions())
        fail("--select ", options.select_query, " is out of range (0..", model.positions() - 1, ")");
    if (options.select_query >= 0) model.select_query(options.select_query);

    render::TileCacheOptions cache_options;
    cache_options.budget_bytes = static_cast<uint64_t>(std::max(16, options.cache_mb)) << 20;
    MapView map(context, model, cache_options);
    panels::ViewControlsState controls;
    panels::HeadEntropyGrid entropy;
    panels::TokenStripState strip;
    ScriptDriver script(std::move(actions));

    std::fprintf(stderr, "attnscope: %s, %s; validation %s; fonts: %s\n", context.device_description().c_str(),
                 source_name.c_str(), context.validation_enabled() ? "on" : "off", window.font_note().c_str());

    uint64_t frames = 0;
    int idle = 0;
    double frame_ms = 0;
    std::optional<std::string> script_shot;
    bool final_shot_done = options.screenshot.empty();
    auto final_deadline = std::chrono::steady_clock::time_point::max();
    for (;;) {
        const auto start = std::chrono::steady_clock::now();
        const bool scripted = !script.done() || options.frames > 0 || !final_shot_done;
        if (!scripted && idle > 3 && !map.busy() && entropy.complete()) window.wait_events(0.5);
        if (options.frame_hook) options.frame_hook(window.window(), frames);
        if (!window.begin_frame()) break;
        if (frames >= 2) script.before_frame(model, map, script_shot);  // the map has its real size by then

        // ---- layout: inspector on the left, the map, the token strip below it --------------
        const ImGuiIO& io = ImGui::GetIO();
        const float scale = window.content_scale();
        const float side = std::clamp(io.DisplaySize.x * 0.24f, 300 * scale, 460 * scale);
        const float strip_h = std::clamp(io.DisplaySize.y * 0.22f, 110 * scale, 320 * scale);
        const ImGuiWindowFlags fixed = ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoCollapse |
                                       ImGuiWindowFlags_NoBringToFrontOnFocus;

        ImGui::SetNextWindowPos(ImVec2(0, 0));
        ImGui::SetNextWindowSize(ImVec2(side, io.DisplaySize.y));
        ImGui::Begin("Inspector", nullptr, fixed | ImGuiWindowFlags_NoTitleBar);
        if (ImGui::CollapsingHeader("View", ImGuiTreeNodeFlags_DefaultOpen))
            panels::draw_view_controls_panel(model, controls, map.range());
        if (ImGui::CollapsingHeader("Layer / head", ImGuiTreeNodeFlags_DefaultOpen)) {
            entropy.update(model, 4.0);
            panels::draw_head_selector_panel(model, entropy);
        }
        if (ImGui::CollapsingHeader("Session", ImGuiTreeNodeFlags_DefaultOpen)) {
            panels::SessionInfoExtras extras;
            extras.source = source_name;
            extras.device = context.device_description();
            extras.fonts = window.font_note();
            extras.frame_ms = frame_ms;
            extras.level = map.stats().level;
            extras.visible_tiles = map.stats().visible_tiles;
            extras.exact_tiles = map.stats().exact_tiles;
            extras.cache_tiles = map.cache().resident_tiles();
            extras.cache_bytes = map.cache().resident_bytes();
            extras.validation = context.validation_enabled();
            extras.validation_errors = context.validation_errors().size();
            panels::draw_session_info_panel(model, extras);
        }
        ImGui::End();

        ImGui::SetNextWindowPos(ImVec2(side, 0));
        ImGui::SetNextWindowSize(ImVec2(io.DisplaySize.x - side, io.DisplaySize.y - strip_h));
        ImGui::Begin("Attention map", nullptr,
                     fixed | ImGuiWindowFlags_NoBackground | ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoScrollbar |
                         ImGuiWindowFlags_NoScrollWithMouse);
        ImGui::Text("layer %d  head %d  %s  %s", model.settings.layer, model.settings.head,
                    model.settings.plane == render::Plane::Max ? "max" : "sum",
                    model.settings.scale == render::ValueScale::Log ? "log" : "linear");
        ImGui::SameLine();
        ImGui::TextDisabled("   wheel/+/-: zoom   drag/arrows: pan   F: fit   click: select row   [ ]: layer   , .: head");
        map.draw(window.framebuffer_scale_x(), window.framebuffer_scale_y());
        ImGui::End();

        ImGui::SetNextWindowPos(ImVec2(side, io.DisplaySize.y - strip_h));
        ImGui::SetNextWindowSize(ImVec2(io.DisplaySize.x - side, strip_h));
        char strip_title[128];
        if (model.selected_query >= 0)
            std::snprintf(strip_title, sizeof strip_title, "Tokens — attention of query %lld (layer %d, head %d)###tokens",
                          static_cast<long long>(model.selected_query), model.settings.layer, model.settings.head);
        else
            std::snprintf(strip_title, sizeof strip_title, "Tokens###tokens");
        ImGui::Begin(strip_title, nullptr, fixed);
        panels::draw_token_strip_panel(model, strip);
        ImGui::End();

        // ---- screenshots and auto-exit --------------------------------------------------
        std::string shot;
        const bool frames_done = options.frames <= 0 || frames + 1 >= static_cast<uint64_t>(options.frames);
        if (script_shot && (map.stats().all_exact() || !map.busy())) {
            shot = *script_shot;
            script_shot.reset();
        } else if (!final_shot_done && script.done() && frames_done && !script_shot) {
            // The final screenshot shows exact tiles unless they take longer than a minute.
            if (final_deadline == std::chrono::steady_clock::time_point::max())
                final_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            if (map.stats().all_exact() || std::chrono::steady_clock::now() > final_deadline) {
                shot = options.screenshot;
                final_shot_done = true;
            }
        }
        window.end_frame([&](VkCommandBuffer cmd, VkImage image, VkExtent2D extent) {
            map.record_blit(cmd, image, extent, window.blit_supported());
        }, shot);
        if (!shot.empty()) std::fprintf(stderr, "attnscope: screenshot written to %s\n", shot.c_str());
        if (!shot.empty() && options.report) options.report->screenshot = shot;
        script.after_frame(map);
        ++frames;
        idle = map.stats().rendered ? 0 : idle + 1;
        frame_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

        if (options.frames > 0 && frames >= static_cast<uint64_t>(options.frames) && script.done() && final_shot_done &&
            !script_shot)
            break;
    }

    const std::vector<std::string> errors = context.validation_errors();
    if (options.report) {
        options.report->frames = frames;
        options.report->validation = context.validation_enabled();
        options.report->validation_errors = errors;
        options.report->device = context.device_description();
    }
    if (context.validation_enabled()) {
        std::fprintf(stderr, "attnscope: %llu frames; validation: %zu error(s)\n", static_cast<unsigned long long>(frames),
                     errors.size());
        for (size_t i = 0; i < std::min<size_t>(errors.size(), 5); ++i) std::fprintf(stderr, "  %s\n", errors[i].c_str());
    }
    return errors.empty() ? 0 : 3;
}

}  // namespace

int run_windowed_view(const WindowedViewOptions& options) {
    try {
        return run(options);
    } catch (const NoDisplayError& e) {
        std::fprintf(stderr, "attnscope: %s\n", e.what());
        return 2;
    } catch (...) {
        return report_current_exception();
    }
}

}  // namespace attn::app
