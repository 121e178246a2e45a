#include "engine/rules.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <numeric>

#include "engine/attention_metrics.h"
#include "engine/error.h"

namespace attn {

const char* span_selector_kind_name(SpanSelectorKind kind) {
    switch (kind) {
        case SpanSelectorKind::Regex: return "regex";
        case SpanSelectorKind::Type: return "type";
        case SpanSelectorKind::Tokens: return "tokens";
        case SpanSelectorKind::Bytes: return "bytes";
        case SpanSelectorKind::Any: return "any";
    }
    return "?";
}

std::string SpanSelector::describe() const {
    switch (kind) {
        case SpanSelectorKind::Regex: return cat("/", pattern, "/", ignore_case ? "i" : "");
        case SpanSelectorKind::Type: return cat("type ", type_name);
        case SpanSelectorKind::Tokens: return cat("tokens ", first, "..", last);
        case SpanSelectorKind::Bytes: return cat("bytes ", first, "..", last);
        case SpanSelectorKind::Any: return "any token";
    }
    return "?";
}

const char* rule_aggregate_name(RuleAggregate aggregate) {
    switch (aggregate) {
        case RuleAggregate::Max: return "max";
        case RuleAggregate::Mean: return "mean";
        case RuleAggregate::Min: return "min";
        case RuleAggregate::All: return "all";
        case RuleAggregate::Any: return "any";
    }
    return "?";
}

const char* rule_op_name(RuleOp op) {
    switch (op) {
        case RuleOp::GreaterEqual: return ">=";
        case RuleOp::Greater: return ">";
        case RuleOp::LessEqual: return "<=";
        case RuleOp::Less: return "<";
    }
    return "?";
}

const char* rule_scope_name(RuleScope scope) {
    switch (scope) {
        case RuleScope::Prompt: return "prompt";
        case RuleScope::Steps: return "steps";
        case RuleScope::Both: return "both";
    }
    return "?";
}

const char* verdict_name(Verdict verdict) {
    switch (verdict) {
        case Verdict::Pass: return "pass";
        case Verdict::Fail: return "fail";
        case Verdict::NotApplicable: return "not_applicable";
    }
    return "?";
}

bool rule_satisfied(RuleOp op, double value, double threshold) {
    switch (op) {
        case RuleOp::GreaterEqual: return value >= threshold;
        case RuleOp::Greater: return value > threshold;
        case RuleOp::LessEqual: return value <= threshold;
        case RuleOp::Less: return value < threshold;
    }
    return false;
}

bool RuleSet::uses_labels() const {
    return std::any_of(rules.begin(), rules.end(), [](const Rule& r) { return !r.labels.empty(); });
}

// ---- parsing -------------------------------------------------------------------------------------

namespace {

IndexRange parse_range(const ConfigDocument& doc, const ConfigValue& value, const char* what) {
    auto checked = [&](int64_t first, int64_t last) {
        if (first < 0 || last < 0) doc.fail_at(value, what, " numbers must not be negative");
        if (last < first) doc.fail_at(value, "the range ends (", last, ") before it starts (", first, ")");
        if (last > 1000000) doc.fail_at(value, what, " ", last, " is out of any model's range");
        return IndexRange{static_cast<int>(first), static_cast<int>(last)};
    };
    if (value.type == ConfigValue::Type::Integer) return checked(value.integer, value.integer);
    if (value.type == ConfigValue::Type::Array) {
        if (value.items.size() != 2 || value.items[0].type != ConfigValue::Type::Integer ||
            value.items[1].type != ConfigValue::Type::Integer)
            doc.fail_at(value, "expected [first, last] (two integers, inclusive)");
        return checked(value.items[0].integer, value.items[1].integer);
    }
    if (value.type == ConfigValue::Type::String) {
        std::string text;
        for (char c : value.string)
            if (c != ' ') text += c;
        if (text == "*" || text == "all") return {0, -1};
        // "a-b", also with an en dash (10–20) as people write ranges.
        std::string normalised = text;
        for (const std::string dash : {"\u2013", "\u2014", ".."}) {
            const size_t at = normalised.find(dash);
            if (at != std::string::npos) normalised = normalised.substr(0, at) + "-" + normalised.substr(at + dash.size());
        }
        int64_t first = 0, last = 0;
        const char* begin = normalised.data();
        const char* end = begin + normalised.size();
        auto [p, ec] = std::from_chars(begin, end, first);
        if (ec == std::errc() && p == end) return checked(first, first);
        if (ec == std::errc() && *p == '-') {
            auto [q, ec2] = std::from_chars(p + 1, end, last);
            if (ec2 == std::errc() && q == end) return checked(first, last);
        }
    }
    doc.fail_at(value, "expected ", what, "s as an integer, \"a-b\", \"*\" or [a, b], found ", value.describe());
}

int64_t non_negative(const ConfigDocument& doc, const ConfigValue& value) {
    if (value.type != ConfigValue::Type::Integer || value.integer < 0)
        doc.fail_at(value, "expected a non-negative integer, found ", value.describe());
    return value.integer;
}

SpanSelector parse_selector(const ConfigDocument& doc, const ConfigValue& value, const Ontology* ontology) {
    SpanSelector s;
    if (value.type == ConfigValue::Type::String) {
        s.kind = SpanSelectorKind::Regex;
        s.pattern = value.string;
    } else {
        ConfigTableReader reader(doc, value, {"regex", "type", "tokens", "bytes", "any", "ignore_case"});
        const ConfigValue* regex = reader.optional("regex");
        const ConfigValue* type = reader.optional("type");
        const ConfigValue* tokens = reader.optional("tokens");
        const ConfigValue* bytes = reader.optional("bytes");
        const ConfigValue* any = reader.optional("any");
        const ConfigValue* ignore_case = reader.optional("ignore_case");
        const int kinds = (regex ? 1 : 0) + (type ? 1 : 0) + (tokens ? 1 : 0) + (bytes ? 1 : 0) + (any ? 1 : 0);
        if (kinds != 1)
            doc.fail_at(value, kinds == 0 ? "a span selector needs one of: regex, type, tokens, bytes, any"
                                          : "a span selector takes only one of: regex, type, tokens, bytes, any");
        reader.finish();
        if (ignore_case) {
            reader.expect(*ignore_case, ConfigValue::Type::Bool);
            if (!regex) doc.fail_at(*ignore_case, "ignore_case applies to a regex selector only");
            s.ignore_case = ignore_case->boolean;
        }
        if (regex) {
            reader.expect(*regex, ConfigValue::Type::String);
            s.kind = SpanSelectorKind::Regex;
            s.pattern = regex->string;
        } else if (type) {
            reader.expect(*type, ConfigValue::Type::String);
            s.kind = SpanSelectorKind::Type;
            s.type_name = type->string;
            if (!ontology)
                doc.fail_at(*type, "selects the ontology type \"", type->string,
                            "\", but no ontology was given (attnscope: --ontology FILE)");
            s.type = ontology->type_index(type->string);
            if (s.type < 0) {
                std::string known;
                for (const EntityType& t : ontology->types) known += (known.empty() ? "" : ", ") + t.name;
                doc.fail_at(*type, "unknown ontology type \"", type->string, "\" (", ontology->file, " has: ", known, ")");
            }
        } else if (tokens || bytes) {
            const ConfigValue& range = tokens ? *tokens : *bytes;
            if (range.type != ConfigValue::Type::Array || range.items.size() != 2)
                doc.fail_at(range, "expected [first, last] (two integers, last excluded), found ", range.describe());
            s.kind = tokens ? SpanSelectorKind::Tokens : SpanSelectorKind::Bytes;
            s.first = non_negative(doc, range.items[0]);
            s.last = non_negative(doc, range.items[1]);
            if (s.last <= s.first) doc.fail_at(range, "the range [", s.first, ", ", s.last, ") is empty");
        } else {
            reader.expect(*any, ConfigValue::Type::Bool);
            if (!any->boolean) doc.fail_at(*any, "any = false selects nothing (write any = true, or another selector)");
            s.kind = SpanSelectorKind::Any;
        }
    }
    if (s.kind == SpanSelectorKind::Regex) {
        const ConfigValue& where = value.type == ConfigValue::Type::String ? value : *value.find("regex");
        if (s.pattern.empty()) doc.fail_at(where, "an empty regex matches nothing");
        try {
            s.regex = std::make_shared<const std::regex>(compile_pattern(s.pattern, s.ignore_case));
        } catch (const Error& e) {
            doc.fail_at(where, e.what());
        }
    }
    return s;
}

Rule parse_rule(const ConfigDocument& doc, const ConfigValue& entry, size_t index, const Ontology* ontology) {
    ConfigTableReader r(doc, entry, {"id", "description", "layers", "heads", "label", "labels", "query", "key", "aggregate", "op", "threshold", "scope", "pause"});
    Rule rule;
    rule.line = entry.line;
    rule.column = entry.column;
    rule.id = r.string_or("id", cat("rule ", index + 1));
    if (rule.id.empty()) doc.fail_at(*entry.find("id"), "an id must not be empty");
    rule.description = r.string_or("description", "");
    rule.layers = {0, -1};
    rule.heads = {0, -1};
    if (const ConfigValue* layers = r.optional("layers")) rule.layers = parse_range(doc, *layers, "layer");
    if (const ConfigValue* heads = r.optional("heads")) rule.heads = parse_range(doc, *heads, "head");
    rule.labels = r.strings_or_empty("label");
    for (const std::string& label : r.strings_or_empty("labels")) rule.labels.push_back(label);
    for (const std::string& label : rule.labels)
        if (label.empty()) doc.fail_at(entry, "an empty head label selects nothing");
    rule.query = parse_selector(doc, r.required("query"), ontology);
    rule.key = parse_selector(doc, r.required("key"), ontology);
    if (const ConfigValue* aggregate = r.optional("aggregate")) {
        const std::string& a = aggregate->string;
        if (aggregate->type == ConfigValue::Type::String && (a == "max" || a == "mean" || a == "min" || a == "all" || a == "any"))
            rule.aggregate = a == "max" ? RuleAggregate::Max
                             : a == "mean" ? RuleAggregate::Mean
                             : a == "min" ? RuleAggregate::Min
                             : a == "all" ? RuleAggregate::All
                                          : RuleAggregate::Any;
        else
            doc.fail_at(*aggregate, "expected \"max\", \"mean\", \"min\", \"all\" or \"any\", found ", aggregate->describe());
    }
    const ConfigValue& op = r.required("op");
    if (op.type == ConfigValue::Type::String && (op.string == ">=" || op.string == "≥")) rule.op = RuleOp::GreaterEqual;
    else if (op.type == ConfigValue::Type::String && op.string == ">") rule.op = RuleOp::Greater;
    else if (op.type == ConfigValue::Type::String && (op.string == "<=" || op.string == "≤")) rule.op = RuleOp::LessEqual;
    else if (op.type == ConfigValue::Type::String && op.string == "<") rule.op = RuleOp::Less;
    else doc.fail_at(op, "expected \">=\", \">\", \"<=\" or \"<\", found ", op.describe());
    const ConfigValue& threshold = r.required("threshold");
    r.expect(threshold, ConfigValue::Type::Float);
    if (!std::isfinite(threshold.number)) doc.fail_at(threshold, "the threshold must be a finite number");
    rule.threshold = threshold.number;
    if (const ConfigValue* scope = r.optional("scope")) {
        const std::string& s = scope->string;
        if (scope->type == ConfigValue::Type::String && (s == "prompt" || s == "steps" || s == "both"))
            rule.scope = s == "prompt" ? RuleScope::Prompt : s == "steps" ? RuleScope::Steps : RuleScope::Both;
        else
            doc.fail_at(*scope, "expected \"prompt\", \"steps\" or \"both\", found ", scope->describe());
    }
    rule.pause = r.bool_or("pause", true);
    r.finish();
    return rule;
}

}  // namespace

RuleSet parse_rules(std::string_view text, const std::string& file_name, std::shared_ptr<const Ontology> ontology,
                    ConfigFormat format) {
    const ConfigDocument doc = parse_config(text, file_name, format);
    RuleSet set;
    set.file = file_name;
    set.ontology = std::move(ontology);
    ConfigTableReader root(doc, doc.root, {"rules"});
    const ConfigValue& rules = root.required("rules");
    if (rules.type != ConfigValue::Type::Array)
        doc.fail_at(rules, "expected an array of rules (TOML: [[rules]] tables), found ", rules.describe());
    if (rules.items.empty()) doc.fail_at(rules, "the file has no rules");
    root.finish();
    for (size_t i = 0; i < rules.items.size(); ++i) {
        Rule rule = parse_rule(doc, rules.items[i], i, set.ontology.get());
        for (const Rule& other : set.rules)
            if (other.id == rule.id)
                doc.fail_at(*rules.items[i].find("id"), "the id \"", rule.id, "\" is used twice (first at line ", other.line, ")");
        set.rules.push_back(std::move(rule));
    }
    return set;
}

RuleSet load_rules(const std::string& path, std::shared_ptr<const Ontology> ontology, ConfigFormat format) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot read the rules file");
    const std::string text{std::istreambuf_iterator<char>(in), {}};
    return parse_rules(text, path, std::move(ontology), format);
}

