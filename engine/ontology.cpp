#include "engine/ontology.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/attention_metrics.h"
#include "engine/error.h"

namespace attn {

const char* strength_name(Strength strength) {
    switch (strength) {
        case Strength::Strong: return "strong";
        case Strength::Weak: return "weak";
        case Strength::NearZero: return "near-zero";
        case Strength::Value: return "value";
    }
    return "?";
}

const char* head_aggregate_name(HeadAggregate aggregate) {
    switch (aggregate) {
        case HeadAggregate::Max: return "max";
        case HeadAggregate::Mean: return "mean";
        case HeadAggregate::Min: return "min";
    }
    return "?";
}

int Ontology::type_index(std::string_view name) const {
    for (size_t i = 0; i < types.size(); ++i)
        if (types[i].name == name) return static_cast<int>(i);
    return -1;
}

// ---- parsing -------------------------------------------------------------------------------------

namespace {

bool is_ascii_word_byte(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string escape_regex(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (std::string_view("\\^$.|?*+()[]{}/").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

// One alternation of literal words, longest first; \b only where a word ends in an ASCII word
// character (a Chinese word has no word boundary to ask for).
std::string words_pattern(std::vector<std::string> words) {
    std::stable_sort(words.begin(), words.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    std::string pattern;
    for (const std::string& word : words) {
        if (!pattern.empty()) pattern += '|';
        if (is_ascii_word_byte(word.front())) pattern += "\\b";
        pattern += escape_regex(word);
        if (is_ascii_word_byte(word.back())) pattern += "\\b";
    }
    return "(?:" + pattern + ")";
}

double unit_number(const ConfigDocument& doc, ConfigTableReader& reader, std::string_view key, double fallback,
                   double lowest = 0, double highest = 1) {
    const ConfigValue* value = reader.optional(key);
    if (!value) return fallback;
    reader.expect(*value, ConfigValue::Type::Float);
    if (!(value->number >= lowest && value->number <= highest))
        doc.fail_at(*value, "expected a number in [", lowest, ", ", highest, "], found ", value->number);
    return value->number;
}

HeadAggregate parse_head_aggregate_value(const ConfigDocument& doc, const ConfigValue& value) {
    if (value.type == ConfigValue::Type::String) {
        if (value.string == "max") return HeadAggregate::Max;
        if (value.string == "mean") return HeadAggregate::Mean;
        if (value.string == "min") return HeadAggregate::Min;
    }
    doc.fail_at(value, "expected \"max\", \"mean\" or \"min\", found ", value.describe());
}

}  // namespace

Ontology parse_ontology(const ConfigDocument& doc) {
    Ontology ontology;
    ontology.file = doc.file;
    ConfigTableReader root(doc, doc.root, {"thresholds", "types", "relations"});

    if (const ConfigValue* thresholds = root.optional("thresholds")) {
        ConfigTableReader t(doc, *thresholds, {"strong", "weak", "near_zero", "factor"});
        ontology.thresholds.strong = unit_number(doc, t, "strong", ontology.thresholds.strong);
        ontology.thresholds.weak = unit_number(doc, t, "weak", ontology.thresholds.weak);
        ontology.thresholds.near_zero = unit_number(doc, t, "near_zero", ontology.thresholds.near_zero);
        ontology.thresholds.factor = unit_number(doc, t, "factor", ontology.thresholds.factor, 1, 1e6);
        t.finish();
    }

    const ConfigValue& types = root.required("types");
    if (types.type != ConfigValue::Type::Array)
        doc.fail_at(types, "expected an array of entity types (TOML: [[types]] tables), found ", types.describe());
    if (types.items.empty()) doc.fail_at(types, "the ontology needs at least one entity type");
    for (const ConfigValue& entry : types.items) {
        ConfigTableReader t(doc, entry, {"name", "patterns", "words", "ignore_case"});
        EntityType type;
        type.line = entry.line;
        const ConfigValue& name = t.required("name");
        t.expect(name, ConfigValue::Type::String);
        if (name.string.empty()) doc.fail_at(name, "an entity type's name must not be empty");
        if (ontology.type_index(name.string) >= 0)
            doc.fail_at(name, "the entity type \"", name.string, "\" is defined twice (first at line ",
                        ontology.types[ontology.type_index(name.string)].line, ")");
        type.name = name.string;
        type.ignore_case = t.bool_or("ignore_case", false);
        type.patterns = t.strings_or_empty("patterns");
        type.words = t.strings_or_empty("words");
        if (type.patterns.empty() && type.words.empty())
            doc.fail_at(entry, "the entity type \"", type.name, "\" has no \"patterns\" and no \"words\"");
        const ConfigValue* patterns = entry.find("patterns");
        for (size_t i = 0; i < type.patterns.size(); ++i) {
            const ConfigValue& where = patterns->type == ConfigValue::Type::Array ? patterns->items[i] : *patterns;
            if (type.patterns[i].empty()) doc.fail_at(where, "an empty pattern matches nothing");
            try {
                type.regexes.push_back(std::make_shared<const std::regex>(compile_pattern(type.patterns[i], type.ignore_case)));
            } catch (const Error& e) {
                doc.fail_at(where, e.what());
            }
        }
        if (!type.words.empty()) {
            const ConfigValue* words = entry.find("words");
            for (size_t i = 0; i < type.words.size(); ++i)
                if (type.words[i].empty())
                    doc.fail_at(words->type == ConfigValue::Type::Array ? words->items[i] : *words,
                                "an empty word matches nothing");
            type.regexes.push_back(
                std::make_shared<const std::regex>(compile_pattern(words_pattern(type.words), type.ignore_case)));
        }
        t.finish();
        ontology.types.push_back(std::move(type));
    }

    if (const ConfigValue* relations = root.optional("relations")) {
        if (relations->type != ConfigValue::Type::Array)
            doc.fail_at(*relations, "expected an array of relations (TOML: [[relations]] tables), found ",
                        relations->describe());
        for (const ConfigValue& entry : relations->items) {
            ConfigTableReader r(doc, entry, {"from", "to", "strength", "direction", "aggregate", "min", "max"});
            ExpectedRelation relation;
            relation.line = entry.line;
            for (const char* end : {"from", "to"}) {
                const ConfigValue& name = r.required(end);
                r.expect(name, ConfigValue::Type::String);
                const int index = ontology.type_index(name.string);
                if (index < 0) {
                    std::string known;
                    for (const EntityType& type : ontology.types) known += (known.empty() ? "" : ", ") + type.name;
                    doc.fail_at(name, "unknown entity type \"", name.string, "\" (the types are: ", known, ")");
                }
                (std::string_view(end) == "from" ? relation.from : relation.to) = name.string;
                (std::string_view(end) == "from" ? relation.from_type : relation.to_type) = index;
            }
            const ConfigValue& strength = r.required("strength");
            if (strength.is_number()) {
                if (!(strength.number >= 0 && strength.number <= 1))
                    doc.fail_at(strength, "a numeric strength is an attention share in [0, 1], found ", strength.number);
                relation.strength = Strength::Value;
                relation.value = strength.number;
            } else if (strength.type == ConfigValue::Type::String &&
                       (strength.string == "strong" || strength.string == "weak" || strength.string == "near-zero" ||
                        strength.string == "near_zero" || strength.string == "near zero" || strength.string == "none")) {
                relation.strength = strength.string == "strong" ? Strength::Strong
                                    : strength.string == "weak" ? Strength::Weak
                                                                : Strength::NearZero;
            } else {
                doc.fail_at(strength, "expected \"strong\", \"weak\", \"near-zero\" or a number in [0, 1], found ",
                            strength.describe());
            }
            const OntologyThresholds& t = ontology.thresholds;
            switch (relation.strength) {
                case Strength::Strong: relation.min = t.strong, relation.max = 1; break;
                case Strength::Weak: relation.min = t.weak, relation.max = 1; break;
                case Strength::NearZero: relation.min = 0, relation.max = t.near_zero; break;
                case Strength::Value:
                    relation.min = relation.value / t.factor;
                    relation.max = std::min(1.0, relation.value * t.factor);
                    break;
            }
            relation.min = unit_number(doc, r, "min", relation.min);
            relation.max = unit_number(doc, r, "max", relation.max);
            if (relation.min > relation.max)
                doc.fail_at(entry, "the expected band is empty: min ", relation.min, " > max ", relation.max);
            const std::string direction = r.string_or("direction", "either");
            if (direction == "forward") relation.forward_only = true;
            else if (direction != "either") doc.fail_at(*entry.find("direction"), "expected \"either\" or \"forward\", found \"", direction, "\"");
            if (const ConfigValue* aggregate = r.optional("aggregate"))
                relation.aggregate = parse_head_aggregate_value(doc, *aggregate);
            r.finish();
            ontology.relations.push_back(std::move(relation));
        }
    }
    root.finish();
    return ontology;
}

Ontology parse_ontology(std::string_view text, const std::string& file_name, ConfigFormat format) {
    return parse_ontology(parse_config(text, file_name, format));
}

Ontology load_ontology(const std::string& path, ConfigFormat format) { return parse_ontology(load_config(path, format)); }

// ---- spans ---------------------------------------------------------------------------------------

std::pair<int64_t, int64_t> tokens_overlapping(std::span<const Token> tokens, uint32_t begin, uint32_t end) {
    // Spans are ordered and contiguous: the first token ending after `begin`.
    auto it = std::partition_point(tokens.begin(), tokens.end(), [&](const Token& t) { return t.end <= begin; });
    int64_t first = -1, last = -1;
    for (; it != tokens.end() && it->begin < end; ++it) {
        if (it->end <= it->begin || it->end <= begin) continue;
        const int64_t position = it - tokens.begin();
        if (first < 0) first = position;
        last = position + 1;
    }
    if (first < 0) return {0, 0};
    return {first, last};
}

std::vector<TextSpan> regex_spans(std::string_view text, std::span<const Token> tokens, const std::regex& regex,
                                  size_t text_end) {
    const char* begin = text.data();
    const char* end = begin + std::min(text_end, text.size());
    std::vector<TextSpan> spans;
    for (std::cregex_iterator it(begin, end, regex), done; it != done; ++it) {
        if (it->length(0) == 0) continue;
        TextSpan span;
        span.begin = static_cast<uint32_t>(it->position(0));
        span.end = static_cast<uint32_t>(span.begin + it->length(0));
        std::tie(span.first, span.last) = tokens_overlapping(tokens, span.begin, span.end);
        spans.push_back(span);
    }
    return spans;
}

namespace {

void sort_unique(std::vector<TextSpan>& spans) {
    std::sort(spans.begin(), spans.end(), [](const TextSpan& a, const TextSpan& b) {
        return std::tuple(a.begin, a.end, a.type) < std::tuple(b.begin, b.end, b.type);
    });
    spans.erase(std::unique(spans.begin(), spans.end(),
                            [](const TextSpan& a, const TextSpan& b) {
                                return a.begin == b.begin && a.end == b.end && a.type == b.type;
                            }),
                spans.end());
}

}  // namespace

std::vector<TextSpan> match_type(const Ontology& ontology, int type, std::string_view text, std::span<const Token> tokens,
                                 size_t text_end) {
    if (type < 0 || type >= static_cast<int>(ontology.types.size())) fail("ontology: no entity type ", type);
    std::vector<TextSpan> spans;
    for (const auto& regex : ontology.types[static_cast<size_t>(type)].regexes)
        for (TextSpan span : regex_spans(text, tokens, *regex, text_end)) {
            span.type = type;
            spans.push_back(span);
        }
    sort_unique(spans);
    return spans;
}

std::vector<TextSpan> match_entities(const Ontology& ontology, std::string_view text, std::span<const Token> tokens,
                                     size_t text_end) {
    std::vector<TextSpan> spans;
    for (size_t type = 0; type < ontology.types.size(); ++type) {
        std::vector<TextSpan> some = match_type(ontology, static_cast<int>(type), text, tokens, text_end);
        spans.insert(spans.end(), some.begin(), some.end());
    }
    sort_unique(spans);
    return spans;
}

// ---- attention between spans -----------------------------------------------------------------------

std::vector<TokenRun> token_runs(std::span<const TextSpan> spans) {
    std::vector<TokenRun> runs;
    for (const TextSpan& span : spans)
        if (span.last > span.first) runs.push_back({span.first, span.last});
    std::sort(runs.begin(), runs.end(), [](const TokenRun& a, const TokenRun& b) { return a.first < b.first; });
    std::vector<TokenRun> merged;
    for (const TokenRun& run : runs) {
        if (!merged.empty() && run.first <= merged.back().last) merged.back().last = std::max(merged.back().last, run.last);
        else merged.push_back(run);
    }
    return merged;
}

double span_attention_share(const CpuTileSource& source, int layer, int head, int64_t q0, int64_t q1,
                            std::span<const TokenRun> keys) {
    if (q1 <= q0) return 0;
    double total = 0;
    for (const TokenRun& run : keys) {
        if (run.first >= q1) break;  // keys after every query: invisible
        total += source.mass(layer, head, q0, q1, run.first, run.last);
    }
    return total / static_cast<double>(q1 - q0);
}

std::pair<int64_t, int64_t> queries_seeing(const TextSpan& query, std::span<const TokenRun> keys) {
    if (keys.empty() || query.last <= query.first) return {0, 0};
    const int64_t q0 = std::max(query.first, keys.front().first);
    return q0 < query.last ? std::pair{q0, query.last} : std::pair<int64_t, int64_t>{0, 0};
}

// ---- anomaly check ------------------------------------------------------------------------------

OntologyReport check_ontology(const Ontology& ontology, const Session& session, const CpuTileSource& source,
                              std::span<const HeadRef> heads, int threads) {
    if (heads.empty()) fail("ontology check: no heads given");
    if (!session.capture) fail("ontology check: the session holds no capture");
    const CaptureShape& shape = session.capture->shape();
    for (const HeadRef& h : heads)
        if (h.layer < 0 || h.layer >= shape.n_layer || h.head < 0 || h.head >= shape.n_head)
            fail("ontology check: layer ", h.layer, " head ", h.head, " is not in the capture (", shape.n_layer, " layers × ",
                 shape.n_head, " heads)");
    OntologyReport report;
    report.heads.assign(heads.begin(), heads.end());
    report.spans = match_entities(ontology, session);
    const int64_t captured = session.capture->positions();

    struct Job {
        size_t relation, query, key;
        bool from_is_query;
    };
    std::vector<Job> jobs;
    for (size_t r = 0; r < ontology.relations.size(); ++r) {
        const ExpectedRelation& relation = ontology.relations[r];
        for (size_t f = 0; f < report.spans.size(); ++f) {
            if (report.spans[f].type != relation.from_type) continue;
            for (size_t t = 0; t < report.spans.size(); ++t) {
                if (report.spans[t].type != relation.to_type || t == f) continue;
                if (relation.from_type == relation.to_type && t < f) continue;  // each unordered pair once
                const TextSpan &from = report.spans[f], &to = report.spans[t];
                if (from.token_count() <= 0 || to.token_count() <= 0) continue;
                if (to.last <= from.first) jobs.push_back({r, f, t, true});
                else if (from.last <= to.first && !relation.forward_only) jobs.push_back({r, t, f, false});
            }
        }
    }
    std::vector<RelationPair> pairs(jobs.size());
    const int64_t work = static_cast<int64_t>(jobs.size() * heads.size());
    std::vector<double> shares(static_cast<size_t>(work), 0.0);
    for_each_parallel(work, threads, [&](int64_t index) {
        const Job& job = jobs[static_cast<size_t>(index) / heads.size()];
        const HeadRef& head = heads[static_cast<size_t>(index) % heads.size()];
        const TextSpan &query = report.spans[job.query], &key = report.spans[job.key];
        const TokenRun run{key.first, key.last};
        shares[static_cast<size_t>(index)] = span_attention_share(source, head.layer, head.head, query.first,
                                                                  std::min(query.last, captured), {&run, 1});
    });

    report.relations.resize(ontology.relations.size());
    for (size_t r = 0; r < ontology.relations.size(); ++r) report.relations[r].relation = r;
    for (size_t j = 0; j < jobs.size(); ++j) {
        const Job& job = jobs[j];
        const ExpectedRelation& relation = ontology.relations[job.relation];
        const TextSpan& query = report.spans[job.query];
        if (std::min(query.last, captured) <= query.first) continue;  // not captured yet
        RelationPair pair;
        pair.query_span = job.query;
        pair.key_span = job.key;
        pair.from_is_query = job.from_is_query;
        pair.query_tokens = std::min(query.last, captured) - query.first;
        pair.per_head.assign(shares.begin() + static_cast<ptrdiff_t>(j * heads.size()),
                             shares.begin() + static_cast<ptrdiff_t>((j + 1) * heads.size()));
        double sum = 0, lowest = 2;
        pair.max = -1;
        for (size_t h = 0; h < heads.size(); ++h) {
            sum += pair.per_head[h];
            lowest = std::min(lowest, pair.per_head[h]);
            if (pair.per_head[h] > pair.max) {
                pair.max = pair.per_head[h];
                pair.best = heads[h];
            }
        }
        pair.mean = sum / static_cast<double>(heads.size());
        pair.value = relation.aggregate == HeadAggregate::Max ? pair.max
                     : relation.aggregate == HeadAggregate::Mean ? pair.mean
                                                                 : lowest;
        if (pair.value < relation.min) pair.flag = "low";
        else if (pair.value > relation.max) pair.flag = "high";
        pair.flagged = !pair.flag.empty();
        RelationCheck& check = report.relations[job.relation];
        check.flagged += pair.flagged ? 1 : 0;
        report.anomalies += pair.flagged ? 1 : 0;
        check.pairs.push_back(std::move(pair));
    }
    return report;
}

nlohmann::json text_span_json(const TextSpan& span, std::string_view text) {
    const uint32_t end = std::min<uint32_t>(span.end, static_cast<uint32_t>(text.size()));
    const uint32_t begin = std::min(span.begin, end);
    return {{"begin", span.begin}, {"end", span.end}, {"first_token", span.first}, {"last_token", span.last},
            {"text", std::string(text.substr(begin, end - begin))}};
}

nlohmann::json ontology_report_json(const Ontology& ontology, const Session& session, const OntologyReport& report) {
    nlohmann::json out;
    out["ontology_file"] = ontology.file;
    nlohmann::json types = nlohmann::json::array();
    for (const EntityType& type : ontology.types)
        types.push_back({{"name", type.name}, {"patterns", type.patterns}, {"words", type.words},
                         {"ignore_case", type.ignore_case}, {"line", type.line}});
    out["types"] = std::move(types);
    nlohmann::json spans = nlohmann::json::array();
    for (const TextSpan& span : report.spans) {
        nlohmann::json s = text_span_json(span, session.text);
        s["type"] = ontology.types[static_cast<size_t>(span.type)].name;
        spans.push_back(std::move(s));
    }
    out["spans"] = std::move(spans);
    nlohmann::json heads = nlohmann::json::array();
    for (const HeadRef& h : report.heads) heads.push_back({{"layer", h.layer}, {"head", h.head}});
    out["heads"] = std::move(heads);
    nlohmann::json relations = nlohmann::json::array();
    for (const RelationCheck& check : report.relations) {
        const ExpectedRelation& relation = ontology.relations[check.relation];
        nlohmann::json r{{"from", relation.from},
                         {"to", relation.to},
                         {"strength", strength_name(relation.strength)},
                         {"expected_min", relation.min},
                         {"expected_max", relation.max},
                         {"direction", relation.forward_only ? "forward" : "either"},
                         {"aggregate", head_aggregate_name(relation.aggregate)},
                         {"line", relation.line},
                         {"flagged", check.flagged}};
        if (relation.strength == Strength::Value) r["value"] = relation.value;
        nlohmann::json pairs = nlohmann::json::array();
        for (const RelationPair& pair : check.pairs)
            pairs.push_back({{"query_span", pair.query_span},
                             {"key_span", pair.key_span},
                             {"from_is_query", pair.from_is_query},
                             {"query_tokens", pair.query_tokens},
                             {"value", pair.value},
                             {"mean", pair.mean},
                             {"max", pair.max},
                             {"best_head", {{"layer", pair.best.layer}, {"head", pair.best.head}}},
                             {"per_head", pair.per_head},
                             {"flag", pair.flag.empty() ? nlohmann::json() : nlohmann::json(pair.flag)}});
        r["pairs"] = std::move(pairs);
        relations.push_back(std::move(r));
    }
    out["relations"] = std::move(relations);
    out["anomalies"] = report.anomalies;
    return out;
}

}  // namespace attn
