#include "ui/app/windowed_view.h"

#include <imgui.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include "engine/error.h"
#include "engine/session_file.h"
#include "ui/app/app_window.h"
#include "ui/app/debugger_model.h"
#include "ui/app/map_view.h"
#include "ui/app/waterfall_view.h"
#include "ui/panels/beam_tree_panel.h"
#include "ui/panels/diff_panel.h"
#include "ui/panels/head_grid_panel.h"
#include "ui/panels/head_selector_panel.h"
#include "ui/panels/model_loader_panel.h"
#include "ui/panels/run_controls_panel.h"
#include "ui/panels/step_inspector_panel.h"
#include "ui/panels/timeline_panel.h"
#include "ui/panels/watchpoints_panel.h"
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


// Everything a frame draws: the session shown (from a file, or synced from the live runner), the
// tile source over its capture, the debugger model, the map and the panels' states.
struct Debugger {
    std::unique_ptr<CpuTileSource> source;
    std::unique_ptr<DebuggerModel> model;
    std::unique_ptr<MapView> map;
    std::unique_ptr<WaterfallView> waterfall;  // below the map while the session has decode steps
    bool show_waterfall = true;
    bool show_head_grid = false;  // the centre shows the head grid instead of the map
    panels::HeadGridState head_grid;
    panels::ViewControlsState controls;
    panels::HeadEntropyGrid entropy;
    panels::TokenStripState strip;
    panels::TimelineState timeline;
    panels::DiffState diff;
    panels::WatchpointsState watch;
    panels::RunControlsState run;
    std::vector<StepFindings> findings;
    uint64_t generation = 0, bound_generation = ~uint64_t(0);
    int64_t bound_positions = 0;
    LiveRunner* runner = nullptr;
    Session live_session;
    int64_t demo_step = -2;  // the step demo mode last followed
    panels::ModelLoaderState loader;
    float content_scale = 1.f;  // the window's, for state_json
    std::optional<float> scale_request;  // a script's 'dpi S', applied between frames
};

// Runs a headless-format script against the window, one step per frame.
class ScriptDriver {
public:
    explicit ScriptDriver(std::vector<view::ScriptAction> actions) : actions_(std::move(actions)) {}
    bool done() const {
        return next_ >= actions_.size() && wait_frames_ == 0 && !wait_exact_ && !hover_pending_ && !wait_idle_ && !wait_model_;
    }