// ---- evaluation ---------------------------------------------------------------------------------

namespace {

std::string rule_where(const RuleSet& rules, const Rule& rule) {
    return cat("rule \"", rule.id, "\" (", rules.file, ":", rule.line, ")");
}

// The spans a selector picks in text[0, text_end) with tokens [0, token_end); spans without tokens
// there are dropped.
std::vector<TextSpan> selector_spans(const RuleSet& rules, const SpanSelector& selector, const Session& session,
                                     size_t text_end, int64_t token_end) {
    std::vector<TextSpan> spans;
    const int64_t n = std::min<int64_t>(token_end, session.positions());
    switch (selector.kind) {
        case SpanSelectorKind::Regex: spans = regex_spans(session.text, session.tokens, *selector.regex, text_end); break;
        case SpanSelectorKind::Type:
            if (!rules.ontology) fail("a rule selects the ontology type \"", selector.type_name, "\" but the rule set has no ontology");
            spans = match_type(*rules.ontology, selector.type, session.text, session.tokens, text_end);
            break;
        case SpanSelectorKind::Tokens: {
            TextSpan span;
            span.first = std::min(selector.first, n);
            span.last = std::min(selector.last, n);
            if (span.last > span.first) {
                span.begin = session.tokens[static_cast<size_t>(span.first)].begin;
                span.end = session.tokens[static_cast<size_t>(span.last - 1)].end;
                spans.push_back(span);
            }
            break;
        }
        case SpanSelectorKind::Bytes: {
            TextSpan span;
            span.begin = static_cast<uint32_t>(std::min<int64_t>(selector.first, static_cast<int64_t>(text_end)));
            span.end = static_cast<uint32_t>(std::min<int64_t>(selector.last, static_cast<int64_t>(std::min(text_end, session.text.size()))));
            if (span.end > span.begin) {
                std::tie(span.first, span.last) = tokens_overlapping(session.tokens, span.begin, span.end);
                spans.push_back(span);
            }
            break;
        }
        case SpanSelectorKind::Any: {
            TextSpan span;
            span.first = 0;
            span.last = n;
            span.begin = 0;
            span.end = static_cast<uint32_t>(std::min(text_end, session.text.size()));
            if (n > 0) spans.push_back(span);
            break;
        }
    }
    std::vector<TextSpan> kept;
    for (TextSpan span : spans) {
        span.last = std::min(span.last, n);
        if (span.last > span.first) kept.push_back(span);
    }
    return kept;
}

// The prompt's text end (bytes) and token count, limited to what is captured.
std::pair<size_t, int64_t> prompt_extent(const Session& session) {
    const int64_t prompt = std::min<int64_t>({session.prompt_tokens, session.positions(), session.capture->positions()});
    size_t end = 0;
    for (int64_t i = 0; i < prompt; ++i) end = std::max<size_t>(end, session.tokens[static_cast<size_t>(i)].end);
    return {end, prompt};
}

RuleCheck measure(const Rule& rule, const CpuTileSource& source, std::span<const HeadRef> heads, int64_t step,
                  const TextSpan& query, int64_t q0, int64_t q1, std::vector<TokenRun> keys, int threads) {
    RuleCheck check;
    check.step = step;
    check.query = query;
    check.q0 = q0;
    check.q1 = q1;
    check.keys = std::move(keys);
    check.heads.resize(heads.size());
    for_each_parallel(static_cast<int64_t>(heads.size()), threads, [&](int64_t i) {
        const HeadRef& h = heads[static_cast<size_t>(i)];
        HeadValue& v = check.heads[static_cast<size_t>(i)];
        v.layer = h.layer;
        v.head = h.head;
        v.value = span_attention_share(source, h.layer, h.head, q0, q1, check.keys);
        v.satisfies = rule_satisfied(rule.op, v.value, rule.threshold);
    });
    const bool wants_large = rule.op == RuleOp::GreaterEqual || rule.op == RuleOp::Greater;
    auto pick = [&](bool largest) {
        size_t best = 0;
        for (size_t i = 1; i < check.heads.size(); ++i)
            if (largest ? check.heads[i].value > check.heads[best].value : check.heads[i].value < check.heads[best].value)
                best = i;
        check.value = check.heads[best].value;
        check.head = {check.heads[best].layer, check.heads[best].head};
    };
    switch (rule.aggregate) {
        case RuleAggregate::Max: pick(true); break;
        case RuleAggregate::Min: pick(false); break;
        case RuleAggregate::Any: pick(wants_large); break;
        case RuleAggregate::All: pick(!wants_large); break;
        case RuleAggregate::Mean: {
            double sum = 0;
            for (const HeadValue& v : check.heads) sum += v.value;
            check.value = sum / static_cast<double>(check.heads.size());
            break;
        }
    }
    check.passed = rule_satisfied(rule.op, check.value, rule.threshold);
    if (!check.passed)
        for (const HeadValue& v : check.heads)
            if (!v.satisfies) check.offending.push_back({v.layer, v.head});
    return check;
}

// Why nothing was checked, counted while trying.
struct Skips {
    int64_t no_query_prompt = 0, no_key_prompt = 0, key_after_prompt = 0;
    int64_t steps_seen = 0, steps_not_query = 0, steps_no_key = 0;
};

// Adds the prompt's checks of one rule.
void check_prompt(const RuleSet& rules, const Rule& rule, const Session& session, const CpuTileSource& source,
                  std::span<const HeadRef> heads, int threads, RuleResult& result, Skips& skips) {
    const auto [text_end, prompt] = prompt_extent(session);
    const std::vector<TextSpan> queries = selector_spans(rules, rule.query, session, text_end, prompt);
    const std::vector<TextSpan> key_spans = selector_spans(rules, rule.key, session, text_end, prompt);
    const std::vector<TokenRun> keys = token_runs(key_spans);
    if (queries.empty()) ++skips.no_query_prompt;
    if (keys.empty()) ++skips.no_key_prompt;
    if (queries.empty() || keys.empty()) return;
    for (const TextSpan& query : queries) {
        const auto [q0, q1] = queries_seeing(query, keys);
        if (q1 <= q0) {
            ++skips.key_after_prompt;
            continue;
        }
        result.checks.push_back(measure(rule, source, heads, -1, query, q0, q1, keys, threads));
    }
}

// Adds the check of one decode step (if the rule applies there).
void check_step(const RuleSet& rules, const Rule& rule, const Session& session, const CpuTileSource& source,
                std::span<const HeadRef> heads, int64_t step, int threads, RuleResult& result, Skips& skips) {
    const int64_t q = session.prompt_tokens + step;
    if (step < 0 || step >= static_cast<int64_t>(session.steps.size()) || q >= session.positions() ||
        q >= session.capture->positions())
        return;
    ++skips.steps_seen;
    const size_t text_end = session.tokens[static_cast<size_t>(q)].end;
    TextSpan query;
    query.first = q;
    query.last = q + 1;
    query.begin = session.tokens[static_cast<size_t>(q)].begin;
    query.end = static_cast<uint32_t>(text_end);
    if (rule.query.kind != SpanSelectorKind::Any) {
        bool applies = false;
        for (const TextSpan& span : selector_spans(rules, rule.query, session, text_end, q + 1))
            if (span.first <= q && q < span.last) {
                query = span;
                applies = true;
                break;
            }
        if (!applies) {
            ++skips.steps_not_query;
            return;
        }
    }
    std::vector<TokenRun> keys = token_runs(selector_spans(rules, rule.key, session, text_end, q + 1));
    if (keys.empty()) {
        ++skips.steps_no_key;
        return;
    }
    result.checks.push_back(measure(rule, source, heads, step, query, q, q + 1, std::move(keys), threads));
}

void finish_result(const Rule& rule, RuleResult& result, const Skips& skips, bool heads_empty) {
    for (const RuleCheck& check : result.checks) {
        if (check.passed) continue;
        ++result.violations;
        if (check.step < 0) result.prompt_violated = true;
        else result.offending_steps.push_back(check.step);
        result.offending_heads.insert(result.offending_heads.end(), check.offending.begin(), check.offending.end());
        result.offending_spans.push_back(check.query);
    }
    std::sort(result.offending_steps.begin(), result.offending_steps.end());
    result.offending_steps.erase(std::unique(result.offending_steps.begin(), result.offending_steps.end()),
                                 result.offending_steps.end());
    auto head_less = [](const HeadRef& a, const HeadRef& b) { return std::pair(a.layer, a.head) < std::pair(b.layer, b.head); };
    std::sort(result.offending_heads.begin(), result.offending_heads.end(), head_less);
    result.offending_heads.erase(std::unique(result.offending_heads.begin(), result.offending_heads.end()),
                                 result.offending_heads.end());
    std::sort(result.offending_spans.begin(), result.offending_spans.end(),
              [](const TextSpan& a, const TextSpan& b) { return std::pair(a.begin, a.end) < std::pair(b.begin, b.end); });
    result.offending_spans.erase(
        std::unique(result.offending_spans.begin(), result.offending_spans.end(),
                    [](const TextSpan& a, const TextSpan& b) { return a.begin == b.begin && a.end == b.end; }),
        result.offending_spans.end());

    if (result.violations > 0) {
        result.verdict = Verdict::Fail;
        result.reason = cat(result.violations, " of ", result.checks.size(), " checks failed");
    } else if (!result.checks.empty()) {
        result.verdict = Verdict::Pass;
        result.reason = cat(result.checks.size(), result.checks.size() == 1 ? " check" : " checks", " passed");
    } else {
        result.verdict = Verdict::NotApplicable;
        std::vector<std::string> why;
        if (heads_empty) {
            std::string labels;
            for (const std::string& l : rule.labels) labels += (labels.empty() ? "'" : ", '") + l + "'";
            why.push_back(rule.labels.empty() ? "no head selected"
                                              : cat("no head in the selected layers carries the label ", labels));
        }
        if (skips.no_query_prompt) why.push_back(cat("the query selector ", rule.query.describe(), " matches nothing in the prompt"));
        if (skips.no_key_prompt) why.push_back(cat("the key selector ", rule.key.describe(), " matches nothing in the prompt"));
        if (skips.key_after_prompt) why.push_back("no key token comes before a query span's last token in the prompt");
        if (skips.steps_seen == 0 && rule.checks_steps() && !heads_empty) why.push_back("no decode steps to check");
        if (skips.steps_not_query) why.push_back(cat("no step's token matches the query selector ", rule.query.describe()));
        if (skips.steps_no_key) why.push_back(cat("the key selector ", rule.key.describe(), " matched nothing before a checked step"));
        std::string reason;
        for (const std::string& w : why) reason += (reason.empty() ? "" : "; ") + w;
        result.reason = reason.empty() ? "nothing to check" : reason;
    }
}

}  // namespace

