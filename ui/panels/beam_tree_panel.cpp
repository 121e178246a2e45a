#include "ui/panels/beam_tree_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/pii.h"

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

namespace {

// Raw bytes of each token id in `ids`: from the live tokenizer, else from where the session text
// (or a step record) has it. One pass over the session, not one per node.
std::unordered_map<int32_t, std::string> raw_token_bytes(const app::DebuggerModel& model, const std::vector<int32_t>& ids) {
    std::unordered_map<int32_t, std::string> bytes;
    if (model.tokenizer) {
        for (int32_t id : ids)
            if (id >= 0 && id < model.tokenizer->vocab_size()) bytes.emplace(id, model.tokenizer->token_bytes(id));
        return bytes;
    }
    std::unordered_set<int32_t> wanted(ids.begin(), ids.end());
    const Session& s = model.session();
    for (const Token& t : s.tokens)
        if (wanted.count(t.id) && t.end > t.begin && t.end <= s.text.size())
            bytes.try_emplace(t.id, s.text.substr(t.begin, t.end - t.begin));
    for (const StepRecord& step : s.steps)
        if (wanted.count(step.token_id)) bytes.try_emplace(step.token_id, step.text);
    return bytes;
}

// Bytes of prompt before the hypotheses that find_pii sees with each of them: enough for any
// address or number that starts in the prompt and ends in a hypothesis (the prompt's own personal
// data is the text view's, model.pii_spans()).
constexpr size_t kPromptContextBytes = 256;

}  // namespace

std::vector<std::string> beam_node_labels(const app::DebuggerModel& model) {
    const Session& s = model.session();
    const BeamTree& tree = s.beam_tree;
    std::vector<int32_t> ids;
    for (const BeamNode& n : tree.nodes) ids.push_back(n.token_id);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::unordered_map<int32_t, std::string> shown;
    for (int32_t id : ids) shown.emplace(id, model.vocab_text(id));
    std::vector<std::string> labels(tree.nodes.size());
    for (size_t i = 0; i < tree.nodes.size(); ++i) labels[i] = shown[tree.nodes[i].token_id];
    if (!model.mask_pii || tree.empty()) return labels;

    // The prompt's tail, from a token boundary.
    size_t context_begin = 0, prompt_end = 0;
    if (s.prompt_tokens > 0 && s.prompt_tokens <= static_cast<int64_t>(s.tokens.size())) {
        prompt_end = std::min<size_t>(s.tokens[static_cast<size_t>(s.prompt_tokens - 1)].end, s.text.size());
        for (int64_t p = s.prompt_tokens - 1; p >= 0; --p) {
            context_begin = std::min<size_t>(s.tokens[static_cast<size_t>(p)].begin, prompt_end);
            if (prompt_end - context_begin >= kPromptContextBytes) break;
        }
    }
    const std::string context = s.text.substr(context_begin, prompt_end - context_begin);
    const std::unordered_map<int32_t, std::string> raw = raw_token_bytes(model, ids);
    std::vector<uint8_t> has_child(tree.nodes.size(), 0), masked(tree.nodes.size(), 0);
    for (const BeamNode& n : tree.nodes)
        if (n.parent >= 0) has_child[static_cast<size_t>(n.parent)] = 1;
    for (size_t leaf = 0; leaf < tree.nodes.size(); ++leaf) {
        if (has_child[leaf]) continue;
        const std::vector<int32_t> path = tree.lineage(static_cast<int32_t>(leaf));
        std::string text = context;
        std::vector<std::pair<size_t, size_t>> bytes;  // each path node's bytes in `text`
        for (int32_t node : path) {
            const size_t begin = text.size();
            if (const auto it = raw.find(tree.nodes[static_cast<size_t>(node)].token_id); it != raw.end()) text += it->second;
            bytes.emplace_back(begin, text.size());
        }
        const std::vector<PiiSpan> spans = find_pii(text);
        for (size_t k = 0; k < path.size(); ++k)
            for (const PiiSpan& span : spans)
                if (bytes[k].first < span.end && span.begin < bytes[k].second) masked[static_cast<size_t>(path[k])] = 1;
    }
    for (size_t i = 0; i < labels.size(); ++i)
        if (masked[i]) labels[i] = "●●●●";
    return labels;
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

    // The labels change only when the tree grows or masking is switched.
    static struct {
        const Session* session = nullptr;
        size_t nodes = 0;
        bool masked = false;
        std::vector<std::string> labels;
    } cache;
    if (cache.session != &model.session() || cache.nodes != tree.nodes.size() || cache.masked != model.mask_pii) {
        cache.labels = beam_node_labels(model);
        cache.session = &model.session();
        cache.nodes = tree.nodes.size();
        cache.masked = model.mask_pii;
    }
    const std::vector<std::string>& labels = cache.labels;

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
        draw->AddText(ImVec2(c.x + radius * 1.5f, c.y - unit * 0.5f), on_followed[i] ? bright : IM_COL32(200, 205, 215, 255),
                      labels[i].substr(0, 12).c_str());
        if (canvas_hovered && std::hypot(mouse.x - c.x, mouse.y - c.y) < radius * 2.5f) hovered = static_cast<int32_t>(i);
    }
    if (hovered >= 0) {
        const BeamNode& n = tree.nodes[hovered];
        ImGui::BeginTooltip();
        ImGui::Text("step %d, beam slot %d: \"%s\" (id %d)", n.step, n.slot, labels[static_cast<size_t>(hovered)].c_str(),
                    n.token_id);
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
