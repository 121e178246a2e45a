#include "ui/panels/diff_panel.h"

#include <imgui.h>

#include <algorithm>
#include <chrono>

namespace attn::panels {

namespace {

// The pair of queries compared: (earlier, later), or nothing when there is no pair yet.
std::optional<std::pair<int64_t, int64_t>> compared_queries(const app::DebuggerModel& model, DiffState& state) {
    const int64_t steps = model.steps();
    if (steps == 0) return std::nullopt;
    if (state.follow) {
        state.step_b = static_cast<int>(model.shown_step());
        state.step_a = state.step_b - 1;  // -1: the prompt's last position
    }
    state.step_a = std::clamp<int>(state.step_a, -1, static_cast<int>(steps - 1));
    state.step_b = std::clamp<int>(state.step_b, -1, static_cast<int>(steps - 1));
    if (state.step_a == state.step_b) return std::nullopt;
    const int64_t a = model.query_of(std::min(state.step_a, state.step_b));
    const int64_t b = model.query_of(std::max(state.step_a, state.step_b));
    return std::make_pair(a, b);
}

}  // namespace

void update_diff(app::DebuggerModel& model, DiffState& state, const std::vector<StepFindings>& findings) {
    if (state.pending.valid() && state.pending.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        try {
            state.result = state.pending.get();
        } catch (const std::exception&) {
            state.result.reset();
        }
    }
    const auto pair = state.enabled ? compared_queries(model, state) : std::nullopt;
    if (!pair) {
        model.key_delta.clear();
        model.delta_query = -1;
        return;
    }
    const auto [a, b] = *pair;
    const CaptureStore* store = model.session().capture.get();
    const bool stale = a != state.requested_a || b != state.requested_b || store != state.requested_store;
    const int64_t later_step = b - model.session().prompt_tokens;
    if (stale && b == a + 1 && later_step < static_cast<int64_t>(findings.size()) && findings[later_step].change &&
        findings[later_step].change->earlier_query == a && findings[later_step].change->later_query == b) {
        state.result = findings[later_step].change;  // the live run computed it with the step
        state.requested_a = a;
        state.requested_b = b;
        state.requested_store = store;
    } else if (stale && !state.pending.valid()) {
        // diff_steps reads only the capture from the session: the worker gets just that.
        auto snapshot = std::make_shared<Session>();
        snapshot->capture = model.session().capture;
        const CpuTileSource* source = &model.source();
        state.pending = std::async(std::launch::async, [snapshot, source, a = a, b = b] {
            return diff_steps(*source, *snapshot, a, b);
        });
        state.requested_a = a;
        state.requested_b = b;
        state.requested_store = store;
    }
    const int layer = model.settings.layer, head = model.settings.head;
    if (model.delta_query != b || state.delta_layer != layer || state.delta_head != head) {
        model.key_delta = key_deltas(model.source(), layer, head, a, b);
        model.delta_query = b;
        state.delta_layer = layer;
        state.delta_head = head;
    }
}

void draw_diff_panel(app::DebuggerModel& model, DiffState& state) {
    ImGui::Checkbox("diff", &state.enabled);
    ImGui::SameLine();
    ImGui::Checkbox("previous → shown", &state.follow);
    if (!state.follow) {
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5);
        ImGui::InputInt("A", &state.step_a);
        ImGui::SameLine();
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5);
        ImGui::InputInt("B", &state.step_b);
    }
    if (!state.enabled) return;
    if (model.steps() == 0) {
        ImGui::TextDisabled("no steps to compare yet");
        return;
    }
    ImGui::TextDisabled("step %d vs step %d (-1 = end of prompt)", std::min(state.step_a, state.step_b),
                        std::max(state.step_a, state.step_b));
    const bool current = state.result && state.result->earlier_query == state.requested_a &&
                         state.result->later_query == state.requested_b;
    if (!state.result) {
        ImGui::TextDisabled("computing…");
        return;
    }
    if (!current) ImGui::TextDisabled("updating…");
    const StepDiff& diff = *state.result;
    if (ImGui::BeginTable("moved", 5, ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp,
                          ImVec2(0, ImGui::GetFontSize() * 12))) {
        ImGui::TableSetupColumn("head");
        ImGui::TableSetupColumn("JSD");
        ImGui::TableSetupColumn("L1");
        ImGui::TableSetupColumn("new keys");
        ImGui::TableSetupColumn("");
        ImGui::TableHeadersRow();
        for (size_t r = 0; r < std::min<size_t>(diff.ranking.size(), 32); ++r) {
            const HeadDiff& d = diff.heads[diff.ranking[r]];
            ImGui::TableNextRow();
            ImGui::TableNextColumn();
            char label[32];
            std::snprintf(label, sizeof label, "L%dH%d", d.layer, d.head);
            const bool shown = d.layer == model.settings.layer && d.head == model.settings.head;
            if (ImGui::Selectable(label, shown, ImGuiSelectableFlags_SpanAllColumns)) {
                model.select_layer(d.layer);
                model.select_head(d.head);
            }
            ImGui::TableNextColumn();
            ImGui::Text("%.3f", d.change.jsd_bits);
            ImGui::TableNextColumn();
            ImGui::Text("%.3f", d.change.l1);
            ImGui::TableNextColumn();
            ImGui::Text("%.3f", d.change.new_key_mass);
            ImGui::TableNextColumn();
            ImGui::ProgressBar(static_cast<float>(d.change.jsd_bits), ImVec2(-1, 0), "");
        }
        ImGui::EndTable();
    }
    ImGui::TextColored(ImVec4(0.86f, 0.3f, 0.25f, 1), "gained");
    ImGui::SameLine();
    ImGui::TextColored(ImVec4(0.3f, 0.5f, 0.9f, 1), "lost");
    ImGui::SameLine();
    ImGui::TextDisabled("attention (shown head): band under the row in the map, token colours below");
}

}  // namespace attn::panels
