#include "ui/app/windowed_view.h"

#include "ui/app/export_record.h"
#include "engine/signing.h"

#include <GLFW/glfw3.h>
#include <imgui.h>
#include <stb_image.h>
#include <stb_image_write.h>

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
#include <thread>
#include <utility>

#include "engine/error.h"
#include "engine/head_fingerprints.h"
#include "engine/session_file.h"
#include "ui/app/app_window.h"
#include "ui/app/debugger_model.h"
#include "ui/app/map_view.h"
#include "ui/app/waterfall_view.h"
#include "ui/panels/beam_tree_panel.h"
#include "ui/panels/clusters_panel.h"
#include "ui/panels/compare_panel.h"
#include "ui/panels/counterfactual_panel.h"
#include "ui/panels/fingerprints_panel.h"
#include "ui/panels/sentence_graph_panel.h"
#include "ui/panels/text_view_panel.h"
#include "ui/panels/diff_panel.h"
#include "ui/panels/head_grid_panel.h"
#include "ui/panels/head_selector_panel.h"
#include "ui/panels/model_loader_panel.h"
#include "ui/panels/rules_panel.h"
#include "ui/panels/run_controls_panel.h"
#include "ui/panels/step_inspector_panel.h"
#include "ui/panels/timeline_panel.h"
#include "ui/panels/violations_panel.h"
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


// What the centre of the window shows.
enum class Centre { Map, Heads, Text, Graph, Fingerprints, Compare, Clusters };
constexpr Centre kCentres[] = {Centre::Map, Centre::Heads, Centre::Text, Centre::Graph, Centre::Fingerprints, Centre::Compare,
                               Centre::Clusters};
const char* centre_name(Centre c) {
    switch (c) {
        case Centre::Map: return "map";
        case Centre::Heads: return "heads";
        case Centre::Text: return "text";
        case Centre::Graph: return "graph";
        case Centre::Fingerprints: return "fingerprints";
        case Centre::Compare: return "compare";
        case Centre::Clusters: return "clusters";
    }
    return "?";
}
const char* centre_button(Centre c) {
    switch (c) {
        case Centre::Map: return "map";
        case Centre::Heads: return "all heads";
        case Centre::Text: return "text";
        case Centre::Graph: return "sentence graph";
        case Centre::Fingerprints: return "heads table";
        case Centre::Compare: return "compare";
        case Centre::Clusters: return "clusters";
    }
    return "?";
}

// Everything a frame draws: the session shown (from a file, or synced from the live runner), the
// tile source over its capture, the debugger model, the map and the panels' states.
struct Debugger {
    std::unique_ptr<CpuTileSource> source;
    std::unique_ptr<DebuggerModel> model;
    std::unique_ptr<MapView> map;
    std::unique_ptr<WaterfallView> waterfall;  // below the map while the session has decode steps
    bool show_waterfall = true;
    Centre centre = Centre::Map;
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

    // Issue 6: heads and text.
    panels::FingerprintsState fingerprints;
    panels::TextViewState text;
    panels::SentenceGraphState graph;
    panels::CompareState compare;
    panels::ClustersState clusters;
    // Issue 7: rules, violations and the ontology.
    panels::RulesState rules;
    panels::CounterfactualState counterfactual;
    // The view's user labels (the heads table edits them). They are copied into the session the
    // window shows (`editable`: a session file's, or the live view's copy) and saved with it; a
    // live run's recording does not get them.
    std::vector<HeadLabel> labels;
    bool labels_taken = false;        // taken from the first session bound
    Session* editable = nullptr;
    std::string session_path;         // where the shown session came from (file mode)
    std::string save_note;
    render::VulkanContext* context = nullptr;
    render::TileCacheOptions cache_options;
    float fb_x = 1, fb_y = 1;
    std::array<float, 4> centre_rect{};  // the centre window, framebuffer pixels (view PNGs are cropped to it)

    void labels_changed() {
        if (editable) editable->head_labels = labels;
    }
    // Whether the fingerprints are needed now (a view shows them or filters by them).
    bool fingerprints_needed() const {
        return centre == Centre::Fingerprints || centre == Centre::Clusters || !fingerprints.filter.empty() ||
               ((centre == Centre::Text || centre == Centre::Graph) && text.heads.mode == panels::HeadSetChoice::Mode::Label);
    }
};

// The heads the text view (and the graph) use.
panels::ResolvedHeads text_heads(const Debugger& d) {
    return panels::resolve_heads(d.text.heads, *d.model, d.fingerprints, d.labels);
}

// Hands the rules panel's violations and ontology matches to the views that mark them.
void publish_rule_marks(Debugger& d) {
    DebuggerModel& model = *d.model;
    DebuggerModel::Alerts alerts;
    for (const panels::Violation& v : d.rules.violations) {
        if (v.step >= 0 && !alerts.step(v.step)) alerts.steps.push_back(v.step);
        for (const HeadRef& h : v.offending)
            if (!alerts.head(h.layer, h.head)) alerts.heads.push_back(h);
        alerts.spans.emplace_back(v.query.begin, v.query.end);
    }
    alerts.pulse = panels::violation_pulse(d.rules);
    model.alerts = std::move(alerts);
    model.entity_marks.clear();
    if (d.rules.ontology) {
        for (const TextSpan& span : d.rules.entity_spans)
            if (span.type >= 0 && static_cast<size_t>(span.type) < d.rules.ontology->types.size())
                model.entity_marks.push_back({span.begin, span.end, span.type, d.rules.ontology->types[static_cast<size_t>(span.type)].name, {}});
        // The spans of flagged pairs (both ends) are marked as anomalies.
        if (const OntologyReport* anomalies = panels::current_anomalies(d.rules))
            for (const auto& note : panels::anomaly_notes(*d.rules.ontology, *anomalies))
                for (DebuggerModel::EntityMark& m : model.entity_marks)
                    if (m.begin == note.begin && m.end == note.end && m.anomaly.empty()) m.anomaly = note.text;
    }
}

