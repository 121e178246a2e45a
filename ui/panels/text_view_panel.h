#pragma once
// Text view (issue 6, "Text"): the session's original text (prompt and output) laid out from the
// token spans, byte-exact, at a granularity — token, word, phrase, sentence or paragraph
// (engine/text_segments.h). Hovering a segment (or clicking it: it stays) highlights in the text
// itself what it attends to (orange background) and what attends to it (blue bar under the text),
// computed exactly from P by span sums for an explicit head set: the shown head, a label group
// (automatic or user labels from the fingerprints), or the mean over a chosen set — the panel
// always names the set; nothing ever averages over all heads unless the user chose them all.
//
// Values shown. Token level: the mean over the heads of P[hovered][key] (attends to) and of
// P[query][hovered] (attended by). Word, sentence, paragraph: the share of the hovered segment's
// attention that goes to each segment (mass / its query tokens), and the share of each segment's
// attention that goes to the hovered one. Phrase: sliding windows of `phrase_size` words with
// uniform or triangular weights (phrase_windows); the hovered phrase is the window centred on the
// hovered word, and each word shows the value of the window centred on it (the window matrix's
// row and column, computed exactly from the rows and columns of the window's words).
//
// Rendering: every character is drawn once, in the segment holding its first byte. A token that
// holds only the tail of a multi-byte character (a partial token) is a "+" marker where it starts;
// special tokens and tokens without bytes (an added BOS) are boxed markers with their token text.
// Characters the font has no glyph for (emoji and other code points above U+FFFF: Debian's ImGui
// uses 16-bit characters; CJK outside Noto's common set) are drawn as a box with their code point,
// and invalid UTF-8 bytes as a box with the byte — never silently as '?'.
//
// Everything heavy runs on workers (segmentation, hover rows/columns, the full matrix for exports);
// a frame only lays out and draws what is there.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/syntax.h"
#include "engine/text_segments.h"
#include "ui/app/debugger_model.h"
#include "ui/panels/async_value.h"
#include "ui/panels/fingerprints_panel.h"

namespace attn::panels {

// ---- head sets ---------------------------------------------------------------------------------

struct HeadSetChoice {
    enum class Mode { Selected, Label, Set };
    Mode mode = Mode::Selected;
    std::string label;          // Mode::Label
    std::vector<HeadRef> set;   // Mode::Set: the mean over these
};
struct ResolvedHeads {
    std::vector<HeadRef> heads;
    std::string description;  // what the panel shows: which heads, and why
    std::string waiting;      // non-empty: no heads yet (fingerprints computing, empty set, …) and why
};
ResolvedHeads resolve_heads(const HeadSetChoice& choice, const app::DebuggerModel& model, const FingerprintsState& fingerprints,
                            const std::vector<HeadLabel>& labels);
// Script form: "selected" | "label NAME" | "set L:H [L:H …]" | "layer L" (a set of the layer's heads).
void parse_head_set(const std::vector<std::string>& words, const CaptureShape& shape, HeadSetChoice& choice);
void draw_head_set_picker(const char* id, HeadSetChoice& choice, const app::DebuggerModel& model,
                          const FingerprintsState& fingerprints, const std::vector<HeadLabel>& labels);

// A copy of what the workers read of the session (text, tokens, the shared capture), so a live
// run can append to the view's session meanwhile.
std::shared_ptr<const Session> session_snapshot(const Session& session);

// ---- segments and span matrices on workers (shared with the sentence graph) ---------------------

struct SegmentsKey {
    const CaptureStore* store = nullptr;
    int64_t tokens = -1;
    size_t text_bytes = 0;
    Granularity level = Granularity::Word;  // Phrase is segmented as words
    bool operator==(const SegmentsKey&) const = default;
};
struct SegmentsResult {
    std::shared_ptr<const Session> snapshot;
    std::shared_ptr<const std::vector<Segment>> segments;
};
SegmentsKey segments_key(const app::DebuggerModel& model, Granularity level);
SegmentsResult compute_segments(std::shared_ptr<const Session> snapshot, Granularity level);

struct MatrixKey {
    SegmentsKey segments;
    int64_t captured = 0;
    std::vector<HeadRef> heads;
    int phrase_size = 0;  // phrase level only
    WindowWeighting weighting = WindowWeighting::Uniform;
    bool operator==(const MatrixKey&) const = default;
};
struct MatrixResult {
    SpanMatrix matrix;  // segments × segments (phrase: windows × windows)
    std::vector<PhraseWindow> windows;
};

// ---- the text view ------------------------------------------------------------------------------

struct TextViewState {
    Granularity level = Granularity::Word;
    int phrase_size = 5;
    WindowWeighting weighting = WindowWeighting::Uniform;
    HeadSetChoice heads;
    enum class Show { Both, AttendsTo, AttendedBy } show = Show::Both;

    AsyncValue<SegmentsKey, SegmentsResult> segments;

    struct HoverKey {
        MatrixKey matrix;
        int64_t segment = -1;
        bool operator==(const HoverKey&) const = default;
    };
    struct HoverResult {
        std::vector<double> to, by;  // per display segment (see the header comment)
        bool from_matrix = false;
        double compute_ms = 0;       // on the worker (or from the matrix)
    };
    AsyncValue<HoverKey, HoverResult> hover;
    AsyncValue<MatrixKey, MatrixResult> matrix;
    bool matrix_wanted = false;  // exports, or a session small enough to compute it anyway

