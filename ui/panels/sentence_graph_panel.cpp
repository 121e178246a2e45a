#include "ui/panels/sentence_graph_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/error.h"
#include "ui/render/colormap.h"

namespace attn::panels {

namespace {

ImU32 community_colour(int64_t c, int alpha = 255) {
    static const ImU32 palette[] = {IM_COL32(230, 97, 1, 0),    IM_COL32(94, 60, 153, 0),  IM_COL32(27, 158, 119, 0),
                                    IM_COL32(231, 41, 138, 0),  IM_COL32(102, 166, 30, 0), IM_COL32(230, 171, 2, 0),
                                    IM_COL32(31, 120, 180, 0),  IM_COL32(166, 118, 29, 0), IM_COL32(178, 223, 138, 0),
                                    IM_COL32(251, 154, 153, 0)};
    const ImU32 base = c < 0 ? IM_COL32(150, 150, 150, 0) : palette[static_cast<size_t>(c) % 10];
    return base | (static_cast<ImU32>(alpha) << IM_COL32_A_SHIFT);
}

SentenceGraphState::Key graph_key(const app::DebuggerModel& model, const SentenceGraphState& state, const std::vector<HeadRef>& heads) {
    SentenceGraphState::Key key;
    key.matrix.segments = segments_key(model, state.paragraphs ? Granularity::Paragraph : Granularity::Sentence);
    key.matrix.captured = model.positions();
    key.matrix.heads = heads;
    key.paragraphs = state.paragraphs;
    key.min_weight = state.min_weight;
    key.leiden = state.leiden;
    return key;
}

SentenceGraphState::Result compute_graph(std::shared_ptr<const Session> snapshot, const SentenceGraphState::Key& key) {
    SentenceGraphState::Result result;
    result.segments = compute_segments(std::move(snapshot), key.paragraphs ? Granularity::Paragraph : Granularity::Sentence);
    const CpuTileSource source(*result.segments.snapshot->capture, 0);
    result.matrix = span_masses(source, *result.segments.snapshot, *result.segments.segments, key.matrix.heads);
    if (!key.paragraphs) {
        SentenceGraphOptions options;
        options.min_weight = key.min_weight;
        options.method = key.leiden ? CommunityMethod::Leiden : CommunityMethod::Louvain;
        result.graph = sentence_graph(result.matrix, *result.segments.segments, options);
    } else {
        try {
            result.topics = paragraph_topics(*result.segments.snapshot, *result.segments.segments);
        } catch (const Error& error) {
            result.topics_problem = error.what();
        }
    }
    return result;
}

// Paragraph flow order: clustered paragraphs by topic (text order within one), then the segments no
// topic holds (special tokens, whitespace, or all of them when there are no topics) in text order.
std::vector<int64_t> flow_order(const SentenceGraphState::Result& r) {
    std::vector<int64_t> order;
    const int64_t n = r.matrix.rows;
    if (r.topics)
        for (const std::vector<int64_t>& members : r.topics->members) order.insert(order.end(), members.begin(), members.end());
    for (int64_t s = 0; s < n; ++s)
        if (!r.topics || r.topics->topic[static_cast<size_t>(s)] < 0) order.push_back(s);
    return order;
}

int topic_of(const SentenceGraphState::Result& r, int64_t segment) {
    return r.topics ? r.topics->topic[static_cast<size_t>(segment)] : -1;
}

}  // namespace

void update_sentence_graph(const app::DebuggerModel& model, SentenceGraphState& state, const std::vector<HeadRef>& heads, bool wait) {
    if (heads.empty()) return;
    const SentenceGraphState::Key key = graph_key(model, state, heads);
    state.job.poll();
    if (!wait && !state.job.needs(key)) return;
    auto job = [snapshot = session_snapshot(model.session()), key] { return compute_graph(snapshot, key); };
    if (wait) state.job.finish(key, job);
    else state.job.want(key, job);
}

bool sentence_graph_settled(const app::DebuggerModel& model, const SentenceGraphState& state, const std::vector<HeadRef>& heads) {
    return heads.empty() || state.job.done_for(graph_key(model, state, heads));
}

nlohmann::json sentence_graph_json(const app::DebuggerModel& model, const SentenceGraphState& state, const std::vector<HeadRef>& heads) {
    nlohmann::json j;
    j["view"] = state.paragraphs ? "paragraphs" : "sentences";
    j["ready"] = !heads.empty() && state.job.ready_for(graph_key(model, state, heads));
    if (!state.job.error().empty()) j["error"] = state.job.error();
    if (!state.job.has_value()) return j;
    const SentenceGraphState::Result& r = state.job.value();
    j["segments"] = r.segments.segments->size();
    j["selected"] = state.selected_node;
    j["hovered"] = state.hovered_node;
    if (state.paragraphs) {
        j["paragraphs"] = r.matrix.rows;
        j["order"] = flow_order(r);
        if (r.topics) {
            nlohmann::json topics = nlohmann::json::array();
            for (int t = 0; t < r.topics->topics; ++t)
                topics.push_back({{"topic", t}, {"paragraphs", r.topics->members[static_cast<size_t>(t)]},
                                  {"description", r.topics->description(t)}});
            j["topics"] = topics;
            j["topic_of"] = r.topics->topic;
            j["silhouette"] = r.topics->silhouette;
            j["silhouette_by_k"] = r.topics->silhouette_by_k;
        } else {
            j["topics_problem"] = r.topics_problem;
        }
        return j;
    }
    const SentenceGraph& g = r.graph;
    j["nodes"] = g.nodes.size();
    j["edges"] = g.edges.size();
    j["communities"] = g.communities;
    j["modularity"] = g.modularity;
    nlohmann::json nodes = nlohmann::json::array();
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        nlohmann::json n = {{"segment", g.nodes[i]}, {"community", g.community[i]},
                            {"text", segment_text(model, (*r.segments.segments)[static_cast<size_t>(g.nodes[i])], 60)}};
        if (i < state.drawn_nodes.size()) n["at"] = {state.drawn_nodes[i][0], state.drawn_nodes[i][1], state.drawn_nodes[i][2]};
        nodes.push_back(n);
    }
    j["node_list"] = nodes;
    if (!g.edges.empty()) {
        const GraphEdge& top = *std::max_element(g.edges.begin(), g.edges.end(), [](const GraphEdge& a, const GraphEdge& b) { return a.weight < b.weight; });
        j["strongest_edge"] = {{"from", g.nodes[static_cast<size_t>(top.from)]}, {"to", g.nodes[static_cast<size_t>(top.to)]}, {"weight", top.weight}};
    }
    return j;
}

