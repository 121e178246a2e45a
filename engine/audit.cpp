#include "engine/audit.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "engine/atomic_file.h"
#include "engine/counterfactual.h"
#include "engine/error.h"
#include "engine/text_segments.h"

namespace attn {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// How far `value` misses the rule's threshold: > 0 fails, ≤ 0 passes (by that margin).
double miss_of(const Rule& rule, double value) {
    const bool at_least = rule.op == RuleOp::GreaterEqual || rule.op == RuleOp::Greater;
    return at_least ? rule.threshold - value : value - rule.threshold;
}

bool overlaps_keys(int64_t first, int64_t last, const std::vector<TokenRun>& keys) {
    for (const TokenRun& k : keys)
        if (first < k.last && k.first < last) return true;
    return false;
}

std::string head_name(const HeadRef& h) { return cat("L", h.layer, "H", h.head); }

std::string fmt(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.4g", v);
    return buffer;
}

// Noise for one exported array: each array draws from its own stream (the seed mixed with the
// array's index), so no two arrays carry the same noise.
class DpExporter {
public:
    explicit DpExporter(const std::optional<DpParams>& params) : params_(params) {}
    bool enabled() const { return params_.has_value(); }
    std::vector<float> exported(const std::vector<float>& exact) {
        std::vector<float> values = exact;
        if (!params_) return values;
        DpParams p = *params_;
        p.seed = params_->seed + 0x9E3779B97F4A7C15ull * ++arrays_;
        const DpNoiseReport r = add_dp_noise(values, p);
        if (!report_) report_ = r;
        else report_->values += r.values;
        return values;
    }
    std::optional<DpNoiseReport> report() const {
        if (params_ && !report_) {  // nothing was exported: still state the parameters
            DpNoiseReport r = dp_noise_parameters(*params_);
            r.values = 0;
            return r;
        }
        return report_;
    }

private:
    std::optional<DpParams> params_;
    std::optional<DpNoiseReport> report_;
    uint64_t arrays_ = 0;
};

// The smallest level whose single square tile holds query rows [r0, r1) and key columns [c0, c1).
TileRequest snapshot_tile(int layer, int head, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    TileRequest request;
    request.layer = layer;
    request.head = head;
    for (int level = 0; level < 40; ++level) {
        const int shift = level + 8;  // tokens per tile = 256 · 2^level
        if ((r0 >> shift) == ((r1 - 1) >> shift) && (c0 >> shift) == ((c1 - 1) >> shift)) {
            request.level = level;
            request.ty = r0 >> shift;
            request.tx = c0 >> shift;
            return request;
        }
    }
    fail("audit: no tile level holds tokens ", r0, "..", r1, " × ", c0, "..", c1);
}

struct Builder {
    const RuleSet& rules;
    const Session& session;
    const CpuTileSource& source;
    const AuditOptions& options;
    AuditReport& report;
    DpExporter dp;
    std::vector<Segment> words;

    // Mean over query rows [q0, q1) of each word segment's share (segments up to q1), exact.
    std::vector<AuditSpanMass> destinations(const HeadRef& head, int64_t q0, int64_t q1, const std::vector<TokenRun>& keys) {
        std::vector<double> mass(words.size(), 0.0);
        for (int64_t q = q0; q < q1; ++q) {
            const std::vector<float> row = source.row(head.layer, head.head, q);
            for (size_t s = 0; s < words.size(); ++s) {
                const Segment& seg = words[s];
                if (seg.first > q) break;
                double sum = 0;
                for (int64_t k = seg.first; k < std::min<int64_t>(seg.last, q + 1); ++k) sum += row[static_cast<size_t>(k)];
                mass[s] += sum;
            }
        }
        std::vector<AuditSpanMass> out;
        for (size_t s = 0; s < words.size(); ++s) {
            const Segment& seg = words[s];
            if (seg.first >= q1 || seg.token_count() == 0) continue;
            AuditSpanMass m;
            m.span.begin = seg.begin;
            m.span.end = seg.end;
            m.span.first = seg.first;
            m.span.last = seg.last;
            m.mass = mass[s] / static_cast<double>(q1 - q0);
            m.in_key = overlaps_keys(seg.first, seg.last, keys);
            m.head = head;
            out.push_back(m);
        }
        std::stable_sort(out.begin(), out.end(), [](const AuditSpanMass& a, const AuditSpanMass& b) { return a.mass > b.mass; });
        return out;
    }

    AuditSnapshot snapshot(size_t rule_index, size_t check_index, const RuleCheck& check, const HeadRef& head) {
        const int64_t n = std::min<int64_t>(session.positions(), session.capture->positions());
        const int64_t k0 = check.keys.empty() ? 0 : check.keys.front().first;
        const int64_t k1 = check.keys.empty() ? check.q1 : std::max(check.q1, check.keys.back().last);
        // Some context around the query rows and key columns, so the reader sees what else they look at.
        const int64_t extent = std::max(check.q1 - check.q0, k1 - k0);
        const int64_t margin = std::max<int64_t>(4, extent / 2);
        const int64_t r0 = std::max<int64_t>(0, check.q0 - margin), r1 = std::min(n, check.q1 + margin);
        const int64_t c0 = std::max<int64_t>(0, k0 - margin), c1 = std::min(n, k1 + margin);
        AuditSnapshot s;
        s.request = snapshot_tile(head.layer, head.head, r0, r1, c0, c1);
        const Tile tile = source.tile(s.request);
        const int level = s.request.level;
        s.row0 = static_cast<int>((r0 >> level) - s.request.ty * Tile::kEdge);
        s.row1 = static_cast<int>(((r1 - 1) >> level) - s.request.ty * Tile::kEdge + 1);
        s.col0 = static_cast<int>((c0 >> level) - s.request.tx * Tile::kEdge);
        s.col1 = static_cast<int>(((c1 - 1) >> level) - s.request.tx * Tile::kEdge + 1);
        s.valid_rows = tile.valid_rows;
        s.valid_cols = tile.valid_cols;
        const int cells = std::max(s.row1 - s.row0, s.col1 - s.col0);
        s.scale = std::clamp(options.snapshot_pixels / std::max(cells, 1), 1, 64);
        const std::string stem = cat("rule", rule_index + 1, "-check", check_index + 1, "-", head_name(head));
        s.array_id = stem + "-tile";
        s.png_file = stem + ".png";
        s.npy_file = stem + "-tile.npy";
        AttentionArrayRecord& array = add_tile_array(report.provenance, s.array_id, s.request, false, tile.sum, s.npy_file);
        array.noised = dp.enabled();
        s.tile = dp.exported(tile.sum);
        report.provenance.exhibits.push_back(
            {stem, "map", head.layer, head.head, check.step, check.q0, s.png_file,
             cat("level ", level, " tile (", s.request.tx, ", ", s.request.ty, ") cells ", s.row0, "..", s.row1, " × ",
                 s.col0, "..", s.col1, ", attention mass per cell", dp.enabled() ? ", with differential-privacy noise" : "")});
        return s;
    }

