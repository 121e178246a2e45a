#include "ui/panels/violations_panel.h"

#include <imgui.h>

#include <cstdio>

#include "engine/error.h"
#include "ui/panels/text_view_panel.h"

namespace attn::panels {

namespace {

std::string head_names(const std::vector<HeadRef>& heads, size_t max_shown = 6) {
    std::string out;
    for (size_t i = 0; i < heads.size() && i < max_shown; ++i) out += cat(i ? " " : "", "L", heads[i].layer, "H", heads[i].head);
    if (heads.size() > max_shown) out += cat(" … (", heads.size() - max_shown, " more)");
    return out;
}

}  // namespace

void jump_to_violation(app::DebuggerModel& model, const Violation& v) {
    if (v.step >= 0) model.show_step(v.step);
    else if (v.query.last > 0) model.select_query(v.query.last - 1);  // the span's last row
    if (v.worst.layer >= 0) {
        model.select_layer(v.worst.layer);
        model.select_head(v.worst.head);
    }
}

std::optional<size_t> draw_violations_panel(const app::DebuggerModel& model, RulesState& state) {
    std::optional<size_t> clicked;
    if (state.violations.empty()) {
        ImGui::TextDisabled(state.rules ? "no violations" : "no rules loaded");
        return clicked;
    }
    const float pulse = violation_pulse(state);
    ImGui::TextColored(ImVec4(1, 0.25f + 0.3f * (1 - pulse), 0.25f, 1), "%zu violation%s", state.violations.size(),
                       state.violations.size() == 1 ? "" : "s");
    for (size_t i = 0; i < state.violations.size(); ++i) {
        const Violation& v = state.violations[i];
        ImGui::PushID(static_cast<int>(i));
        char label[160];
        std::snprintf(label, sizeof label, "%s  %s  %s %.4f, needs %s %g", v.rule_id.c_str(),
                      v.step < 0 ? "prompt" : cat("step ", v.step).c_str(), v.aggregate.c_str(), v.value, rule_op_name(v.op), v.threshold);
        if (i + 1 == state.violations.size() && pulse > 0.36f)
            ImGui::PushStyleColor(ImGuiCol_Header, ImVec4(0.8f * pulse, 0.1f, 0.1f, 0.9f));
        else
            ImGui::PushStyleColor(ImGuiCol_Header, ImVec4(0.45f, 0.1f, 0.1f, 0.8f));
        if (ImGui::Selectable(label, static_cast<int64_t>(i) == state.selected_violation || (i + 1 == state.violations.size() && pulse > 0.36f))) {
            state.selected_violation = static_cast<int64_t>(i);
            clicked = i;
        }
        ImGui::PopStyleColor();
        ImGui::Indent();
        ImGui::TextDisabled("\"%s\" → \"%s\"", one_line(model.display_range(v.query.begin, v.query.end)).c_str(),
                            violation_keys_text(model, v).c_str());
        ImGui::TextDisabled("heads %s (worst L%dH%d)", head_names(v.offending).c_str(), v.worst.layer, v.worst.head);
        ImGui::SameLine();
        if (ImGui::SmallButton("counterfactual")) {
            state.selected_violation = static_cast<int64_t>(i);
            state.counterfactual_request = i;
        }
        if (ImGui::IsItemHovered())
            ImGui::SetTooltip(v.keys.empty() ? "run it again with these heads ablated"
                                             : "run it again with these keys masked in these heads");
        ImGui::Unindent();
        ImGui::PopID();
    }
    return clicked;
}

}  // namespace attn::panels