void export_graph_matrix(const app::DebuggerModel& model, SentenceGraphState& state, const std::vector<HeadRef>& heads,
                         const std::string& path) {
    if (heads.empty()) fail("the graph has no heads (choose a head set in the text view)");
    update_sentence_graph(model, state, heads, true);
    if (!state.job.ready_for(graph_key(model, state, heads))) fail("the graph could not be computed: ", state.job.error());
    const SpanMatrix& m = state.job.value().matrix;
    const std::vector<double> values = m.normalised_values();
    const std::string ext = std::filesystem::path(path).extension().string();
    if (ext == ".csv") write_matrix_csv(path, m.rows, m.cols, values);
    else if (ext == ".npy") write_matrix_npy(path, m.rows, m.cols, values);
    else if (ext == ".json") write_matrix_json(path, m.rows, m.cols, values);
    else fail(path, ": the matrix is written as .csv, .npy or .json");
}

std::optional<int64_t> draw_sentence_graph_panel(app::DebuggerModel& model, SentenceGraphState& state, TextViewState& text,
                                                 const FingerprintsState& fingerprints, const std::vector<HeadLabel>& labels) {
    std::optional<int64_t> clicked;
    if (ImGui::RadioButton("sentence graph", !state.paragraphs)) state.paragraphs = false;
    ImGui::SameLine();
    if (ImGui::RadioButton("paragraph flow", state.paragraphs)) state.paragraphs = true;
    if (!state.paragraphs) {
        ImGui::SameLine();
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 7);
        ImGui::SliderFloat("min edge", &state.min_weight, 0.f, 0.5f, "%.2f");
        ImGui::SameLine();
        ImGui::Checkbox("Leiden", &state.leiden);
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("communities by Leiden (modularity) instead of Louvain");
    }
    draw_head_set_picker("graphheads", text.heads, model, fingerprints, labels);
    const ResolvedHeads heads = resolve_heads(text.heads, model, fingerprints, labels);
    update_sentence_graph(model, state, heads.heads);
    if (heads.heads.empty()) return clicked;
    const bool current = state.job.ready_for(graph_key(model, state, heads.heads));
    if (!state.job.error().empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.job.error().c_str());
    if (!state.job.has_value() || (!current && state.job.key().paragraphs != state.paragraphs)) {
        ImGui::TextDisabled(state.job.busy() ? "computing the span masses…" : "no graph");
        return clicked;
    }
    const SentenceGraphState::Result& r = state.job.value();
    const std::vector<Segment>& segments = *r.segments.segments;
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const float font = ImGui::GetFontSize();
    const float fb_x = ImGui::GetIO().DisplayFramebufferScale.x, fb_y = ImGui::GetIO().DisplayFramebufferScale.y;

    if (state.job.key().paragraphs || r.graph.nodes.empty()) {
        if (!state.job.key().paragraphs) {
            ImGui::TextDisabled("no sentences with text to draw");
            return clicked;
        }
        const std::vector<int64_t> order = flow_order(r);
        if (r.topics) {
            ImGui::TextDisabled("%d topic%s from the model's hidden states (k-means on paragraph means, silhouette %.2f):", r.topics->topics,
                                r.topics->topics == 1 ? "" : "s", r.topics->silhouette);
            for (int t = 0; t < r.topics->topics; ++t) {
                ImGui::SameLine();
                const ImVec2 at = ImGui::GetCursorScreenPos();
                dl->AddRectFilled(ImVec2(at.x, at.y + font * 0.15f), ImVec2(at.x + font * 0.8f, at.y + font * 0.95f), community_colour(t));
                ImGui::Dummy(ImVec2(font * 0.85f, font));
                ImGui::SameLine();
                ImGui::Text("topic %d: %s", t, r.topics->description(t).c_str());
            }
        } else {
            ImGui::PushTextWrapPos(0);
            ImGui::TextColored(ImVec4(1, 0.8f, 0.45f, 1), "No topics: %s. Paragraphs are in text order.", r.topics_problem.c_str());
            ImGui::PopTextWrapPos();
        }
        ImGui::TextDisabled("%lld paragraphs%s: row = attending paragraph, column = attended; cell = share of the row's attention%s",
                            static_cast<long long>(r.matrix.rows), r.topics ? ", ordered by topic" : "", current ? "" : "   (updating…)");
        const int64_t n = r.matrix.rows;
        const ImVec2 origin = ImGui::GetCursorScreenPos();
        const ImVec2 avail = ImGui::GetContentRegionAvail();
        const float band = r.topics ? font * 0.6f : 0.f;  // topic colour strip on each axis
        const float label_w = std::min(avail.x * 0.35f, font * 16) + band;
        const float top = font * 1.2f + band;
        const float cell = std::max(2.f, std::min((avail.x - label_w - 8) / std::max<int64_t>(1, n), (avail.y - top - font) / std::max<int64_t>(1, n)));
        const render::ColormapTable& colours = render::colormap_table(render::Colormap::Magma);
        int64_t hr = -1, hc = -1;
        const ImVec2 mouse = ImGui::GetIO().MousePos;
        for (int64_t row = 0; row < n; ++row) {
            const int64_t a = order[static_cast<size_t>(row)];
            const float y = origin.y + top + row * cell;
            if (r.topics) {
                dl->AddRectFilled(ImVec2(origin.x, y), ImVec2(origin.x + band - 2, y + cell - 1), community_colour(topic_of(r, a)));
                const float x = origin.x + label_w + row * cell;
                dl->AddRectFilled(ImVec2(x, origin.y + font * 1.2f), ImVec2(x + cell - 1, origin.y + top - 2), community_colour(topic_of(r, a)));
            }
            if (cell >= font * 0.9f) {
                const std::string label = cat("¶", a, " ", one_line(segment_text(model, segments[static_cast<size_t>(a)], 40)));
                dl->PushClipRect(ImVec2(origin.x + band, y), ImVec2(origin.x + label_w - 4, y + cell), true);
                dl->AddText(ImVec2(origin.x + band + 2, y + (cell - font) / 2), ImGui::GetColorU32(ImGuiCol_Text), label.c_str());
                dl->PopClipRect();
            }
            for (int64_t column = 0; column < n; ++column) {
                const int64_t b = order[static_cast<size_t>(column)];
                if (b > a) continue;  // a paragraph cannot attend to a later one: left blank
                const float x = origin.x + label_w + column * cell;
                const double v = r.matrix.normalised(a, b);
                const float t = static_cast<float>(std::sqrt(std::clamp(v, 0.0, 1.0)));
                dl->AddRectFilled(ImVec2(x, y), ImVec2(x + cell - 1, y + cell - 1), colours[static_cast<size_t>(t * 255.f + 0.5f)] | 0xFF000000u);
                if (cell >= font * 2.2f) {
                    char text_v[16];
                    std::snprintf(text_v, sizeof text_v, "%.0f%%", v * 100);
                    dl->AddText(ImVec2(x + 3, y + (cell - font) / 2), t > 0.6f ? IM_COL32(0, 0, 0, 255) : IM_COL32(255, 255, 255, 220), text_v);
                }
                if (mouse.x >= x && mouse.x < x + cell && mouse.y >= y && mouse.y < y + cell) hr = a, hc = b;
            }
        }
        ImGui::Dummy(ImVec2(label_w + n * cell, top + n * cell));
        if (hr >= 0 && ImGui::IsWindowHovered()) {
            auto topic_name = [&](int64_t segment) {
                const int t = topic_of(r, segment);
                return t >= 0 ? cat(" (topic ", t, ": ", r.topics->description(t), ")") : std::string();
            };
            ImGui::BeginTooltip();
            ImGui::Text("paragraph %lld%s → paragraph %lld%s: %.2f%% of its attention", static_cast<long long>(hr), topic_name(hr).c_str(),
                        static_cast<long long>(hc), topic_name(hc).c_str(), r.matrix.normalised(hr, hc) * 100);
            ImGui::PushTextWrapPos(font * 30);
            ImGui::TextUnformatted(one_line(segment_text(model, segments[static_cast<size_t>(hr)], 160)).c_str());
            ImGui::TextDisabled("%s", one_line(segment_text(model, segments[static_cast<size_t>(hc)], 160)).c_str());
            ImGui::PopTextWrapPos();
            ImGui::EndTooltip();
        }
        return clicked;
    }

    const SentenceGraph& g = r.graph;
    ImGui::TextDisabled("%zu sentences, %zu edges, %lld communities (modularity %.3f)%s   hover: the sentence   click: select it in the text view",
                        g.nodes.size(), g.edges.size(), static_cast<long long>(g.communities), g.modularity,
                        current ? "" : "   (updating…)");
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    ImGui::InvisibleButton("##graphcanvas", ImVec2(std::max(avail.x, 16.f), std::max(avail.y, 16.f)));
    const bool canvas_hovered = ImGui::IsItemHovered();
    const bool canvas_clicked = ImGui::IsItemClicked(ImGuiMouseButton_Left);
    const float margin = font * 2;
    auto pos = [&](size_t i) {
        return ImVec2(origin.x + margin + static_cast<float>(g.x[i]) * (avail.x - 2 * margin),
                      origin.y + margin + static_cast<float>(g.y[i]) * (avail.y - 2 * margin));
    };
    dl->PushClipRect(origin, ImVec2(origin.x + avail.x, origin.y + avail.y), true);
    dl->AddRectFilled(origin, ImVec2(origin.x + avail.x, origin.y + avail.y), IM_COL32(18, 19, 24, 255));
    double wmax = 0;
    for (const GraphEdge& e : g.edges) wmax = std::max(wmax, e.weight);
    const int64_t focus = state.hovered_node >= 0 ? state.hovered_node : state.selected_node;
    for (const GraphEdge& e : g.edges) {
        const ImVec2 a = pos(static_cast<size_t>(e.from)), b = pos(static_cast<size_t>(e.to));
        const float t = wmax > 0 ? static_cast<float>(e.weight / wmax) : 0.f;
        const bool touches = focus >= 0 && (e.from == focus || e.to == focus);
        const int alpha = focus >= 0 ? (touches ? 230 : 40) : static_cast<int>(60 + 160 * t);
        dl->AddLine(a, b, community_colour(g.community[static_cast<size_t>(e.from)], alpha), 1.f + 7.f * t);
        // Arrow head two thirds of the way: from (attending) → to (attended).
        const float dx = b.x - a.x, dy = b.y - a.y, len = std::sqrt(dx * dx + dy * dy);
        if (len > 20) {
            const ImVec2 m(a.x + dx * 0.66f, a.y + dy * 0.66f);
            const float ux = dx / len, uy = dy / len, s = 5.f + 4.f * t;
            dl->AddTriangleFilled(ImVec2(m.x + ux * s, m.y + uy * s), ImVec2(m.x - uy * s * 0.6f, m.y + ux * s * 0.6f),
                                  ImVec2(m.x + uy * s * 0.6f, m.y - ux * s * 0.6f), community_colour(g.community[static_cast<size_t>(e.from)], alpha));
        }
    }
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    int64_t hovered = -1;
    float best = 1e30f;
    state.drawn_nodes.assign(g.nodes.size(), {0, 0, 0});
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const ImVec2 p = pos(i);
        const Segment& s = segments[static_cast<size_t>(g.nodes[i])];
        const float radius = std::clamp(3.f + 1.6f * std::sqrt(static_cast<float>(std::max<int64_t>(1, s.token_count()))), 5.f, 16.f);
        const float d = std::hypot(mouse.x - p.x, mouse.y - p.y);
        if (canvas_hovered && d <= radius + 4 && d < best) best = d, hovered = static_cast<int64_t>(i);
        dl->AddCircleFilled(p, radius, community_colour(g.community[i]));
        if (static_cast<int64_t>(i) == state.selected_node) dl->AddCircle(p, radius + 3, IM_COL32(255, 210, 80, 255), 0, 2.5f);
        char label[24];
        std::snprintf(label, sizeof label, "S%lld", static_cast<long long>(g.nodes[i]));
        dl->AddText(ImVec2(p.x + radius + 2, p.y - font / 2), IM_COL32(210, 210, 220, 230), label);
        state.drawn_nodes[i] = {p.x * fb_x, p.y * fb_y, radius * fb_x};
    }
    dl->PopClipRect();
    state.hovered_node = hovered;
    if (hovered >= 0) {
        const size_t i = static_cast<size_t>(hovered);
        const Segment& s = segments[static_cast<size_t>(g.nodes[i])];
        ImGui::BeginTooltip();
        ImGui::Text("sentence %lld (community %lld), tokens [%lld, %lld)", static_cast<long long>(g.nodes[i]),
                    static_cast<long long>(g.community[i]), static_cast<long long>(s.first), static_cast<long long>(s.last));
        ImGui::PushTextWrapPos(font * 32);
        ImGui::TextUnformatted(one_line(segment_text(model, s, 400)).c_str());
        ImGui::PopTextWrapPos();
        std::vector<GraphEdge> out;
        for (const GraphEdge& e : g.edges)
            if (e.from == hovered) out.push_back(e);
        std::sort(out.begin(), out.end(), [](const GraphEdge& a, const GraphEdge& b) { return a.weight > b.weight; });
        for (size_t k = 0; k < out.size() && k < 3; ++k)
            ImGui::TextColored(ImVec4(1, 0.65f, 0.2f, 1), "→ S%lld  %.1f%%", static_cast<long long>(g.nodes[static_cast<size_t>(out[k].to)]),
                               out[k].weight * 100);
        ImGui::TextDisabled("click: select it in the text view");
        ImGui::EndTooltip();
        if (canvas_clicked) {
            state.selected_node = hovered;
            clicked = g.nodes[i];
        }
    }
    return clicked;
}

}  // namespace attn::panels