    AuditEvidence evidence(size_t rule_index, size_t check_index) {
        const Rule& rule = rules.rules[rule_index];
        const RuleCheck& check = report.result.results[rule_index].checks[check_index];
        AuditEvidence e;
        e.check = check_index;
        for (const HeadValue& v : check.heads)
            e.heads.push_back({{v.layer, v.head}, v.value, miss_of(rule, v.value), v.satisfies});
        // A failed check: the worst offenders first; a passed one: the heads that carry it first.
        std::stable_sort(e.heads.begin(), e.heads.end(), [&](const AuditHead& a, const AuditHead& b) {
            return check.passed ? a.miss < b.miss : a.miss > b.miss;
        });
        const size_t shown = std::min(e.heads.size(), static_cast<size_t>(std::max(options.max_heads_per_check, 1)));
        for (size_t i = 0; i < shown; ++i) {
            const HeadRef head = e.heads[i].head;
            const int64_t last_row = std::min(check.q1, check.q0 + std::max(options.max_rows_per_head, 1));
            for (int64_t q = check.q0; q < last_row; ++q) {
                const std::vector<float> exact = source.row(head.layer, head.head, q);
                AuditRow row;
                row.array_id = cat("rule", rule_index + 1, "-check", check_index + 1, "-", head_name(head), "-q", q);
                row.head = head;
                row.query = q;
                AttentionArrayRecord& array =
                    add_row_array(report.provenance, row.array_id, head.layer, head.head, q, exact, "report.json");
                array.noised = dp.enabled();
                row.values = dp.exported(exact);
                e.rows.push_back(std::move(row));
            }
        }
        if (!e.heads.empty()) {
            e.snapshot = snapshot(rule_index, check_index, check, e.heads.front().head);
            e.destinations = destinations(e.heads.front().head, check.q0, check.q1, check.keys);
        }
        return e;
    }

    AuditFix fix(size_t rule_index, const AuditRule& audit) {
        const Rule& rule = rules.rules[rule_index];
        const RuleResult& result = report.result.results[rule_index];
        AuditFix f;
        // Responsible heads: every offending head of every failed check, by its worst miss.
        std::vector<std::pair<AuditHead, int64_t>> heads;
        for (const RuleCheck& check : result.checks) {
            if (check.passed) continue;
            for (const HeadValue& v : check.heads) {
                if (v.satisfies) continue;
                const double miss = miss_of(rule, v.value);
                auto it = std::find_if(heads.begin(), heads.end(), [&](const auto& h) {
                    return h.first.head == HeadRef{v.layer, v.head};
                });
                if (it == heads.end()) {
                    heads.push_back({{{v.layer, v.head}, v.value, miss, false}, 1});
                } else {
                    ++it->second;
                    if (miss > it->first.miss) it->first.miss = miss, it->first.value = v.value;
                }
            }
        }
        std::stable_sort(heads.begin(), heads.end(), [](const auto& a, const auto& b) {
            return a.first.miss != b.first.miss ? a.first.miss > b.first.miss : a.second > b.second;
        });
        for (const auto& [head, count] : heads) {
            f.responsible_heads.push_back(head);
            f.failed_checks.push_back(count);
        }
        // Responsible spans: from the worst failed check (the first evidence) and its worst head.
        const bool at_least = rule.op == RuleOp::GreaterEqual || rule.op == RuleOp::Greater;
        if (!audit.evidence.empty() && !result.checks[audit.evidence.front().check].passed) {
            const RuleCheck& worst = result.checks[audit.evidence.front().check];
            const HeadRef head = audit.evidence.front().heads.front().head;
            for (const AuditSpanMass& m : destinations(head, worst.q0, worst.q1, worst.keys)) {
                if (static_cast<int>(f.responsible_spans.size()) >= options.top_spans) break;
                // ≥: where the attention went instead of the keys; ≤: the keys that took it.
                if (m.in_key != at_least && m.mass > 0) f.responsible_spans.push_back(m);
            }
        }
        AuditIntervention& iv = f.intervention;
        for (size_t i = 0; i < f.responsible_heads.size() && i < 4; ++i) iv.heads.push_back(f.responsible_heads[i].head);
        std::string heads_text;
        for (const HeadRef& h : iv.heads) heads_text += (heads_text.empty() ? "" : ", ") + head_name(h);
        if (!f.responsible_spans.empty()) {
            iv.kind = "mask_keys";
            iv.begin = f.responsible_spans.front().span.first;
            iv.end = f.responsible_spans.front().span.last;
            iv.description = cat("mask keys [", iv.begin, ", ", iv.end, ") in ", heads_text,
                                 at_least ? ": does the attention move to the required keys?"
                                          : ": what do these heads and the output do without the forbidden keys?");
        } else {
            iv.kind = "ablate_heads";
            iv.description = cat("ablate ", heads_text, " (zero output): how much of the behaviour do they carry?");
        }
        const std::string worst_heads = heads_text.empty() ? std::string("none") : heads_text;
        const std::string worst =
            f.responsible_heads.empty()
                ? std::string()
                : cat(" (worst ", head_name(f.responsible_heads.front().head), ": ", fmt(f.responsible_heads.front().value),
                      ", ", fmt(f.responsible_heads.front().miss), at_least ? " short of " : " over ",
                      rule_op_name(rule.op), " ", fmt(rule.threshold), ")");
        f.summary = at_least ? cat("heads ", worst_heads, " give the query too little attention on the keys", worst,
                                   f.responsible_spans.empty() ? std::string() : "; it goes to the spans listed instead")
                             : cat("heads ", worst_heads, " give the query too much attention on the keys", worst,
                                   f.responsible_spans.empty() ? std::string() : "; the spans listed take it");
        f.counterfactual_reason = options.counterfactual_reason;
        return f;
    }
};

json head_json(const HeadRef& h) { return {{"layer", h.layer}, {"head", h.head}}; }

json span_json(const AuditReport& report, const TextSpan& span) {
    json j = text_span_json(span, report.session->text);
    j["text"] = audit_text(report, span.begin, span.end);
    return j;
}

// Every span text in a match log as the report shows it (masked), every other string masked too.
void mask_log(const AuditReport& report, json& value) {
    if (value.is_object()) {
        if (value.contains("begin") && value.contains("end") && value.contains("text") && value["begin"].is_number() &&
            value["end"].is_number() && value["text"].is_string()) {
            value["text"] = audit_text(report, value["begin"].get<size_t>(), value["end"].get<size_t>());
        }
        for (auto& [key, item] : value.items()) mask_log(report, item);
    } else if (value.is_array()) {
        for (json& item : value) mask_log(report, item);
    } else if (value.is_string() && report.pii_masking) {
        value = mask_pii(value.get<std::string>());
    }
}

std::string rule_statement(const RuleSet& rules, const Rule& rule, size_t heads) {
    return cat(rule_aggregate_name(rule.aggregate), " attention share from ", rule.query.describe(), " to ",
               rule.key.describe(), " ", rule_op_name(rule.op), " ", fmt(rule.threshold), " over ", heads,
               heads == 1 ? " head" : " heads", " (layers ", rule.layers.first, "-",
               rule.layers.last < 0 ? std::string("last") : std::to_string(rule.layers.last), "), scope ",
               rule_scope_name(rule.scope), "; ", rules.file, ":", rule.line);
}

json dp_json(const std::optional<DpNoiseReport>& dp) {
    if (!dp) return nullptr;
    return {{"mechanism", dp->mechanism}, {"epsilon", dp->epsilon},         {"delta", dp->delta},
            {"sensitivity", dp->sensitivity}, {"scale", dp->scale},         {"stddev", dp->stddev},
            {"calibration", dp->calibration}, {"values", dp->values},       {"clamped", dp->clamped}};
}

json intervention_json(const AuditIntervention& iv) {
    json heads = json::array();
    for (const HeadRef& h : iv.heads) heads.push_back(head_json(h));
    return {{"kind", iv.kind}, {"begin", iv.begin}, {"end", iv.end}, {"heads", heads}, {"description", iv.description}};
}

json span_mass_json(const AuditReport& report, const AuditSpanMass& m) {
    return {{"span", span_json(report, m.span)}, {"mass", m.mass}, {"in_key", m.in_key}, {"head", head_json(m.head)}};
}

json audit_head_json(const AuditHead& h) {
    return {{"layer", h.head.layer}, {"head", h.head.head}, {"value", h.value}, {"miss", h.miss}, {"satisfies", h.satisfies}};
}

}  // namespace

