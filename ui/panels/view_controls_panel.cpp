#include "ui/panels/view_controls_panel.h"

#include <imgui.h>

#include <algorithm>

namespace attn::panels {

void draw_view_controls_panel(app::DebuggerModel& model, ViewControlsState& state, const render::ColorRange& current_range) {
    render::RenderSettings& s = model.settings;

    // Issue 7: personal data drawn as ●●●● [TYPE] in every view and export (on by default).
    ImGui::Checkbox("Mask personal data", &model.mask_pii);
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip("ID, phone and card numbers, e-mail and IP addresses shown as ●●●● [TYPE] in every view and export\n"
                          "(%zu found in this session); the model still reads the original text", model.pii_spans().size());

    ImGui::TextUnformatted("cell value");
    ImGui::SameLine();
    if (ImGui::RadioButton("max", s.plane == render::Plane::Max)) s.plane = render::Plane::Max;
    ImGui::SameLine();
    if (ImGui::RadioButton("sum", s.plane == render::Plane::Sum)) s.plane = render::Plane::Sum;
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("max: the peak probability in each cell (stripes survive zooming out)\nsum: the attention mass of each cell");

    ImGui::TextUnformatted("scale");
    ImGui::SameLine();
    if (ImGui::RadioButton("log", s.scale == render::ValueScale::Log)) s.scale = render::ValueScale::Log, s.manual_range = false;
    ImGui::SameLine();
    if (ImGui::RadioButton("linear", s.scale == render::ValueScale::Linear)) s.scale = render::ValueScale::Linear, s.manual_range = false;

    const render::Colormap maps[] = {render::Colormap::Viridis, render::Colormap::Magma, render::Colormap::Diverging};
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 8);
    if (ImGui::BeginCombo("colormap", render::colormap_name(s.colormap))) {
        for (render::Colormap m : maps)
            if (ImGui::Selectable(render::colormap_name(m), m == s.colormap)) s.colormap = m;
        ImGui::EndCombo();
    }

    // Range: automatic (shared by all visible tiles), locked (kept while the view moves), or manual.
    int mode = s.manual_range ? 2 : (s.lock_range ? 1 : 0);
    ImGui::TextUnformatted("range");
    ImGui::SameLine();
    bool changed = ImGui::RadioButton("auto", &mode, 0);
    ImGui::SameLine();
    changed |= ImGui::RadioButton("lock", &mode, 1);
    ImGui::SameLine();
    changed |= ImGui::RadioButton("manual", &mode, 2);
    if (changed) {
        s.lock_range = mode == 1;
        s.manual_range = mode == 2;
        if (s.manual_range) s.range_low = current_range.low, s.range_high = current_range.high;
    }
    const bool log = s.scale == render::ValueScale::Log;
    if (s.manual_range) {
        ImGui::SetNextItemWidth(-ImGui::GetFontSize() * 4);
        if (log) {
            ImGui::DragFloatRange2("log10", &s.range_low, &s.range_high, 0.05f, -12.f, 0.f, "%.2f", "%.2f");
        } else {
            ImGui::DragFloatRange2("p", &s.range_low, &s.range_high, 0.002f, 0.f, 1.f, "%.3f", "%.3f");
        }
        if (s.range_high <= s.range_low) s.range_high = s.range_low + (log ? 0.05f : 0.001f);
    } else if (log) {
        ImGui::SetNextItemWidth(-ImGui::GetFontSize() * 4);
        ImGui::SliderFloat("decades", &s.log_decades, 1.f, 12.f, "%.1f");
    }
    if (current_range.log_scale)
        ImGui::TextDisabled("shown: 10^%.2f .. 10^%.2f", current_range.low, current_range.high);
    else
        ImGui::TextDisabled("shown: %.4g .. %.4g", current_range.low, current_range.high);

    if (ImGui::Button("fit (F)")) model.fit_requested = true;
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 6);
    const bool enter = ImGui::InputScalar("##goto", ImGuiDataType_S64, &state.goto_token, nullptr, nullptr, "%lld",
                                          ImGuiInputTextFlags_EnterReturnsTrue);
    ImGui::SameLine();
    if (ImGui::Button("go to token") || enter) {
        state.goto_token = std::clamp<long long>(state.goto_token, 0, model.positions() - 1);
        model.goto_token = state.goto_token;
    }
}

}  // namespace attn::panels