    // Before the UI is built: applies actions until one needs frames to pass.
    void before_frame(Debugger& d, std::optional<std::string>& screenshot_request) {
        if (wait_frames_ > 0) {
            --wait_frames_;
            return;
        }
        if (wait_exact_) {
            if (d.map && !d.map->stats().all_exact() && std::chrono::steady_clock::now() < deadline_) return;
            wait_exact_ = false;
        }
        if (wait_idle_) {
            // Idle and synced: the runner has nothing queued and the view holds every published step.
            const LiveStatus status = d.runner->status();
            const bool idle = !status.busy && status.state != LiveState::Running && status.state != LiveState::Prefilling;
            const bool synced = d.model && d.bound_generation == status.generation && d.model->steps() == status.steps;
            if (!(idle && synced) && std::chrono::steady_clock::now() < deadline_) return;
            wait_idle_ = false;
        }
        if (wait_model_) {
            if (d.loader.loading.valid() && std::chrono::steady_clock::now() < deadline_) return;
            wait_model_ = false;
        }
        if (!d.model || state_pending_) return;  // live: nothing to act on until the prompt has run
        DebuggerModel& model = *d.model;
        MapView& map = *d.map;
        const CaptureShape& shape = model.session().capture->shape();
        render::RenderSettings& s = model.settings;
        if (next_ < actions_.size()) map.set_scripted_hover(std::nullopt);  // a hover lasts until the next action
        while (next_ < actions_.size()) {
            const view::ScriptAction& a = actions_[next_++];
            const std::string& v = a.verb;
            if (view::apply_view_action(a, model.shown_positions(), shape, map.view(), s)) continue;
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
                deadline_ = deadline_in(a.args.empty() ? 60.0 : view::script_number(a, 0));
                return;
            } else if (v == "screenshot") {
                screenshot_request = a.args[0];
                return;
            } else if (v == "scrub") {
                model.show_step(static_cast<int64_t>(view::script_number(a, 0)));
            } else if (v == "follow") {
                model.current_step = -1;
            } else if (v == "play") {
                d.timeline.playing = true;
                if (!a.args.empty()) d.timeline.steps_per_second = static_cast<float>(view::script_number(a, 0));
            } else if (v == "diff") {
                d.diff.enabled = true;
                d.diff.follow = false;
                d.diff.step_a = static_cast<int>(view::script_number(a, 0));
                d.diff.step_b = static_cast<int>(view::script_number(a, 1));
            } else if (v == "heads") {
                if (a.args[0] != "on" && a.args[0] != "off") fail("script line ", a.line, ": heads on|off");
                d.show_head_grid = a.args[0] == "on";
                if (d.show_head_grid) panels::finish_head_grid(model, d.head_grid);  // scripts see the finished grid
            } else if (v == "waterfall") {
                if (a.args[0] != "on" && a.args[0] != "off") fail("script line ", a.line, ": waterfall on|off");
                d.show_waterfall = a.args[0] == "on";
            } else if (v == "load_model") {
                // Loads in the background as the panel does; the run restarts on it when loaded.
                const std::string path = joined(a, 0);
                panels::start_model_load(d.loader, path == "default" ? std::string() : path);
                wait_model_ = true;
                deadline_ = deadline_in(300.0);
                return;
            } else if (v == "dpi") {
                // Simulates moving the window to a monitor of another content scale.
                d.scale_request = static_cast<float>(view::script_number(a, 0));
                wait_frames_ = 1;
                return;
            } else if (v == "state") {
                state_pending_ = true;  // printed after a frame, once the diff is current
                return;
            } else if (v == "watch") {
                const Watchpoint w = parse_watchpoint(joined(a, 0));
                d.watch.list.push_back(w);
                if (d.runner) d.runner->set_watchpoints(d.watch.list);
            } else if (v == "keyframe") {
                const int64_t step = static_cast<int64_t>(view::script_number(a, 0));
                if (d.runner) d.runner->add_keyframe(step, joined(a, 1));
                else fail("script line ", a.line, ": keyframes are added to a live run");
            } else {
                // Live decoding verbs.
                if (!d.runner) fail("script line ", a.line, ": '", v, "' needs a live model (view --model … --prompt …)");
                if (v == "step") {
                    d.runner->step(a.args.empty() ? 1 : static_cast<int>(view::script_number(a, 0)));
                } else if (v == "run") {
                    RunGoal goal;
                    if (!a.args.empty()) goal.steps = static_cast<int64_t>(view::script_number(a, 0));
                    d.runner->run(goal);
                } else if (v == "run_to_text") {
                    RunGoal goal;
                    goal.stop_string = joined(a, 0);
                    d.runner->run(goal);
                } else if (v == "branch") {
                    const int64_t step = static_cast<int64_t>(view::script_number(a, 0));
                    const size_t rank = static_cast<size_t>(view::script_number(a, 1));
                    if (step < 0 || step >= model.steps() || rank >= model.session().steps[step].top.size())
                        fail("script line ", a.line, ": no alternative ", rank, " at step ", step);
                    d.runner->branch(step, model.session().steps[step].top[rank].id);
                } else if (v == "follow_beam") {
                    d.runner->follow_beam(static_cast<int32_t>(view::script_number(a, 0)));
                } else if (v == "wait_idle") {
                    wait_idle_ = true;
                    deadline_ = deadline_in(a.args.empty() ? 300.0 : view::script_number(a, 0));
                    return;
                }
            }
        }
    }

    void after_frame(const Debugger& d) {
        if (hover_pending_ && d.map) {
            std::printf("%s\n", view::hover_json(d.map->hover()).c_str());
            std::fflush(stdout);
            hover_pending_ = false;
        }
        if (state_pending_ && d.model && (!d.diff.enabled || (d.diff.result && !d.diff.pending.valid()))) {
            std::printf("%s\n", state_json(d).c_str());
            std::fflush(stdout);
            state_pending_ = false;
        }
    }

    // One JSON line for scripts and tests: what the debugger shows and knows right now.
    static std::string state_json(const Debugger& d) {
        const DebuggerModel& model = *d.model;
        nlohmann::json j;
        j["positions"] = model.positions();
        j["prompt_tokens"] = model.session().prompt_tokens;
        j["steps"] = model.steps();
        j["shown_step"] = model.shown_step();
        j["shown_positions"] = model.shown_positions();
        j["selected_query"] = model.selected_query;
        j["layer"] = model.settings.layer;
        j["head"] = model.settings.head;
        nlohmann::json tokens = nlohmann::json::array();
        for (const StepRecord& r : model.session().steps) tokens.push_back(r.token_id);
        j["step_tokens"] = tokens;
        j["keyframes"] = model.session().keyframes.size();
        if (!model.session().beam_tree.empty()) {
            const BeamTree& tree = model.session().beam_tree;
            j["beam"] = {{"nodes", tree.nodes.size()}, {"best", tree.best}, {"finals", tree.finals},
                         {"followed", panels::beam_node_followed(model.session())}};
        }
        j["content_scale"] = d.content_scale;
        j["font_px"] = ImGui::GetFontSize();
        if (d.runner) {
            const LiveStatus status = d.runner->status();
            j["state"] = to_string(status.state);
            j["message"] = status.message;
            j["branches"] = status.branches;
            j["branch"] = status.branch;
            j["model"] = d.loader.loaded_name;
            if (!d.loader.note.empty()) j["model_error"] = d.loader.note;
        }
        nlohmann::json hits = nlohmann::json::array();
        for (const StepFindings& f : d.findings)
            if (!f.watchpoints_fired.empty()) hits.push_back(f.step);
        j["watch_hits"] = hits;
        if (d.diff.enabled && d.diff.result) {
            const StepDiff& diff = *d.diff.result;
            j["diff"] = {{"earlier_query", diff.earlier_query},
                         {"later_query", diff.later_query},
                         {"top_layer", diff.ranking.empty() ? -1 : diff.moved_most().layer},
                         {"top_head", diff.ranking.empty() ? -1 : diff.moved_most().head},
                         {"top_jsd", diff.ranking.empty() ? 0.0 : diff.moved_most().change.jsd_bits}};
        }
        return j.dump();
    }