AuditReport build_audit(const RuleSet& rules, const Session& session, const CpuTileSource& source,
                        const AuditOptions& options) {
    if (!session.capture) fail("audit: the session holds no capture");
    AuditReport report;
    report.rules = &rules;
    report.session = &session;
    report.pii_masking = options.mask_pii;
    if (options.mask_pii) report.pii = find_pii(session.text);
    RuleEvaluationOptions evaluation;
    evaluation.threads = options.threads;
    report.result = evaluate_rules(rules, session, source, evaluation);
    report.provenance = export_provenance(session, options.session_path, options.hash_session_file);
    report.provenance.privacy.pii_masking = options.mask_pii;
    if (options.mask_pii)  // whatever the process-wide setting, this report masks its command line too
        for (std::string& arg : report.provenance.command_line) arg = mask_pii(arg);
    Builder builder{rules, session, source, options, report, DpExporter(options.dp), {}};
    builder.words = segment_session(session, Granularity::Word);
    for (size_t r = 0; r < rules.rules.size(); ++r) {
        const Rule& rule = rules.rules[r];
        const RuleResult& result = report.result.results[r];
        AuditRule audit;
        audit.rule = r;
        std::vector<size_t> order(result.checks.size());
        std::iota(order.begin(), order.end(), size_t{0});
        // Failed checks first, the worst first; then passed ones, the closest call first.
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
            const RuleCheck& x = result.checks[a];
            const RuleCheck& y = result.checks[b];
            if (x.passed != y.passed) return !x.passed;
            return miss_of(rule, x.value) > miss_of(rule, y.value);
        });
        if (order.size() > static_cast<size_t>(std::max(options.max_checks, 0))) order.resize(static_cast<size_t>(options.max_checks));
        for (size_t c : order) audit.evidence.push_back(builder.evidence(r, c));
        if (result.verdict == Verdict::Fail) audit.fix = builder.fix(r, audit);
        report.rules_audit.push_back(std::move(audit));
    }
    report.dp = builder.dp.report();
    if (report.dp) {
        report.provenance.privacy.has_dp = true;
        report.provenance.privacy.dp = *report.dp;
    }
    return report;
}

std::string audit_text(const AuditReport& report, size_t begin, size_t end) {
    const std::string_view text(report.session->text);
    end = std::min(end, text.size());
    begin = std::min(begin, end);
    if (!report.pii_masking) return std::string(text.substr(begin, end - begin));
    std::string out;
    size_t at = begin;
    for (const PiiSpan& p : report.pii) {
        if (p.end <= at || p.begin >= end) continue;
        if (p.begin > at) out.append(text.substr(at, p.begin - at));
        out += cat(kPiiMaskGlyph, " [", pii_type_label(p.type), "]");
        at = std::min(p.end, end);
    }
    if (at < end) out.append(text.substr(at, end - at));
    return out;
}