    int64_t pinned = -1;        // clicked (or a script's text_hover); -1: none
    int64_t mouse_segment = -1;  // under the mouse this frame
    bool scroll_to_pinned = false;
    bool pinned_by_script = false;  // a script's pin wins over a mouse that has not moved since
    int boxes = 0, markers = 0;
    double layout_ms = 0;           // the last layout (on the UI thread, once per width, font or segmentation)     // pieces drawn as boxes (no glyph, invalid byte) and markers (special, partial)
    double hover_latency_ms = 0;  // from the hover changing to its highlight being there

    // Layout (redone when the width, the font or the segments change).
    struct Piece {
        int64_t segment = 0;
        float x = 0, width = 0;
        std::string text;
        uint32_t begin = 0, end = 0;  // the text's bytes the piece stands for (ontology and violation marks)
        uint8_t kind = 0;  // 0 text, 1 marker (special / partial token), 2 box (no glyph, invalid byte),
                           // 3 masked personal data ("●●●● [TYPE]")
    };
    struct Line {
        size_t first = 0, count = 0;
    };
    std::vector<Piece> pieces;
    std::vector<Line> lines;
    std::vector<int32_t> segment_line;  // first line of each segment
    float laid_width = -1, laid_font = -1;
    bool laid_masked = false;  // the layout drew personal data masked
    unsigned long long laid_version = ~0ull;
    // Where segments were drawn this frame (framebuffer pixels): the first visible piece of each.
    std::unordered_map<int64_t, std::array<float, 4>> drawn;

    // Exports.
    char export_base[512] = "attnscope-text";
    bool export_shares = false;  // row-normalised shares instead of raw mass
    std::string export_note;
    std::vector<std::string> pending_exports;  // matrix exports waiting for the matrix
    std::optional<std::string> png_request;    // the window takes it (screenshot of the view)

    // Issue 7, word pairs: the link-grammar parse (on a worker, at word level) for the relation between
    // a query word and a key word, and the key word a script put next to the pinned query word.
    struct SyntaxKey {
        const CaptureStore* store = nullptr;
        int64_t tokens = -1;
        size_t text_bytes = 0;
        bool operator==(const SyntaxKey&) const = default;
    };
    AsyncValue<SyntaxKey, std::shared_ptr<const SyntaxAnalysis>> syntax;
    int64_t pair_key = -1;  // `text_pair Q K`: word K considered as the key of the pinned word (-1: none)

    // Hover timing.
    HoverKey timing_key;
    std::chrono::steady_clock::time_point timing_start{};
    bool timing = false;
};

// Keeps the segments, the hover and (when wanted) the matrix current; wait: block until they are.
void update_text_view(const app::DebuggerModel& model, TextViewState& state, const FingerprintsState& fingerprints,
                      const std::vector<HeadLabel>& labels, bool wait = false);
bool text_view_settled(const app::DebuggerModel& model, const TextViewState& state, const FingerprintsState& fingerprints,
                       const std::vector<HeadLabel>& labels);
void draw_text_view_panel(app::DebuggerModel& model, TextViewState& state, const FingerprintsState& fingerprints,
                          const std::vector<HeadLabel>& labels);
// The current matrix (blocking until it is there), written by the path's extension: .csv, .npy, .json.
void export_text_matrix(const app::DebuggerModel& model, TextViewState& state, const FingerprintsState& fingerprints,
                        const std::vector<HeadLabel>& labels, const std::string& path);
// The segment table at the current level (token level: the token table) with byte spans: .csv or .json.
void export_text_segments(const app::DebuggerModel& model, TextViewState& state, const std::string& path);
// What the view shows, for `state` lines: level, head set, hovered segment, top attended segments, …
nlohmann::json text_view_json(const app::DebuggerModel& model, const TextViewState& state, const FingerprintsState& fingerprints,
                              const std::vector<HeadLabel>& labels);

// Two words of the word level, the later one the query: the raw probability mass between them (mean
// over the view's heads of Σ_{q ∈ query tokens} Σ_{k ∈ key tokens} P, exact) and, for English, the
// link-grammar relation and both words' parts of speech (relation_between_tokens), or why there is none.
struct WordPair {
    int64_t query_segment = -1, key_segment = -1;
    std::string query_text, key_text;  // as displayed (personal data masked)
    double mass = 0;                   // mean over the heads
    size_t heads = 0;
    bool parsed = false;               // the syntax analysis was there
    std::string relation;              // the tooltip line: "subject–verb (Ss): cat [noun] – sat [verb]", "not linked", "no parser …"
    std::string status;                // "linked", "not_linked", "no_parser", "no_word", "parsing"
    std::string query_pos, key_pos;    // parts of speech ("" when unknown)
    std::vector<std::string> relations;  // each link's readable relation
};
std::optional<WordPair> word_pair(const app::DebuggerModel& model, const TextViewState& state, const std::vector<HeadRef>& heads,
                                  int64_t a, int64_t b);
nlohmann::json word_pair_json(const WordPair& pair);

// The text of a segment for tooltips and state lines (at most max_bytes, cut at a character), as
// displayed: personal data masked when the model's masking is on (DebuggerModel::display_range).
std::string segment_text(const app::DebuggerModel& model, const Segment& segment, size_t max_bytes = 80);
// The same on one line for ImGui labels and tooltips: line breaks and tabs as spaces, leading
// whitespace dropped, characters the 16-bit ImGui cannot draw (above U+FFFF) as "U+XXXXX".
std::string one_line(const std::string& text);

}  // namespace attn::panels
