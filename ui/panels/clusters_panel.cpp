#include "ui/panels/clusters_panel.h"

#include "ui/app/export_record.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace attn::panels {

namespace {

ImU32 cluster_colour(int c) {
    static const ImU32 palette[] = {IM_COL32(230, 97, 1, 255),   IM_COL32(94, 140, 230, 255), IM_COL32(27, 180, 119, 255),
                                    IM_COL32(231, 41, 138, 255), IM_COL32(150, 200, 30, 255), IM_COL32(230, 190, 2, 255),
                                    IM_COL32(160, 100, 230, 255), IM_COL32(166, 118, 29, 255), IM_COL32(100, 220, 220, 255),
                                    IM_COL32(251, 154, 153, 255)};
    return c < 0 ? IM_COL32(180, 180, 180, 255) : palette[static_cast<size_t>(c) % 10];
}

ClustersState::Key clusters_key(const app::DebuggerModel& model, const ClustersState& state, const FingerprintsState& fingerprints,
                                const std::vector<HeadLabel>& labels) {
    ClustersState::Key key;
    key.store = model.session().capture.get();
    key.positions = fingerprints.covered;
    key.fingerprints = fingerprints.version;
    key.user_labels = labels.size();
    key.method = static_cast<int>(state.options.method);
    key.features = static_cast<int>(state.options.features);
    key.k = state.options.k;
    key.seed = state.options.seed;
    key.perplexity = state.options.perplexity;
    key.iterations = state.options.tsne_iterations;
    return key;
}

}  // namespace

void update_clusters(const app::DebuggerModel& model, ClustersState& state, const FingerprintsState& fingerprints,
                     const std::vector<HeadLabel>& labels, bool wait) {
    const auto* table = fingerprints_of(fingerprints);
    if (!table) return;
    const ClustersState::Key key = clusters_key(model, state, fingerprints, labels);
    if (state.job.done_for(key) || (!wait && state.job.busy())) {
        state.job.poll();
        return;
    }
    auto snapshot = std::make_shared<Session>();
    snapshot->tokens = model.session().tokens;
    snapshot->prompt_tokens = model.session().prompt_tokens;
    snapshot->capture = model.session().capture;
    snapshot->head_labels = labels;  // the points carry the view's user labels
    auto job = [snapshot, fps = *table, options = state.options] {
        const CpuTileSource source(*snapshot->capture, 0);
        return project_heads(source, *snapshot, fps, options);
    };
    if (wait) state.job.finish(key, job);
    else state.job.want(key, job);
}

bool clusters_settled(const app::DebuggerModel& model, const ClustersState& state, const FingerprintsState& fingerprints,
                      const std::vector<HeadLabel>& labels) {
    if (!fingerprints_of(fingerprints)) return false;
    return state.job.done_for(clusters_key(model, state, fingerprints, labels));
}

void export_clusters(const app::DebuggerModel& model, ClustersState& state, const FingerprintsState& fingerprints,
                     const std::vector<HeadLabel>& labels, const std::string& path) {
    update_clusters(model, state, fingerprints, labels, true);
    if (!state.job.ready_for(clusters_key(model, state, fingerprints, labels)))
        fail("the projection is not there: ", state.job.error().empty() ? "the fingerprints are computing" : state.job.error());
    write_projection(path, state.job.value());
    app::record_export(model, path, {"clusters", "head_projection", -1, -1, -1, -1, "",
                                     cat(projection_method_name(state.options.method), " of every head from its ",
                                         projection_features_name(state.options.features))});
}

