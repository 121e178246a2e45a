#include "ui/panels/session_info_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>

namespace attn::panels {

void draw_session_info_panel(app::DebuggerModel& model, const SessionInfoExtras& extras) {
    const Session& s = model.session();
    const CaptureShape& shape = s.capture->shape();
    const std::string name = s.identity.name.empty() ? s.config.arch_name : s.identity.name;
    ImGui::TextWrapped("model: %s", name.empty() ? "(unnamed)" : name.c_str());
    ImGui::TextDisabled("%s  %d layers  %d heads (%d kv)  head dim %d%s", s.config.arch_name.c_str(), shape.n_layer,
                        shape.n_head, shape.n_kv_head, shape.head_dim,
                        shape.sliding_window ? "  sliding window" : "");
    ImGui::Text("positions %lld  (prompt %lld, generated %zu)", static_cast<long long>(model.positions()),
                static_cast<long long>(s.prompt_tokens), s.steps.size());
    if (!s.steps.empty()) {
        const SamplingSettings& sp = s.sampling;
        if (sp.greedy) ImGui::TextDisabled("sampling: greedy%s", sp.beams > 1 ? ", beams" : "");
        else ImGui::TextDisabled("sampling: T=%.2f top-k %d top-p %.2f seed %llu", sp.temperature, sp.top_k, sp.top_p,
                                 static_cast<unsigned long long>(sp.seed));
        ImGui::TextDisabled("sequence log-prob %.3f", s.steps.back().cumulative_logprob);
    }
    if (s.recovered_incomplete) ImGui::TextColored(ImVec4(1, 0.6f, 0.3f, 1), "recovered from an incomplete file");
    ImGui::TextDisabled("source: %s", extras.source.c_str());

    ImGui::Separator();
    const int64_t q = model.selected_query;
    if (q < 0) {
        ImGui::TextDisabled("no query selected (click a map row or a token)");
    } else if (const StepRecord* step = model.step_of(q)) {
        const int64_t t = q - s.prompt_tokens;
        ImGui::Text("query %lld = step %lld: %s", static_cast<long long>(q), static_cast<long long>(t),
                    model.token_display(q).c_str());
        ImGui::Text("log p %.4f  (p = %.4f)   cumulative %.3f", step->logprob, std::exp(step->logprob), step->cumulative_logprob);
        ImGui::TextDisabled("kv length %lld%s  beam %d", static_cast<long long>(step->kv_length),
                            step->evicted ? "  (evicted entries)" : "", step->beam_id);
        if (!step->top.empty() && ImGui::BeginTable("##alternatives", 3, ImGuiTableFlags_RowBg | ImGuiTableFlags_SizingStretchProp)) {
            ImGui::TableSetupColumn("alternative");
            ImGui::TableSetupColumn("p");
            ImGui::TableSetupColumn("");
            ImGui::TableHeadersRow();
            for (const TokenAlternative& alt : step->top) {
                ImGui::TableNextRow();
                ImGui::TableNextColumn();
                const bool chosen = alt.id == step->token_id;
                const std::string text = model.alternative_text(q, alt.id);
                if (chosen) ImGui::TextColored(ImVec4(1, 0.82f, 0.3f, 1), "%s", text.c_str());
                else ImGui::TextUnformatted(text.c_str());
                ImGui::TableNextColumn();
                ImGui::Text("%.4f", alt.prob);
                ImGui::TableNextColumn();
                ImGui::ProgressBar(std::clamp(alt.prob, 0.f, 1.f), ImVec2(-1, ImGui::GetFontSize() * 0.6f), "");
            }
            ImGui::EndTable();
        }
    } else {
        ImGui::Text("query %lld (prompt): %s", static_cast<long long>(q), model.token_display(q).c_str());
        ImGui::TextDisabled("prompt positions have no sampling record");
    }

    ImGui::Separator();
    ImGui::TextDisabled("%s", extras.device.c_str());
    ImGui::TextDisabled("frame %.1f ms  level %d  tiles %d/%d exact", extras.frame_ms, extras.level, extras.exact_tiles,
                        extras.visible_tiles);
    ImGui::TextDisabled("cache %zu tiles, %.1f MiB", extras.cache_tiles, extras.cache_bytes / 1048576.0);
    if (extras.validation)
        ImGui::TextDisabled("validation on: %zu error(s)", extras.validation_errors);
    ImGui::TextDisabled("fonts: %s", extras.fonts.c_str());
}

}  // namespace attn::panels
