#include "ui/panels/watchpoints_panel.h"

#include <imgui.h>

#include <cinttypes>

namespace attn::panels {

void draw_watchpoints_panel(app::DebuggerModel& model, LiveRunner* runner, const std::vector<StepFindings>& findings,
                            WatchpointsState& state) {
    char buffer[512];
    std::snprintf(buffer, sizeof buffer, "%s", state.input.c_str());
    ImGui::SetNextItemWidth(-ImGui::GetFontSize() * 4);
    const bool entered = ImGui::InputText("##watch", buffer, sizeof buffer, ImGuiInputTextFlags_EnterReturnsTrue);
    state.input = buffer;
    ImGui::SameLine();
    if (ImGui::Button("Add") || entered) {
        try {
            state.list.push_back(parse_watchpoint(state.input));
            state.error.clear();
            if (runner) runner->set_watchpoints(state.list);
        } catch (const std::exception& e) {
            state.error = e.what();
        }
    }
    if (!state.error.empty()) ImGui::TextColored(ImVec4(1, 0.45f, 0.4f, 1), "%s", state.error.c_str());
    for (size_t i = 0; i < state.list.size(); ++i) {
        ImGui::PushID(static_cast<int>(i));
        if (ImGui::SmallButton("x")) {
            state.list.erase(state.list.begin() + static_cast<std::ptrdiff_t>(i));
            if (runner) runner->set_watchpoints(state.list);
            ImGui::PopID();
            break;
        }
        ImGui::SameLine();
        ImGui::TextUnformatted(state.list[i].text.c_str());
        ImGui::PopID();
    }

    // Steps where a watchpoint fired: recorded by the live run, or searched on a session.
    if (runner) {
        state.hits.clear();
        for (const StepFindings& f : findings)
            if (!f.watchpoints_fired.empty()) state.hits.push_back(f.step);
    }
    if (!runner && !state.list.empty() && ImGui::Button("Find in session")) {
        state.hits.clear();
        for (int64_t step = 0; step < model.steps(); ++step)
            for (const Watchpoint& w : state.list)
                if (evaluate(w, model.session(), model.source(), step).fired) {
                    state.hits.push_back(step);
                    break;
                }
    }
    if (!state.hits.empty()) {
        ImGui::TextDisabled("fired at:");
        for (int64_t step : state.hits) {
            ImGui::SameLine();
            char label[32];
            std::snprintf(label, sizeof label, "%" PRId64, step);
            if (ImGui::SmallButton(label)) model.show_step(step);
        }
    }
}

}  // namespace attn::panels