IndexRange parse_index_range(std::string_view text, const char* what) {
    ConfigDocument doc;
    doc.file = cat("--", what, "s");
    ConfigValue value;
    value.type = ConfigValue::Type::String;
    value.string = std::string(text);
    return parse_range(doc, value, what);
}

namespace {

std::vector<HeadRef> heads_in(const CaptureShape& shape, IndexRange layers, IndexRange heads,
                              const std::vector<std::string>& labels, const Session& session,
                              const std::vector<HeadFingerprint>* fingerprints, const std::string& who) {
    const int layer_last = layers.last < 0 ? shape.n_layer - 1 : layers.last;
    const int head_last = heads.last < 0 ? shape.n_head - 1 : heads.last;
    if (layers.first >= shape.n_layer || layer_last >= shape.n_layer)
        fail(who, "layers ", layers.first, "-", layer_last, " are outside the model's ", shape.n_layer, " layers (0-",
             shape.n_layer - 1, ")");
    if (heads.first >= shape.n_head || head_last >= shape.n_head)
        fail(who, "heads ", heads.first, "-", head_last, " are outside the model's ", shape.n_head, " heads per layer (0-",
             shape.n_head - 1, ")");
    std::vector<std::pair<int, int>> labelled;
    for (const std::string& label : labels) {
        const auto found = heads_with_label(*fingerprints, session.head_labels, label);
        labelled.insert(labelled.end(), found.begin(), found.end());
    }
    std::vector<HeadRef> out;
    for (int layer = layers.first; layer <= layer_last; ++layer)
        for (int head = heads.first; head <= head_last; ++head)
            if (labels.empty() || std::find(labelled.begin(), labelled.end(), std::pair{layer, head}) != labelled.end())
                out.push_back({layer, head});
    return out;
}

}  // namespace