json audit_report_json(const AuditReport& report) {
    const RuleSet& rules = *report.rules;
    const Session& session = *report.session;
    json j;
    j["schema"] = kAuditReportSchema;
    j["created_utc"] = report.provenance.created_utc;
    j["tool"] = {{"name", "attnscope"}, {"version", report.provenance.runtime.version}};
    j["rules_file"] = rules.file;
    j["ontology_file"] = rules.ontology ? json(rules.ontology->file) : json(nullptr);
    j["session"] = {{"file", report.provenance.session.file},
                    {"file_sha256", report.provenance.session.file_sha256},
                    {"model", report.provenance.model.name},
                    {"positions", session.positions()},
                    {"prompt_tokens", session.prompt_tokens},
                    {"steps", session.steps.size()},
                    {"n_layer", report.provenance.session.n_layer},
                    {"n_head", report.provenance.session.n_head}};
    json pii = json::array();
    for (const PiiSpan& p : report.pii)
        pii.push_back({{"begin", p.begin}, {"end", p.end}, {"type", pii_type_name(p.type)}});
    j["privacy"] = {{"pii_masking", report.pii_masking},
                    {"pii_spans", pii},
                    {"dp", dp_json(report.dp)},
                    {"dp_applies_to", report.dp ? "every exported attention array: the rows in report.json, the tiles "
                                                  "(.npy) and the map snapshots (.png); rule values, per-head values and "
                                                  "span masses are exact"
                                                : "nothing (no differential privacy)"}};
    size_t prompt_end = 0;
    for (int64_t i = 0; i < std::min<int64_t>(session.prompt_tokens, session.positions()); ++i)
        prompt_end = std::max<size_t>(prompt_end, session.tokens[static_cast<size_t>(i)].end);
    j["input"] = {{"text", audit_text(report, 0, session.text.size())},
                  {"prompt_text", audit_text(report, 0, prompt_end)},
                  {"prompt_bytes", prompt_end},
                  {"text_bytes", session.text.size()},
                  {"masked", report.pii_masking && !report.pii.empty()}};
    j["summary"] = {{"rules", report.result.results.size()},
                    {"passed", report.result.passed},
                    {"failed", report.result.failed},
                    {"not_applicable", report.result.not_applicable},
                    {"verdict", verdict_name(report.result.overall)}};
    json rules_json = json::array();
    json counterfactuals = json::array();
    for (const AuditRule& audit : report.rules_audit) {
        const Rule& rule = rules.rules[audit.rule];
        const RuleResult& result = report.result.results[audit.rule];
        json r;
        r["index"] = audit.rule;
        r["id"] = rule.id;
        r["description"] = rule.description;
        r["line"] = rule.line;
        r["statement"] = rule_statement(rules, rule, result.heads.size());
        r["verdict"] = verdict_name(result.verdict);
        r["reason"] = result.reason;
        json log = rule_result_json(result, rules, session);
        mask_log(report, log);
        r["match_log"] = std::move(log);
        json evidence = json::array();
        for (const AuditEvidence& e : audit.evidence) {
            const RuleCheck& c = result.checks[e.check];
            json ev;
            ev["check"] = e.check;
            ev["scope"] = c.step < 0 ? "prompt" : "step";
            ev["step"] = c.step < 0 ? json(nullptr) : json(c.step);
            ev["passed"] = c.passed;
            ev["query"] = span_json(report, c.query);
            ev["query_rows"] = {{"first", c.q0}, {"last", c.q1}};
            json keys = json::array();
            for (const TokenRun& k : c.keys)
                keys.push_back({{"first", k.first},
                                {"last", k.last},
                                {"begin", session.tokens[static_cast<size_t>(k.first)].begin},
                                {"end", session.tokens[static_cast<size_t>(k.last - 1)].end},
                                {"text", audit_text(report, session.tokens[static_cast<size_t>(k.first)].begin,
                                                    session.tokens[static_cast<size_t>(k.last - 1)].end)}});
            ev["key_runs"] = std::move(keys);
            ev["value"] = c.value;
            ev["op"] = rule_op_name(rule.op);
            ev["threshold"] = rule.threshold;
            json heads = json::array();
            for (const AuditHead& h : e.heads) heads.push_back(audit_head_json(h));
            ev["heads"] = std::move(heads);
            json rows = json::array();
            for (const AuditRow& row : e.rows) {
                json values = json::array();
                for (float v : row.values) values.push_back(v);
                rows.push_back({{"array_id", row.array_id},
                                {"layer", row.head.layer},
                                {"head", row.head.head},
                                {"query", row.query},
                                {"noised", report.dp.has_value()},
                                {"values", std::move(values)}});
            }
            ev["rows"] = std::move(rows);
            if (e.snapshot) {
                const AuditSnapshot& s = *e.snapshot;
                const int64_t cell = int64_t{1} << s.request.level;
                const int64_t row_base = s.request.ty * Tile::kEdge, col_base = s.request.tx * Tile::kEdge;
                ev["snapshot"] = {{"array_id", s.array_id},
                                  {"png", s.png_file},
                                  {"npy", s.npy_file},
                                  {"layer", s.request.layer},
                                  {"head", s.request.head},
                                  {"level", s.request.level},
                                  {"tx", s.request.tx},
                                  {"ty", s.request.ty},
                                  {"tokens_per_cell", cell},
                                  {"cells", {{"row_first", s.row0}, {"row_last", s.row1}, {"col_first", s.col0}, {"col_last", s.col1}}},
                                  {"query_tokens", {{"first", (row_base + s.row0) * cell}, {"last", (row_base + s.row1) * cell}}},
                                  {"key_tokens", {{"first", (col_base + s.col0) * cell}, {"last", (col_base + s.col1) * cell}}},
                                  {"pixels_per_cell", s.scale},
                                  {"noised", report.dp.has_value()}};
            } else {
                ev["snapshot"] = nullptr;
            }
            json destinations = json::array();
            for (size_t i = 0; i < e.destinations.size() && static_cast<int>(i) < 8; ++i)
                destinations.push_back(span_mass_json(report, e.destinations[i]));
            ev["destinations"] = std::move(destinations);
            evidence.push_back(std::move(ev));
        }
        r["evidence"] = std::move(evidence);
        if (audit.fix) {
            const AuditFix& f = *audit.fix;
            json heads = json::array();
            for (size_t i = 0; i < f.responsible_heads.size(); ++i) {
                json h = audit_head_json(f.responsible_heads[i]);
                h["failed_checks"] = f.failed_checks[i];
                heads.push_back(std::move(h));
            }
            json spans = json::array();
            for (const AuditSpanMass& m : f.responsible_spans) spans.push_back(span_mass_json(report, m));
            r["suggested_fix"] = {{"summary", f.summary},
                                  {"responsible_heads", heads},
                                  {"responsible_spans", spans},
                                  {"intervention", intervention_json(f.intervention)},
                                  {"counterfactual", f.counterfactual},
                                  {"counterfactual_reason", f.counterfactual.is_null() ? json(f.counterfactual_reason) : json(nullptr)}};
            counterfactuals.push_back({{"rule", rule.id},
                                       {"intervention", intervention_json(f.intervention)},
                                       {"result", f.counterfactual},
                                       {"reason", f.counterfactual.is_null() ? json(f.counterfactual_reason) : json(nullptr)}});
        } else {
            r["suggested_fix"] = nullptr;
        }
        rules_json.push_back(std::move(r));
    }
    j["rules"] = std::move(rules_json);
    j["counterfactuals"] = std::move(counterfactuals);
    j["provenance"] = provenance_to_json(report.provenance);
    return j;
}

