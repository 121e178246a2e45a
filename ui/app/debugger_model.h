#pragma once
// The debugger's state, shared by the map view and the panels. It knows nothing of ImGui or
// Vulkan (Tracy style: panels are immediate-mode draw() functions over this model), so it can be
// unit-tested and driven by scripts.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/pii.h"
#include "engine/session.h"
#include "engine/text_segments.h"  // HeadRef
#include "engine/tile_source.h"
#include "ui/render/attention_map_renderer.h"
#include "ui/view/headless.h"

namespace attn {
struct SigningKey;  // engine/signing.h
}

namespace attn::app {

class DebuggerModel {
public:
    DebuggerModel(const Session& session, const CpuTileSource& source);
    // Live decoding replaced the session (restart, another branch): same settings, new data.
    void rebind(const Session& session, const CpuTileSource& source);

    const Session& session() const { return *session_; }
    const CpuTileSource& source() const { return *source_; }
    int n_layer() const { return session_->capture->shape().n_layer; }
    int n_head() const { return session_->capture->shape().n_head; }
    // Positions with both a token and a complete capture (live, the capture runs ahead by a step).
    int64_t positions() const {
        return std::min<int64_t>(session_->capture->positions(), static_cast<int64_t>(session_->tokens.size()));
    }
    int64_t steps() const;  // decode steps whose position is in positions()

    // ---- timeline: the step every view shows (-1: the latest, following a live run) ----
    int64_t current_step = -1;
    int64_t shown_step() const;           // the step shown, -1 when there are none
    int64_t shown_positions() const;      // the matrix as it was at the shown step
    int64_t query_of(int64_t step) const { return session_->prompt_tokens + step; }
    void show_step(int64_t step);         // also selects that step's query row

    // ---- diff overlay: per key, attention gained (> 0) or lost (< 0) between two steps, for the
    // shown head; the token strip and the map draw it with the diverging colormap ----
    std::vector<float> key_delta;
    int64_t delta_query = -1;             // the later query the delta belongs to

    // Exports (ui/app/export_record.h): the session's file for their provenance ("" when none), and
    // the key that signs them (view --key), if any.
    std::string session_file;
    const SigningKey* export_key = nullptr;

    // Live: the model's tokenizer, for the text of any token id (a reopened session has none).
    const Tokenizer* tokenizer = nullptr;

    // The token's text as stored, and a one-line display form (spaces as '·', newlines as '↵').
    std::string token(int64_t position) const;
    std::string token_display(int64_t position, size_t max_bytes = 48) const;
    // The characters to show for a token: its text, or — when it splits a multi-byte character —
    // the whole characters that start inside it ("+" for a token holding only a character's tail,
    // followed by that character when mark_continuation).
    std::string token_chars(int64_t position, bool mark_continuation) const;
    // ---- personal data (issue 7): every display of session text goes through these, so that with
    // masking on (the default: privacy_defaults()) personal data shows as "●●●● [TYPE]" in every
    // panel, tooltip, state line and export, while the model still sees the original text ----
    bool mask_pii = privacy_defaults().mask_pii;
    // The session text's personal data (find_pii), recomputed when the text grows or changes.
    const std::vector<PiiSpan>& pii_spans() const;
    // The span a token overlaps, or -1 (also -1 with masking off).
    int masked_span(int64_t position) const;
    bool token_masked(int64_t position) const { return masked_span(position) >= 0; }
    // Bytes [begin, end) of the session text as displayed (masked when on).
    std::string display_range(size_t begin, size_t end) const;
    // The raw token text (view::token_text) as displayed: for hover lines and exports.
    std::string display_token(int64_t position) const;
    // An alternative the sampler offered at `position`: "●●●●" when the token written there is
    // personal data (its alternatives are pieces of the same number or address), else vocab_text.
    std::string alternative_text(int64_t position, int32_t token_id) const;

    bool is_generated(int64_t position) const;               // a decode step, not the prompt
    const StepRecord* step_of(int64_t position) const;       // nullptr for prompt positions
    std::string vocab_text(int32_t token_id) const;          // from the session's own tokens, else "#id"

    // What the map shows.
    render::RenderSettings settings;
    int64_t selected_query = -1;      // the row clicked (or chosen with go-to); -1: none
    view::HoverInfo hover;            // under the mouse in the map (hover.query < 0: nothing)

    // Rule violations for the views to mark red (issue 7), filled each frame by the window from the
    // rules panel: the violated steps, the offending heads, the offending query spans (bytes), and
    // the pulse strength (1 just after a new violation, fading to a steady 0.35; 0: none).
    struct Alerts {
        std::vector<int64_t> steps;
        std::vector<HeadRef> heads;
        std::vector<std::pair<uint32_t, uint32_t>> spans;
        float pulse = 0;
        bool step(int64_t s) const { return std::find(steps.begin(), steps.end(), s) != steps.end(); }
        bool head(int layer, int h) const {
            return std::any_of(heads.begin(), heads.end(), [&](const HeadRef& r) { return r.layer == layer && r.head == h; });
        }
    };
    Alerts alerts;
    // Ontology matches the text view labels (bytes, the type's name and index).
    struct EntityMark {
        uint32_t begin = 0, end = 0;
        int type = 0;
        std::string label;
        std::string anomaly;  // "" or why the ontology check flagged a pair this span is in ("LOW id_number → overdue 0.001")
    };
    std::vector<EntityMark> entity_marks;

    // Requests from panels to the map view, consumed once per frame.
    std::optional<int64_t> goto_token;
    bool fit_requested = false;

    void select_layer(int layer);
    void select_head(int head);
    void select_query(int64_t query);

    // Exact probabilities of the selected query's row for the shown (layer, head); empty with no
    // selection. Recomputed only when the selection or the head changes.
    const std::vector<float>& selected_row();
    // Same for any (layer, head) — the head grid uses it.
    std::vector<float> row(int layer, int head, int64_t query) const { return source_->row(layer, head, query); }

private:
    const Session* session_;
    const CpuTileSource* source_;
    std::vector<float> row_cache_;
    int64_t row_query_ = -1;
    int row_layer_ = -1, row_head_ = -1;
    // find_pii of the session text, for the text it was computed from.
    mutable std::vector<PiiSpan> pii_;
    mutable std::vector<int> token_pii_;
    mutable const Session* pii_session_ = nullptr;
    mutable size_t pii_bytes_ = ~size_t(0), pii_tokens_ = 0;
};

// Shannon entropy of a probability row, in bits.
double entropy_bits(const std::vector<float>& row);

}  // namespace attn::app