std::vector<HeadRef> select_heads(const Session& session, IndexRange layers, IndexRange heads,
                                  const std::vector<std::string>& labels,
                                  const std::vector<HeadFingerprint>* fingerprints) {
    if (!session.capture) fail("the session holds no capture");
    std::vector<HeadFingerprint> computed;
    if (!fingerprints && !labels.empty()) {
        computed = compute_head_fingerprints(session).fingerprints.all();
        fingerprints = &computed;
    }
    return heads_in(session.capture->shape(), layers, heads, labels, session, fingerprints, "");
}

std::vector<std::vector<HeadRef>> resolve_rule_heads(const RuleSet& rules, const Session& session,
                                                     const std::vector<HeadFingerprint>* fingerprints) {
    if (!session.capture) fail("rules: the session holds no capture");
    std::vector<HeadFingerprint> computed;
    if (!fingerprints && rules.uses_labels()) {
        computed = compute_head_fingerprints(session).fingerprints.all();
        fingerprints = &computed;
    }
    std::vector<std::vector<HeadRef>> out;
    for (const Rule& rule : rules.rules)
        out.push_back(heads_in(session.capture->shape(), rule.layers, rule.heads, rule.labels, session, fingerprints,
                               rule_where(rules, rule) + ": "));
    return out;
}

