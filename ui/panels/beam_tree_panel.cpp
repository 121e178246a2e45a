#include "ui/panels/beam_tree_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <vector>

namespace attn::panels {

int32_t beam_node_followed(const Session& session) {
    const BeamTree& tree = session.beam_tree;
    int32_t at = -1;
    for (const BeamNode& n : tree.nodes) {  // parents come before their children, steps ascending
        const int32_t index = static_cast<int32_t>(&n - tree.nodes.data());
        if (n.parent == at && n.step < static_cast<int32_t>(session.steps.size()) &&
            session.steps[n.step].token_id == n.token_id)
            at = index;
    }
    return at;
}

void draw_beam_tree_panel(const app::DebuggerModel& model, int32_t followed, const BeamTreeActions& actions) {
    const BeamTree& tree = model.session().beam_tree;
    if (tree.empty()) {
        ImGui::TextDisabled("no beam search in this session (decode with beams > 1)");
        return;
    }
    int32_t steps = 0;
    for (const BeamNode& n : tree.nodes) steps = std::max(steps, n.step + 1);
    ImGui::TextDisabled("%d beams, %zu hypotheses kept over %d steps, %zu final", tree.beams, tree.nodes.size(), steps,
                        tree.finals.size());

    // Which nodes are on the followed and on the best hypothesis, and which are finals.
    std::vector<uint8_t> on_followed(tree.nodes.size(), 0), on_best(tree.nodes.size(), 0), is_final(tree.nodes.size(), 0);
    if (followed >= 0 && followed < static_cast<int32_t>(tree.nodes.size()))
        for (int32_t n : tree.lineage(followed)) on_followed[n] = 1;
    if (tree.best >= 0)
        for (int32_t n : tree.lineage(tree.best)) on_best[n] = 1;
    for (int32_t f : tree.finals) is_final[f] = 1;

    const float unit = ImGui::GetFontSize();
    const float column = unit * 4.5f, row = unit * 1.6f, radius = unit * 0.3f;
    const ImVec2 canvas_size(std::max(ImGui::GetContentRegionAvail().x, column * (steps + 1)),
                             row * static_cast<float>(tree.beams + 1));
    ImGui::BeginChild("##beamtree", ImVec2(0, std::min(canvas_size.y + unit, unit * 14)), false,
                      ImGuiWindowFlags_HorizontalScrollbar);
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("##beamcanvas", canvas_size);
    const bool canvas_hovered = ImGui::IsItemHovered();
    ImDrawList* draw = ImGui::GetWindowDrawList();
    auto centre = [&](const BeamNode& n) {
        return ImVec2(origin.x + column * (static_cast<float>(n.step) + 0.5f), origin.y + row * (static_cast<float>(n.slot) + 0.7f));
    };
    const ImU32 dim = IM_COL32(120, 130, 150, 160), bright = IM_COL32(255, 200, 90, 255), best = IM_COL32(120, 200, 255, 255);
    // Edges first, then nodes over them.
    for (size_t i = 0; i < tree.nodes.size(); ++i) {
        const BeamNode& n = tree.nodes[i];
        if (n.parent < 0) continue;
        const ImU32 colour = on_followed[i] ? bright : on_best[i] ? best : dim;
        draw->AddLine(centre(tree.nodes[n.parent]), centre(n), colour, on_followed[i] || on_best[i] ? 2.5f : 1.f);
    }
    int32_t hovered = -1;
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    for (size_t i = 0; i < tree.nodes.size(); ++i) {
        const BeamNode& n = tree.nodes[i];
        const ImVec2 c = centre(n);
        const ImU32 colour = on_followed[i] ? bright : on_best[i] ? best : dim;
        if (is_final[i]) draw->AddRect(ImVec2(c.x - radius, c.y - radius), ImVec2(c.x + radius, c.y + radius), colour, 0, 0, 2.f);
        else draw->AddCircleFilled(c, radius, colour);
        const std::string label = model.vocab_text(n.token_id);
        draw->AddText(ImVec2(c.x + radius * 1.5f, c.y - unit * 0.5f), on_followed[i] ? bright : IM_COL32(200, 205, 215, 255),
                      label.substr(0, 10).c_str());
        if (canvas_hovered && std::hypot(mouse.x - c.x, mouse.y - c.y) < radius * 2.5f) hovered = static_cast<int32_t>(i);
    }
    if (hovered >= 0) {
        const BeamNode& n = tree.nodes[hovered];
        ImGui::BeginTooltip();
        ImGui::Text("step %d, beam slot %d: \"%s\" (id %d)", n.step, n.slot, model.vocab_text(n.token_id).c_str(), n.token_id);
        ImGui::Text("log-probability %.3f, per token %.3f%s", n.score, tree.normalised_score(hovered),
                    n.finished ? ", ended (end of sequence)" : "");
        if (hovered == tree.best) ImGui::TextColored(ImVec4(0.5f, 0.8f, 1, 1), "the best final hypothesis");
        if (actions.follow) ImGui::TextDisabled("click: follow this hypothesis");
        ImGui::EndTooltip();
        if (actions.follow && ImGui::IsMouseClicked(ImGuiMouseButton_Left)) actions.follow(hovered);
    }
    ImGui::EndChild();
}

}  // namespace attn::panels