nlohmann::json clusters_json(const app::DebuggerModel& model, const ClustersState& state, const FingerprintsState& fingerprints,
                             const std::vector<HeadLabel>& labels) {
    nlohmann::json j;
    j["method"] = projection_method_name(state.options.method);
    j["features"] = projection_features_name(state.options.features);
    j["k"] = state.options.k;
    j["seed"] = state.options.seed;
    j["ready"] = fingerprints_of(fingerprints) && state.job.ready_for(clusters_key(model, state, fingerprints, labels));
    if (!state.job.error().empty()) j["error"] = state.job.error();
    if (!state.job.has_value()) return j;
    const HeadProjection& p = state.job.value();
    j["points"] = p.points.size();
    int clusters = 0;
    for (const HeadPoint& pt : p.points) clusters = std::max(clusters, pt.cluster + 1);
    j["clusters"] = clusters;
    j["ms"] = state.job.ms();
    j["hovered"] = state.hovered;
    if (!state.drawn.empty() && !p.points.empty()) {
        j["first_point_at"] = {state.drawn[0][0], state.drawn[0][1]};
        nlohmann::json pts = nlohmann::json::array();
        for (size_t i = 0; i < p.points.size() && i < state.drawn.size(); ++i)
            pts.push_back({{"layer", p.points[i].layer}, {"head", p.points[i].head}, {"cluster", p.points[i].cluster},
                           {"at", {state.drawn[i][0], state.drawn[i][1]}}});
        j["point_list"] = pts;
    }
    return j;
}