RuleResult evaluate_rule(const RuleSet& rules, size_t index, const Session& session, const CpuTileSource& source,
                         std::span<const HeadRef> heads, int64_t step, int threads) {
    if (index >= rules.rules.size()) fail("rules: there is no rule ", index);
    if (!session.capture) fail("rules: the session holds no capture");
    const Rule& rule = rules.rules[index];
    RuleResult result;
    result.rule = index;
    result.heads.assign(heads.begin(), heads.end());
    Skips skips;
    if (!heads.empty()) {
        if (step < 0 && rule.checks_prompt()) check_prompt(rules, rule, session, source, heads, threads, result, skips);
        if (step >= 0 && rule.checks_steps()) check_step(rules, rule, session, source, heads, step, threads, result, skips);
    }
    if (step >= 0 && !result.checks.empty()) {
        result.query_spans = {result.checks.front().query};
    }
    finish_result(rule, result, skips, heads.empty());
    return result;
}

RulesReport evaluate_rules(const RuleSet& rules, const Session& session, const CpuTileSource& source,
                           const RuleEvaluationOptions& options) {
    if (!session.capture) fail("rules: the session holds no capture");
    RulesReport report;
    report.rules_file = rules.file;
    report.ontology_file = rules.ontology ? rules.ontology->file : "";
    const std::vector<std::vector<HeadRef>> heads = resolve_rule_heads(rules, session, options.fingerprints);
    const int64_t steps = static_cast<int64_t>(session.steps.size());
    for (size_t r = 0; r < rules.rules.size(); ++r) {
        const Rule& rule = rules.rules[r];
        RuleResult result;
        result.rule = r;
        result.heads = heads[r];
        Skips skips;
        const bool prompt = options.prompt && rule.checks_prompt();
        const bool each_step = options.steps && rule.checks_steps();
        if (!heads[r].empty()) {
            if (prompt) check_prompt(rules, rule, session, source, heads[r], options.threads, result, skips);
            if (each_step)
                for (int64_t t = 0; t < steps; ++t)
                    check_step(rules, rule, session, source, heads[r], t, options.threads, result, skips);
        }
        // The match log: every span the selectors pick over the text evaluated.
        const size_t text_end = each_step ? session.text.size() : prompt_extent(session).first;
        const int64_t token_end = each_step ? session.positions() : prompt_extent(session).second;
        result.query_spans = selector_spans(rules, rule.query, session, text_end, token_end);
        result.key_spans = selector_spans(rules, rule.key, session, text_end, token_end);
        finish_result(rule, result, skips, heads[r].empty());
        switch (result.verdict) {
            case Verdict::Pass: ++report.passed; break;
            case Verdict::Fail: ++report.failed; break;
            case Verdict::NotApplicable: ++report.not_applicable; break;
        }
        report.results.push_back(std::move(result));
    }
    report.overall = report.failed ? Verdict::Fail : report.passed ? Verdict::Pass : Verdict::NotApplicable;
    return report;
}

