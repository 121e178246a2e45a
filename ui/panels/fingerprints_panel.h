#pragma once
// Heads table (issue 6, "Fingerprints"): every (layer, head)'s fingerprint (engine/head_fingerprints.h)
// in a sortable table with colour-coded cells, its automatic and user labels, a label filter (the
// head grid dims the heads it leaves out) and adding/removing user labels.
//
// The fingerprints are computed on a worker over the session's captured rows (sampled beyond 512
// rows per head, as the engine does); when the capture grows (a live run's decode steps) the new
// rows are folded in on the worker (HeadFingerprints::fold_in) instead of recomputing. The table
// keeps the last finished fingerprints on screen meanwhile.
//
// User labels live in the view's label list (the Debugger's, copied into the session the window
// shows; "save" writes that session with them). In live mode they stay in the view: the runner's
// recording does not get them.
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/head_fingerprints.h"
#include "engine/syntax.h"
#include "ui/panels/async_value.h"
#include "ui/app/debugger_model.h"

namespace attn::panels {

enum class FingerprintColumn {
    Head,  // layer, then head
    Entropy,
    NormalizedEntropy,
    Sink,
    PreviousToken,
    Induction,
    Local,
    Distance,
    Keys90,
    Positional,
    Syntax,  // issue 7: share of the head's attention on syntactically linked word pairs (engine/syntax.h)
    Labels,
};
const char* fingerprint_column_name(FingerprintColumn column);  // "head", "entropy", "sink", ...
std::optional<FingerprintColumn> parse_fingerprint_column(const std::string& name);

struct FingerprintsState {
    // ---- the fingerprints (worker) ----
    struct Result {
        std::shared_ptr<HeadFingerprints> accumulator;  // for fold_in
        std::vector<HeadFingerprint> table;             // accumulator->all(), layer-major
        double ms = 0;                                  // the computation (or fold-in) took
    };
    const CaptureStore* store = nullptr;  // what `result` was computed from
    int64_t covered = 0;                  // positions folded in
    std::optional<Result> result;
    std::future<Result> pending;
    const CaptureStore* pending_store = nullptr;
    int64_t pending_positions = 0;
    double last_ms = 0;                   // the last computation or fold-in
    bool last_was_fold = false;
    std::string note;                     // why the last one failed
    uint64_t version = 0;                 // bumped when `result` changes

    // ---- the table ----
    FingerprintColumn sort = FingerprintColumn::Head;
    bool ascending = true;
    bool sort_from_script = false;  // apply `sort` to the ImGui table's header on the next frame
    std::string filter;             // a label (automatic or user); empty: every head
    int selected = -1;              // layer * n_head + head of the row clicked

    // ---- syntactic shares (issue 7): link-grammar parse and per-head shares on a worker, while
    // the table is shown (parsing is slow: link-grammar, one sentence at a time) ----
    struct SyntaxKey {
        const CaptureStore* store = nullptr;
        int64_t positions = 0;
        size_t text_bytes = 0;
        bool operator==(const SyntaxKey&) const = default;
    };
    struct SyntaxShares {
        int n_head = 0;
        std::vector<SyntaxHeadShare> heads;  // layer-major, every head
        std::string note;                     // the analysis' note ("no parser for this language …") when nothing parsed
        int64_t links = 0;
    };
    AsyncValue<SyntaxKey, std::shared_ptr<const SyntaxShares>> syntax;
    bool syntax_wanted = false;
    char new_label[64] = {};
    std::string label_note;
};

const std::vector<HeadFingerprint>* fingerprints_of(const FingerprintsState& state);
// Keeps the fingerprints current for the model's captured positions (call every frame while anything
// needs them; non-blocking). wait: block until current (scripts).
void update_fingerprints(const app::DebuggerModel& model, FingerprintsState& state, bool wait = false);
bool fingerprints_current(const app::DebuggerModel& model, const FingerprintsState& state);
// Keeps the syntactic shares current (on a worker; wait: block). The share of head (layer, head),
// NaN while not computed or when no sentence was parsed.
void update_syntax_shares(const app::DebuggerModel& model, FingerprintsState& state, bool wait = false);
bool syntax_shares_settled(const app::DebuggerModel& model, const FingerprintsState& state);
double syntax_share(const FingerprintsState& state, int layer, int head);

// Every label in use (the automatic names that some head has, then the user labels), for filters.
std::vector<std::string> labels_in_use(const FingerprintsState& state, const std::vector<HeadLabel>& user_labels);
// Heads (layer-major index) passing the filter, in table order (sorted as the state says).
std::vector<int> table_order(const FingerprintsState& state, const std::vector<HeadLabel>& user_labels);
// Per head (layer-major): 1 if it carries the filter label (all 1 with no filter; empty while the
// fingerprints are not there and the filter needs them).
std::vector<uint8_t> filter_mask(const FingerprintsState& state, const std::vector<HeadLabel>& user_labels, int heads_total);

struct FingerprintsActions {
    std::function<void(int layer, int head)> open;  // show the head in the map
    std::function<void()> labels_changed;           // user labels were added or removed
};
// labels: the view's user labels (edited here).
void draw_fingerprints_panel(app::DebuggerModel& model, FingerprintsState& state, std::vector<HeadLabel>& labels,
                             const FingerprintsActions& actions);

// User labels on the view's list (the engine's rules: no duplicates, no empty text, heads in range).
void add_user_label(std::vector<HeadLabel>& labels, const CaptureShape& shape, int layer, int head, const std::string& text);
size_t remove_user_labels(std::vector<HeadLabel>& labels, int layer, int head, const std::string& text);

}  // namespace attn::panels
