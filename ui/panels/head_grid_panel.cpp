#include "ui/panels/head_grid_panel.h"

#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "ui/render/colormap.h"

namespace attn::panels {

namespace {

void take(HeadGridState& state) {
    state.shown = state.computing;
    try {
        state.thumbs = state.pending.get();
        state.note.clear();
    } catch (const std::exception& e) {
        state.note = e.what();
    }
}

HeadGridState::Key wanted_key(const app::DebuggerModel& model, const HeadGridState& state) {
    HeadGridState::Key key;
    key.store = model.session().capture.get();
    key.positions = model.shown_positions();
    key.current_step = state.current_step;
    key.query = state.current_step ? (model.selected_query >= 0 ? model.selected_query : model.shown_positions() - 1) : -1;
    key.cells = state.cells;
    return key;
}

// Starts the computation of `key` unless it is shown or running; takes a finished one.
void refresh(const app::DebuggerModel& model, HeadGridState& state, bool wait) {
    if (state.pending.valid() &&
        (wait || state.pending.wait_for(std::chrono::seconds(0)) == std::future_status::ready))
        take(state);
    const HeadGridState::Key key = wanted_key(model, state);
    if (key.positions <= 0 || key == state.shown || (state.pending.valid() && key == state.computing)) return;
    if (state.pending.valid()) return;  // one at a time: the newest state is taken when this one ends
    state.computing = key;
    // The worker reads the capture through its own tile source; the store outlives it (the views
    // rebind only after the debugger drops pending work: see windowed_view's bind()).
    const std::shared_ptr<CaptureStore> store = model.session().capture;
    state.pending = std::async(std::launch::async, [store, key] {
        const CpuTileSource source(*store, 1);
        return key.current_step ? row_thumbnails(source, *store, key.query, key.cells, 0)
                                : matrix_thumbnails(source, *store, key.positions, key.cells, 0);
    });
    if (wait) take(state);
}

}  // namespace

void finish_head_grid(const app::DebuggerModel& model, HeadGridState& state) {
    refresh(model, state, true);
    refresh(model, state, true);
}

bool draw_head_grid_panel(app::DebuggerModel& model, HeadGridState& state) {
    refresh(model, state, false);
    ImGui::Checkbox("shown step's row only", &state.current_step);
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 8);
    ImGui::SliderFloat("size", &state.thumb_px, 16, 160, "%.0f px");
    if (state.pending.valid()) {
        ImGui::SameLine();
        ImGui::TextDisabled("computing…");
    }
    const int layers = model.n_layer(), heads = model.n_head();
    const bool filtering = !state.filter_name.empty();
    const bool have_filter = filtering && state.filter.size() == size_t(layers) * heads;
    if (filtering) {
        ImGui::SameLine();
        if (have_filter)
            ImGui::TextColored(ImVec4(1.f, 0.85f, 0.35f, 1.f), "label '%s': %lld of %d heads",
                               state.filter_name.c_str(),
                               static_cast<long long>(std::count(state.filter.begin(), state.filter.end(), uint8_t(1))),
                               layers * heads);
        else
            ImGui::TextDisabled("label '%s': waiting for the fingerprints", state.filter_name.c_str());
    }
    if (!state.note.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.note.c_str());
    if (state.thumbs.size() != size_t(layers) * heads) {
        ImGui::TextDisabled("computing the thumbnails…");
        return false;
    }