// ---- output ----------------------------------------------------------------------------------------

namespace {

nlohmann::json head_json(const HeadRef& h) { return {{"layer", h.layer}, {"head", h.head}}; }

nlohmann::json span_json(const TextSpan& span, const Session& session, const RuleSet& rules) {
    nlohmann::json j = text_span_json(span, session.text);
    if (span.type >= 0 && rules.ontology) j["type"] = rules.ontology->types[static_cast<size_t>(span.type)].name;
    return j;
}

nlohmann::json selector_json(const SpanSelector& s) {
    nlohmann::json j{{"kind", span_selector_kind_name(s.kind)}, {"text", s.describe()}};
    switch (s.kind) {
        case SpanSelectorKind::Regex:
            j["pattern"] = s.pattern;
            j["ignore_case"] = s.ignore_case;
            break;
        case SpanSelectorKind::Type: j["type"] = s.type_name; break;
        case SpanSelectorKind::Tokens:
        case SpanSelectorKind::Bytes:
            j["first"] = s.first;
            j["last"] = s.last;
            break;
        case SpanSelectorKind::Any: break;
    }
    return j;
}

nlohmann::json range_json(const IndexRange& r) {
    return {{"first", r.first}, {"last", r.last < 0 ? nlohmann::json() : nlohmann::json(r.last)}};
}

}  // namespace

