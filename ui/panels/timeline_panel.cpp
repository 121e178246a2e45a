#include "ui/panels/timeline_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cinttypes>

namespace attn::panels {

void advance_timeline(app::DebuggerModel& model, TimelineState& state) {
    if (!state.playing) return;
    const auto now = std::chrono::steady_clock::now();
    const double interval = 1.0 / std::max(0.1f, state.steps_per_second);
    if (std::chrono::duration<double>(now - state.last_advance).count() < interval) return;
    state.last_advance = now;
    const int64_t steps = model.steps();
    const int64_t at = model.shown_step();
    if (at + 1 >= steps) {
        state.playing = false;
        return;
    }
    model.show_step(at + 1);
}

void draw_timeline_panel(app::DebuggerModel& model, TimelineState& state, const TimelineActions& actions) {
    const int64_t steps = model.steps();
    if (steps == 0) {
        ImGui::TextDisabled("no decode steps yet: Step or Run the model, or open a session with generated tokens");
        return;
    }
    const int64_t shown = model.shown_step();
    const float font = ImGui::GetFontSize();

    if (ImGui::Button("|<")) model.show_step(0);
    ImGui::SameLine();
    if (ImGui::Button("<")) model.show_step(std::max<int64_t>(0, shown - 1));
    ImGui::SameLine();
    if (ImGui::Button(state.playing ? "Pause" : "Play")) {
        state.playing = !state.playing;
        if (state.playing && shown + 1 >= steps) model.show_step(0);
        state.last_advance = std::chrono::steady_clock::now();
    }
    ImGui::SameLine();
    if (ImGui::Button(">")) model.show_step(std::min(steps - 1, shown + 1));
    ImGui::SameLine();
    if (ImGui::Button(">|")) model.show_step(steps - 1);
    ImGui::SameLine();
    bool follow = model.current_step < 0;
    if (ImGui::Checkbox("follow", &follow)) model.current_step = follow ? -1 : shown;
    ImGui::SameLine();
    ImGui::SetNextItemWidth(font * 6);
    ImGui::SliderFloat("steps/s", &state.steps_per_second, 0.5f, 30.f, "%.1f");
    ImGui::SameLine();
    int slider = static_cast<int>(shown);
    ImGui::SetNextItemWidth(-1);
    if (ImGui::SliderInt("##step", &slider, 0, static_cast<int>(steps - 1), "step %d")) model.show_step(slider);

    // Keyframes.
    ImGui::SetNextItemWidth(font * 8);
    char name[128];
    std::snprintf(name, sizeof name, "%s", state.keyframe_name.c_str());
    if (ImGui::InputText("##keyname", name, sizeof name)) state.keyframe_name = name;
    ImGui::SameLine();
    if (ImGui::Button("Mark") && actions.add_keyframe) actions.add_keyframe(shown, state.keyframe_name);
    for (size_t i = 0; i < model.session().keyframes.size(); ++i) {
        const Keyframe& k = model.session().keyframes[i];
        ImGui::SameLine();
        char label[160];
        std::snprintf(label, sizeof label, "%s @%" PRId64 "##kf%zu", k.name.c_str(), k.step, i);
        if (ImGui::SmallButton(label)) model.show_step(k.step);
    }

    // The generated token stream, the shown token highlighted; wraps to the panel's width.
    ImGui::BeginChild("##stream", ImVec2(0, font * 3.2f), false);
    const float right = ImGui::GetContentRegionAvail().x;
    float x = 0;
    for (int64_t t = 0; t < steps; ++t) {
        const std::string text = model.token_display(model.query_of(t), 24);
        const float w = ImGui::CalcTextSize(text.c_str()).x + ImGui::GetStyle().FramePadding.x * 2;
        if (t > 0) {
            if (x + w < right) ImGui::SameLine(0, 2);
            else x = 0;
        }
        x += w + 2;
        ImGui::PushID(static_cast<int>(t));
        const bool current = t == shown;
        const bool violated = model.alerts.step(t);  // a rule failed at this step: red (pulsing when new)
        if (current) ImGui::PushStyleColor(ImGuiCol_Button, ImVec4(0.85f, 0.6f, 0.15f, 1));
        else if (violated) ImGui::PushStyleColor(ImGuiCol_Button, ImVec4(0.35f + 0.6f * model.alerts.pulse, 0.08f, 0.08f, 1));
        if (ImGui::SmallButton(text.c_str())) model.show_step(t);
        if (current && violated)
            ImGui::GetWindowDrawList()->AddRect(ImGui::GetItemRectMin(), ImGui::GetItemRectMax(), IM_COL32(255, 40, 40, 255), 0, 0, 2);
        if (current || violated) {
            ImGui::PopStyleColor();
        }
        if (current) {
            if (state.playing || follow) ImGui::SetScrollHereY(0.5f);
        }
        ImGui::PopID();
    }
    ImGui::EndChild();
}

}  // namespace attn::panels
