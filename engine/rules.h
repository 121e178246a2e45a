#pragma once
// Rules (issue 7, "Rules and alerts"): constraints on attention written in a file, checked on a
// session (the prompt and every decode step) and live as the model decodes, each with a match log
// and a verdict; a violated rule can pause a live run like a watchpoint (engine/live_runner.h).
//
// ---- File format (JSON or TOML, engine/config_document.h) ---------------------------------------
//
//   [[rules]]
//   id = "id-needs-overdue"           # optional, unique (default "rule N", N from 1)
//   description = "the ID number must look at the overdue record"
//   layers = "10-20"                  # int | "a-b" | "*" | [a, b]   (inclusive; default "*")
//   heads = "*"                       # the same, for heads within each layer
//   label = "induction"               # optional: only heads with this automatic or user label
//                                     #   (a list means any of them; case ignored; head_fingerprints.h)
//   query = { regex = "身份证号|ID number" }   # the attending span (queries)
//   key = { regex = "逾期记录|overdue", ignore_case = true }   # the attended span (keys)
//   aggregate = "max"                 # over the heads: max (default) | mean | min | all | any
//   op = ">="                         # >= | > | <= | <
//   threshold = 0.05
//   scope = "both"                    # prompt | steps | both (default)
//   pause = true                      # live: a violation pauses the run (default true)
//
// JSON: {"rules": [{"id": ..., "query": {"regex": "..."}, ...}]}.
//
// Span selectors (exactly one kind per table; a plain string is short for {regex = "..."}):
//   { regex = "...", ignore_case = false }  every non-empty match (ECMAScript over the UTF-8 text;
//                                           ignore_case folds ASCII only); tokens overlapping it
//   { type = "drug" }                       the spans of an ontology type (ontology.h; needs an ontology)
//   { tokens = [a, b] }                     tokens a..b−1
//   { bytes = [a, b] }                      the tokens overlapping bytes a..b−1
//   { any = true }                          every token (for the query: every decode step's token)
//
// Errors: any mistake (unknown field, wrong type, bad regex, unknown ontology type, a range the
// wrong way round, duplicate ids) fails with attn::Error "FILE:LINE:COLUMN: rules[2].op: ..." —
// the file, where, which entry and what is wrong. Layers and heads beyond the model fail at
// evaluation, naming the rule and its line.
//
// ---- What is measured ----------------------------------------------------------------------------
//
// The value of one head is the share of the query rows' attention on the key tokens:
//     value = Σ_{q ∈ Q} Σ_{k ∈ K, k ≤ q} P[layer, head, q, k] / |Q|        (exact, CpuTileSource::mass)
// Prompt (scope prompt/both): spans are matched over the prompt's text only; each query span is one
// check, with K every key-selector token in the prompt and Q the span's tokens from the first key on
// (rows before any key cannot see one). A query span with no key before its last token is not checked.
// Decode step t (scope steps/both): Q is the step's query row q = prompt_tokens + t alone, checked
// when q's token belongs to the query selector, matched over the text up to q's token (the text as
// it was at that step; {any = true} takes every step); K is the key-selector tokens ≤ q in that text.
//
// Aggregates over the rule's heads (as watchpoints do): max, min, mean compare that statistic; all
// passes when every head satisfies the comparison (value: the worst head); any passes when one does
// (value: the best head). A failed check lists its offending heads: those whose own value fails.
//
// Verdicts: fail if any check fails; pass if at least one check ran and all passed; not applicable
// when nothing was checked (no head selected, no span matched, no key before the query, no steps),
// with the reason.
//
// ---- Results -------------------------------------------------------------------------------------
//
// rules_report_json() writes the match log; docs/schemas/rules-result.schema.json documents it (a
// JSON Schema, checked by tests/test_rules.cpp). Exit codes of `attnscope rules`: 0 every rule passed
// or was not applicable, 1 a rule failed, 2 an error (bad file, bad session).
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <regex>
#include <span>
#include <string>
#include <vector>

#include "engine/head_fingerprints.h"
#include "engine/ontology.h"
#include "engine/pii.h"
#include "engine/session.h"
#include "engine/text_segments.h"
#include "engine/tile_source.h"
#include "engine/watchpoint.h"

namespace attn {

enum class SpanSelectorKind { Regex, Type, Tokens, Bytes, Any };
const char* span_selector_kind_name(SpanSelectorKind kind);  // "regex", "type", "tokens", "bytes", "any"

struct SpanSelector {
    SpanSelectorKind kind = SpanSelectorKind::Any;
    std::string pattern;  // Regex
    bool ignore_case = false;
    std::shared_ptr<const std::regex> regex;
    std::string type_name;  // Type
    int type = -1;
    int64_t first = 0, last = 0;  // Tokens / Bytes: [first, last)

    std::string describe() const;  // "/pattern/i", "type drug", "tokens 3..7", "bytes 10..20", "any token"
};

enum class RuleAggregate { Max, Mean, Min, All, Any };
enum class RuleOp { GreaterEqual, Greater, LessEqual, Less };
enum class RuleScope { Prompt, Steps, Both };
const char* rule_aggregate_name(RuleAggregate aggregate);
const char* rule_op_name(RuleOp op);  // ">=", ">", "<=", "<"
const char* rule_scope_name(RuleScope scope);
bool rule_satisfied(RuleOp op, double value, double threshold);

struct Rule {
    std::string id, description;
    int line = 0, column = 0;
    IndexRange layers, heads;  // watchpoint.h: last −1 = to the model's last
    std::vector<std::string> labels;
    SpanSelector query, key;
    RuleAggregate aggregate = RuleAggregate::Max;
    RuleOp op = RuleOp::GreaterEqual;
    double threshold = 0;
    RuleScope scope = RuleScope::Both;
    bool pause = true;

