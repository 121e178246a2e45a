#pragma once
// Counterfactuals (issue 7): re-run a captured session's prompt with an intervention and measure
// how attention redistributes and what it does to the output.
//
// run_counterfactual(model, original, intervention) re-runs on the cpu backend (the only one with
// intervention hooks, attention_intervention.h), capturing into new sessions:
//  - forced: the prompt (edited, for remove/replace) and then the original's output tokens,
//    teacher-forced, so its rows are comparable with the original's step by step and every step
//    records the original token's new log-probability;
//  - free: the same number of decode steps chosen by the original's sampling settings (same seed;
//    beam search is replayed as a single greedy/sampled hypothesis), to see whether the output changes.
// Rows of the original (its capture) and of the forced run are compared per (layer, head) with
// attention_metrics' compare_rows (JSD in bits, L1) for chosen queries: the original is the
// "earlier" row, the counterfactual the "later" one, both over the same (aligned) keys.
//
// Positions. Masking, ablation and noise keep every position where it was. Removing or replacing
// the prompt's tokens [begin, end) by r tokens shifts what follows: original position p maps to p
// when p < begin and to p − (end − begin) + r when p >= end; positions inside the edited span have
// no counterpart. Rows are compared over the aligned keys only (the keys outside the edited span
// in both rows, each renormalised by compare_rows), and queries inside the edited span are not
// compared. The replacement text is tokenized on its own (no BOS) and spliced in, so the tokens
// outside the span stay exactly the original's.
//
// Mean ablation replaces the head's output (head_dim values before the output projection) at every
// position with its mean over every position of the original session (prompt and generated
// tokens), computed in a first pass over the original tokens.
//
// Noise: N(0, std²) per embedding value, from a generator seeded with (seed, position) that gives
// the same values on every machine; std 0 leaves the run exactly the original's.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/attention_intervention.h"
#include "engine/attention_metrics.h"
#include "engine/model.h"
#include "engine/session.h"

namespace attn {

struct Intervention {
    enum class Kind { MaskKeys, AblateHeads, RemoveSpan, ReplaceSpan, EmbeddingNoise };
    Kind kind = Kind::MaskKeys;
    // Token positions [begin, end) of the original session: the masked keys (MaskKeys), the removed
    // or replaced prompt tokens (RemoveSpan, ReplaceSpan; inside the prompt), the noised
    // embeddings (EmbeddingNoise). Unused by AblateHeads.
    int64_t begin = 0, end = 0;
    std::vector<std::pair<int, int>> heads;  // (layer, head): MaskKeys' masked heads, AblateHeads' heads
    bool ablate_mean = false;                // AblateHeads: mean output instead of zeros
    std::string replacement;                 // ReplaceSpan: text tokenized in place of the span
    double noise_std = 0;                    // EmbeddingNoise
    uint64_t seed = 0;                       // EmbeddingNoise

    static Intervention mask_keys(int64_t begin, int64_t end, std::vector<std::pair<int, int>> heads);
    static Intervention ablate_heads(std::vector<std::pair<int, int>> heads, bool mean);
    static Intervention remove_span(int64_t begin, int64_t end);
    static Intervention replace_span(int64_t begin, int64_t end, std::string text);
    static Intervention embedding_noise(int64_t begin, int64_t end, double std_dev, uint64_t seed);