// A violation's counterfactual (its button, or the script verb): its step shown, and the run
// started with its keys masked in its offending heads (panels::intervention_for_violation).
void run_violation_counterfactual(Debugger& d, DebuggerModel& model, size_t index) {
    const panels::Violation& v = d.rules.violations.at(index);
    d.rules.selected_violation = static_cast<int64_t>(index);
    panels::jump_to_violation(model, v);
    panels::start_counterfactual(model, d.counterfactual, panels::intervention_for_violation(v));
}

// Every worker behind what the centre shows has finished for the current state (scripts wait for
// it before `state` and screenshots).
bool views_settled(Debugger& d) {
    if (!d.model) return true;
    const DebuggerModel& model = *d.model;
    if (d.fingerprints_needed() && !panels::fingerprints_current(model, d.fingerprints) && d.fingerprints.note.empty()) return false;
    if (!panels::rules_settled(model, d.rules, text_heads(d).heads, d.runner)) return false;
    switch (d.centre) {
        case Centre::Map: return true;
        case Centre::Heads: return !d.head_grid.pending.valid();
        case Centre::Fingerprints: return panels::syntax_shares_settled(model, d.fingerprints);
        case Centre::Text: return panels::text_view_settled(model, d.text, d.fingerprints, d.labels);
        case Centre::Graph: return panels::sentence_graph_settled(model, d.graph, text_heads(d).heads);
        case Centre::Compare: return panels::compare_settled(*d.model, d.compare);
        case Centre::Clusters: return panels::clusters_settled(model, d.clusters, d.fingerprints, d.labels);
    }
    return true;
}

// Crops a window screenshot to a rectangle (framebuffer pixels), in place.
void crop_png(const std::string& path, const std::array<float, 4>& rect) {
    int w = 0, h = 0, channels = 0;
    stbi_uc* pixels = stbi_load(path.c_str(), &w, &h, &channels, 4);
    if (!pixels) fail(path, ": cannot read the screenshot back to crop it");
    const int x0 = std::clamp(static_cast<int>(std::lround(rect[0])), 0, w - 1), y0 = std::clamp(static_cast<int>(std::lround(rect[1])), 0, h - 1);
    const int x1 = std::clamp(static_cast<int>(std::lround(rect[2])), x0 + 1, w), y1 = std::clamp(static_cast<int>(std::lround(rect[3])), y0 + 1, h);
    std::vector<uint8_t> out(size_t(x1 - x0) * size_t(y1 - y0) * 4);
    for (int y = y0; y < y1; ++y)
        std::copy(pixels + (size_t(y) * size_t(w) + size_t(x0)) * 4, pixels + (size_t(y) * size_t(w) + size_t(x1)) * 4,
                  out.begin() + static_cast<std::ptrdiff_t>(size_t(y - y0) * size_t(x1 - x0) * 4));
    stbi_image_free(pixels);
    if (!stbi_write_png(path.c_str(), x1 - x0, y1 - y0, 4, out.data(), (x1 - x0) * 4)) fail(path, ": cannot write the cropped view");
}

std::string script_words(const view::ScriptAction& a, size_t from) {
    std::string out;
    for (size_t i = from; i < a.args.size(); ++i) out += (i > from ? " " : "") + a.args[i];
    return out;
}

// The script verbs of issue 6's views (heads and text; the list is in ui/view/headless.cpp).
// Returns false for any other verb. Blocks where a script needs the result (exports, a session
// opened for comparison), as the panels' buttons would wait for their workers.
// The violation a script line names (`violation N`, `violation_counterfactual N`), after the
// rules have been checked on what is shown now.
size_t script_violation(Debugger& d, DebuggerModel& model, const view::ScriptAction& a) {
    panels::update_rules(model, d.rules, d.runner, d.findings, text_heads(d).heads, true);
    const int64_t i = static_cast<int64_t>(view::script_number(a, 0));
    if (i < 0 || i >= static_cast<int64_t>(d.rules.violations.size()))
        fail("script line ", a.line, ": no violation ", i, " (", d.rules.violations.size(), " listed)");
    return static_cast<size_t>(i);
}

