#include "ui/view/headless.h"

#include "ui/view/hover.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <sstream>
#include <thread>

#include "engine/error.h"

namespace attn::view {

namespace {

// verb → (min args, max args)
const std::map<std::string, std::pair<size_t, size_t>>& verbs() {
    static const std::map<std::string, std::pair<size_t, size_t>> table = {
        {"fit", {0, 0}},      {"show", {4, 4}},   {"zoom", {1, 3}},     {"pan", {2, 2}},
        {"layer", {1, 1}},    {"head", {1, 1}},   {"plane", {1, 1}},    {"colormap", {1, 1}},
        {"scale", {1, 1}},    {"range", {1, 2}},  {"hover", {2, 2}},    {"wait", {1, 1}},
        {"wait_exact", {0, 1}}, {"screenshot", {1, 1}}, {"zoom_keys", {1, 3}}, {"zoom_rows", {1, 3}},
        {"waterfall", {1, 1}},
        // The debugger's timeline and live decoding (the windowed runner; see live_script_verb()).
        {"step", {0, 1}},     {"run", {0, 1}},    {"run_to_text", {1, 64}}, {"wait_idle", {0, 1}},
        {"scrub", {1, 1}},    {"follow", {0, 0}}, {"diff", {2, 2}},         {"watch", {1, 64}},
        {"keyframe", {2, 64}}, {"branch", {2, 2}}, {"state", {0, 0}},        {"play", {0, 1}},
        {"dpi", {1, 1}},      {"follow_beam", {1, 1}}, {"load_model", {1, 64}}, {"heads", {1, 1}},
        // Issue 6's views (the windowed runner, ui/app/windowed_view.cpp):
        //   centre map|heads|text|graph|fingerprints|compare|clusters   what the centre shows
        //   text_level token|word|phrase|sentence|paragraph             the text view's granularity
        //   text_hover N                 keep segment N highlighted (-1: none), as a click does
        //   text_heads selected | label NAME | set L:H … | layer L       the heads the text view sums over
        //   phrase SIZE [uniform|triangular]                            phrase windows
        //   graph sentences|paragraphs   the sentence graph or the paragraph flow
        //   graph_select NODE            as a click on a node: that sentence selected in the text view
        //   compare L1 H1 L2 H2 [L H …]  heads side by side; compare_diff A B: which two the difference takes
        //   compare_session PATH         the first head in another session, as one more map
        //   label L H TEXT | unlabel L H [TEXT]   user labels; save_session PATH writes the session with them
        //   heads_sort COLUMN [asc|desc] | heads_filter LABEL|all       the heads table (and the grid's filter)
        //   clusters pca|tsne [fingerprints|patterns [K [SEED]]]        the head scatter
        //   export PATH                  the centre's numbers (.csv/.npy/.json; clusters .csv/.json), or .png: the centre
        //   export_segments PATH         the text view's segment (token) table with byte spans, .csv or .json
        {"centre", {1, 1}},   {"text_level", {1, 1}}, {"text_hover", {1, 1}}, {"text_heads", {1, 64}},
        {"phrase", {1, 2}},   {"graph", {1, 1}},      {"graph_select", {1, 1}}, {"compare", {4, 16}},
        {"compare_diff", {2, 2}}, {"compare_session", {1, 64}}, {"label", {3, 64}}, {"unlabel", {2, 64}},
        {"save_session", {1, 64}}, {"heads_sort", {1, 2}}, {"heads_filter", {1, 64}}, {"clusters", {1, 4}},
        {"export", {1, 64}},  {"export_segments", {1, 64}},
        // Issue 7 (the windowed runner):
        //   pii on|off                   mask personal data in every display and export (on by default)
        //   rules PATH | ontology PATH   load a rules file / an ontology, as the Rules panel does
        //   violation N                  as a click on violation N: its step and worst head in the map
        //   violation_counterfactual N   as its "counterfactual" button: its keys masked in its offending heads
        //   text_pair Q K                word level: word Q kept, word K considered as the pair's other word
        //                                (raw mass, link-grammar relation, parts of speech in the state and a box)
        //   counterfactual mask A B | ablate L H zero|mean | remove A B | replace A B TEXT | noise A B STD [SEED]
        //                                run a counterfactual as the panel's Run button (mask: the shown head)
        //   counterfactual_wait [SECONDS]   until it has finished; counterfactual_export PATH: its JSON
        {"counterfactual", {1, 64}}, {"counterfactual_wait", {0, 1}}, {"counterfactual_export", {1, 64}},
        {"text_pair", {2, 2}},
        {"pii", {1, 1}},      {"rules", {1, 64}},     {"ontology", {1, 64}}, {"violation", {1, 1}},
        {"violation_counterfactual", {1, 1}}};
    return table;
}

}  // namespace

double script_number(const ScriptAction& a, size_t i) {
    try {
        size_t used = 0;
        const double v = std::stod(a.args.at(i), &used);
        if (used != a.args[i].size()) throw std::invalid_argument("trailing");
        return v;
    } catch (const std::exception&) {
        fail("script line ", a.line, ": '", a.verb, "' expects a number, got '", a.args.at(i), "'");
    }
}

std::vector<ScriptAction> parse_script(const std::string& text, const std::string& source_name) {
    std::vector<ScriptAction> actions;
    std::istringstream lines(text);
    std::string line;
    int number_of_line = 0;
    while (std::getline(lines, line)) {
        ++number_of_line;
        if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
        std::istringstream words(line);
        ScriptAction action;
        action.line = number_of_line;
        if (!(words >> action.verb)) continue;
        for (std::string w; words >> w;) action.args.push_back(w);
        const auto it = verbs().find(action.verb);
        if (it == verbs().end()) fail(source_name, ":", number_of_line, ": unknown action '", action.verb, "'");
        if (action.args.size() < it->second.first || action.args.size() > it->second.second)
            fail(source_name, ":", number_of_line, ": '", action.verb, "' takes ", it->second.first,
                 it->second.first == it->second.second ? "" : cat("..", it->second.second), " argument(s), got ",
                 action.args.size());
        actions.push_back(std::move(action));
    }
    return actions;
}

HeadlessView::HeadlessView(render::VulkanContext& context, const Session& session, const HeadlessOptions& options)
    : session_(session), source_(*session.capture), settings_(options.settings) {
    if (!session.capture || session.capture->positions() == 0) fail("the session holds no capture");
    const CaptureShape& shape = session.capture->shape();
    if (options.layer < 0 || options.layer >= shape.n_layer)
        fail("--layer ", options.layer, " is out of range (0..", shape.n_layer - 1, ")");
    if (options.head < 0 || options.head >= shape.n_head)
        fail("--head ", options.head, " is out of range (0..", shape.n_head - 1, ")");
    settings_.layer = options.layer;
    settings_.head = options.head;
    cache_ = std::make_unique<render::TileCache>(context, source_, options.cache);
    renderer_ = std::make_unique<render::AttentionMapRenderer>(
        context, *cache_, render::MatrixExtent::square(session.capture->positions()), options.width, options.height);
    view_.width = static_cast<int>(options.width);
    view_.height = static_cast<int>(options.height);
    view_.fit(session.capture->positions());
    if (options.waterfall) set_waterfall(true);
}

void HeadlessView::set_waterfall(bool on) {
    if (on && waterfall_extent(session_).rows == 0)
        fail("the session has no captured decode step: the waterfall has no rows (prompt of ", session_.prompt_tokens,
             " tokens, ", session_.steps.size(), " steps, ", session_.capture->positions(), " positions captured)");
    waterfall_ = on;
    renderer_->set_extent(on ? waterfall_extent(session_) : render::MatrixExtent::square(session_.capture->positions()));
    view_.fit(extent(), !waterfall_);
}

render::MatrixExtent waterfall_extent(const Session& session) {
    if (!session.capture) return {};
    const int64_t positions = std::min(session.capture->positions(), session.positions());
    const int64_t rows = std::clamp<int64_t>(positions - session.prompt_tokens, 0, static_cast<int64_t>(session.steps.size()));
    return {session.prompt_tokens + rows, rows, session.prompt_tokens};
}

HeadlessView::~HeadlessView() = default;

render::FrameStats HeadlessView::frame() {
    last_ = renderer_->render(view_, settings_);
    return last_;
}

render::FrameStats HeadlessView::wait_exact(double timeout_seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
    for (;;) {
        frame();
        if (last_.all_exact()) return last_;
        if (std::chrono::steady_clock::now() > deadline) return last_;
        // Nothing to draw until a producer finishes: don't spin on the CPU the producers need.
        if (last_.uploads == 0 && last_.colorized == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

void HeadlessView::screenshot(const std::string& path) { renderer_->write_png(path); }

std::string HeadlessView::token_text(int64_t position) const { return view::token_text(session_, position); }

HoverInfo HeadlessView::hover(double px, double py) const {
    return hover_at(session_, source_, view_, extent(), settings_.layer, settings_.head, px, py);
}

std::string hover_json(const HoverInfo& hover) {
    nlohmann::json j;
    j["hover"] = {{"inside", hover.inside}, {"query", hover.query},           {"key", hover.key},
                  {"probability", hover.probability}, {"rank", hover.rank}, {"level", hover.level},
                  {"row_level", hover.row_level},     {"step", hover.step},
                  {"cell_sum", hover.cell_sum},       {"cell_max", hover.cell_max},
                  {"query_token", hover.query_token}, {"key_token", hover.key_token}};
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool apply_view_action(const ScriptAction& a, int64_t positions, const CaptureShape& shape, render::ViewTransform& view,
                       render::RenderSettings& settings) {
    return apply_view_action(a, render::MatrixExtent::square(positions), true, shape, view, settings);
}

bool apply_view_action(const ScriptAction& a, const render::MatrixExtent& extent, bool square_cells,
                       const CaptureShape& shape, render::ViewTransform& view, render::RenderSettings& settings) {
    const std::string& v = a.verb;
    if (v == "fit") {
        view.fit(extent, square_cells);
    } else if (v == "show") {
        const double k0 = script_number(a, 0), r0 = script_number(a, 1), k1 = script_number(a, 2), r1 = script_number(a, 3);
        if (square_cells) view.show(k0, r0, k1, r1);
        else view.fill(k0, r0, k1, r1);
    } else if (v == "zoom" || v == "zoom_keys" || v == "zoom_rows") {
        if (v != "zoom" && square_cells)
            fail("script line ", a.line, ": '", v, "' zooms one axis of the waterfall; the map's cells stay square (use zoom)");
        const double factor = script_number(a, 0);
        if (!(factor > 0)) fail("script line ", a.line, ": zoom factor must be positive");
        const double px = a.args.size() >= 3 ? script_number(a, 1) : view.width / 2.0;
        const double py = a.args.size() >= 3 ? script_number(a, 2) : view.height / 2.0;
        view.zoom_at(px, py, v == "zoom_rows" ? 1.0 : factor, v == "zoom_keys" ? 1.0 : factor);
    } else if (v == "pan") {
        view.pan_pixels(script_number(a, 0), script_number(a, 1));
    } else if (v == "layer" || v == "head") {
        const int value = static_cast<int>(script_number(a, 0));
        const int limit = v == "layer" ? shape.n_layer : shape.n_head;
        if (value < 0 || value >= limit) fail("script line ", a.line, ": ", v, " ", value, " is out of range (0..", limit - 1, ")");
        (v == "layer" ? settings.layer : settings.head) = value;
    } else if (v == "plane") {
        if (a.args[0] != "sum" && a.args[0] != "max") fail("script line ", a.line, ": plane is sum or max");
        settings.plane = a.args[0] == "sum" ? render::Plane::Sum : render::Plane::Max;
    } else if (v == "colormap") {
        const auto map = render::parse_colormap(a.args[0]);
        if (!map) fail("script line ", a.line, ": unknown colormap '", a.args[0], "' (viridis, magma, diverging)");
        settings.colormap = *map;
    } else if (v == "scale") {
        if (a.args[0] != "log" && a.args[0] != "linear") fail("script line ", a.line, ": scale is log or linear");
        settings.scale = a.args[0] == "log" ? render::ValueScale::Log : render::ValueScale::Linear;
    } else if (v == "range") {
        settings.manual_range = false;
        settings.lock_range = false;
        if (a.args.size() == 2) {
            settings.manual_range = true;
            settings.range_low = static_cast<float>(script_number(a, 0));
            settings.range_high = static_cast<float>(script_number(a, 1));
        } else if (a.args[0] == "lock") {
            settings.lock_range = true;
        } else if (a.args[0] != "auto") {
            fail("script line ", a.line, ": range takes auto, lock or LOW HIGH");
        }
    } else {
        return false;
    }
    return true;
}

void HeadlessView::run(const std::vector<ScriptAction>& actions, std::FILE* log) {
    for (const ScriptAction& a : actions) {
        if (apply_view_action(a, extent(), !waterfall_, session_.capture->shape(), view_, settings_)) continue;
        const std::string& v = a.verb;
        if (v == "waterfall") {
            if (a.args[0] != "on" && a.args[0] != "off") fail("script line ", a.line, ": waterfall takes on or off");
            set_waterfall(a.args[0] == "on");
        } else if (v == "hover") {
            frame();
            std::fprintf(log, "%s\n", hover_json(hover(script_number(a, 0), script_number(a, 1))).c_str());
        } else if (v == "wait") {
            const int frames = static_cast<int>(script_number(a, 0));
            for (int i = 0; i < frames; ++i) frame();
        } else if (v == "wait_exact") {
            const render::FrameStats s = wait_exact(a.args.empty() ? 60.0 : script_number(a, 0));
            if (!s.all_exact())
                std::fprintf(log, "{\"note\": \"wait_exact timed out: %d of %d visible tiles exact\"}\n", s.exact_tiles,
                             s.visible_tiles);
        } else if (v == "screenshot") {
            frame();
            screenshot(a.args[0]);
        } else {
            fail("script line ", a.line, ": '", v, "' needs the debugger's panels (run without --headless, under a display)");
        }
    }
}

}  // namespace attn::view
