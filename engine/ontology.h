#pragma once
// Ontology checks (issue 7, "Meaning"): a user file of entity types (regex patterns and word lists)
// and the relations expected between them with a strength; the spans of a session that match each
// type (labelled with byte and token ranges); and anomalies — expected-strong links that get little
// attention, expected-near-zero links that get a lot.
//
// ---- File format (JSON or TOML; engine/config_document.h reads both with line numbers) -----------
//
//   # TOML                                        // JSON
//   [thresholds]                                  {"thresholds": {"strong": 0.05},
//   strong = 0.05                                  "types": [{"name": "drug",
//                                                             "patterns": ["aspirin|ibuprofen"]}, ...],
//   [[types]]                                      "relations": [{"from": "drug", "to": "side_effect",
//   name = "drug"                                                 "strength": "strong"}, ...]}
//   patterns = ["\\b(aspirin|ibuprofen)\\b"]     # ECMAScript regexes over the UTF-8 text
//                                                 #   (std::regex matches bytes: write Chinese literally;
//                                                 #   no [..] ranges or classes of non-ASCII characters)
//   words = ["paracetamol", "布洛芬"]             # literal words (\b added at ASCII word ends)
//   ignore_case = true                            # ASCII case only (default false)
//
//   [[relations]]
//   from = "drug"
//   to = "side_effect"
//   strength = "strong"            # "strong" | "weak" | "near-zero" (also "near_zero", "none") | a number
//   direction = "either"           # "either" (default) | "forward": only `from` spans attending to `to` spans
//   aggregate = "max"              # over the head set: "max" (default) | "mean" | "min"
//   min = 0.02                     # optional: override the band (see below)
//   max = 0.5
//
// Every type needs a unique name and at least one pattern or word; relations must name known
// types. Unknown fields, bad regexes, unknown strengths and the like fail with attn::Error
// "file:line:column: relations[1].strength: ..." (which entry, where, what is wrong).
//
// ---- Matching ------------------------------------------------------------------------------------
//
// Each pattern and each word list is matched over the text (non-empty matches, left to right, as
// std::regex_iterator finds them); a span is the match's bytes and the tokens overlapping them
// ([first, last), as tokens_matching counts tokens: empty-span tokens such as an added BOS overlap
// nothing). The same bytes matched twice for one type count once; spans are ordered by begin,
// then end, then type.
//
// ---- Attention between two spans ---------------------------------------------------------------
//
// Attention is causal, so a pair of spans is measured from the later span (queries) to the earlier
// one (keys): for a head,
//
//     share = Σ_{q ∈ Q} Σ_{k ∈ K, k ≤ q} P[q, k] / |Q|
//
// where K is the key span's tokens and Q the query span's tokens. Each row of P sums to 1, so share
// is the fraction of the query span's attention that lands on the key span, in [0, 1]; the sums are
// exact (CpuTileSource::mass over the token rectangles). A pair is two spans whose token ranges do
// not overlap, the key span entirely before the query span. With direction "either" a (from, to)
// pair is measured whichever comes first in the text; "forward" takes only pairs where the `to`
// span comes first (the `from` span attends to the `to` span).
//
// ---- Anomalies ---------------------------------------------------------------------------------
//
// A relation's expected band [min, max] comes from its strength (thresholds in the file, defaults):
//   strong     [strong = 0.05, 1]          flagged "low" below 0.05: an expected link nobody attends to
//   weak       [weak = 0.005, 1]           flagged "low" only when practically nothing attends
//   near-zero  [0, near_zero = 0.01]       flagged "high" above 0.01: attention where none is expected
//   a number x [x / factor, min(1, x · factor)], factor = 3 (thresholds.factor)
// and "min"/"max" in the relation override either end. The value compared is the relation's
// aggregate (default max: the most attentive head) of the per-head shares over the head set.
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config_document.h"
#include "engine/session.h"
#include "engine/text_segments.h"
#include "engine/tile_source.h"

namespace attn {

struct EntityType {
    std::string name;
    std::vector<std::string> patterns;
    std::vector<std::string> words;
    bool ignore_case = false;
    int line = 0;
    // Compiled: one regex per pattern, and one alternation of all the words (longest first).
    std::vector<std::shared_ptr<const std::regex>> regexes;
};

enum class Strength { Strong, Weak, NearZero, Value };
const char* strength_name(Strength strength);  // "strong", "weak", "near-zero", "value"

enum class HeadAggregate { Max, Mean, Min };
const char* head_aggregate_name(HeadAggregate aggregate);

struct ExpectedRelation {
    std::string from, to;  // type names
    int from_type = -1, to_type = -1;
    Strength strength = Strength::Strong;
    double value = 0;       // Strength::Value: the expected share
    double min = 0, max = 1;  // the band (resolved from the strength, thresholds and overrides)
    bool forward_only = false;
    HeadAggregate aggregate = HeadAggregate::Max;
    int line = 0;
};

struct OntologyThresholds {
    double strong = 0.05;
    double weak = 0.005;
    double near_zero = 0.01;
    double factor = 3;
};

struct Ontology {
    std::string file;
    std::vector<EntityType> types;
    std::vector<ExpectedRelation> relations;
    OntologyThresholds thresholds;