bool apply_heads_and_text_action(Debugger& d, const view::ScriptAction& a) {
    DebuggerModel& model = *d.model;
    const CaptureShape& shape = model.session().capture->shape();
    const std::string& v = a.verb;
    auto head_of = [&](size_t i) {
        const int layer = static_cast<int>(view::script_number(a, i)), head = static_cast<int>(view::script_number(a, i + 1));
        if (layer < 0 || layer >= shape.n_layer || head < 0 || head >= shape.n_head)
            fail("script line ", a.line, ": head L", layer, "H", head, " is out of range (", shape.n_layer, " layers × ",
                 shape.n_head, " heads)");
        return HeadRef{layer, head};
    };
    if (v == "centre") {
        for (Centre c : kCentres)
            if (a.args[0] == centre_name(c)) {
                d.centre = c;
                if (c == Centre::Heads) panels::finish_head_grid(model, d.head_grid);
                return true;
            }
        fail("script line ", a.line, ": centre map|heads|text|graph|fingerprints|compare|clusters");
    } else if (v == "text_level") {
        d.text.level = parse_granularity(a.args[0]);
        d.text.pinned = -1;
        d.text.pair_key = -1;
        d.centre = d.centre == Centre::Graph ? Centre::Graph : Centre::Text;
    } else if (v == "text_pair") {
        // Word level: word QUERY kept (as a click does) and word KEY considered with it (as the mouse would).
        d.text.level = Granularity::Word;
        d.text.pinned = static_cast<int64_t>(view::script_number(a, 0));
        d.text.pair_key = static_cast<int64_t>(view::script_number(a, 1));
        d.text.scroll_to_pinned = true;
        d.text.pinned_by_script = true;
        d.centre = Centre::Text;
    } else if (v == "text_hover") {
        d.text.pair_key = -1;
        d.text.pinned = static_cast<int64_t>(view::script_number(a, 0));
        d.text.scroll_to_pinned = true;
        d.text.pinned_by_script = true;
    } else if (v == "text_heads") {
        panels::parse_head_set(a.args, shape, d.text.heads);
    } else if (v == "phrase") {
        d.text.phrase_size = std::clamp(static_cast<int>(view::script_number(a, 0)), 1, 64);
        if (a.args.size() > 1) {
            if (a.args[1] != "uniform" && a.args[1] != "triangular") fail("script line ", a.line, ": phrase SIZE uniform|triangular");
            d.text.weighting = a.args[1] == "uniform" ? WindowWeighting::Uniform : WindowWeighting::Triangular;
        }
    } else if (v == "graph") {
        if (a.args[0] != "sentences" && a.args[0] != "paragraphs") fail("script line ", a.line, ": graph sentences|paragraphs");
        d.graph.paragraphs = a.args[0] == "paragraphs";
        d.centre = Centre::Graph;
    } else if (v == "graph_select") {
        // As a click on node N: the sentence is selected in the text view.
        const std::vector<HeadRef> heads = text_heads(d).heads;
        panels::update_sentence_graph(model, d.graph, heads, true);
        if (!d.graph.job.has_value() || d.graph.paragraphs) fail("script line ", a.line, ": no sentence graph (", d.graph.job.error(), ")");
        const SentenceGraph& g = d.graph.job.value().graph;
        const int64_t node = static_cast<int64_t>(view::script_number(a, 0));
        if (node < 0 || node >= static_cast<int64_t>(g.nodes.size())) fail("script line ", a.line, ": no node ", node);
        d.graph.selected_node = node;
        d.text.level = Granularity::Sentence;
        d.text.pinned = g.nodes[static_cast<size_t>(node)];
        d.text.scroll_to_pinned = true;
        d.text.pinned_by_script = true;
        d.centre = Centre::Text;
    } else if (v == "compare") {
        if (a.args.size() % 2 != 0) fail("script line ", a.line, ": compare L1 H1 L2 H2 [L3 H3 …]");
        d.compare.heads.clear();
        for (size_t i = 0; i + 1 < a.args.size(); i += 2) d.compare.heads.push_back(head_of(i));
        d.compare.diff_a = 0;
        d.compare.diff_b = 1;
        d.centre = Centre::Compare;
    } else if (v == "compare_diff") {
        d.compare.diff_a = static_cast<int>(view::script_number(a, 0));
        d.compare.diff_b = static_cast<int>(view::script_number(a, 1));
    } else if (v == "compare_session") {
        panels::compare_open_session(d.compare, script_words(a, 0), true);
        d.centre = Centre::Compare;
    } else if (v == "label") {
        const HeadRef h = head_of(0);
        panels::add_user_label(d.labels, shape, h.layer, h.head, script_words(a, 2));
        d.labels_changed();
    } else if (v == "unlabel") {
        const HeadRef h = head_of(0);
        panels::remove_user_labels(d.labels, h.layer, h.head, script_words(a, 2));
        d.labels_changed();
    } else if (v == "save_session") {
        Session copy = model.session();
        copy.head_labels = d.labels;
        save_session(script_words(a, 0), copy);
        d.save_note = cat("saved to ", script_words(a, 0));
    } else if (v == "heads_sort") {
        const auto column = panels::parse_fingerprint_column(a.args[0]);
        if (!column) fail("script line ", a.line, ": unknown column '", a.args[0], "' (head, entropy, normalized_entropy, sink, previous_token, induction, local, distance, keys90, positional, syntax, labels)");
        d.fingerprints.sort = *column;
        d.fingerprints.ascending = a.args.size() < 2 || a.args[1] == "asc";
        d.fingerprints.sort_from_script = true;
        panels::update_fingerprints(model, d.fingerprints, true);
        if (*column == panels::FingerprintColumn::Syntax) {
            d.fingerprints.syntax_wanted = true;
            panels::update_syntax_shares(model, d.fingerprints, true);
        }
    } else if (v == "heads_filter") {
        d.fingerprints.filter = a.args[0] == "all" ? std::string() : script_words(a, 0);
        panels::update_fingerprints(model, d.fingerprints, true);
    } else if (v == "clusters") {
        d.clusters.options.method = parse_projection_method(a.args[0]);
        if (a.args.size() > 1) d.clusters.options.features = parse_projection_features(a.args[1]);
        if (a.args.size() > 2) d.clusters.options.k = static_cast<int>(view::script_number(a, 2));
        if (a.args.size() > 3) d.clusters.options.seed = static_cast<uint64_t>(view::script_number(a, 3));
        d.centre = Centre::Clusters;
    } else if (v == "export") {
        const std::string path = script_words(a, 0);
        const std::string ext = std::filesystem::path(path).extension().string();
        if (ext == ".png") {
            d.text.png_request = path;  // the centre, cropped from the next frame's screenshot
        } else if (d.centre == Centre::Text) {
            panels::export_text_matrix(model, d.text, d.fingerprints, d.labels, path);
        } else if (d.centre == Centre::Graph) {
            panels::export_graph_matrix(model, d.graph, text_heads(d).heads, path);
        } else if (d.centre == Centre::Clusters) {
            panels::update_fingerprints(model, d.fingerprints, true);
            panels::export_clusters(model, d.clusters, d.fingerprints, d.labels, path);
        } else {
            fail("script line ", a.line, ": 'export' writes the numbers of the text view, the sentence graph or the clusters (centre ",
                 centre_name(d.centre), " has none; the heads table: attnscope heads SESSION --json)");
        }
    } else if (v == "counterfactual") {
        // As the panel's Run button (mask: the shown head); the script goes on while it runs.
        panels::start_counterfactual(model, d.counterfactual, panels::intervention_from_words(model, a.args));
    } else if (v == "counterfactual_export") {
        panels::export_counterfactual(model, d.counterfactual, script_words(a, 0));
    } else if (v == "export_segments") {
        panels::export_text_segments(model, d.text, script_words(a, 0));
    } else if (v == "pii") {
        if (a.args[0] != "on" && a.args[0] != "off") fail("script line ", a.line, ": pii on|off");
        model.mask_pii = a.args[0] == "on";
    } else if (v == "rules" || v == "ontology") {
        // As the Rules panel's load button: a bad file's error is shown (and in `state`), the script goes on.
        const std::string path = script_words(a, 0);
        try {
            panels::load_rules_files(d.rules, v == "rules" ? path : std::string(d.rules.rules_path),
                                     v == "ontology" ? path : std::string(d.rules.ontology_path));
        } catch (const std::exception&) {
        }
        panels::update_rules(model, d.rules, d.runner, d.findings, text_heads(d).heads, true);
        publish_rule_marks(d);
    } else if (v == "violation") {
        // As a click in the violations panel.
        const size_t i = script_violation(d, model, a);
        d.rules.selected_violation = static_cast<int64_t>(i);
        panels::jump_to_violation(model, d.rules.violations[i]);
        d.centre = Centre::Map;
    } else if (v == "violation_counterfactual") {
        // As the violation's "counterfactual" button; the script goes on while it runs.
        run_violation_counterfactual(d, model, script_violation(d, model, a));
    } else {
        return false;
    }
    return true;
}