    const float unit = ImGui::GetFontSize();
    const float thumb = state.thumb_px;
    const float thumb_h = state.shown.current_step ? std::max(6.f, thumb / 4) : thumb;
    const float gap = 3, label_w = unit * 2.5f;
    ImGui::BeginChild("##headgrid", ImVec2(0, 0), false, ImGuiWindowFlags_HorizontalScrollbar);
    if (ImGui::IsWindowHovered() && ImGui::GetIO().KeyCtrl && ImGui::GetIO().MouseWheel != 0)
        state.thumb_px = std::clamp(state.thumb_px * std::pow(1.15f, ImGui::GetIO().MouseWheel), 16.f, 160.f);
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    const ImVec2 size(label_w + heads * (thumb + gap), unit * 1.2f + layers * (thumb_h + gap));
    ImGui::InvisibleButton("##headgridcanvas", size);
    const bool hovered_canvas = ImGui::IsItemHovered();
    const bool clicked = ImGui::IsItemClicked(ImGuiMouseButton_Left);
    ImDrawList* draw = ImGui::GetWindowDrawList();
    const render::ColormapTable& colours = render::colormap_table(model.settings.colormap);
    const ImVec2 clip_min = ImGui::GetWindowPos(), clip_max(clip_min.x + ImGui::GetWindowWidth(), clip_min.y + ImGui::GetWindowHeight());
    char text[32];
    for (int h = 0; h < heads; ++h) {
        std::snprintf(text, sizeof text, "H%d", h);
        draw->AddText(ImVec2(origin.x + label_w + h * (thumb + gap), origin.y), IM_COL32(170, 175, 190, 255), text);
    }
    int hovered_layer = -1, hovered_head = -1;
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    for (int l = 0; l < layers; ++l) {
        const float y = origin.y + unit * 1.2f + l * (thumb_h + gap);
        if (y > clip_max.y || y + thumb_h < clip_min.y) continue;  // off screen: nothing to draw
        std::snprintf(text, sizeof text, "L%d", l);
        draw->AddText(ImVec2(origin.x, y), IM_COL32(170, 175, 190, 255), text);
        for (int h = 0; h < heads; ++h) {
            const float x = origin.x + label_w + h * (thumb + gap);
            const HeadThumbnail& t = state.thumbs[size_t(l) * heads + h];
            const float cw = thumb / std::max(1, t.cols), ch = thumb_h / std::max(1, t.rows);
            draw->AddRectFilled(ImVec2(x, y), ImVec2(x + thumb, y + thumb_h), IM_COL32(24, 26, 32, 255));
            for (int r = 0; r < t.rows; ++r)
                for (int c = 0; c < t.cols; ++c) {
                    const float v = t.max[size_t(r) * t.cols + c];
                    if (std::isnan(v)) continue;
                    // Log scale over four decades, as the map's default.
                    const float u = std::clamp((std::log10(std::max(v, 1e-8f)) + 4.f) / 4.f, 0.f, 1.f);
                    const uint32_t rgba = colours[static_cast<size_t>(u * 255.f + 0.5f)];
                    draw->AddRectFilled(ImVec2(x + c * cw, y + r * ch), ImVec2(x + (c + 1) * cw, y + (r + 1) * ch),
                                        rgba | 0xFF000000u);
                }
            if (have_filter && !state.filter[size_t(l) * heads + h])  // filtered out: dimmed
                draw->AddRectFilled(ImVec2(x, y), ImVec2(x + thumb, y + thumb_h), IM_COL32(12, 12, 16, 215));
            else if (have_filter)  // passes: a thin outline in the label colour
                draw->AddRect(ImVec2(x - 1, y - 1), ImVec2(x + thumb + 1, y + thumb_h + 1), IM_COL32(255, 217, 90, 170));
            if (model.alerts.head(l, h)) {  // a rule's offending head: pulses red, then stays red
                const int alpha = static_cast<int>(90 + 165 * model.alerts.pulse);
                draw->AddRect(ImVec2(x - 2, y - 2), ImVec2(x + thumb + 2, y + thumb_h + 2), IM_COL32(255, 40, 40, alpha), 0, 0, 3.f);
            }
            const bool selected = l == model.settings.layer && h == model.settings.head;
            const bool under_mouse = hovered_canvas && mouse.x >= x && mouse.x < x + thumb && mouse.y >= y && mouse.y < y + thumb_h;
            if (under_mouse) hovered_layer = l, hovered_head = h;
            if (selected || under_mouse)
                draw->AddRect(ImVec2(x - 1, y - 1), ImVec2(x + thumb + 1, y + thumb_h + 1),
                              selected ? IM_COL32(255, 200, 90, 255) : IM_COL32(255, 255, 255, 200), 0, 0, 2.f);
        }
    }
    bool opened = false;
    if (hovered_layer >= 0) {
        ImGui::SetTooltip("layer %d head %d\n%s\nclick: open in the map", hovered_layer, hovered_head,
                          state.shown.current_step ? "the shown step's row (max per key bin)"
                                                   : "the whole matrix (max per cell, from the pooled overview)");
        if (clicked) {
            model.select_layer(hovered_layer);
            model.select_head(hovered_head);
            opened = true;
        }
    }
    ImGui::EndChild();
    return opened;
}

}  // namespace attn::panels