    std::string describe() const;  // one line, e.g. "mask keys [3, 5) in L0H1, L0H2"
    nlohmann::json to_json() const;
};

const char* intervention_kind_name(Intervention::Kind kind);  // "mask_keys", "ablate_heads", ...

struct CounterfactualOptions {
    // Query rows of the original session to compare; empty: the last prompt position and every
    // decode step's row (prompt_tokens − 1 .. positions − 1), less those inside an edited span.
    std::vector<int64_t> queries;
    // Key spans (original positions) whose attention mass is reported before and after; empty: the
    // intervention's span (none for ablation).
    std::vector<KeySpan> key_spans;
    bool free_run = true;
    // Compare against the original tokens re-run on the cpu backend (teacher-forced, no intervention)
    // instead of the session's capture: for sessions captured on another backend, whose rounding
    // would otherwise show up as attention that moved.
    bool rerun_original = false;
    int threads = 0;  // row computation, as in for_each_parallel
};

// Original ↔ counterfactual positions (see the header comment). Identity unless the prompt was edited.
struct PositionAlignment {
    int64_t edit_begin = 0, edit_end = 0;  // original span replaced; empty when nothing was edited
    int64_t inserted = 0;                  // counterfactual tokens in its place
    bool edited() const { return edit_end > edit_begin || inserted > 0; }
    // The counterfactual position of original position p; nullopt inside the edited span.
    std::optional<int64_t> to_counterfactual(int64_t p) const;
};

// One compared query: the step-diff of every (layer, head) with the original row as "earlier" and
// the counterfactual row as "later", plus each head's mass on the key spans in both.
struct QueryComparison {
    int64_t original_query = 0, counterfactual_query = 0;
    StepDiff diff;  // earlier_query = original_query, later_query = counterfactual_query (different sessions)
    std::vector<double> original_span_mass, counterfactual_span_mass;  // [layer * n_head + head]
};

// A head over all compared queries.
struct HeadChange {
    int layer = 0, head = 0;
    double mean_jsd_bits = 0, max_jsd_bits = 0, mean_l1 = 0;
    int64_t max_jsd_query = 0;  // original query row of max_jsd_bits
    double original_span_mass = 0, counterfactual_span_mass = 0;  // means over the queries
};

// Output step t (the token the original sampled at step t, predicted by row prompt_tokens − 1 + t).
struct OutputChange {
    int64_t step = 0;
    int32_t token_id = 0;
    std::string text;
    double original_prob = 0, counterfactual_prob = 0;  // of the original token
    int32_t counterfactual_top_id = 0;                   // most probable token in the counterfactual
    std::string counterfactual_top_text;
    double counterfactual_top_prob = 0;
};

struct FreeRunResult {
    bool ran = false;
    std::vector<int32_t> tokens;
    std::string text;                // the generated bytes
    int64_t first_divergence = -1;   // first step whose token differs from the original's; -1: none
    std::string stop_reason;         // why it stopped before the original's step count ("" if it didn't)
};

struct CounterfactualResult {
    Intervention intervention;
    bool baseline_rerun = false;      // options.rerun_original: "original" rows and probabilities come from the rerun
    PositionAlignment alignment;
    std::vector<KeySpan> key_spans;                  // original positions
    std::vector<KeySpan> counterfactual_key_spans;   // the same keys in the counterfactual
    Session forced;                   // teacher-forced counterfactual, captured
    std::optional<Session> free;      // free-running counterfactual, captured (options.free_run)
    std::vector<QueryComparison> queries;
    std::vector<HeadChange> heads;    // [layer * n_head + head]
    std::vector<int> ranking;         // indices into heads: mean JSD desc, then mean L1 desc, then layer/head
    std::vector<OutputChange> outputs;
    FreeRunResult free_run;

    // Everything above but the sessions (which have their own files), as one JSON object: intervention,
    // alignment, key spans, per query the JSD/L1/span-mass matrices [layer][head], heads in ranking
    // order, outputs, free run. Token texts are raw bytes (a token may split a UTF-8 character):
    // dump with nlohmann::json::error_handler_t::replace, as the CLI does.
    nlohmann::json to_json() const;
};

// Throws attn::Error for: a session without captured attention, a model whose architecture or shape
// differs from the session's (or whose content hash differs from the one recorded), spans or heads
// out of range, queries outside the capture or inside an edited span.
CounterfactualResult run_counterfactual(const Model& model, const Session& original, const Intervention& intervention,
                                        const CounterfactualOptions& options = {});

// The counterfactual's row of (layer, head) at its query, as its forward pass computed it: the capture's
// exact row with a key mask applied where the intervention masked that head (attention_intervention.h).
std::vector<float> counterfactual_row(const CounterfactualResult& result, int layer, int head, int64_t query);

}  // namespace attn