    int type_index(std::string_view name) const;  // -1 if unknown
};

Ontology parse_ontology(std::string_view text, const std::string& file_name, ConfigFormat format = ConfigFormat::Auto);
Ontology load_ontology(const std::string& path, ConfigFormat format = ConfigFormat::Auto);
// The type's regexes as given (shared with rules that select spans by type).
Ontology parse_ontology(const ConfigDocument& document);

// ---- spans ---------------------------------------------------------------------------------------

struct TextSpan {
    uint32_t begin = 0, end = 0;  // bytes
    int64_t first = 0, last = 0;  // tokens [first, last) overlapping the bytes (empty when no token does)
    int type = -1;                // ontology type index (-1: not from an ontology)

    int64_t token_count() const { return last - first; }
};

// Tokens overlapping bytes [begin, end) as [first, last) (empty-span tokens overlap nothing).
std::pair<int64_t, int64_t> tokens_overlapping(std::span<const Token> tokens, uint32_t begin, uint32_t end);
// Every non-empty match of `regex` in text[0, text_end), as spans (type −1), tokens from `tokens`
// (may be empty: token ranges are then [0, 0)).
std::vector<TextSpan> regex_spans(std::string_view text, std::span<const Token> tokens, const std::regex& regex,
                                  size_t text_end = std::string::npos);
// The spans of one type / of every type, in text[0, text_end).
std::vector<TextSpan> match_type(const Ontology& ontology, int type, std::string_view text,
                                 std::span<const Token> tokens, size_t text_end = std::string::npos);
std::vector<TextSpan> match_entities(const Ontology& ontology, std::string_view text, std::span<const Token> tokens,
                                     size_t text_end = std::string::npos);
inline std::vector<TextSpan> match_entities(const Ontology& ontology, const Session& session) {
    return match_entities(ontology, session.text, session.tokens);
}

// ---- attention between spans -----------------------------------------------------------------------

struct TokenRun {
    int64_t first = 0, last = 0;  // [first, last)
};
// Sorted, merged runs covering the token ranges of `spans`.
std::vector<TokenRun> token_runs(std::span<const TextSpan> spans);
// Σ_{q ∈ [q0, q1)} Σ_{k ∈ keys, k ≤ q} P[layer, head, q, k] / (q1 − q0): the mean share of the query
// rows' attention on the keys (exact; 0 for an empty query range). Keys must be sorted and disjoint.
double span_attention_share(const CpuTileSource& source, int layer, int head, int64_t q0, int64_t q1,
                            std::span<const TokenRun> keys);
// The query rows of span `query` that see at least one key (q ≥ keys.front().first), as [q0, q1);
// empty when none does.
std::pair<int64_t, int64_t> queries_seeing(const TextSpan& query, std::span<const TokenRun> keys);

// ---- anomaly check ------------------------------------------------------------------------------

struct RelationPair {
    size_t query_span = 0, key_span = 0;  // indices into OntologyReport::spans; the query span attends
    bool from_is_query = true;            // the `from` type's span is the attending one
    int64_t query_tokens = 0;             // |Q|
    std::vector<double> per_head;         // share per head, in OntologyReport::heads order
    double value = 0;                     // the relation's aggregate of per_head
    double mean = 0, max = 0;
    HeadRef best{-1, -1};                 // the head with the largest share
    bool flagged = false;
    std::string flag;                     // "" | "low" | "high"
};

struct RelationCheck {
    size_t relation = 0;          // index into Ontology::relations
    std::vector<RelationPair> pairs;
    int64_t flagged = 0;
};

struct OntologyReport {
    std::vector<TextSpan> spans;
    std::vector<HeadRef> heads;
    std::vector<RelationCheck> relations;
    int64_t anomalies = 0;  // flagged pairs over every relation
};

// threads as in for_each_parallel. Fails on an empty head list or a head the capture lacks.
OntologyReport check_ontology(const Ontology& ontology, const Session& session, const CpuTileSource& source,
                              std::span<const HeadRef> heads, int threads = 0);
// {"ontology_file", "types": [...], "spans": [...], "heads": [...], "relations": [...], "anomalies"}
nlohmann::json ontology_report_json(const Ontology& ontology, const Session& session, const OntologyReport& report);
nlohmann::json text_span_json(const TextSpan& span, std::string_view text);

}  // namespace attn
