#pragma once
// Token strip: the session's text, token by token, each token's background showing how much
// attention the selected query row gives it (for the shown layer and head). Generated tokens are
// tinted, the selected query is outlined, keys after it (masked) are dimmed. Hover a token for its
// probability; click it to select it as the query row. Lines are laid out once per width and drawn
// with a clipper, so 50k tokens scroll smoothly.
#include <cstdint>
#include <string>
#include <vector>

#include "ui/app/debugger_model.h"

namespace attn::panels {

struct TokenStripState {
    struct Piece {
        int64_t token;
        float x, width;
        std::string text;  // display text (one line)
    };
    struct Line {
        size_t first_piece = 0, pieces = 0;
    };
    std::vector<Piece> pieces;
    std::vector<Line> lines;
    float laid_out_width = -1, laid_out_font = -1;
    int64_t laid_out_tokens = 0;
    int64_t scrolled_to = -2;  // last selection scrolled into view
};

void draw_token_strip_panel(app::DebuggerModel& model, TokenStripState& state);

}  // namespace attn::panels