nlohmann::json rule_result_json(const RuleResult& result, const RuleSet& rules, const Session& session) {
    const Rule& rule = rules.rules.at(result.rule);
    nlohmann::json j;
    j["index"] = result.rule;
    j["id"] = rule.id;
    j["description"] = rule.description;
    j["line"] = rule.line;
    j["spec"] = {{"layers", range_json(rule.layers)},
                 {"heads", range_json(rule.heads)},
                 {"labels", rule.labels},
                 {"query", selector_json(rule.query)},
                 {"key", selector_json(rule.key)},
                 {"aggregate", rule_aggregate_name(rule.aggregate)},
                 {"op", rule_op_name(rule.op)},
                 {"threshold", rule.threshold},
                 {"scope", rule_scope_name(rule.scope)},
                 {"pause", rule.pause}};
    j["verdict"] = verdict_name(result.verdict);
    j["reason"] = result.reason;
    nlohmann::json heads = nlohmann::json::array();
    for (const HeadRef& h : result.heads) heads.push_back(head_json(h));
    j["heads"] = std::move(heads);
    auto spans = [&](const std::vector<TextSpan>& list) {
        nlohmann::json a = nlohmann::json::array();
        for (const TextSpan& s : list) a.push_back(span_json(s, session, rules));
        return a;
    };
    j["query_spans"] = spans(result.query_spans);
    j["key_spans"] = spans(result.key_spans);
    nlohmann::json checks = nlohmann::json::array();
    for (const RuleCheck& c : result.checks) {
        nlohmann::json check;
        check["scope"] = c.step < 0 ? "prompt" : "step";
        check["step"] = c.step < 0 ? nlohmann::json() : nlohmann::json(c.step);
        check["query"] = span_json(c.query, session, rules);
        check["query_rows"] = {{"first", c.q0}, {"last", c.q1}};
        nlohmann::json keys = nlohmann::json::array();
        for (const TokenRun& k : c.keys) keys.push_back({{"first", k.first}, {"last", k.last}});
        check["key_runs"] = std::move(keys);
        check["value"] = c.value;
        check["head"] = c.head.layer < 0 ? nlohmann::json() : head_json(c.head);
        check["passed"] = c.passed;
        nlohmann::json per_head = nlohmann::json::array();
        for (const HeadValue& v : c.heads)
            per_head.push_back({{"layer", v.layer}, {"head", v.head}, {"value", v.value}, {"satisfies", v.satisfies}});
        check["per_head"] = std::move(per_head);
        nlohmann::json offending = nlohmann::json::array();
        for (const HeadRef& h : c.offending) offending.push_back(head_json(h));
        check["offending_heads"] = std::move(offending);
        checks.push_back(std::move(check));
    }
    j["checks"] = std::move(checks);
    j["violations"] = result.violations;
    j["prompt_violated"] = result.prompt_violated;
    j["offending_steps"] = result.offending_steps;
    nlohmann::json offending_heads = nlohmann::json::array();
    for (const HeadRef& h : result.offending_heads) offending_heads.push_back(head_json(h));
    j["offending_heads"] = std::move(offending_heads);
    j["offending_spans"] = spans(result.offending_spans);
    return j;
}