std::optional<std::pair<int, int>> draw_clusters_panel(app::DebuggerModel& model, ClustersState& state,
                                                       const FingerprintsState& fingerprints, const std::vector<HeadLabel>& labels) {
    std::optional<std::pair<int, int>> clicked;
    int method = static_cast<int>(state.options.method), features = static_cast<int>(state.options.features);
    ImGui::RadioButton("PCA", &method, 0);
    ImGui::SameLine();
    ImGui::RadioButton("t-SNE", &method, 1);
    ImGui::SameLine();
    ImGui::TextDisabled("of");
    ImGui::SameLine();
    ImGui::RadioButton("fingerprints", &features, 0);
    ImGui::SameLine();
    ImGui::RadioButton("patterns", &features, 1);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("a 32 × 32 summary of each head's attention map (from the pooled overview beyond 1024 tokens)");
    state.options.method = static_cast<ProjectionMethod>(method);
    state.options.features = static_cast<ProjectionFeatures>(features);
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5);
    ImGui::SliderInt("k-means k", &state.options.k, 0, 10);
    ImGui::SameLine();
    int seed = static_cast<int>(state.options.seed);
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5);
    if (ImGui::InputInt("seed", &seed)) state.options.seed = static_cast<uint64_t>(std::max(0, seed));
    if (state.options.method == ProjectionMethod::Tsne) {
        ImGui::SameLine();
        float perplexity = static_cast<float>(state.options.perplexity);
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5);
        if (ImGui::SliderFloat("perplexity", &perplexity, 2.f, 50.f, "%.0f")) state.options.perplexity = perplexity;
    }
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 12);
    ImGui::InputText("##clusterexport", state.export_base, sizeof state.export_base);
    for (const char* ext : {".csv", ".json"}) {
        ImGui::SameLine();
        if (ImGui::SmallButton(ext + 1)) {
            const std::string path = std::string(state.export_base) + ext;
            try {
                export_clusters(model, state, fingerprints, labels, path);
                state.export_note = "wrote " + path;
            } catch (const std::exception& e) {
                state.export_note = e.what();
            }
        }
    }
    ImGui::SameLine();
    ImGui::TextDisabled("%s", state.export_note.c_str());

    update_clusters(model, state, fingerprints, labels);
    if (!fingerprints_of(fingerprints)) {
        ImGui::TextDisabled("computing the fingerprints…");
        return clicked;
    }
    if (!state.job.error().empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.job.error().c_str());
    if (!state.job.has_value()) {
        ImGui::TextDisabled("projecting…");
        return clicked;
    }
    const HeadProjection& p = state.job.value();
    const bool current = state.job.ready_for(clusters_key(model, state, fingerprints, labels));
    if (p.options.method == ProjectionMethod::Pca)
        ImGui::TextDisabled("%zu heads, %lld features; PC1 %.0f%%, PC2 %.0f%% of the variance%s   hover: name   click: open in the map",
                            p.points.size(), static_cast<long long>(p.feature_count), p.explained[0] * 100, p.explained[1] * 100,
                            current ? "" : "   (updating…)");
    else
        ImGui::TextDisabled("%zu heads, %lld features; t-SNE perplexity %.0f, seed %llu%s   hover: name   click: open in the map",
                            p.points.size(), static_cast<long long>(p.feature_count), p.options.perplexity,
                            static_cast<unsigned long long>(p.options.seed), current ? "" : "   (updating…)");

    const ImVec2 origin = ImGui::GetCursorScreenPos();
    const ImVec2 avail(std::max(16.f, ImGui::GetContentRegionAvail().x), std::max(16.f, ImGui::GetContentRegionAvail().y));
    ImGui::InvisibleButton("##scatter", avail);
    const bool hovered_canvas = ImGui::IsItemHovered();
    const bool clicked_canvas = ImGui::IsItemClicked(ImGuiMouseButton_Left);
    ImDrawList* dl = ImGui::GetWindowDrawList();
    dl->AddRectFilled(origin, ImVec2(origin.x + avail.x, origin.y + avail.y), IM_COL32(18, 19, 24, 255));
    if (p.points.empty()) return clicked;
    double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
    for (const HeadPoint& pt : p.points) xmin = std::min(xmin, pt.x), xmax = std::max(xmax, pt.x), ymin = std::min(ymin, pt.y), ymax = std::max(ymax, pt.y);
    const double sx = xmax > xmin ? xmax - xmin : 1, sy = ymax > ymin ? ymax - ymin : 1;
    const float margin = ImGui::GetFontSize() * 2;
    const float fb_x = ImGui::GetIO().DisplayFramebufferScale.x, fb_y = ImGui::GetIO().DisplayFramebufferScale.y;
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    const float radius = std::clamp(avail.y / 90.f, 3.5f, 7.f);
    int hovered = -1;
    float best = 1e30f;
    state.drawn.assign(p.points.size(), {0, 0});
    dl->PushClipRect(origin, ImVec2(origin.x + avail.x, origin.y + avail.y), true);
    for (size_t i = 0; i < p.points.size(); ++i) {
        const HeadPoint& pt = p.points[i];
        const ImVec2 at(origin.x + margin + static_cast<float>((pt.x - xmin) / sx) * (avail.x - 2 * margin),
                        origin.y + avail.y - margin - static_cast<float>((pt.y - ymin) / sy) * (avail.y - 2 * margin));
        state.drawn[i] = {at.x * fb_x, at.y * fb_y};
        const bool selected = pt.layer == model.settings.layer && pt.head == model.settings.head;
        dl->AddCircleFilled(at, radius, cluster_colour(pt.cluster));
        if (selected) dl->AddCircle(at, radius + 3, IM_COL32(255, 210, 80, 255), 0, 2.f);
        const float d = std::hypot(mouse.x - at.x, mouse.y - at.y);
        if (hovered_canvas && d <= radius + 4 && d < best) best = d, hovered = static_cast<int>(i);
    }
    if (hovered >= 0) {
        const ImVec2 at(state.drawn[size_t(hovered)][0] / fb_x, state.drawn[size_t(hovered)][1] / fb_y);
        dl->AddCircle(at, radius + 2, IM_COL32(255, 255, 255, 255), 0, 2.f);
    }
    dl->PopClipRect();
    state.hovered = hovered;
    if (hovered >= 0) {
        const HeadPoint& pt = p.points[size_t(hovered)];
        std::string text;
        for (const std::string& l : pt.labels) text += (text.empty() ? "" : ", ") + l;
        ImGui::SetTooltip("L%dH%d   cluster %d\nlabels: %s\nclick: open in the map", pt.layer, pt.head, pt.cluster,
                          text.empty() ? "(none)" : text.c_str());
        if (clicked_canvas) clicked = std::make_pair(pt.layer, pt.head);
    }
    return clicked;
}

}  // namespace attn::panels
