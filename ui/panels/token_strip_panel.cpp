#include "ui/panels/token_strip_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>

namespace attn::panels {

namespace {

// Lays out tokens [from, positions): from 0 after a width change, else appending to the last
// line (live decoding adds a token at a time).
void layout(const app::DebuggerModel& model, TokenStripState& state, float width, int64_t from) {
    const float pad = 2.f;
    float x = 0;
    TokenStripState::Line line;
    if (from == 0 || state.lines.empty()) {
        state.pieces.clear();
        state.lines.clear();
        from = 0;
    } else {
        line = state.lines.back();  // reopen the last line
        state.lines.pop_back();
        if (line.pieces > 0) {
            const TokenStripState::Piece& last = state.pieces[line.first_piece + line.pieces - 1];
            x = last.x + last.width;
        }
    }
    auto end_line = [&] {
        line.pieces = state.pieces.size() - line.first_piece;
        state.lines.push_back(line);
        line = {};
        line.first_piece = state.pieces.size();
        x = 0;
    };
    for (int64_t t = from; t < model.positions(); ++t) {
        const std::string raw = model.token_chars(t, false);
        // One piece per newline-separated segment; a newline ends the line.
        size_t start = 0;
        for (;;) {
            const size_t nl = raw.find('\n', start);
            std::string seg = raw.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
            for (char& c : seg)
                if (c == '\t' || c == '\r') c = ' ';
            if (seg.empty() && nl != std::string::npos) seg = "\xE2\x86\xB5";  // ↵ marks a bare newline token
            if (seg.empty() && raw.empty()) seg = "\xE2\x88\x85";
            if (!seg.empty()) {
                const float w = ImGui::CalcTextSize(seg.c_str()).x + pad;
                if (x > 0 && x + w > width) end_line();
                state.pieces.push_back({t, x, w, seg});
                x += w;
            }
            if (nl == std::string::npos) break;
            end_line();
            start = nl + 1;
        }
    }
    end_line();
    state.laid_out_width = width;
    state.laid_out_font = ImGui::GetFontSize();
    state.laid_out_tokens = model.positions();
}

}  // namespace

void draw_token_strip_panel(app::DebuggerModel& model, TokenStripState& state) {
    const float width = ImGui::GetContentRegionAvail().x - ImGui::GetStyle().ScrollbarSize;
    if (std::abs(width - state.laid_out_width) > 0.5f || state.laid_out_font != ImGui::GetFontSize() ||
        model.positions() < state.laid_out_tokens)
        layout(model, state, width, 0);
    else if (model.positions() > state.laid_out_tokens)
        layout(model, state, width, state.laid_out_tokens);
    float delta_peak = 0;
    for (float d : model.key_delta) delta_peak = std::max(delta_peak, std::fabs(d));

    const std::vector<float>& row = model.selected_row();
    const int64_t query = model.selected_query;
    float peak = 0;
    for (float p : row) peak = std::max(peak, p);

    ImGui::BeginChild("##token_strip_scroll", ImVec2(0, 0), false);
    const float line_h = ImGui::GetTextLineHeightWithSpacing();
    // Keep the selected query in view when it changes.
    if (query != state.scrolled_to) {
        state.scrolled_to = query;
        if (query >= 0)
            for (size_t l = 0; l < state.lines.size(); ++l) {
                const auto& line = state.lines[l];
                if (line.pieces && state.pieces[line.first_piece + line.pieces - 1].token >= query) {
                    ImGui::SetScrollY(std::max(0.f, l * line_h - ImGui::GetWindowHeight() / 2));
                    break;
                }
            }
    }
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImU32 text_col = ImGui::GetColorU32(ImGuiCol_Text);
    const ImU32 generated_col = IM_COL32(140, 200, 255, 255);
    const ImU32 masked_col = ImGui::GetColorU32(ImGuiCol_TextDisabled);
    int64_t hovered_token = -1;
    ImGuiListClipper clipper;
    clipper.Begin(static_cast<int>(state.lines.size()), line_h);
    while (clipper.Step()) {
        for (int l = clipper.DisplayStart; l < clipper.DisplayEnd; ++l) {
            const ImVec2 origin = ImGui::GetCursorScreenPos();
            const auto& line = state.lines[static_cast<size_t>(l)];
            for (size_t i = line.first_piece; i < line.first_piece + line.pieces; ++i) {
                const TokenStripState::Piece& piece = state.pieces[i];
                const ImVec2 a(origin.x + piece.x, origin.y), b(a.x + piece.width - 1, origin.y + line_h - 1);
                const bool visible_key = query >= 0 && piece.token <= query && static_cast<size_t>(piece.token) < row.size();
                if (visible_key && peak > 0) {
                    const float p = row[static_cast<size_t>(piece.token)];
                    const float strength = std::sqrt(p / peak);  // sqrt: small weights stay visible
                    if (strength > 0.02f) dl->AddRectFilled(a, b, IM_COL32(255, 140, 0, static_cast<int>(230 * strength)), 2);
                }
                if (delta_peak > 0 && static_cast<size_t>(piece.token) < model.key_delta.size()) {
                    // Diff: a bar under the token, red where the later step gained attention, blue where it lost.
                    const float d = model.key_delta[static_cast<size_t>(piece.token)];
                    const float t = std::sqrt(std::fabs(d) / delta_peak);
                    if (t > 0.05f)
                        dl->AddRectFilled(ImVec2(a.x, b.y - 3), b,
                                          d > 0 ? IM_COL32(220, 60, 50, static_cast<int>(80 + 175 * t))
                                                : IM_COL32(60, 120, 230, static_cast<int>(80 + 175 * t)));
                }
                if (model.hover.query >= 0 && piece.token == model.hover.key)
                    dl->AddRect(a, b, IM_COL32(255, 255, 255, 160), 2);
                if (piece.token == query) dl->AddRect(a, b, IM_COL32(255, 210, 80, 255), 2, 0, 2);
                ImU32 col = model.is_generated(piece.token) ? generated_col : text_col;
                if (query >= 0 && piece.token > query) col = masked_col;
                dl->AddText(ImVec2(a.x + 1, a.y), col, piece.text.c_str());
                if (ImGui::IsWindowHovered() && ImGui::IsMouseHoveringRect(a, b)) hovered_token = piece.token;
            }
            ImGui::Dummy(ImVec2(width, line_h));
        }
    }
    clipper.End();
    if (hovered_token >= 0) {
        ImGui::BeginTooltip();
        ImGui::Text("token %lld  %s%s", static_cast<long long>(hovered_token), model.token_display(hovered_token).c_str(),
                    model.is_generated(hovered_token) ? "  (generated)" : "");
        if (query >= 0 && hovered_token <= query && static_cast<size_t>(hovered_token) < row.size())
            ImGui::Text("attention from query %lld: p = %.6g", static_cast<long long>(query), row[static_cast<size_t>(hovered_token)]);
        ImGui::TextDisabled("click: select as the query row");
        ImGui::EndTooltip();
        if (ImGui::IsMouseClicked(ImGuiMouseButton_Left)) {
            model.select_query(hovered_token);
            state.scrolled_to = model.selected_query;  // it is on screen already: don't jump
        }
    }
    ImGui::EndChild();
}

}  // namespace attn::panels
