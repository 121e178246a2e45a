#include "ui/panels/step_inspector_panel.h"

#include <imgui.h>

#include <cinttypes>
#include <cmath>

namespace attn::panels {

void draw_step_inspector_panel(app::DebuggerModel& model, const std::vector<StepFindings>& findings,
                               const StepInspectorActions& actions) {
    const int64_t step = model.shown_step();
    if (step < 0) {
        ImGui::TextDisabled("no decode steps yet");
        return;
    }
    const StepRecord& r = model.session().steps[static_cast<size_t>(step)];
    const int64_t position = model.query_of(step);
    ImGui::Text("step %" PRId64 "  (position %" PRId64 ")%s", step, position, r.forced ? "  forced" : "");
    ImGui::Text("token %d  \"%s\"", r.token_id, model.token_display(position, 64).c_str());
    ImGui::Text("p = %.4f   log p = %.4f   cumulative %.3f", std::exp(double(r.logprob)), r.logprob, r.cumulative_logprob);
    ImGui::Text("beam %d   KV length %" PRId64 "   evicted %" PRId64, r.beam_id, r.kv_length, r.evicted);

    if (ImGui::BeginTable("alternatives", actions.branch ? 3 : 2, ImGuiTableFlags_RowBg | ImGuiTableFlags_SizingStretchProp)) {
        ImGui::TableSetupColumn("alternative");
        ImGui::TableSetupColumn("p");
        if (actions.branch) ImGui::TableSetupColumn("");
        ImGui::TableHeadersRow();
        for (size_t i = 0; i < r.top.size(); ++i) {
            const TokenAlternative& alt = r.top[i];
            ImGui::TableNextRow();
            ImGui::TableNextColumn();
            std::string text = model.alternative_text(position, alt.id);
            for (char& c : text)
                if (c == '\n') c = ' ';
            ImGui::Text("%s%s", alt.id == r.token_id ? "> " : "  ", text.c_str());
            ImGui::TableNextColumn();
            ImGui::Text("%.4f", alt.prob);
            if (actions.branch) {
                ImGui::TableNextColumn();
                ImGui::PushID(static_cast<int>(i));
                if (alt.id != r.token_id && ImGui::SmallButton("branch")) actions.branch(step, alt.id);
                ImGui::PopID();
            }
        }
        ImGui::EndTable();
    }

    ImGui::Text("forward %.2f ms", r.forward_ms);
    if (!r.attention_ms.empty()) {
        float total = 0;
        for (float t : r.attention_ms) total += t;
        ImGui::SameLine();
        ImGui::TextDisabled("attention %.2f ms over %zu layers", total, r.attention_ms.size());
        ImGui::PlotHistogram("##attention_ms", r.attention_ms.data(), static_cast<int>(r.attention_ms.size()), 0,
                             "attention ms per layer", 0.f, FLT_MAX, ImVec2(-1, ImGui::GetFontSize() * 3));
    }

    if (step < static_cast<int64_t>(findings.size())) {
        const StepFindings& f = findings[static_cast<size_t>(step)];
        for (const WatchpointHit& hit : f.hits)
            ImGui::TextColored(ImVec4(1, 0.55f, 0.3f, 1), "watchpoint fired: value %.4g (L%dH%d)", hit.value, hit.layer, hit.head);
        if (f.loop)
            ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "loop alarm: \"%s\" repeats (%d heads copy)", f.loop->ngram_text.c_str(),
                               f.loop->copying_heads);
        if (f.change && !f.change->ranking.empty()) {
            ImGui::TextDisabled("focus moved most (JSD vs the previous step):");
            for (size_t rank = 0; rank < std::min<size_t>(8, f.change->ranking.size()); ++rank) {
                const HeadDiff& d = f.change->moved_most(rank);
                char label[64];
                std::snprintf(label, sizeof label, "L%dH%d  %.3f", d.layer, d.head, d.change.jsd_bits);
                if (ImGui::SmallButton(label)) {
                    model.select_layer(d.layer);
                    model.select_head(d.head);
                }
                ImGui::SameLine();
                if (ImGui::GetContentRegionAvail().x < ImGui::GetFontSize() * 7) ImGui::NewLine();
            }
            ImGui::NewLine();
        }
    }
}

}  // namespace attn::panels
