#pragma once
// Metrics over exact attention rows (CpuTileSource::row) for the live debugger (issue 5):
// how a head's focus moved between two query rows (diff mode), what one row looks like
// (entropy, top-1, sink, previous token, mass on regex matches), and the loop alarm.
//
// Conventions: a row is the probability of one query over keys 0..query (row.size() ==
// query + 1); decode step t of a session is query row prompt_tokens + t (session.h), and that
// row belongs to the token sampled at step t — it is the attention that predicts step t + 1.
// Entropies and divergences are in bits.
#include <cstdint>
#include <functional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/session.h"
#include "engine/tile_source.h"

namespace attn {

// The query row of decode step `step` (fails if the session has no such step or its row is not captured).
int64_t query_of_step(const Session& session, int64_t step);

// Runs fn(i) for i in [0, n). threads: 0 = this thread's pool (ThreadPool::current()), 1 = the calling thread only
// (for callers already running on pool workers), n > 1 = a pool of n threads for this call.
void for_each_parallel(int64_t n, int threads, const std::function<void(int64_t)>& fn);

// ---- comparing two rows -------------------------------------------------------------------
//
// The earlier query i sees keys 0..i, the later query j >= i sees 0..j. They are compared on the
// keys they share, 0..i: the later row is restricted to those keys and renormalised to sum to 1,
// so a head that keeps its focus but hands some mass to the keys that appeared in between (most
// often the new token itself) does not count as moved; that handed-over mass is reported apart
// as new_key_mass. The earlier row is renormalised too (it sums to 1 up to float rounding).
// Keys are compared by absolute position, so a head that follows the query (previous token,
// local band) moves by construction between different queries — which is what a map of the
// two rows shows as well.
// If the later row puts less than 0.1% of its mass on the shared keys (a head that moved onto the
// new token), renormalising would magnify a remainder that says nothing about its focus: the focus
// left the shared keys, and the comparison reports the maximum (jsd 1, l1 2) with deltas −earlier.
struct RowComparison {
    double jsd_bits = 0;      // Jensen–Shannon divergence, bits, in [0, 1]; 0: same focus, 1: disjoint
    double l1 = 0;            // Σ |later − earlier| over the shared keys, in [0, 2]
    double new_key_mass = 0;  // mass of the (unrenormalised) later row on keys after the earlier query
};

// Fails if later.size() < earlier.size() or earlier is empty.
RowComparison compare_rows(std::span<const float> earlier, std::span<const float> later);
// Per shared key (size earlier.size()): renormalised later − earlier, as compare_rows defines
// them; positive = the key gained attention. Σ |delta| == l1.
std::vector<float> attention_delta(std::span<const float> earlier, std::span<const float> later);
// Jensen–Shannon divergence of two distributions of the same size (each normalised here), bits.
double jensen_shannon_bits(std::span<const double> p, std::span<const double> q);

// ---- diff of two steps over every head ------------------------------------------------------

struct HeadDiff {
    int layer = 0, head = 0;
    RowComparison change;
};

struct StepDiff {
    int64_t earlier_query = 0, later_query = 0;  // the two queries, sorted
    int n_layer = 0, n_head = 0;
    std::vector<HeadDiff> heads;  // [layer * n_head + head]
    std::vector<int> ranking;     // indices into heads: focus moved most first (JSD desc, then L1 desc, then layer/head)