// Runs a headless-format script against the window, one step per frame.
class ScriptDriver {
public:
    explicit ScriptDriver(std::vector<view::ScriptAction> actions) : actions_(std::move(actions)) {}
    bool done() const {
        return next_ >= actions_.size() && wait_frames_ == 0 && !wait_exact_ && !hover_pending_ && !wait_idle_ && !wait_model_ &&
               !state_pending_ && !wait_counterfactual_;
    }

    // Before the UI is built: applies actions until one needs frames to pass.
    void before_frame(Debugger& d, std::optional<std::string>& screenshot_request) {
        if (wait_frames_ > 0) {
            --wait_frames_;
            return;
        }
        if (wait_exact_) {
            bool exact = !d.map || d.map->exact();
            if (d.centre == Centre::Compare)
                for (const auto& view : d.compare.views) exact = exact && view->exact();
            if (!exact && std::chrono::steady_clock::now() < deadline_) return;
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
        if (wait_counterfactual_) {
            if (d.model) panels::update_counterfactual(*d.model, d.counterfactual);
            if (panels::counterfactual_busy(d.counterfactual) && std::chrono::steady_clock::now() < deadline_) return;
            wait_counterfactual_ = false;
        }
        if (wait_model_) {
            if (d.loader.loading.valid() && std::chrono::steady_clock::now() < deadline_) return;
            wait_model_ = false;
        }
        if (!d.model || state_pending_) return;  // live: nothing to act on until the prompt has run
        if (screenshot_request) return;          // the screenshot waits for the views to settle: so does the script
        DebuggerModel& model = *d.model;
        MapView& map = *d.map;
        const CaptureShape& shape = model.session().capture->shape();
        render::RenderSettings& s = model.settings;
        if (next_ < actions_.size()) map.set_scripted_hover(std::nullopt);  // a hover lasts until the next action
        while (next_ < actions_.size()) {
            const view::ScriptAction& a = actions_[next_++];
            const std::string& v = a.verb;
            // In the comparison, zoom and pan go to the maps' shared view.
            render::ViewTransform& target = d.centre == Centre::Compare && d.compare.have_shared ? d.compare.shared : map.view();
            if (view::apply_view_action(a, model.shown_positions(), shape, target, s)) continue;
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
                d.centre = a.args[0] == "on" ? Centre::Heads : Centre::Map;
                if (d.centre == Centre::Heads) panels::finish_head_grid(model, d.head_grid);  // scripts see the finished grid
            } else if (apply_heads_and_text_action(d, a)) {
                if (v == "compare" || v == "compare_session" || v == "centre") {
                    wait_frames_ = 2;  // the maps are created and sized in the next frames
                    return;
                }
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
            } else if (v == "counterfactual_wait") {
                wait_counterfactual_ = true;
                deadline_ = deadline_in(a.args.empty() ? 600.0 : view::script_number(a, 0));
                return;
            } else if (v == "state") {
                state_pending_ = true;  // printed after a frame, once the diff and the views are current
                deadline_ = deadline_in(180.0);
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

    void after_frame(Debugger& d) {
        if (hover_pending_ && d.map) {
            // Token texts as displayed (personal data masked when on).
            view::HoverInfo hover = d.map->hover();
            if (d.model && hover.query >= 0) hover.query_token = d.model->display_token(hover.query);
            if (d.model && hover.key >= 0) hover.key_token = d.model->display_token(hover.key);
            std::printf("%s\n", view::hover_json(hover).c_str());
            std::fflush(stdout);
            hover_pending_ = false;
        }
        // Printed once the diff (there is none before the first decode step) and the centre's views are
        // current, or after the deadline.
        const bool diff_ready = !d.diff.enabled || (d.model && d.model->steps() == 0) || (d.diff.result && !d.diff.pending.valid());
        if (state_pending_ && d.model && ((diff_ready && views_settled(d)) || std::chrono::steady_clock::now() > deadline_)) {
            std::printf("%s\n", state_json(d).c_str());
            std::fflush(stdout);
            state_pending_ = false;
        }
    }

    // One JSON line for scripts and tests: what the debugger shows and knows right now.
    static std::string state_json(Debugger& d) {
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
        j["centre"] = centre_name(d.centre);
        j["pii"] = {{"masking", model.mask_pii}, {"spans", model.pii_spans().size()}};
        if (d.rules.rules || d.rules.ontology || !d.rules.error.empty()) j["rules"] = panels::rules_json(model, d.rules);
        nlohmann::json labels = nlohmann::json::array();
        for (const HeadLabel& l : d.labels) labels.push_back({l.layer, l.head, l.text});
        j["labels"] = labels;
        if (!d.save_note.empty()) j["save_note"] = d.save_note;
        if (!d.head_grid.filter_name.empty())
            j["grid_filter"] = {{"label", d.head_grid.filter_name},
                                {"heads", std::count(d.head_grid.filter.begin(), d.head_grid.filter.end(), uint8_t(1))}};
        switch (d.centre) {
            case Centre::Text: j["text"] = panels::text_view_json(model, d.text, d.fingerprints, d.labels); break;
            case Centre::Graph: j["graph"] = panels::sentence_graph_json(model, d.graph, text_heads(d).heads); break;
            case Centre::Compare: j["compare"] = panels::compare_json(*d.model, d.compare); break;
            case Centre::Clusters: j["clusters"] = panels::clusters_json(model, d.clusters, d.fingerprints, d.labels); break;
            default: break;
        }
        if (d.centre == Centre::Fingerprints || d.fingerprints.result) {
            nlohmann::json f;
            f["ready"] = panels::fingerprints_current(model, d.fingerprints);
            f["sort"] = panels::fingerprint_column_name(d.fingerprints.sort);
            f["ascending"] = d.fingerprints.ascending;
            f["filter"] = d.fingerprints.filter;
            if (d.fingerprints.result) {
                f["rows_used"] = d.fingerprints.result->accumulator->rows().size();
                f["positions"] = d.fingerprints.covered;
                f["folded_in"] = d.fingerprints.last_was_fold;
                f["ms"] = d.fingerprints.last_ms;
            }
            nlohmann::json order = nlohmann::json::array();
            const auto* table = panels::fingerprints_of(d.fingerprints);
            for (int i : panels::table_order(d.fingerprints, d.labels)) {
                const HeadFingerprint& fp = (*table)[size_t(i)];
                order.push_back({{"layer", fp.layer}, {"head", fp.head}, {"labels", fp.labels}, {"sink", fp.sink_mass},
                                 {"previous_token", fp.previous_token}, {"entropy", fp.entropy_bits},
                                 {"syntax", std::isnan(panels::syntax_share(d.fingerprints, fp.layer, fp.head))
                                                ? nlohmann::json(nullptr)
                                                : nlohmann::json(panels::syntax_share(d.fingerprints, fp.layer, fp.head))}});
            }
            f["rows"] = order;
            if (d.fingerprints.syntax.has_value() && d.fingerprints.syntax.value())
                f["syntax_note"] = d.fingerprints.syntax.value()->note, f["syntax_links"] = d.fingerprints.syntax.value()->links;
            j["fingerprints"] = f;
        }
        j["counterfactual"] = panels::counterfactual_json(*d.model, d.counterfactual);
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
    bool wait_counterfactual_ = false;
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
    // view --key: every export is signed too (ui/app/export_record.h).
    const std::optional<SigningKey> export_key =
        options.export_key_path.empty() ? std::nullopt : std::optional<SigningKey>(load_signing_key(options.export_key_path));
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
    if (!options.model && options.session) {
        // The view's own copy (the capture is shared): user labels are written into it.
        owned = std::make_unique<Session>(*options.session);
        session = owned.get();
    }
    if (owned) {
        d.editable = owned.get();
        d.session_path = options.session_path;
    } else if (runner) {
        d.editable = &d.live_session;
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
    window_options.full_redraw = options.full_redraw;
    window_options.present = parse_present_path(options.present);
    AppWindow window(window_options);
    // The views hold Vulkan objects and a diff may be computing on a worker: all go before the window.
    struct ReleaseViews {
        Debugger& d;
        ~ReleaseViews() {
            panels::cancel_counterfactual(d.counterfactual);
            panels::wait_counterfactual(d.counterfactual);  // its worker reads the model
            d.diff = {};
            panels::release_compare(d.compare);
            d.compare.other_model.reset();
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
            panels::compare_reset_source(d.compare);
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
            // Exports name the reopened file (a live recording is still growing: its record says "none").
            model.session_file = runner ? std::string() : options.session_path;
            model.export_key = export_key ? &*export_key : nullptr;
            if (options.select_query >= model.positions())
                fail("--select ", options.select_query, " is out of range (0..", model.positions() - 1, ")");
            if (options.select_query >= 0) model.select_query(options.select_query);
            d.map = std::make_unique<MapView>(context, model, cache_options);
            d.waterfall = std::make_unique<WaterfallView>(context, model, cache_options);
        }
        if (!d.labels_taken) {
            d.labels = shown.head_labels;
            d.labels_taken = true;
        }
        d.labels_changed();
        d.strip = {};
        d.entropy = {};
        d.diff = {};
        d.bound_positions = d.model->positions();
        d.demo_step = -2;
    };
    d.context = &context;
    d.cache_options = cache_options;
    if (session) bind(*session);
    // Rules and ontology from the command line: a bad file ends the run with its error (file:line).
    if (!options.rules_path.empty() || !options.ontology_path.empty())
        panels::load_rules_files(d.rules, options.rules_path, options.ontology_path);

    // A scripted run parks the pointer in the window's bottom-right corner (empty panel space), so
    // that wherever the display put it no tooltip or hover lands in the script's screenshots.
    if (!actions.empty()) glfwSetCursorPos(window.window(), width - 2, height - 2);
    ScriptDriver script(std::move(actions));
    std::fprintf(stderr, "attnscope: %s, presenting through %s, %s; validation %s; fonts: %s\n",
                 context.device_description().c_str(), window.present_note().c_str(),
                 source_name.c_str(), context.validation_enabled() ? "on" : "off", window.font_note().c_str());
    if (!options.sequence_dir.empty()) std::filesystem::create_directories(options.sequence_dir);

    uint64_t frames = 0;
    int idle = 0;
    double frame_ms = 0;
    std::optional<std::string> script_shot;
    bool final_shot_done = options.screenshot.empty();
    auto final_deadline = std::chrono::steady_clock::time_point::max();
    auto shot_deadline = std::chrono::steady_clock::time_point::max();
    std::string caption;
    LiveStatus status;
    std::chrono::steady_clock::time_point demo_idle_since{};
    // A frame that drew nothing (frame_damage.h) is followed by the next one only after input or
    // one refresh interval, so an unchanged window costs no CPU the model could use.
    // 60 Hz where GLFW knows no rate (Xvfb reports none); never slower than 30 Hz.
    const int refresh_hz = window.refresh_rate_hz() > 0 ? std::max(30, window.refresh_rate_hz()) : 60;
    const double refresh_interval_s = 1.0 / refresh_hz;
    auto previous_start = std::chrono::steady_clock::now();
    const auto loop_start = previous_start;
    for (;;) {
        if (frames > 0 && !window.last_timing().drawn) {
            const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - previous_start).count();
            if (waited < refresh_interval_s) window.wait_events(refresh_interval_s - waited);
        } else if (frames > 0 && window.needs_pacing()) {
            // Drawn frames no faster than the display shows them: the CPU left is the model's.
            std::this_thread::sleep_until(previous_start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                               std::chrono::duration<double>(refresh_interval_s)));
        }
        const auto start = std::chrono::steady_clock::now();
        previous_start = start;
        // ---- live: take what the runner published ------------------------------------------
        if (std::unique_ptr<Model> model = panels::take_loaded_model(d.loader)) {
            // A model loaded from the panel: the run restarts on it with the panel's prompt. The
            // views keep the old session until the new prompt has run (then they rebind).
            panels::cancel_counterfactual(d.counterfactual);
            panels::wait_counterfactual(d.counterfactual);  // its worker reads the model replaced here
            runner.reset();  // finishes the recordings
            if (d.model) d.model->tokenizer = nullptr;  // the old tokens are not the new model's
            std::unique_ptr<Model> previous = std::move(loaded_model);
            loaded_model = std::move(model);
            live_model = loaded_model.get();
            runner = std::make_unique<LiveRunner>(*live_model, options.backend, live);
            d.runner = runner.get();
            d.rules.rules_to_runner = true;  // the new runner gets the rules too
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
                d.live_session.head_labels = d.labels;  // the view's labels (the runner's session has none)
                if (d.generation != d.bound_generation && d.live_session.capture && d.live_session.capture->positions() > 0) {
                    bind(d.live_session);
                    d.bound_generation = d.generation;
                } else if (d.model && d.model->positions() > d.bound_positions) {
                    d.map->rows_changed_from(d.bound_positions);
                    d.waterfall->rows_changed_from(d.bound_positions);
                    for (auto& view : d.compare.views)
                        if (&view->model() == d.model.get()) view->rows_changed_from(d.bound_positions);
                    d.bound_positions = d.model->positions();
        d.demo_step = -2;
                }
            }
        }
        // Rules reach the runner before a script or a button runs it (commands are taken in order).
        if (runner && d.rules.rules_to_runner) {
            runner->set_rules(d.rules.rules);
            d.rules.rules_to_runner = false;
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
        d.counterfactual.model = live_model;
        d.counterfactual.live_decoding = live_busy && d.model && &d.model->session() == &d.live_session;  // the shown session grows
        const bool scripted = !script.done() || options.frames > 0 || !final_shot_done;
        if (!scripted && !live_busy && !d.timeline.playing && idle > 3 && (!d.map || !d.map->busy()) && d.entropy.complete() &&
            views_settled(d) && !panels::violation_pulsing(d.rules))
            window.wait_events(0.5);
        if (options.frame_hook) options.frame_hook(window.window(), frames);
        if (d.scale_request) window.set_content_scale(*std::exchange(d.scale_request, std::nullopt));
        if (!window.begin_frame()) break;
        d.content_scale = window.content_scale();
        if (frames >= 2) script.before_frame(d, script_shot);  // the map has its real size by then
        if (d.model) {
            panels::advance_timeline(*d.model, d.timeline);
            panels::update_diff(*d.model, d.diff, d.findings);
            panels::update_rules(*d.model, d.rules, d.runner, d.findings, text_heads(d).heads);
            publish_rule_marks(d);
            panels::update_counterfactual(*d.model, d.counterfactual);
            if (d.compare.other_model) d.compare.other_model->mask_pii = d.model->mask_pii;  // one switch for every view
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
            if (ImGui::CollapsingHeader("Rules", d.rules.rules || d.rules.ontology ? ImGuiTreeNodeFlags_DefaultOpen : 0))
                panels::draw_rules_panel(model, d.rules, panels::RulesActions{runner.get()});
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
            if ((d.rules.rules || !d.rules.violations.empty()) && ImGui::CollapsingHeader("Violations", ImGuiTreeNodeFlags_DefaultOpen)) {
                if (const auto clicked = panels::draw_violations_panel(*d.model, d.rules)) {
                    panels::jump_to_violation(*d.model, d.rules.violations[*clicked]);
                    d.centre = Centre::Map;
                }
                if (const auto requested = std::exchange(d.rules.counterfactual_request, std::nullopt)) {
                    try {
                        run_violation_counterfactual(d, *d.model, *requested);
                    } catch (const std::exception& e) {  // no model, a run going, the live model decoding
                        d.counterfactual.form_error = e.what();
                        d.counterfactual.reveal = true;
                    }
                }
            }
            if (ImGui::CollapsingHeader("Diff", ImGuiTreeNodeFlags_DefaultOpen)) panels::draw_diff_panel(*d.model, d.diff);
            const bool reveal = std::exchange(d.counterfactual.reveal, false);  // a run started: show its section
            if (reveal) ImGui::SetNextItemOpen(true);
            if (ImGui::CollapsingHeader("Counterfactual")) {
                if (reveal) ImGui::SetScrollHereY(0);
                if (panels::draw_counterfactual_panel(*d.model, d.counterfactual)) d.centre = Centre::Map;
            }
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
        // A live run keeps the waterfall's room from the start, so that the map does not change size
        // (a new renderer, a device wait and a full redraw) just as the first step arrives.
        const bool waterfall_room = d.model && d.waterfall && d.show_waterfall && d.centre == Centre::Map &&
                                    (d.model->steps() > 0 || runner);
        const bool waterfall_shown = waterfall_room && d.model->steps() > 0;
        const float waterfall_h = waterfall_room ? std::round((io.DisplaySize.y - strip_h) * 0.34f) : 0.f;
        const float centre_h = io.DisplaySize.y - strip_h - waterfall_h;
        d.fb_x = window.framebuffer_scale_x();
        d.fb_y = window.framebuffer_scale_y();
        d.centre_rect = {side * d.fb_x, 0.f, (side + map_w) * d.fb_x, centre_h * d.fb_y};
        ImGui::SetNextWindowPos(ImVec2(side, 0));
        ImGui::SetNextWindowSize(ImVec2(map_w, centre_h));
        // The maps are blitted under the ImGui pass: their window has no background.
        const bool blitted = d.centre == Centre::Map || d.centre == Centre::Compare;
        ImGui::Begin("Attention map", nullptr,
                     fixed | (blitted ? ImGuiWindowFlags_NoBackground : 0) | ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoScrollbar |
                         ImGuiWindowFlags_NoScrollWithMouse);
        if (d.model) {
            DebuggerModel& model = *d.model;
            for (Centre c : kCentres) {
                if (c != Centre::Map) ImGui::SameLine();
                if (ImGui::RadioButton(centre_button(c), d.centre == c)) d.centre = c;
            }
            // The label filter reaches the head grid; the fingerprints are kept current while needed.
            if (d.fingerprints_needed()) panels::update_fingerprints(model, d.fingerprints);
            d.head_grid.filter_name = d.fingerprints.filter;
            d.head_grid.filter = panels::filter_mask(d.fingerprints, d.labels, model.n_layer() * model.n_head());
            if (d.centre == Centre::Map || d.centre == Centre::Heads) {
                ImGui::Text("layer %d  head %d  %s  %s", model.settings.layer, model.settings.head,
                            model.settings.plane == render::Plane::Max ? "max" : "sum",
                            model.settings.scale == render::ValueScale::Log ? "log" : "linear");
                ImGui::SameLine();
                if (options.demo && !caption.empty()) ImGui::TextColored(ImVec4(1, 0.85f, 0.4f, 1), "   %s", caption.c_str());
                else ImGui::TextDisabled("   wheel/+/-: zoom   drag/arrows: pan   F: fit   click: select row   [ ]: layer   , .: head");
            }
            switch (d.centre) {
                case Centre::Map: d.map->draw(d.fb_x, d.fb_y); break;
                case Centre::Heads:
                    if (panels::draw_head_grid_panel(model, d.head_grid)) d.centre = Centre::Map;  // opened a head
                    break;
                case Centre::Text: panels::draw_text_view_panel(model, d.text, d.fingerprints, d.labels); break;
                case Centre::Graph:
                    if (const auto sentence = panels::draw_sentence_graph_panel(model, d.graph, d.text, d.fingerprints, d.labels)) {
                        d.text.level = Granularity::Sentence;
                        d.text.pinned = *sentence;
                        d.text.scroll_to_pinned = true;
                        d.centre = Centre::Text;
                    }
                    break;
                case Centre::Fingerprints: {
                    panels::FingerprintsActions actions;
                    actions.open = [&](int layer, int head) {
                        model.select_layer(layer);
                        model.select_head(head);
                        d.centre = Centre::Map;
                    };
                    actions.labels_changed = [&] { d.labels_changed(); };
                    panels::draw_fingerprints_panel(model, d.fingerprints, d.labels, actions);
                    if (d.editable && !d.session_path.empty()) {
                        if (ImGui::SmallButton("save labels into the session file")) {
                            try {
                                Session copy = model.session();
                                copy.head_labels = d.labels;
                                save_session(d.session_path, copy);
                                d.save_note = cat("saved to ", d.session_path);
                            } catch (const std::exception& e) {
                                d.save_note = e.what();
                            }
                        }
                        ImGui::SameLine();
                        ImGui::TextDisabled("%s", d.save_note.c_str());
                    } else if (runner) {
                        ImGui::TextDisabled("live: user labels stay in this view (the recording does not get them)");
                    }
                    break;
                }
                case Centre::Compare:
                    panels::draw_compare_panel(context, model, d.compare, d.cache_options, d.fb_x, d.fb_y);
                    break;
                case Centre::Clusters:
                    if (const auto head = panels::draw_clusters_panel(model, d.clusters, d.fingerprints, d.labels)) {
                        model.select_layer(head->first);
                        model.select_head(head->second);
                        d.centre = Centre::Map;
                    }
                    break;
            }
        } else if (runner) {
            ImGui::Text("%s: %s", to_string(status.state), status.message.c_str());
            if (status.prefill_total > 0)
                ImGui::ProgressBar(float(status.prefill_done) / float(status.prefill_total), ImVec2(-1, 0));
        }
        ImGui::End();
        if (waterfall_room) {
            ImGui::SetNextWindowPos(ImVec2(side, io.DisplaySize.y - strip_h - waterfall_h));
            ImGui::SetNextWindowSize(ImVec2(map_w, waterfall_h));
            ImGui::Begin("Waterfall", nullptr,
                         fixed | (waterfall_shown ? ImGuiWindowFlags_NoBackground : 0) | ImGuiWindowFlags_NoTitleBar |
                             ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse);
            ImGui::TextDisabled("waterfall: decode step × key, layer %d head %d   wheel: zoom (shift: keys, ctrl: steps)   click: go to step",
                                d.model->settings.layer, d.model->settings.head);
            if (waterfall_shown) d.waterfall->draw(window.framebuffer_scale_x(), window.framebuffer_scale_y());
            else ImGui::TextDisabled("one row per decoded step, from the first step on");
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
        // Screenshots wait for the map's exact tiles and for the centre's workers (a minute at most).
        const bool centre_settled = views_settled(d);
        if ((script_shot || d.text.png_request) && shot_deadline == std::chrono::steady_clock::time_point::max())
            shot_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        const bool late = std::chrono::steady_clock::now() > shot_deadline;
        const bool map_settled = ((!d.map || d.map->exact() || !d.map->busy()) &&
                                  (!waterfall_shown || d.waterfall->exact() || !d.waterfall->busy()) && centre_settled) ||
                                 late;
        const bool frames_done = options.frames <= 0 || frames + 1 >= static_cast<uint64_t>(options.frames);
        bool crop_shot = false;
        if (script_shot && map_settled) {
            shot = *script_shot;
            script_shot.reset();
            shot_deadline = std::chrono::steady_clock::time_point::max();
        } else if (d.text.png_request && !script_shot && map_settled) {
            // "PNG" in a view: the window's screenshot, cropped to the centre.
            shot = *std::exchange(d.text.png_request, std::nullopt);
            crop_shot = true;
            shot_deadline = std::chrono::steady_clock::time_point::max();
        } else if (!final_shot_done && script.done() && frames_done && !script_shot) {
            // The final screenshot shows exact tiles unless they take longer than a minute.
            if (final_deadline == std::chrono::steady_clock::time_point::max())
                final_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            if ((d.map && d.map->exact()) || std::chrono::steady_clock::now() > final_deadline) {
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
        // The views blitted under the UI this frame (their pixels are part of the frame damage).
        std::vector<MatrixView*> blitted_views;
        if (d.map && d.centre == Centre::Map) blitted_views.push_back(d.map.get());
        if (waterfall_shown) blitted_views.push_back(d.waterfall.get());
        if (d.centre == Centre::Compare)
            for (auto& view : d.compare.views) blitted_views.push_back(view.get());
        std::vector<UnderLayer> layers;
        for (MatrixView* view : blitted_views)
            if (const auto layer = view->under_layer()) layers.push_back(*layer);
        window.end_frame(
            [&](VkCommandBuffer cmd, VkImage image, VkExtent2D extent, std::span<const VkRect2D> damage) {
                for (MatrixView* view : blitted_views) view->record_blit(cmd, image, extent, window.blit_supported(), damage);
            },
            layers, shot);
        if (crop_shot) {
            try {
                crop_png(shot, d.centre_rect);
                if (d.model)
                    record_export(*d.model, shot, {"view", "png", d.model->settings.layer, d.model->settings.head,
                                                   d.model->shown_step(), d.model->selected_query, "",
                                                   cat("the ", centre_button(d.centre), " view as shown")});
                d.text.export_note = "wrote " + shot;
            } catch (const std::exception& e) {
                d.text.export_note = e.what();
            }
        }
        if (!shot.empty() && options.sequence_dir.empty()) std::fprintf(stderr, "attnscope: screenshot written to %s\n", shot.c_str());
        if (!shot.empty() && options.report && shot == options.screenshot) options.report->screenshot = shot;
        script.after_frame(d);
        ++frames;
        idle = d.map && d.map->stats().rendered ? 0 : idle + 1;
        frame_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        if (options.report) {
            options.report->frame_ms.push_back(frame_ms);
            options.report->frame_start_s.push_back(std::chrono::duration<double>(start - loop_start).count());
            options.report->build_ms.push_back(std::chrono::duration<double, std::milli>(built - start).count());
            options.report->wait_ms.push_back(window.last_timing().wait_ms);
            options.report->present_ms.push_back(window.last_timing().present_ms);
            options.report->frame_drawn.push_back(window.last_timing().drawn ? 1 : 0);
            options.report->frame_deferred.push_back(window.last_timing().deferred ? 1 : 0);
            options.report->damaged_fraction.push_back(window.last_timing().damaged_fraction);
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
        options.report->present = window.present_note();
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