// ---- HTML ---------------------------------------------------------------------------------------

namespace {

std::string escape_html(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return out;
}

enum Mark : unsigned { kQuery = 1, kKey = 2, kOffending = 4, kDestination = 8 };

std::string mark_classes(unsigned marks) {
    std::string classes;
    if (marks & kQuery) classes += " q";
    if (marks & kKey) classes += " k";
    if (marks & kOffending) classes += " bad";
    if (marks & kDestination) classes += " dest";
    return classes.empty() ? classes : classes.substr(1);
}

// The text with marked byte ranges as <span class>es and personal data as its mask. Runs break only
// at UTF-8 character starts, so a mark that ends inside a character never splits it.
std::string highlighted_text(const AuditReport& report, const std::vector<std::pair<TextSpan, unsigned>>& marks) {
    const std::string& text = report.session->text;
    std::vector<unsigned> byte_marks(text.size(), 0);
    for (const auto& [span, mark] : marks)
        for (size_t b = span.begin; b < std::min<size_t>(span.end, text.size()); ++b) byte_marks[b] |= mark;
    std::string out;
    size_t at = 0;
    size_t next_pii = 0;
    auto open = [&](unsigned m) { return m ? "<span class=\"" + mark_classes(m) + "\">" : std::string(); };
    auto close = [&](unsigned m) { return m ? std::string("</span>") : std::string(); };
    while (at < text.size()) {
        while (next_pii < report.pii.size() && report.pii[next_pii].end <= at) ++next_pii;
        if (report.pii_masking && next_pii < report.pii.size() && report.pii[next_pii].begin <= at) {
            const PiiSpan& p = report.pii[next_pii];
            unsigned m = 0;
            for (size_t b = p.begin; b < p.end; ++b) m |= byte_marks[b];
            out += open(m) + "<span class=\"pii\">" + escape_html(cat(kPiiMaskGlyph, " [", pii_type_label(p.type), "]")) +
                   "</span>" + close(m);
            at = p.end;
            continue;
        }
        const unsigned m = byte_marks[at];
        size_t end = at + 1;
        const size_t limit = report.pii_masking && next_pii < report.pii.size() ? report.pii[next_pii].begin : text.size();
        while (end < limit && (byte_marks[end] == m || (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)) ++end;
        out += open(m) + escape_html(std::string_view(text).substr(at, end - at)) + close(m);
        at = end;
    }
    return out;
}

const char* kCss = R"(body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1b1b1f;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:bold;padding:.1em .5em;border-radius:.3em;color:#fff}
.pass{background:#1f7a3a}.fail{background:#b3261e}.not_applicable{background:#777}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;background:#fafafa;border:1px solid #ddd;padding:.8em;border-radius:.3em}
.q{background:#cfe3ff}.k{background:#c9f2d0}.q.k{background:#b9e6e8}.bad{outline:2px solid #b3261e}.dest{background:#ffd8a8}
.pii{background:#444;color:#fff;border-radius:.2em;padding:0 .2em}
.bar{display:inline-block;height:.8em;background:#d9822b;vertical-align:middle}
.evidence{border-left:4px solid #ccc;padding-left:1em;margin:1em 0}.evidence.failed{border-color:#b3261e}
img.map{image-rendering:pixelated;border:1px solid #999;max-width:100%}
.small{color:#555;font-size:.9em}code{font-size:.92em}
)";

std::string verdict_badge(Verdict v) {
    return cat("<span class=\"verdict ", verdict_name(v), "\">", v == Verdict::Pass ? "PASS" : v == Verdict::Fail ? "FAIL" : "N/A",
               "</span>");
}

}  // namespace

std::string audit_report_html(const AuditReport& report, const std::string& signer_key_id) {
    const RuleSet& rules = *report.rules;
    const Session& session = *report.session;
    const ProvenanceRecord& p = report.provenance;
    auto esc = [&](std::string_view s) { return escape_html(report.pii_masking ? mask_pii(s) : std::string(s)); };
    std::string h;
    h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>attnscope audit report</title>\n<style>\n";
    h += kCss;
    h += "</style>\n</head>\n<body>\n";
    h += cat("<h1>Audit report ", verdict_badge(report.result.overall), "</h1>\n");
    h += cat("<p class=\"small\">Rules <code>", esc(rules.file), "</code>",
             rules.ontology ? cat(", ontology <code>", esc(rules.ontology->file), "</code>") : std::string(),
             " checked on session <code>", esc(p.session.file), "</code> (", session.positions(), " tokens: ",
             session.prompt_tokens, " prompt, ", session.steps.size(), " generated; model ", esc(p.model.name),
             "). Made ", esc(p.created_utc), " by attnscope ", esc(p.runtime.version),
             ". Machine-readable: <a href=\"report.json\">report.json</a>; provenance: "
             "<a href=\"provenance.json\">provenance.json</a>.</p>\n");

    // Summary.
    h += "<h2>Summary</h2>\n<table>\n<tr><th>Rule</th><th>Statement</th><th>Verdict</th><th>Checks</th><th>Violations</th><th>Reason</th></tr>\n";
    for (const AuditRule& audit : report.rules_audit) {
        const Rule& rule = rules.rules[audit.rule];
        const RuleResult& r = report.result.results[audit.rule];
        h += cat("<tr><td><a href=\"#rule-", audit.rule + 1, "\">", esc(rule.id), "</a>",
                 rule.description.empty() ? std::string() : "<br><span class=\"small\">" + esc(rule.description) + "</span>",
                 "</td><td>", esc(rule_statement(rules, rule, r.heads.size())), "</td><td>", verdict_badge(r.verdict),
                 " ", verdict_name(r.verdict), "</td><td class=\"num\">", r.checks.size(), "</td><td class=\"num\">",
                 r.violations, "</td><td>", esc(r.reason), "</td></tr>\n");
    }
    h += cat("</table>\n<p>", report.result.failed, " failed, ", report.result.passed, " passed, ",
             report.result.not_applicable, " not applicable.</p>\n");

    // Input.
    std::vector<std::pair<TextSpan, unsigned>> all_marks;
    // A query of every token ({any = true}) would paint the whole text: only its violations are marked.
    auto marks_query = [&](const RuleResult& r) { return rules.rules[r.rule].query.kind != SpanSelectorKind::Any; };
    for (const RuleResult& r : report.result.results) {
        if (marks_query(r))
            for (const TextSpan& s : r.query_spans) all_marks.push_back({s, kQuery});
        for (const TextSpan& s : r.key_spans) all_marks.push_back({s, kKey});
        for (const TextSpan& s : r.offending_spans) all_marks.push_back({s, kOffending});
    }
    h += "<h2>Input</h2>\n<p class=\"small\">Legend: <span class=\"q\">query span</span> <span class=\"k\">key span</span> "
         "<span class=\"bad\">query span of a violation</span> <span class=\"dest\">where the attention went</span> "
         "<span class=\"pii\">●●●● personal data (masked)</span>. ";
    h += report.pii_masking ? cat(report.pii.size(), " span(s) of personal data masked.")
                            : std::string("Personal-data masking is OFF for this report.");
    h += "</p>\n<div class=\"text\">" + highlighted_text(report, all_marks) + "</div>\n";

    // Rules.
    for (const AuditRule& audit : report.rules_audit) {
        const Rule& rule = rules.rules[audit.rule];
        const RuleResult& r = report.result.results[audit.rule];
        h += cat("<h2 id=\"rule-", audit.rule + 1, "\">Rule ", esc(rule.id), " ", verdict_badge(r.verdict), " ",
                 verdict_name(r.verdict), "</h2>\n");
        h += cat("<p>", esc(rule_statement(rules, rule, r.heads.size())), "</p>\n<p>", esc(r.reason), "</p>\n");
        std::vector<std::pair<TextSpan, unsigned>> marks;
        if (marks_query(r))
            for (const TextSpan& s : r.query_spans) marks.push_back({s, kQuery});
        for (const TextSpan& s : r.key_spans) marks.push_back({s, kKey});
        for (const TextSpan& s : r.offending_spans) marks.push_back({s, kOffending});
        if (audit.fix)
            for (const AuditSpanMass& m : audit.fix->responsible_spans) marks.push_back({m.span, kDestination});
        h += "<div class=\"text\">" + highlighted_text(report, marks) + "</div>\n";
        h += cat("<p class=\"small\">Match log: ", r.query_spans.size(), " query span(s), ", r.key_spans.size(),
                 " key span(s), ", r.checks.size(), " check(s), ", r.violations, " violation(s); evidence for ",
                 audit.evidence.size(), " check(s) below (failed first). Full log: report.json, rules[", audit.rule,
                 "].match_log.</p>\n");
        for (const AuditEvidence& e : audit.evidence) {
            const RuleCheck& c = r.checks[e.check];
            h += cat("<div class=\"evidence", c.passed ? "" : " failed", "\">\n<h3>", c.step < 0 ? std::string("Prompt") : cat("Step ", c.step),
                     ": query “", escape_html(audit_text(report, c.query.begin, c.query.end)), "” (tokens ", c.q0, "..",
                     c.q1, ") — ", c.passed ? "passed" : "FAILED", "</h3>\n");
            h += cat("<p>", rule_aggregate_name(rule.aggregate), " = <b>", fmt(c.value), "</b> ", rule_op_name(rule.op),
                     " ", fmt(rule.threshold), "? ", c.passed ? "yes" : "no",
                     c.head.layer >= 0 ? cat(" (", head_name(c.head), ")") : std::string(), ". Keys:");
            for (const TokenRun& k : c.keys)
                h += cat(" “", escape_html(audit_text(report, session.tokens[static_cast<size_t>(k.first)].begin,
                                                      session.tokens[static_cast<size_t>(k.last - 1)].end)),
                         "” (tokens ", k.first, "..", k.last, ")");
            h += "</p>\n<table><tr><th>Head</th><th>Value</th><th>Miss</th><th>Satisfies</th></tr>\n";
            for (size_t i = 0; i < e.heads.size() && i < 12; ++i) {
                const AuditHead& hv = e.heads[i];
                h += cat("<tr><td>", head_name(hv.head), "</td><td class=\"num\">", fmt(hv.value), "</td><td class=\"num\">",
                         fmt(hv.miss), "</td><td>", hv.satisfies ? "yes" : "<b>no</b>", "</td></tr>\n");
            }
            if (e.heads.size() > 12) h += cat("<tr><td colspan=\"4\">… ", e.heads.size() - 12, " more in report.json</td></tr>\n");
            h += "</table>\n";
            if (e.snapshot) {
                const AuditSnapshot& s = *e.snapshot;
                const int64_t cell = int64_t{1} << s.request.level;
                h += cat("<figure><img class=\"map\" src=\"", s.png_file, "\" alt=\"attention map ", head_name({s.request.layer, s.request.head}),
                         "\" width=\"", (s.col1 - s.col0) * s.scale, "\" height=\"", (s.row1 - s.row0) * s.scale,
                         "\"><figcaption class=\"small\">", head_name({s.request.layer, s.request.head}),
                         ": rows are query tokens ", (s.request.ty * Tile::kEdge + s.row0) * cell, "..",
                         (s.request.ty * Tile::kEdge + s.row1) * cell, ", columns key tokens ",
                         (s.request.tx * Tile::kEdge + s.col0) * cell, "..", (s.request.tx * Tile::kEdge + s.col1) * cell,
                         ", ", cell, " token(s) per cell, attention mass per cell on a log colour scale",
                         report.dp ? " (with differential-privacy noise)" : "", ". Whole tile: <a href=\"", s.npy_file,
                         "\">", s.npy_file, "</a> (array ", s.array_id, ").</figcaption></figure>\n");
            }
            if (!e.destinations.empty()) {
                h += cat("<p>Where the query rows’ attention went in ", head_name(e.destinations.front().head),
                         " (word spans, exact mean share):</p>\n<table><tr><th>Span</th><th>Tokens</th><th>Share</th><th></th></tr>\n");
                for (size_t i = 0; i < e.destinations.size() && i < static_cast<size_t>(5); ++i) {
                    const AuditSpanMass& m = e.destinations[i];
                    h += cat("<tr><td><span class=\"", m.in_key ? "k" : "dest", "\">",
                             escape_html(audit_text(report, m.span.begin, m.span.end)), "</span>", m.in_key ? " (key)" : "",
                             "</td><td>", m.span.first, "..", m.span.last, "</td><td class=\"num\">", fmt(m.mass),
                             "</td><td><span class=\"bar\" style=\"width:", static_cast<int>(std::lround(std::clamp(m.mass, 0.0, 1.0) * 200)),
                             "px\"></span></td></tr>\n");
                }
                h += "</table>\n";
            }
            if (!e.rows.empty()) {
                h += "<p class=\"small\">Exact attention rows included in report.json (SHA-256 in the provenance): ";
                for (size_t i = 0; i < e.rows.size(); ++i)
                    h += cat(i ? ", " : "", "<code>", e.rows[i].array_id, "</code>");
                h += report.dp ? " — exported with differential-privacy noise.</p>\n" : ".</p>\n";
            }
            h += "</div>\n";
        }
        if (audit.fix) {
            const AuditFix& f = *audit.fix;
            h += cat("<h3>Suggested fix</h3>\n<p>", esc(f.summary), ".</p>\n");
            h += "<table><tr><th>Responsible head</th><th>Worst value</th><th>Miss</th><th>Failed checks</th></tr>\n";
            for (size_t i = 0; i < f.responsible_heads.size() && i < 10; ++i)
                h += cat("<tr><td>", head_name(f.responsible_heads[i].head), "</td><td class=\"num\">",
                         fmt(f.responsible_heads[i].value), "</td><td class=\"num\">", fmt(f.responsible_heads[i].miss),
                         "</td><td class=\"num\">", f.failed_checks[i], "</td></tr>\n");
            h += "</table>\n";
            if (!f.responsible_spans.empty()) {
                h += "<table><tr><th>Responsible span</th><th>Tokens</th><th>Share</th><th>Head</th></tr>\n";
                for (const AuditSpanMass& m : f.responsible_spans)
                    h += cat("<tr><td><span class=\"dest\">", escape_html(audit_text(report, m.span.begin, m.span.end)),
                             "</span></td><td>", m.span.first, "..", m.span.last, "</td><td class=\"num\">", fmt(m.mass),
                             "</td><td>", head_name(m.head), "</td></tr>\n");
                h += "</table>\n";
            }
            h += cat("<p>Intervention to test it: <code>", escape_html(f.intervention.kind), "</code> — ",
                     escape_html(f.intervention.description), "</p>\n");
            h += f.counterfactual.is_null()
                     ? cat("<p><b>Counterfactual:</b> none — ", esc(f.counterfactual_reason), ".</p>\n")
                     : cat("<p><b>Counterfactual result:</b></p><pre>",
                           esc(f.counterfactual.dump(2, ' ', false, json::error_handler_t::replace)), "</pre>\n");
        }
    }

    // Provenance.
    h += "<h2>Provenance</h2>\n<table>\n";
    auto row = [&](const std::string& k, const std::string& v) { h += "<tr><th>" + k + "</th><td>" + v + "</td></tr>\n"; };
    row("Model", cat(esc(p.model.name), " (", esc(p.model.format), ")<br><code>", esc(p.model.sha256), "</code> (", esc(p.model.sha256_covers), ")"));
    row("Model config SHA-256", "<code>" + esc(p.model.config_sha256) + "</code>");
    row("Tokenizer", cat(esc(p.tokenizer.kind), " <code>", esc(p.tokenizer.sha256), "</code>"));
    row("Input text SHA-256", cat("<code>", p.input_sha256, "</code> (", p.input_bytes, " bytes)"));
    row("Output text SHA-256", cat("<code>", p.output_sha256, "</code> (", p.output_bytes, " bytes)"));
    row("Session file", cat("<code>", esc(p.session.file), "</code><br>SHA-256 <code>", esc(p.session.file_sha256), "</code>"));
    row("Sampling", cat(p.sampling.greedy ? "greedy" : "sampled", ", temperature ", fmt(p.sampling.temperature), ", top-k ",
                        p.sampling.top_k, ", top-p ", fmt(p.sampling.top_p), ", seed ", p.sampling.seed));
    row("Computed by", cat("attnscope ", esc(p.runtime.version), ", ", esc(p.runtime.backend), ": ", esc(p.runtime.kernel_variant)));
    row("Machine", cat(esc(p.host), ": ", esc(p.hardware.cpu_model), " (", p.hardware.cpu_threads, " threads)"));
    std::string command;
    for (const std::string& a : p.command_line) command += (command.empty() ? "" : " ") + a;
    row("Command line", "<code>" + esc(command) + "</code>");
    row("Made", esc(p.created_utc));
    row("Attention arrays", cat(p.arrays.size(), " (", p.exhibits.size(), " exhibits), each with its SHA-256; re-derive with "
                                "<code>attnscope verify REPORT --session SESSION</code>"));
    row("Personal data", report.pii_masking ? cat("masked in every text (", report.pii.size(), " span(s))") : std::string("NOT masked"));
    row("Differential privacy",
        report.dp ? cat(esc(report.dp->mechanism), " mechanism, ε = ", fmt(report.dp->epsilon),
                        report.dp->mechanism == "gaussian" ? cat(", δ = ", fmt(report.dp->delta)) : std::string(),
                        ", sensitivity Δ = ", fmt(report.dp->sensitivity), ", scale ", fmt(report.dp->scale), " (std ",
                        fmt(report.dp->stddev), ") on ", report.dp->values, " exported values; ", esc(report.dp->calibration))
                  : std::string("none"));
    row("Signature", signer_key_id.empty()
                         ? std::string("not signed (no key given)")
                         : cat("Ed25519, key <code>", escape_html(signer_key_id), "</code>: <a href=\"", kDirectoryManifestName,
                               "\">", kDirectoryManifestName, "</a> covers every file of this folder; check with "
                               "<code>attnscope verify REPORT [--session SESSION]</code>"));
    h += "</table>\n</body>\n</html>\n";
    return h;
}

// ---- Writing ------------------------------------------------------------------------------------

AuditWriteResult write_audit_report(const AuditReport& report, const std::string& dir_arg, const AuditFileWriters& writers,
                                    const SigningKey* key, bool force) {
    if (dir_arg.empty()) fail("audit: no output folder given");
    if (!writers.png || !writers.npy) fail("audit: no PNG/.npy writers given");
    fs::path dir = fs::path(dir_arg).lexically_normal();
    if (dir.filename().empty()) dir = dir.parent_path();  // "report/" → "report"
    std::error_code ec;
    const bool exists = fs::exists(dir, ec);
    if (exists) {
        if (!fs::is_directory(dir, ec)) fail("'", dir.string(), "' exists and is not a folder");
        if (!fs::is_empty(dir, ec) && !force)
            fail("'", dir.string(), "' exists and is not empty; give --force to replace it, or another folder");
    }
    const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    if (ec) fail("cannot create '", parent.string(), "': ", ec.message());
    const fs::path temp = parent / cat(".", dir.filename().string(), ".tmp-", ::getpid());
    fs::remove_all(temp, ec);
    fs::create_directory(temp, ec);
    if (ec) fail("cannot create '", temp.string(), "': ", ec.message());
    AuditWriteResult out;
    out.dir = dir.string();
    try {
        for (const AuditRule& audit : report.rules_audit)
            for (const AuditEvidence& e : audit.evidence) {
                if (!e.snapshot) continue;
                writers.png((temp / e.snapshot->png_file).string(), *e.snapshot);
                writers.npy((temp / e.snapshot->npy_file).string(), e.snapshot->tile, Tile::kEdge, Tile::kEdge);
            }
        const json report_json = audit_report_json(report);
        write_file_atomically((temp / "report.json").string(),
                              report_json.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
        write_file_atomically((temp / "index.html").string(), audit_report_html(report, key ? key->public_key.key_id : ""));
        write_file_atomically((temp / "provenance.json").string(),
                              provenance_to_json(report.provenance).dump(2, ' ', false, json::error_handler_t::replace) + "\n");
        if (key) {
            sign_report(temp.string(), report.provenance, *key);
            out.signature = (dir / kDirectoryManifestName).string();
        }
        for (const auto& entry : fs::recursive_directory_iterator(temp))
            if (entry.is_regular_file()) out.files.push_back(fs::relative(entry.path(), temp).generic_string());
        std::sort(out.files.begin(), out.files.end());
        // Into place: a reader sees the old folder or the new one, never a mixture.
        if (exists) {
            const fs::path old = parent / cat(".", dir.filename().string(), ".old-", ::getpid());
            fs::remove_all(old, ec);
            fs::rename(dir, old, ec);
            if (ec) fail("cannot move the old '", dir.string(), "' aside: ", ec.message());
            fs::rename(temp, dir, ec);
            if (ec) {
                std::error_code ignored;
                fs::rename(old, dir, ignored);
                fail("cannot move the report into '", dir.string(), "': ", ec.message());
            }
            fs::remove_all(old, ec);
        } else {
            fs::rename(temp, dir, ec);
            if (ec) fail("cannot move the report into '", dir.string(), "': ", ec.message());
        }
    } catch (...) {
        std::error_code ignored;
        fs::remove_all(temp, ignored);
        throw;
    }
    return out;
}

std::string audit_summary_text(const AuditReport& report) {
    const RuleSet& rules = *report.rules;
    std::string out;
    for (const AuditRule& audit : report.rules_audit) {
        const Rule& rule = rules.rules[audit.rule];
        const RuleResult& r = report.result.results[audit.rule];
        const char* tag = r.verdict == Verdict::Pass ? "PASS" : r.verdict == Verdict::Fail ? "FAIL" : "N/A ";
        std::string line = cat(tag, "  ", rule.id, " (", rules.file, ":", rule.line, "): ");
        line += report.pii_masking ? mask_pii(r.reason) : r.reason;
        if (audit.fix && !audit.fix->responsible_heads.empty()) {
            line += "; responsible:";
            for (size_t i = 0; i < audit.fix->responsible_heads.size() && i < 4; ++i)
                line += cat(" ", head_name(audit.fix->responsible_heads[i].head));
        }
        out += line + "\n";
    }
    out += cat("summary: ", report.result.failed, " failed, ", report.result.passed, " passed, ",
               report.result.not_applicable, " not applicable (", report.result.results.size(), " rules)\n");
    return out;
}

namespace {

// Masks personal data in every string of a JSON value (the report's texts are masked the same way).
void mask_json_strings(nlohmann::json& value, bool mask) {
    if (!mask) return;
    if (value.is_string()) {
        value = mask_pii(value.get<std::string>());
    } else if (value.is_array() || value.is_object()) {
        for (auto& item : value) mask_json_strings(item, mask);
    }
}

}  // namespace

void add_audit_counterfactuals(AuditReport& report, const Model& model) {
    if (!report.session) fail("the audit report has no session");
    for (AuditRule& rule : report.rules_audit) {
        if (!rule.fix) continue;
        AuditFix& fix = *rule.fix;
        std::vector<std::pair<int, int>> heads;
        for (const HeadRef& h : fix.intervention.heads) heads.emplace_back(h.layer, h.head);
        try {
            Intervention intervention;
            if (fix.intervention.kind == "mask_keys")
                intervention = Intervention::mask_keys(fix.intervention.begin, fix.intervention.end, heads);
            else if (fix.intervention.kind == "ablate_heads")
                intervention = Intervention::ablate_heads(heads, false);
            else
                fail("no counterfactual for an intervention of kind '", fix.intervention.kind, "'");
            nlohmann::json result = run_counterfactual(model, *report.session, intervention).to_json();
            mask_json_strings(result, report.pii_masking);
            fix.counterfactual = std::move(result);
            fix.counterfactual_reason.clear();
        } catch (const std::exception& e) {
            fix.counterfactual = nullptr;
            fix.counterfactual_reason = cat("the run failed: ", e.what());
        }
    }
}

}  // namespace attn