private:
    static std::chrono::steady_clock::time_point deadline_in(double seconds) {
        return std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
    }
    static std::string joined(const view::ScriptAction& a, size_t from) {
        std::string out;
        for (size_t i = from; i < a.args.size(); ++i) out += (i > from ? " " : "") + a.args[i];
        return out;
    }

    std::vector<view::ScriptAction> actions_;
    size_t next_ = 0;
    int wait_frames_ = 0;
    bool wait_exact_ = false, hover_pending_ = false, wait_idle_ = false, state_pending_ = false, wait_model_ = false;
    std::chrono::steady_clock::time_point deadline_;
};

// Demo mode: the views follow the live run — the map zooms to where the current token attends,
// the head whose focus moved most is shown — and a caption says what happened.
void follow_for_demo(Debugger& d, std::string& caption) {
    DebuggerModel& model = *d.model;
    const int64_t step = model.shown_step();
    if (step < 0) {
        caption = "The model reads the prompt; every layer and head of its attention is captured.";
        return;
    }
    model.current_step = -1;
    if (step == d.demo_step) return;  // the view, head and caption change once per step
    d.demo_step = step;
    if (step < static_cast<int64_t>(d.findings.size()) && d.findings[step].change &&
        !d.findings[step].change->ranking.empty()) {
        const HeadDiff& top = d.findings[step].change->moved_most();
        model.select_layer(top.layer);
        model.select_head(top.head);
    }
    const int64_t query = model.query_of(step);
    model.select_query(query);
    const std::vector<float>& row = model.selected_row();
    const int64_t focus = row.empty() ? 0 : std::max_element(row.begin(), row.end()) - row.begin();
    const double span = std::max<double>(48.0, static_cast<double>(query + 1) * 0.6);
    const double k0 = std::clamp(static_cast<double>(focus) - span / 2, 0.0, std::max(0.0, query + 1 - span));
    const double q0 = std::max(0.0, static_cast<double>(query + 1) - span);
    d.map->view().show(k0, q0, k0 + span, q0 + span);
    caption = cat("Step ", step, ": the model wrote \"", model.token_display(query, 24), "\" (p = ",
                  std::round(std::exp(double(model.session().steps[step].logprob)) * 1000) / 1000, "). Head L",
                  model.settings.layer, "H", model.settings.head, " moved most; it looks at \"",
                  model.token_display(focus, 24), "\" (p = ", std::round(double(row.empty() ? 0 : row[focus]) * 1000) / 1000, ").");
}

