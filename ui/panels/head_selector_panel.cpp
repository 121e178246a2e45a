#include "ui/panels/head_selector_panel.h"

#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace attn::panels {

void HeadEntropyGrid::update(const app::DebuggerModel& model, double budget_ms) {
    const int64_t query = model.selected_query;
    if (query != query_ || model.n_layer() != layers_ || model.n_head() != heads_) {
        query_ = query;
        layers_ = model.n_layer();
        heads_ = model.n_head();
        first_layer_ = model.settings.layer;
        bits_.assign(static_cast<size_t>(layers_ * heads_), std::numeric_limits<float>::quiet_NaN());
        next_ = 0;
        remaining_ = query < 0 ? 0 : bits_.size();
        max_bits_ = 0;
    }
    const auto start = std::chrono::steady_clock::now();
    while (remaining_ > 0) {
        // Visit the layer shown when the query was chosen first, then the rest in order.
        const size_t total = bits_.size();
        const size_t i = (static_cast<size_t>(first_layer_ * heads_) + next_) % total;
        const int layer = static_cast<int>(i) / heads_, head = static_cast<int>(i) % heads_;
        bits_[i] = static_cast<float>(app::entropy_bits(model.row(layer, head, query_)));
        max_bits_ = std::max(max_bits_, bits_[i]);
        ++next_;
        --remaining_;
        if (std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() > budget_ms) break;
    }
}

void draw_head_selector_panel(app::DebuggerModel& model, HeadEntropyGrid& grid) {
    int layer = model.settings.layer, head = model.settings.head;
    ImGui::SetNextItemWidth(-ImGui::GetFontSize() * 3);
    if (ImGui::SliderInt("layer", &layer, 0, model.n_layer() - 1)) model.select_layer(layer);
    ImGui::SetNextItemWidth(-ImGui::GetFontSize() * 3);
    if (ImGui::SliderInt("head", &head, 0, model.n_head() - 1)) model.select_head(head);
    if (!ImGui::GetIO().WantTextInput) {
        // [ ] and , . step through layers and heads.
        if (ImGui::IsKeyPressed('[')) model.select_layer(model.settings.layer - 1);
        if (ImGui::IsKeyPressed(']')) model.select_layer(model.settings.layer + 1);
        if (ImGui::IsKeyPressed(',')) model.select_head(model.settings.head - 1);
        if (ImGui::IsKeyPressed('.')) model.select_head(model.settings.head + 1);
    }

    if (model.selected_query < 0) {
        ImGui::TextDisabled("click a row of the map for per-head entropy");
        return;
    }
    ImGui::Text("entropy of query %lld's row (bits)%s", static_cast<long long>(model.selected_query),
                grid.complete() ? "" : " …");
    // Grid: one row per layer, one column per head; colour = entropy relative to log2(keys).
    const float font = ImGui::GetFontSize();
    const float label_w = ImGui::CalcTextSize("L00").x + 4;
    const float avail = ImGui::GetContentRegionAvail().x - label_w;
    const float cw = std::clamp(avail / std::max(1, model.n_head()), font * 0.8f, font * 3.0f);
    // Many layers: thinner rows (numbers move to the tooltip) so the panel stays compact.
    const float ch = model.n_layer() > 16 ? std::max(font * 0.55f, std::min(cw * 0.4f, font * 0.75f))
                                          : std::max(font * 0.6f, std::min(cw * 0.55f, font * 1.2f));
    const float full = std::log2(static_cast<float>(model.selected_query + 1));
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    for (int l = 0; l < model.n_layer(); ++l) {
        const float y = origin.y + l * ch;
        if (ch >= font * 0.9f || l % 5 == 0) {
            char label[16];
            std::snprintf(label, sizeof label, "L%d", l);
            dl->AddText(ImGui::GetFont(), std::min(font, ch * 1.6f), ImVec2(origin.x, y), ImGui::GetColorU32(ImGuiCol_TextDisabled), label);
        }
        for (int h = 0; h < model.n_head(); ++h) {
            const ImVec2 a(origin.x + label_w + h * cw, y), b(a.x + cw - 1, y + ch - 1);
            const float bits = grid.bits(l, h);
            ImU32 col = IM_COL32(50, 50, 55, 255);
            if (!std::isnan(bits)) {
                // Focused heads (low entropy) bright warm, diffuse heads dark blue.
                const float t = full > 0 ? std::clamp(bits / full, 0.f, 1.f) : 0.f;
                col = ImGui::ColorConvertFloat4ToU32(ImVec4(0.95f - 0.75f * t, 0.75f - 0.45f * t, 0.25f + 0.35f * t, 1));
            }
            dl->AddRectFilled(a, b, col);
            if (model.alerts.head(l, h))  // a rule's offending head
                dl->AddRect(a, b, IM_COL32(255, 40, 40, static_cast<int>(110 + 145 * model.alerts.pulse)), 0, 0, 2);
            if (l == model.settings.layer && h == model.settings.head) dl->AddRect(a, b, IM_COL32(255, 255, 255, 255), 0, 0, 2);
            if (cw >= font * 2.2f && ch >= font * 0.95f && !std::isnan(bits)) {
                char text[16];
                std::snprintf(text, sizeof text, "%.1f", bits);
                dl->AddText(ImVec2(a.x + 3, a.y), IM_COL32(0, 0, 0, 255), text);
            }
        }
    }
    ImGui::InvisibleButton("##head_grid", ImVec2(label_w + cw * model.n_head(), ch * model.n_layer()));
    if (ImGui::IsItemHovered()) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        const int h = static_cast<int>((m.x - origin.x - label_w) / cw), l = static_cast<int>((m.y - origin.y) / ch);
        if (h >= 0 && h < model.n_head() && l >= 0 && l < model.n_layer()) {
            const float bits = grid.bits(l, h);
            if (std::isnan(bits)) ImGui::SetTooltip("layer %d head %d: computing…", l, h);
            else ImGui::SetTooltip("layer %d head %d: %.3f bits (uniform over the row: %.2f)", l, h, bits, full);
            if (ImGui::IsItemClicked()) {
                model.select_layer(l);
                model.select_head(h);
            }
        }
    }
}

}  // namespace attn::panels