nlohmann::json rules_report_json(const RulesReport& report, const RuleSet& rules, const Session& session) {
    nlohmann::json j;
    j["schema"] = "attnscope.rules-result/1";
    j["rules_file"] = report.rules_file;
    j["ontology_file"] = report.ontology_file.empty() ? nlohmann::json() : nlohmann::json(report.ontology_file);
    j["session"] = {{"positions", session.positions()},
                    {"prompt_tokens", session.prompt_tokens},
                    {"steps", session.steps.size()},
                    {"text_bytes", session.text.size()}};
    j["summary"] = {{"rules", report.results.size()},
                    {"passed", report.passed},
                    {"failed", report.failed},
                    {"not_applicable", report.not_applicable},
                    {"verdict", verdict_name(report.overall)}};
    nlohmann::json results = nlohmann::json::array();
    for (const RuleResult& r : report.results) results.push_back(rule_result_json(r, rules, session));
    j["rules"] = std::move(results);
    return j;
}

namespace {

std::string quoted(std::string_view text) {
    std::string out = "\"";
    for (char c : text) {
        if (c == '\n') out += "\\n";
        else if (c == '"') out += "\\\"";
        else out += c;
    }
    return out + "\"";
}

std::string fmt(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.4g", v);
    return buffer;
}

}  // namespace

std::string rules_report_text(const RulesReport& report, const RuleSet& rules, const Session& session,
                              const std::vector<PiiSpan>& pii) {
    std::string out;
    auto span_text = [&](const TextSpan& s) {
        const uint32_t end = std::min<uint32_t>(s.end, static_cast<uint32_t>(session.text.size()));
        const uint32_t begin = std::min(s.begin, end);
        const std::string shown = pii.empty() ? session.text.substr(begin, end - begin)
                                              : mask_pii_range(session.text, begin, end, pii);
        return quoted(std::string_view(shown));
    };
    for (const RuleResult& r : report.results) {
        const Rule& rule = rules.rules[r.rule];
        const char* tag = r.verdict == Verdict::Pass ? "PASS" : r.verdict == Verdict::Fail ? "FAIL" : "N/A ";
        out += cat(tag, "  ", rule.id, " (", rules.file, ":", rule.line, "): ", rule_aggregate_name(rule.aggregate),
                   " mass from ", rule.query.describe(), " to ", rule.key.describe(), " ", rule_op_name(rule.op), " ",
                   fmt(rule.threshold), " over ", r.heads.size(), r.heads.size() == 1 ? " head" : " heads", ", ",
                   rule_scope_name(rule.scope), ": ", r.reason, "\n");
        int shown = 0;
        for (const RuleCheck& c : r.checks) {
            if (c.passed) continue;
            if (++shown > 10) {
                out += cat("      … and ", r.violations - 10, " more violations\n");
                break;
            }
            std::string heads;
            for (size_t i = 0; i < c.offending.size() && i < 8; ++i)
                heads += cat(i ? " " : "", "L", c.offending[i].layer, "H", c.offending[i].head);
            if (c.offending.size() > 8) heads += cat(" … (", c.offending.size(), ")");
            out += cat("      ", c.step < 0 ? std::string("prompt") : cat("step ", c.step), " ", span_text(c.query),
                       " tokens ", c.q0, "..", c.q1, ": ", fmt(c.value),
                       c.head.layer >= 0 ? cat(" (L", c.head.layer, "H", c.head.head, ")") : std::string(), " not ",
                       rule_op_name(rule.op), " ", fmt(rule.threshold), "; offending heads ", heads, "\n");
        }
    }
    out += cat("summary: ", report.failed, " failed, ", report.passed, " passed, ", report.not_applicable,
               " not applicable (", report.results.size(), " rules)\n");
    return out;
}

}  // namespace attn