    const HeadDiff& at(int layer, int head) const { return heads[static_cast<size_t>(layer) * n_head + head]; }
    const HeadDiff& moved_most(size_t rank = 0) const { return heads[ranking.at(rank)]; }
};

// Compares the rows of query_a and query_b (either order) for every (layer, head): two exact rows
// per head, spread over heads as for_each_parallel(threads) does.
StepDiff diff_steps(const CpuTileSource& source, const Session& session, int64_t query_a, int64_t query_b,
                    int threads = 0);
// Fills diff.ranking from diff.heads (the order diff_steps uses), for diffs built elsewhere
// (counterfactual.h compares rows of two sessions).
void rank_head_diffs(StepDiff& diff);
// The per-key delta (attention_delta) of one head between two queries (either order), for drawing
// gains and losses over the earlier query's keys.
std::vector<float> key_deltas(const CpuTileSource& source, int layer, int head, int64_t query_a, int64_t query_b);

// ---- one row -----------------------------------------------------------------------------

// Shannon entropy of a row in bits (log2(n) for a uniform row over n keys, 0 for a one-hot row).
double entropy_bits(std::span<const float> row);

struct HeadFocus {
    double entropy_bits = 0;
    double top1 = 0;                 // the largest probability …
    int64_t top1_key = -1;           // … and its key (the first on ties); -1 for an empty row
    double sink_mass = 0;            // on key 0, where most heads park unused attention
    double previous_token_mass = 0;  // on key query − 1 (0 for query 0)
};
// The row of query row.size() − 1.
HeadFocus head_focus(std::span<const float> row);

// Σ row[k] over the given keys; keys outside the row (after its query) are ignored, duplicates
// count once per occurrence.
double mass_on_keys(std::span<const float> row, std::span<const int64_t> keys);

// ECMAScript regex; a bad pattern fails with attn::Error naming it and the regex library's reason.
std::regex compile_pattern(std::string_view pattern, bool ignore_case = false);
// Positions (ascending, each once) of the tokens whose byte span [begin, end) overlaps a non-empty
// match of `pattern` in session.text[0, text_end). Empty matches and empty-span tokens (an added
// BOS) overlap nothing. Limit text_end to the end of query q's token to see the text as it was when
// q was the latest token (a match may otherwise depend on text generated later).
std::vector<int64_t> tokens_matching(const Session& session, const std::regex& pattern,
                                     size_t text_end = std::string::npos);

// ---- loop alarm -----------------------------------------------------------------------------
//
// Step t (query q = prompt_tokens + t) is flagged when both hold:
//
// 1. Repetition. The current n-gram — tokens q−n+1..q, all generated (q−n+1 >= prompt_tokens) —
//    occurred earlier: tokens e−n+1..e have the same ids for some e < q (occurrences may overlap
//    the current one, so "a a a" repeats with e = q − 1). n is the longest length in
//    [min_ngram, max_ngram] with an earlier occurrence; an occurrence must lie in the generated
//    text unless search_prompt. Ids are compared, not text.
// 2. Copying attention. The successor keys S = {e + 1 : every earlier occurrence e of that n-gram}
//    are where a head copying the earlier output attends (an induction head at q looks at the
//    token that followed the earlier copy of q's context, because that is what it will predict).
//    Keys q and q − 1 are left out of S: self and previous-token heads attend there whatever the
//    text, so they are no evidence of copying. A head copies when its row at q puts at least
//    copy_mass_threshold of its mass on S. The alarm needs at least min_copying_heads copying
//    heads among the considered ones (every head of `layers`; all layers when empty). When S is
//    empty (the only earlier copies end right before q) attention cannot tell, and the step is not
//    flagged — unless min_copying_heads <= 0, which flags on repetition alone.
//
// Why not compare the row at q with the row at e shifted by q − e: positional heads (previous
// token, local bands) match their shifted selves at every step, loop or not, and would dominate.
//
// Cost: a linear scan of the tokens for the n-gram, then (only when one repeats) one exact row
// per considered head.
struct LoopAlarmParams {
    int min_ngram = 3;
    int max_ngram = 8;
    bool search_prompt = true;  // earlier occurrences may lie in the prompt (copying from it loops too)
    std::vector<int> layers;    // layers whose heads are considered; empty: all
    double copy_mass_threshold = 0.5;
    int min_copying_heads = 1;
    int threads = 0;  // as in for_each_parallel
};

struct LoopAlarm {
    bool fired = false;
    int64_t step = 0, query = 0;
    // Evidence of the repetition (ngram_length 0: no n-gram of the allowed lengths repeats).
    int ngram_length = 0;
    int64_t ngram_begin = 0;                 // first position of the current n-gram (q − n + 1)
    int64_t earlier_begin = -1;              // first position of the most recent earlier occurrence
    int occurrences = 0;                     // earlier occurrences found
    std::string ngram_text;                  // the current n-gram's bytes
    std::vector<int64_t> successor_keys;     // S, ascending
    // Evidence of the copying.
    double score = 0;       // the largest mass any considered head puts on S
    int best_layer = -1, best_head = -1;  // that head
    int copying_heads = 0;  // heads with at least copy_mass_threshold on S
    int considered_heads = 0;
};

LoopAlarm detect_loop(const Session& session, const CpuTileSource& source, int64_t step,
                      const LoopAlarmParams& params = {});

}  // namespace attn