    bool checks_prompt() const { return scope != RuleScope::Steps; }
    bool checks_steps() const { return scope != RuleScope::Prompt; }
};

struct RuleSet {
    std::string file;
    std::vector<Rule> rules;
    std::shared_ptr<const Ontology> ontology;  // for type selectors (may be null when none is used)

    bool uses_labels() const;
};

RuleSet parse_rules(std::string_view text, const std::string& file_name, std::shared_ptr<const Ontology> ontology = nullptr,
                    ConfigFormat format = ConfigFormat::Auto);
RuleSet load_rules(const std::string& path, std::shared_ptr<const Ontology> ontology = nullptr,
                   ConfigFormat format = ConfigFormat::Auto);

// ---- evaluation ---------------------------------------------------------------------------------

enum class Verdict { Pass, Fail, NotApplicable };
const char* verdict_name(Verdict verdict);  // "pass", "fail", "not_applicable"

struct HeadValue {
    int layer = 0, head = 0;
    double value = 0;
    bool satisfies = false;
};

struct RuleCheck {
    int64_t step = -1;              // −1: the prompt
    TextSpan query;                 // the query span (prompt) or the step's token
    int64_t q0 = 0, q1 = 0;         // the query rows measured [q0, q1)
    std::vector<TokenRun> keys;     // the key tokens
    std::vector<HeadValue> heads;
    double value = 0;               // the aggregate
    HeadRef head{-1, -1};           // the head that has it (none for mean)
    bool passed = true;
    std::vector<HeadRef> offending;  // failed checks: heads whose own value fails the comparison
};

struct RuleResult {
    size_t rule = 0;  // index into RuleSet::rules
    Verdict verdict = Verdict::NotApplicable;
    std::string reason;  // why not applicable, or a one-line summary
    std::vector<HeadRef> heads;                    // the heads the rule selected
    std::vector<TextSpan> query_spans, key_spans;  // every match over the text evaluated
    std::vector<RuleCheck> checks;
    int64_t violations = 0;                        // failed checks
    bool prompt_violated = false;
    std::vector<int64_t> offending_steps;          // ascending
    std::vector<HeadRef> offending_heads;          // layer-major, each once
    std::vector<TextSpan> offending_spans;         // query spans of failed checks, each once, in text order
};

struct RulesReport {
    std::string rules_file, ontology_file;
    std::vector<RuleResult> results;  // one per rule, in file order
    int64_t passed = 0, failed = 0, not_applicable = 0;
    Verdict overall = Verdict::NotApplicable;  // fail if any failed, else pass if any passed
};

// "3", "10-20" (also 10–20 or 10..20), "*" / "all" → an inclusive range ({0, −1} for all); attn::Error
// naming `what` otherwise. For command lines.
IndexRange parse_index_range(std::string_view text, const char* what);
// Heads in the layer and head ranges (−1 last: to the model's last) that carry one of `labels` (none:
// every head), layer-major. Labels come from `fingerprints` (computed from the session when null and
// labels are asked for) and the session's user labels. Fails on ranges outside the capture.
std::vector<HeadRef> select_heads(const Session& session, IndexRange layers, IndexRange heads,
                                  const std::vector<std::string>& labels,
                                  const std::vector<HeadFingerprint>* fingerprints = nullptr);

// The heads each rule selects in this session ([rule] → heads, layer-major). Label selectors use
// `fingerprints` (HeadFingerprints::all(); computed from the session when null and a rule needs
// labels) and the session's user labels. Fails, naming the rule and its line, on layers or heads
// outside the capture.
std::vector<std::vector<HeadRef>> resolve_rule_heads(const RuleSet& rules, const Session& session,
                                                     const std::vector<HeadFingerprint>* fingerprints = nullptr);

struct RuleEvaluationOptions {
    bool prompt = true;  // check the prompt (rules whose scope includes it)
    bool steps = true;   // check every decode step (rules whose scope includes them)
    int threads = 0;     // as in for_each_parallel
    const std::vector<HeadFingerprint>* fingerprints = nullptr;
};

RulesReport evaluate_rules(const RuleSet& rules, const Session& session, const CpuTileSource& source,
                           const RuleEvaluationOptions& options = {});
// One rule on the prompt (step −1) or on one decode step; heads from resolve_rule_heads. The result
// holds only that check (verdict not applicable when the step is outside the rule's scope or
// selectors). Used by the live runner after each step.
RuleResult evaluate_rule(const RuleSet& rules, size_t rule, const Session& session, const CpuTileSource& source,
                         std::span<const HeadRef> heads, int64_t step, int threads = 0);

// The match log as JSON (docs/schemas/rules-result.schema.json).
nlohmann::json rules_report_json(const RulesReport& report, const RuleSet& rules, const Session& session);
nlohmann::json rule_result_json(const RuleResult& result, const RuleSet& rules, const Session& session);
// One line per rule: "FAIL  id-needs-overdue (rules.toml:3): max mass 0.012 < 0.05 at step 4 in L12H3, ..."
// Span texts are shown masked with `pii` (find_pii of the session text; empty: as they are).
std::string rules_report_text(const RulesReport& report, const RuleSet& rules, const Session& session,
                              const std::vector<PiiSpan>& pii = {});

}  // namespace attn