int run(const WindowedViewOptions& options) {
    // Display first: without one, say so before loading a possibly large session.
    GlfwScope glfw;

    Debugger d;
    std::unique_ptr<Session> owned;
    const Session* session = options.session;
    std::string source_name = "(given)";
    std::unique_ptr<LiveRunner> runner;
    LiveOptions live;
    live.record_path = options.record_path;
    live.runtime_priority = options.runtime_priority;
    const Model* live_model = options.model;
    std::unique_ptr<Model> loaded_model;  // one loaded from the panel (replaces options.model)
    if (options.model) {
        d.loader.loaded_name = options.model->identity.name;
        runner = std::make_unique<LiveRunner>(*options.model, options.backend, live);
        runner->start(options.live_request);
        d.runner = runner.get();
        d.run.prompt = options.live_request.prompt;
        d.run.chat = options.live_request.sampling.chat;
        d.run.sampling = options.live_request.sampling;
        source_name = cat("live, ", options.model->config.arch_name, " ", options.model->identity.name);
        if (options.demo) {
            RunGoal goal;
            goal.steps_per_second = options.demo_steps_per_second;
            runner->run(goal);
        }
    } else if (!session) {
        if (options.synthetic_tokens > 0) {
            view::SyntheticOptions synthetic;
            synthetic.tokens = options.synthetic_tokens;
            owned = std::make_unique<Session>(view::make_synthetic_session(synthetic));
            source_name = cat("synthetic, ", options.synthetic_tokens, " tokens");
        } else if (!options.session_path.empty()) {
            owned = std::make_unique<Session>(load_session(options.session_path));
            source_name = options.session_path;
        } else {
            fail("view: give a SESSION file, --synthetic N or a model to run");
        }
        session = owned.get();
        if (!session->capture || session->capture->positions() == 0) fail("the session holds no capture");
        const CaptureShape& shape = session->capture->shape();
        if (options.layer < 0 || options.layer >= shape.n_layer)
            fail("--layer ", options.layer, " is out of range (0..", shape.n_layer - 1, ")");
        if (options.head < 0 || options.head >= shape.n_head)
            fail("--head ", options.head, " is out of range (0..", shape.n_head - 1, ")");
    }

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
    // The views hold Vulkan objects and a diff may be computing on a worker: all go before the window.
    struct ReleaseViews {
        Debugger& d;
        ~ReleaseViews() {
            d.diff = {};
            d.waterfall.reset();
            d.map.reset();
            d.model.reset();
            d.source.reset();
        }
    } release_views{d};
    render::VulkanContext& context = window.context();
    if (!window.blit_supported() && window.swapchain_format() != VK_FORMAT_R8G8B8A8_UNORM)
        fail("the Vulkan device can neither blit RGBA8 into the swapchain format nor copy into it");

    if (options.plane != "sum" && options.plane != "max") fail("--plane must be sum or max");
    const auto map_kind = render::parse_colormap(options.colormap);
    if (!map_kind) fail("--colormap '", options.colormap, "' is not one of viridis, magma, diverging");
    if (options.scale != "log" && options.scale != "linear") fail("--scale must be log or linear");
    render::TileCacheOptions cache_options;
    cache_options.budget_bytes = static_cast<uint64_t>(std::max(16, options.cache_mb)) << 20;

    // (Re)binds the views to a session: at start-up, and in live mode whenever the runner replaces it.
    auto bind = [&](const Session& shown) {
        // The map's tile producers may still be computing from the old source: it goes only
        // after reset_source() has stopped them.
        std::unique_ptr<CpuTileSource> previous_source = std::move(d.source);
        d.source = std::make_unique<CpuTileSource>(*shown.capture);
        if (d.model) {
            d.model->rebind(shown, *d.source);
            d.map->reset_source();
            d.waterfall->reset_source();
            previous_source.reset();
            if (live_model) d.model->tokenizer = live_model->tokenizer.get();
        } else {
            d.model = std::make_unique<DebuggerModel>(shown, *d.source);
            DebuggerModel& model = *d.model;
            model.settings.layer = std::clamp(options.layer, 0, model.n_layer() - 1);
            model.settings.head = std::clamp(options.head, 0, model.n_head() - 1);
            model.settings.plane = options.plane == "sum" ? render::Plane::Sum : render::Plane::Max;
            model.settings.colormap = *map_kind;
            model.settings.scale = options.scale == "log" ? render::ValueScale::Log : render::ValueScale::Linear;
            if (live_model) model.tokenizer = live_model->tokenizer.get();
            if (options.select_query >= model.positions())
                fail("--select ", options.select_query, " is out of range (0..", model.positions() - 1, ")");
            if (options.select_query >= 0) model.select_query(options.select_query);
            d.map = std::make_unique<MapView>(context, model, cache_options);
            d.waterfall = std::make_unique<WaterfallView>(context, model, cache_options);
        }
        d.strip = {};
        d.entropy = {};
        d.diff = {};
        d.bound_positions = d.model->positions();
        d.demo_step = -2;
    };
    if (session) bind(*session);

    ScriptDriver script(std::move(actions));
    std::fprintf(stderr, "attnscope: %s, %s; validation %s; fonts: %s\n", context.device_description().c_str(),
                 source_name.c_str(), context.validation_enabled() ? "on" : "off", window.font_note().c_str());
    if (!options.sequence_dir.empty()) std::filesystem::create_directories(options.sequence_dir);

    uint64_t frames = 0;
    int idle = 0;
    double frame_ms = 0;
    std::optional<std::string> script_shot;
    bool final_shot_done = options.screenshot.empty();
    auto final_deadline = std::chrono::steady_clock::time_point::max();
    std::string caption;
    LiveStatus status;
    std::chrono::steady_clock::time_point demo_idle_since{};
    for (;;) {
        const auto start = std::chrono::steady_clock::now();
        // ---- live: take what the runner published ------------------------------------------
        if (std::unique_ptr<Model> model = panels::take_loaded_model(d.loader)) {
            // A model loaded from the panel: the run restarts on it with the panel's prompt. The
            // views keep the old session until the new prompt has run (then they rebind).
            runner.reset();  // finishes the recordings
            if (d.model) d.model->tokenizer = nullptr;  // the old tokens are not the new model's
            std::unique_ptr<Model> previous = std::move(loaded_model);
            loaded_model = std::move(model);
            live_model = loaded_model.get();
            runner = std::make_unique<LiveRunner>(*live_model, options.backend, live);
            d.runner = runner.get();
            d.generation = 0;
            d.bound_generation = ~uint64_t(0);
            GenerationRequest request = panels::request_from(d.run);
            if (request.prompt.empty()) request.prompt = options.live_request.prompt;
            runner->start(request);
            source_name = cat("live, ", live_model->config.arch_name, " ", live_model->identity.name);
        }
        if (runner) {
            status = runner->status();
            // A replaced session may hold the last reference to the capture the views read.
            const std::shared_ptr<CaptureStore> shown_capture = d.live_session.capture;
            if (runner->sync(d.live_session, d.findings, d.generation)) {
                if (d.generation != d.bound_generation && d.live_session.capture && d.live_session.capture->positions() > 0) {
                    bind(d.live_session);
                    d.bound_generation = d.generation;
                } else if (d.model && d.model->positions() > d.bound_positions) {
                    d.map->rows_changed_from(d.bound_positions);
                    d.waterfall->rows_changed_from(d.bound_positions);
                    d.bound_positions = d.model->positions();
        d.demo_step = -2;
                }
            }
        }
        if (options.demo && runner && !status.busy &&
            (status.state == LiveState::Finished || status.state == LiveState::Paused) && status.steps > 0) {
            // Demo mode loops: a short pause on the finished text, then the same prompt again.
            if (demo_idle_since == std::chrono::steady_clock::time_point{}) demo_idle_since = std::chrono::steady_clock::now();
            if (std::chrono::steady_clock::now() - demo_idle_since > std::chrono::seconds(3)) {
                runner->start(options.live_request);
                RunGoal goal;
                goal.steps_per_second = options.demo_steps_per_second;
                runner->run(goal);
                demo_idle_since = {};
            }
        }
        const bool live_busy = runner && (status.busy || status.state == LiveState::Running || status.state == LiveState::Prefilling);
        const bool scripted = !script.done() || options.frames > 0 || !final_shot_done;
        if (!scripted && !live_busy && !d.timeline.playing && idle > 3 && (!d.map || !d.map->busy()) && d.entropy.complete())
            window.wait_events(0.5);
        if (options.frame_hook) options.frame_hook(window.window(), frames);
        if (d.scale_request) window.set_content_scale(*std::exchange(d.scale_request, std::nullopt));
        if (!window.begin_frame()) break;
        d.content_scale = window.content_scale();
        if (frames >= 2) script.before_frame(d, script_shot);  // the map has its real size by then
        if (d.model) {
            panels::advance_timeline(*d.model, d.timeline);
            panels::update_diff(*d.model, d.diff, d.findings);
            if (options.demo) follow_for_demo(d, caption);
        }

        // ---- layout: inspector left, step inspector and diff right, the map in the middle,
        //      timeline and tokens below it -----------------------------------------------------
        const ImGuiIO& io = ImGui::GetIO();
        const float scale = window.content_scale();
        const float side = std::clamp(io.DisplaySize.x * 0.22f, 280 * scale, 440 * scale);
        const float right = std::clamp(io.DisplaySize.x * 0.22f, 280 * scale, 440 * scale);
        const float strip_h = std::clamp(io.DisplaySize.y * 0.26f, 150 * scale, 360 * scale);
        const ImGuiWindowFlags fixed = ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoCollapse |
                                       ImGuiWindowFlags_NoBringToFrontOnFocus;

        ImGui::SetNextWindowPos(ImVec2(0, 0));
        ImGui::SetNextWindowSize(ImVec2(side, io.DisplaySize.y));
        ImGui::Begin("Inspector", nullptr, fixed | ImGuiWindowFlags_NoTitleBar);
        if (runner && ImGui::CollapsingHeader("Run", ImGuiTreeNodeFlags_DefaultOpen))
            panels::draw_run_controls_panel(*runner, status, d.run);
        if (ImGui::CollapsingHeader("Model", runner ? 0 : ImGuiTreeNodeFlags_DefaultOpen))
            panels::draw_model_loader_panel(d.loader);
        if (d.model) {
            DebuggerModel& model = *d.model;
            if (ImGui::CollapsingHeader("View", ImGuiTreeNodeFlags_DefaultOpen))
                panels::draw_view_controls_panel(model, d.controls, d.map->range());
            if (ImGui::CollapsingHeader("Layer / head", ImGuiTreeNodeFlags_DefaultOpen)) {
                d.entropy.update(model, 4.0);
                panels::draw_head_selector_panel(model, d.entropy);
            }
            if (ImGui::CollapsingHeader("Watchpoints", runner ? ImGuiTreeNodeFlags_DefaultOpen : 0))
                panels::draw_watchpoints_panel(model, runner.get(), d.findings, d.watch);
            if (ImGui::CollapsingHeader("Session")) {
                panels::SessionInfoExtras extras;
                extras.source = source_name;
                extras.device = context.device_description();
                extras.fonts = window.font_note();
                extras.frame_ms = frame_ms;
                extras.level = d.map->stats().level;
                extras.visible_tiles = d.map->stats().visible_tiles;
                extras.exact_tiles = d.map->stats().exact_tiles;
                extras.cache_tiles = d.map->cache().resident_tiles();
                extras.cache_bytes = d.map->cache().resident_bytes();
                extras.validation = context.validation_enabled();
                extras.validation_errors = context.validation_errors().size();
                panels::draw_session_info_panel(model, extras);
            }
        }
        ImGui::End();

        ImGui::SetNextWindowPos(ImVec2(io.DisplaySize.x - right, 0));
        ImGui::SetNextWindowSize(ImVec2(right, io.DisplaySize.y));
        ImGui::Begin("Step", nullptr, fixed | ImGuiWindowFlags_NoTitleBar);
        if (d.model) {
            if (ImGui::CollapsingHeader("Step inspector", ImGuiTreeNodeFlags_DefaultOpen)) {
                panels::StepInspectorActions actions;
                if (runner) actions.branch = [&](int64_t step, int32_t token) { runner->branch(step, token); };
                panels::draw_step_inspector_panel(*d.model, d.findings, actions);
            }
            if (ImGui::CollapsingHeader("Diff", ImGuiTreeNodeFlags_DefaultOpen)) panels::draw_diff_panel(*d.model, d.diff);
            if (!d.model->session().beam_tree.empty() && ImGui::CollapsingHeader("Beam tree", ImGuiTreeNodeFlags_DefaultOpen)) {
                panels::BeamTreeActions beam_actions;
                if (runner) beam_actions.follow = [&](int32_t node) { runner->follow_beam(node); };
                panels::draw_beam_tree_panel(*d.model, panels::beam_node_followed(d.model->session()), beam_actions);
            }
            if (runner && status.branches > 1 && ImGui::CollapsingHeader("Branches", ImGuiTreeNodeFlags_DefaultOpen)) {
                const std::vector<LiveRunner::BranchInfo> branches = runner->branches();
                for (size_t b = 0; b < branches.size(); ++b) {
                    char label[128];
                    if (branches[b].parent < 0) std::snprintf(label, sizeof label, "branch 0 (original), %lld steps", static_cast<long long>(branches[b].steps));
                    else std::snprintf(label, sizeof label, "branch %zu from %lld at step %lld, %lld steps", b,
                                       static_cast<long long>(branches[b].parent), static_cast<long long>(branches[b].at_step),
                                       static_cast<long long>(branches[b].steps));
                    if (ImGui::Selectable(label, b == status.branch)) runner->select_branch(b);
                }
            }
        } else {
            ImGui::TextDisabled("waiting for the prompt to run…");
        }
        ImGui::End();

        const float map_w = io.DisplaySize.x - side - right;
        // The waterfall (step × key) takes the lower third of the map's area once there are steps.
        const bool waterfall_shown =
            d.model && d.waterfall && d.show_waterfall && !d.show_head_grid && d.model->steps() > 0;
        const float waterfall_h = waterfall_shown ? std::round((io.DisplaySize.y - strip_h) * 0.34f) : 0.f;
        ImGui::SetNextWindowPos(ImVec2(side, 0));
        ImGui::SetNextWindowSize(ImVec2(map_w, io.DisplaySize.y - strip_h - waterfall_h));
        ImGui::Begin("Attention map", nullptr,
                     fixed | ImGuiWindowFlags_NoBackground | ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoScrollbar |
                         ImGuiWindowFlags_NoScrollWithMouse);
        if (d.model) {
            DebuggerModel& model = *d.model;
            if (ImGui::RadioButton("map", !d.show_head_grid)) d.show_head_grid = false;
            ImGui::SameLine();
            if (ImGui::RadioButton("all heads", d.show_head_grid)) d.show_head_grid = true;
            ImGui::SameLine();
            ImGui::Text("layer %d  head %d  %s  %s", model.settings.layer, model.settings.head,
                        model.settings.plane == render::Plane::Max ? "max" : "sum",
                        model.settings.scale == render::ValueScale::Log ? "log" : "linear");
            ImGui::SameLine();
            if (options.demo && !caption.empty()) ImGui::TextColored(ImVec4(1, 0.85f, 0.4f, 1), "   %s", caption.c_str());
            else ImGui::TextDisabled("   wheel/+/-: zoom   drag/arrows: pan   F: fit   click: select row   [ ]: layer   , .: head");
            if (d.show_head_grid) {
                if (panels::draw_head_grid_panel(model, d.head_grid)) d.show_head_grid = false;  // opened a head
            } else {
                d.map->draw(window.framebuffer_scale_x(), window.framebuffer_scale_y());
            }
        } else if (runner) {
            ImGui::Text("%s: %s", to_string(status.state), status.message.c_str());
            if (status.prefill_total > 0)
                ImGui::ProgressBar(float(status.prefill_done) / float(status.prefill_total), ImVec2(-1, 0));
        }
        ImGui::End();
        if (waterfall_shown) {
            ImGui::SetNextWindowPos(ImVec2(side, io.DisplaySize.y - strip_h - waterfall_h));
            ImGui::SetNextWindowSize(ImVec2(map_w, waterfall_h));
            ImGui::Begin("Waterfall", nullptr,
                         fixed | ImGuiWindowFlags_NoBackground | ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoScrollbar |
                             ImGuiWindowFlags_NoScrollWithMouse);
            ImGui::TextDisabled("waterfall: decode step × key, layer %d head %d   wheel: zoom (shift: keys, ctrl: steps)   click: go to step",
                                d.model->settings.layer, d.model->settings.head);
            d.waterfall->draw(window.framebuffer_scale_x(), window.framebuffer_scale_y());
            ImGui::End();
        }

        ImGui::SetNextWindowPos(ImVec2(side, io.DisplaySize.y - strip_h));
        ImGui::SetNextWindowSize(ImVec2(map_w, strip_h));
        char strip_title[128];
        if (d.model && d.model->selected_query >= 0)
            std::snprintf(strip_title, sizeof strip_title, "Timeline and tokens — attention of query %lld (layer %d, head %d)###tokens",
                          static_cast<long long>(d.model->selected_query), d.model->settings.layer, d.model->settings.head);
        else
            std::snprintf(strip_title, sizeof strip_title, "Timeline and tokens###tokens");
        ImGui::Begin(strip_title, nullptr, fixed);
        if (d.model) {
            panels::TimelineActions timeline_actions;
            if (runner) timeline_actions.add_keyframe = [&](int64_t step, const std::string& name) { runner->add_keyframe(step, name); };
            panels::draw_timeline_panel(*d.model, d.timeline, timeline_actions);
            ImGui::Separator();
            panels::draw_token_strip_panel(*d.model, d.strip);
        }
        ImGui::End();

        // ---- screenshots and auto-exit --------------------------------------------------
        std::string shot;
        const bool map_settled = (!d.map || d.map->stats().all_exact() || !d.map->busy()) &&
                                 (!waterfall_shown || d.waterfall->stats().all_exact() || !d.waterfall->busy());
        const bool frames_done = options.frames <= 0 || frames + 1 >= static_cast<uint64_t>(options.frames);
        if (script_shot && map_settled) {
            shot = *script_shot;
            script_shot.reset();
        } else if (!final_shot_done && script.done() && frames_done && !script_shot) {
            // The final screenshot shows exact tiles unless they take longer than a minute.
            if (final_deadline == std::chrono::steady_clock::time_point::max())
                final_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            if ((d.map && d.map->stats().all_exact()) || std::chrono::steady_clock::now() > final_deadline) {
                shot = options.screenshot;
                final_shot_done = true;
            }
        }
        if (shot.empty() && !options.sequence_dir.empty()) {
            char name[32];
            std::snprintf(name, sizeof name, "%05llu.png", static_cast<unsigned long long>(frames));
            shot = (std::filesystem::path(options.sequence_dir) / name).string();
        }
        const auto built = std::chrono::steady_clock::now();
        window.end_frame([&](VkCommandBuffer cmd, VkImage image, VkExtent2D extent) {
            if (d.map && !d.show_head_grid) d.map->record_blit(cmd, image, extent, window.blit_supported());
            if (waterfall_shown) d.waterfall->record_blit(cmd, image, extent, window.blit_supported());
        }, shot);
        if (!shot.empty() && options.sequence_dir.empty()) std::fprintf(stderr, "attnscope: screenshot written to %s\n", shot.c_str());
        if (!shot.empty() && options.report && shot == options.screenshot) options.report->screenshot = shot;
        script.after_frame(d);
        ++frames;
        idle = d.map && d.map->stats().rendered ? 0 : idle + 1;
        frame_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        if (options.report) {
            options.report->frame_ms.push_back(frame_ms);
            options.report->build_ms.push_back(std::chrono::duration<double, std::milli>(built - start).count());
            options.report->wait_ms.push_back(window.last_timing().wait_ms);
            options.report->present_ms.push_back(window.last_timing().present_ms);
            options.report->frame_live_busy.push_back(live_busy ? 1 : 0);
            options.report->live_steps = status.steps;
            options.report->content_scale = window.content_scale();
            options.report->content_scale_changes = window.content_scale_changes();
            options.report->font_px = ImGui::GetFontSize();
        }

        if (options.frames > 0 && frames >= static_cast<uint64_t>(options.frames) && script.done() && final_shot_done &&
            !script_shot)
            break;
    }
    runner.reset();  // finishes the recording before the report

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
