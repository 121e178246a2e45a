#pragma once
// Watchpoints: conditions on head metrics, parsed from text, evaluated at a decode step, that
// pause a run and highlight the step (issue 5).
//
// Grammar (keywords and the L/H of head sets are case-insensitive; spaces are free between items):
//
//   watchpoint := [aggregate] head_metric ["of" head_sets] comparison number
//               | step_metric comparison number
//   aggregate  := "any" | "all" | "mean" | "min" | "max"
//   head_metric:= "entropy"            Shannon entropy of the row, bits
//               | "top1" | "top-1"     the largest probability of the row
//               | "sink"               mass on key 0
//               | "prev"               mass on the previous token (key query − 1)
//               | "mass" "(" regex ")" | "mass" "on" ["tokens"] ["matching"] regex
//                                      mass on the tokens whose bytes overlap a match (tokens_matching),
//                                      in the text as it was at that step
//               | "jsd" | "l1"         change of the row vs the previous step's (the previous query row),
//                                      over the shared keys (compare_rows)
//   step_metric:= "token_prob"         probability of the step's sampled token, exp(logprob)
//               | "logprob"            its natural log-probability
//   regex      := "/" ECMAScript pattern ("\/" for a slash) "/" ["i"]     (i: ignore case)
//   head_sets  := head_set ("," head_set)*
//   head_set   := "L" range ["H" range] | "H" range     (L without H: every head of those layers;
//                                                          H without L: that head in every layer)
//   range      := "*" | int ["-" int]                   (inclusive; "*" = all)
//   comparison := "<" | "<=" | ">" | ">="
//   number     := a decimal number (sign, fraction and exponent allowed)
//
// Without "of", a head metric covers every head of the model.
//
// Examples: "entropy of L12H3 < 0.5", "mass(/contract/) of L3H1 < 0.1", "top1 of L5 < 0.2" (any head
// of layer 5), "top1 < 0.2" (any head), "token_prob < 0.2", "jsd of L2H0 > 0.3",
// "mean entropy of L0-3 > 4", "all sink of L*H0,L1H2 >= 0.9".
//
// Aggregates over the head set (default any):
//   any  — fires if some head satisfies the comparison; value/head: the most extreme head in the
//          comparison's direction (smallest for <, <=; largest for >, >=), i.e. the one that fired,
//          or — when none did — the one closest to firing.
//   all  — fires if every head satisfies it; value/head: the most extreme head the other way (the
//          one that keeps it from firing, or the weakest that satisfies it).
//   mean — the mean over the heads is compared; no head is reported.
//   min, max — the minimum / maximum over the heads is compared; the head that has it is reported.
//
// Parse errors throw attn::Error: `watchpoint "<text>": column <c>: expected <what>, found <what>`
// (columns count bytes from 1). Layers and heads beyond the model fail at evaluation.
//
// Cost per evaluation: one exact row per head in the set (two for jsd and l1), spread over the thread
// pool; mass(...) also matches the regex over the text up to the step's token, memoised per text.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/session.h"
#include "engine/tile_source.h"

namespace attn {

enum class WatchMetric { Entropy, Top1, Sink, PreviousToken, Mass, Jsd, L1, TokenProb, LogProb };
enum class WatchAggregate { Any, All, Mean, Min, Max };
enum class WatchComparison { Less, LessEqual, Greater, GreaterEqual };

struct IndexRange {
    int first = 0;
    int last = -1;  // inclusive; -1: to the last layer / head of the model ("*" is {0, -1})
};

struct HeadSet {
    IndexRange layers, heads;
};

class WatchpointPatternCache;  // compiled regex + memoised token positions (watchpoint.cpp)

struct Watchpoint {
    std::string text;  // as parsed
    WatchAggregate aggregate = WatchAggregate::Any;
    WatchMetric metric = WatchMetric::Entropy;
    std::string pattern;  // for Mass, without the slashes (escaped slashes unescaped)
    bool ignore_case = false;
    std::vector<HeadSet> heads;  // empty: every head (head metrics only)
    WatchComparison comparison = WatchComparison::Less;
    double threshold = 0;
    // Shared by copies, safe to use from several threads.
    std::shared_ptr<WatchpointPatternCache> pattern_cache;

    bool is_head_metric() const { return metric != WatchMetric::TokenProb && metric != WatchMetric::LogProb; }
};

Watchpoint parse_watchpoint(std::string_view text);
// The canonical text of a watchpoint (parses back to the same watchpoint).
std::string to_string(const Watchpoint& watchpoint);

// The (layer, head) pairs a watchpoint covers in a model of this shape, layer-major, each once; fails
// naming the watchpoint if a layer or head is out of range or the set is empty.
std::vector<std::pair<int, int>> watched_heads(const Watchpoint& watchpoint, const CaptureShape& shape);

struct WatchpointHit {
    bool fired = false;
    double value = 0;             // the compared value (see the aggregates above)
    int layer = -1, head = -1;    // the head that has it; -1 for step metrics and mean
    int satisfying_heads = 0;     // heads whose own value satisfies the comparison (head metrics)
    int64_t step = 0, query = 0;
};

// threads as in for_each_parallel (attention_metrics.h).
WatchpointHit evaluate(const Watchpoint& watchpoint, const Session& session, const CpuTileSource& source, int64_t step,
                       int threads = 0);

}  // namespace attn
