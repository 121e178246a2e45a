#include "ui/panels/rules_panel.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/error.h"
#include "ui/panels/text_view_panel.h"

namespace attn::panels {

namespace {

constexpr double kPulseSeconds = 4.0;

// How far a head's value lies on the wrong side of the threshold (larger: worse).
double badness(RuleOp op, double value, double threshold) {
    return (op == RuleOp::GreaterEqual || op == RuleOp::Greater) ? threshold - value : value - threshold;
}

Violation violation_of(const RuleSet& rules, const RuleResult& result, const RuleCheck& check, bool live) {
    const Rule& rule = rules.rules[result.rule];
    Violation v;
    v.rule = result.rule;
    v.rule_id = rule.id;
    v.step = check.step;
    v.query = check.query;
    v.keys = check.keys;
    v.value = check.value;
    v.threshold = rule.threshold;
    v.op = rule.op;
    v.aggregate = rule_aggregate_name(rule.aggregate);
    v.offending = check.offending;
    v.live = live;
    double worst = -1e300;
    for (const HeadValue& h : check.heads) {
        const bool offends = std::any_of(check.offending.begin(), check.offending.end(),
                                         [&](const HeadRef& o) { return o.layer == h.layer && o.head == h.head; });
        if (!offends) continue;
        const double b = badness(rule.op, h.value, rule.threshold);
        if (b > worst) worst = b, v.worst = {h.layer, h.head};
    }
    if (v.worst.layer < 0 && !check.offending.empty()) v.worst = check.offending.front();
    if (v.worst.layer < 0) v.worst = check.head;
    return v;
}

std::string keys_text_of(const app::DebuggerModel& model, const std::vector<TokenRun>& keys) {
    std::string out;
    const auto& tokens = model.session().tokens;
    for (size_t i = 0; i < keys.size() && i < 4; ++i) {
        const TokenRun& k = keys[i];
        if (k.first < 0 || k.last > static_cast<int64_t>(tokens.size()) || k.first >= k.last) continue;
        out += (out.empty() ? "" : " | ") +
               one_line(model.display_range(tokens[static_cast<size_t>(k.first)].begin, tokens[static_cast<size_t>(k.last - 1)].end));
    }
    if (keys.size() > 4) out += cat(" … (", keys.size() - 4, " more)");
    return out;
}

const char* verdict_label(Verdict v) {
    switch (v) {
        case Verdict::Pass: return "PASS";
        case Verdict::Fail: return "FAIL";
        case Verdict::NotApplicable: return "n/a";
    }
    return "?";
}

// What the evaluation is for. Live, while the model decodes, the runner checks each new step itself:
// the whole session is evaluated again only once the run is idle (not on every step, which would
// re-check every earlier step each time).
RulesState::EvalKey evaluation_key(const app::DebuggerModel& model, const RulesState& state, LiveRunner* runner) {
    const Session& session = model.session();
    RulesState::EvalKey key{state.loads, session.capture.get(), model.positions(), session.head_labels.size()};
    if (runner && state.evaluation.has_value() && state.evaluation.key().loads == key.loads &&
        state.evaluation.key().store == key.store) {
        const LiveStatus status = runner->status();
        if (status.busy || status.state == LiveState::Running || status.state == LiveState::Prefilling)
            key.positions = state.evaluation.key().positions;
    }
    return key;
}

}  // namespace

std::string violation_keys_text(const app::DebuggerModel& model, const Violation& v) { return keys_text_of(model, v.keys); }

void load_rules_files(RulesState& state, const std::string& rules_path, const std::string& ontology_path) {
    try {
        std::shared_ptr<const Ontology> ontology;
        if (!ontology_path.empty()) ontology = std::make_shared<const Ontology>(load_ontology(ontology_path));
        std::shared_ptr<const RuleSet> rules;
        if (!rules_path.empty()) rules = std::make_shared<const RuleSet>(load_rules(rules_path, ontology));
        state.ontology = ontology;
        state.rules = rules;
        state.error.clear();
        state.rules_to_runner = true;
        state.violations.clear();
        state.seen_violations = 0;
        state.selected_violation = -1;
        ++state.loads;
        std::snprintf(state.rules_path, sizeof state.rules_path, "%s", rules_path.c_str());
        std::snprintf(state.ontology_path, sizeof state.ontology_path, "%s", ontology_path.c_str());
    } catch (const std::exception& e) {
        state.error = e.what();
        throw;
    }
}

void update_rules(const app::DebuggerModel& model, RulesState& state, LiveRunner* runner, const std::vector<StepFindings>& findings,
                  const std::vector<HeadRef>& heads, bool wait) {
    const Session& session = model.session();
    if (runner && state.rules_to_runner) {
        runner->set_rules(state.rules);
        state.rules_to_runner = false;
    }
    // ---- the evaluation (verdicts; the prompt's violations, and the steps' when not live) ----
    if (state.rules) {
        state.evaluation.poll();
        const RulesState::EvalKey key = evaluation_key(model, state, runner);
        if (wait || state.evaluation.needs(key)) {
            auto job = [snapshot = std::make_shared<const Session>(session), rules = state.rules, positions = model.positions()] {
                // The capture may run ahead of the tokens (live): evaluate what both hold.
                auto trimmed = std::make_shared<Session>(*snapshot);
                trimmed->tokens.resize(static_cast<size_t>(std::min<int64_t>(positions, static_cast<int64_t>(trimmed->tokens.size()))));
                const int64_t steps = std::max<int64_t>(0, positions - trimmed->prompt_tokens);
                if (static_cast<int64_t>(trimmed->steps.size()) > steps) trimmed->steps.resize(static_cast<size_t>(steps));
                if (!trimmed->tokens.empty()) trimmed->text.resize(std::max<size_t>(trimmed->tokens.back().end, 0));
                const CpuTileSource source(*trimmed->capture, 0);
                RulesState::Evaluation e;
                e.report = std::make_shared<const RulesReport>(evaluate_rules(*rules, *trimmed, source));
                e.snapshot = std::move(trimmed);
                return e;
            };
            if (wait) state.evaluation.finish(key, job);
            else state.evaluation.want(key, job);
        }
    }
    // ---- the violations ----
    std::vector<Violation> list;
    if (state.rules && state.evaluation.has_value() && state.evaluation.value().report &&
        state.evaluation.key().loads == state.loads) {
        const RulesReport& report = *state.evaluation.value().report;
        for (const RuleResult& r : report.results)
            for (const RuleCheck& c : r.checks)
                if (!c.passed && (!runner || c.step < 0)) list.push_back(violation_of(*state.rules, r, c, false));
    }
    if (runner && state.rules) {
        const std::shared_ptr<const RuleSet> in_force = runner->rules();
        for (const StepFindings& f : findings)
            for (const RuleResult& r : f.rule_violations) {
                if (!in_force || r.rule >= in_force->rules.size()) continue;
                for (const RuleCheck& c : r.checks)
                    if (!c.passed) list.push_back(violation_of(*in_force, r, c, true));
            }
    }
    std::stable_sort(list.begin(), list.end(), [](const Violation& a, const Violation& b) { return a.step < b.step; });
    state.violations = std::move(list);
    if (state.violations.size() > state.seen_violations) state.pulse_start = std::chrono::steady_clock::now();
    state.seen_violations = state.violations.size();
    if (state.selected_violation >= static_cast<int64_t>(state.violations.size())) state.selected_violation = -1;
    if (runner) {
        const LiveStatus status = runner->status();
        state.pause_reason = status.state == LiveState::Paused && status.message.rfind("rule ", 0) == 0 ? status.message : std::string();
    }

    // ---- the ontology: matched spans (cheap: regexes over the text) and anomalies (a worker) ----
    if (state.ontology) {
        if (state.entity_loads != state.loads || state.entity_text_bytes != session.text.size()) {
            state.entity_spans = match_entities(*state.ontology, session.text, session.tokens);
            state.entity_loads = state.loads;
            state.entity_text_bytes = session.text.size();
        }
        if (!heads.empty()) {
            RulesState::OntologyKey key{state.loads, session.capture.get(), model.positions(), heads};
            state.anomalies.poll();
            if (wait || state.anomalies.needs(key)) {
                auto job = [snapshot = session_snapshot(session), ontology = state.ontology, heads, positions = model.positions()] {
                    auto trimmed = std::make_shared<Session>(*snapshot);
                    trimmed->tokens.resize(static_cast<size_t>(std::min<int64_t>(positions, static_cast<int64_t>(trimmed->tokens.size()))));
                    const CpuTileSource source(*trimmed->capture, 0);
                    return std::make_shared<const OntologyReport>(check_ontology(*ontology, *trimmed, source, heads));
                };
                if (wait) state.anomalies.finish(key, job);
                else state.anomalies.want(key, job);
            }
        }
    } else {
        state.entity_spans.clear();
        state.entity_loads = ~uint64_t(0);
    }
}

bool rules_settled(const app::DebuggerModel& model, const RulesState& state, const std::vector<HeadRef>& heads, LiveRunner* runner) {
    const Session& session = model.session();
    if (state.rules && !state.evaluation.done_for(evaluation_key(model, state, runner))) return false;
    if (state.ontology && !heads.empty() &&
        !state.anomalies.done_for({state.loads, session.capture.get(), model.positions(), heads}))
        return false;
    return true;
}

float violation_pulse(const RulesState& state) {
    if (state.violations.empty()) return 0.f;
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - state.pulse_start).count();
    if (t >= kPulseSeconds) return 0.35f;
    const double fade = 1.0 - t / kPulseSeconds;
    const double wave = 0.5 + 0.5 * std::cos(t * 2 * 3.14159265358979 * 1.5);
    return static_cast<float>(0.35 + 0.65 * fade * wave);
}

bool violation_pulsing(const RulesState& state) {
    return !state.violations.empty() &&
           std::chrono::duration<double>(std::chrono::steady_clock::now() - state.pulse_start).count() < kPulseSeconds;
}

bool step_violated(const RulesState& state, int64_t step) {
    return std::any_of(state.violations.begin(), state.violations.end(), [&](const Violation& v) { return v.step == step; });
}

bool head_violated(const RulesState& state, int layer, int head) {
    for (const Violation& v : state.violations)
        for (const HeadRef& h : v.offending)
            if (h.layer == layer && h.head == head) return true;
    return false;
}

void draw_rules_panel(const app::DebuggerModel& model, RulesState& state, const RulesActions& actions) {
    const float width = ImGui::GetContentRegionAvail().x;
    ImGui::SetNextItemWidth(width - ImGui::CalcTextSize("ontology").x - 8);
    ImGui::InputText("rules", state.rules_path, sizeof state.rules_path);
    ImGui::SetNextItemWidth(width - ImGui::CalcTextSize("ontology").x - 8);
    ImGui::InputText("ontology", state.ontology_path, sizeof state.ontology_path);
    if (ImGui::SmallButton("load")) {
        try {
            load_rules_files(state, state.rules_path, state.ontology_path);
        } catch (const std::exception&) {
            // shown below
        }
    }
    ImGui::SameLine();
    if (ImGui::SmallButton("clear")) {
        state.rules.reset();
        state.ontology.reset();
        state.error.clear();
        state.violations.clear();
        state.seen_violations = 0;
        state.rules_to_runner = true;
        ++state.loads;
    }
    if (!state.error.empty()) {
        ImGui::PushTextWrapPos(0);
        ImGui::TextColored(ImVec4(1, 0.45f, 0.4f, 1), "%s", state.error.c_str());
        ImGui::PopTextWrapPos();
    }
    if (!state.pause_reason.empty()) ImGui::TextColored(ImVec4(1, 0.3f, 0.3f, 1), "paused: %s", state.pause_reason.c_str());
    if (state.rules) {
        const bool have = state.evaluation.has_value() && state.evaluation.value().report &&
                          state.evaluation.key().loads == state.loads;
        if (state.evaluation.busy()) ImGui::TextDisabled("checking the rules…");
        if (!state.evaluation.error().empty()) ImGui::TextColored(ImVec4(1, 0.45f, 0.4f, 1), "%s", state.evaluation.error().c_str());
        if (actions.runner) ImGui::TextDisabled("live: each new step is checked by the runner");
        for (size_t i = 0; i < state.rules->rules.size(); ++i) {
            const Rule& rule = state.rules->rules[i];
            Verdict verdict = Verdict::NotApplicable;
            std::string reason = "not checked yet";
            if (have && i < state.evaluation.value().report->results.size()) {
                verdict = state.evaluation.value().report->results[i].verdict;
                reason = state.evaluation.value().report->results[i].reason;
            }
            // Live steps the evaluation has not caught up with yet.
            const bool live_fail = std::any_of(state.violations.begin(), state.violations.end(),
                                               [&](const Violation& v) { return v.rule == i && v.live; });
            if (live_fail) verdict = Verdict::Fail;
            const ImVec4 colour = verdict == Verdict::Fail   ? ImVec4(1, 0.35f, 0.3f, 1)
                                  : verdict == Verdict::Pass ? ImVec4(0.4f, 0.9f, 0.45f, 1)
                                                             : ImVec4(0.7f, 0.7f, 0.7f, 1);
            ImGui::TextColored(colour, "%-4s", verdict_label(verdict));
            ImGui::SameLine();
            ImGui::Text("%s  (line %d)", rule.id.c_str(), rule.line);
            if (ImGui::IsItemHovered()) {
                ImGui::BeginTooltip();
                ImGui::PushTextWrapPos(ImGui::GetFontSize() * 30);
                if (!rule.description.empty()) ImGui::TextUnformatted(rule.description.c_str());
                ImGui::Text("query %s → key %s: %s %s %g", rule.query.describe().c_str(), rule.key.describe().c_str(),
                            rule_aggregate_name(rule.aggregate), rule_op_name(rule.op), rule.threshold);
                ImGui::TextDisabled("%s", reason.c_str());
                ImGui::PopTextWrapPos();
                ImGui::EndTooltip();
            }
        }
    } else if (state.error.empty()) {
        ImGui::TextDisabled("no rules loaded (a .toml or .json file: engine/rules.h)");
    }
    if (state.ontology) {
        ImGui::Separator();
        ImGui::Text("ontology: %zu types, %zu relations; %zu spans in the text", state.ontology->types.size(),
                    state.ontology->relations.size(), state.entity_spans.size());
        if (state.anomalies.busy()) ImGui::TextDisabled("checking the expected relations…");
        if (!state.anomalies.error().empty()) ImGui::TextColored(ImVec4(1, 0.45f, 0.4f, 1), "%s", state.anomalies.error().c_str());
        if (const OntologyReport* current = current_anomalies(state)) {
            const OntologyReport& report = *current;
            ImGui::Text("%lld anomalies", static_cast<long long>(report.anomalies));
            for (const RelationCheck& rc : report.relations)
                for (const RelationPair& p : rc.pairs) {
                    if (!p.flagged) continue;
                    const ExpectedRelation& rel = state.ontology->relations[rc.relation];
                    const TextSpan& q = report.spans[p.query_span];
                    const TextSpan& k = report.spans[p.key_span];
                    ImGui::TextColored(ImVec4(1, 0.6f, 0.2f, 1), "%s", p.flag == "low" ? "LOW " : "HIGH");
                    ImGui::SameLine();
                    ImGui::TextWrapped("%s → %s: \"%s\" → \"%s\" %.4f (best L%dH%d)", rel.from.c_str(), rel.to.c_str(), one_line(model.display_range(q.begin, q.end)).c_str(),
                                       one_line(model.display_range(k.begin, k.end)).c_str(), p.value, p.best.layer, p.best.head);
                }
        }
    }
}

const OntologyReport* current_anomalies(const RulesState& state) {
    if (!state.ontology || !state.anomalies.has_value() || state.anomalies.key().loads != state.loads) return nullptr;
    return state.anomalies.value().get();
}

std::vector<AnomalyNote> anomaly_notes(const Ontology& ontology, const OntologyReport& report) {
    std::vector<AnomalyNote> out;
    for (const RelationCheck& rc : report.relations)
        for (const RelationPair& p : rc.pairs) {
            if (!p.flagged || rc.relation >= ontology.relations.size()) continue;
            const ExpectedRelation& rel = ontology.relations[rc.relation];
            char value[64];
            std::snprintf(value, sizeof value, "%.4g (best L%dH%d)", p.value, p.best.layer, p.best.head);
            const std::string text = cat(p.flag == "low" ? "LOW " : "HIGH ", rel.from, " → ", rel.to, ": ", value);
            for (size_t index : {p.query_span, p.key_span})
                if (index < report.spans.size()) out.push_back({report.spans[index].begin, report.spans[index].end, text});
        }
    return out;
}

nlohmann::json rules_json(const app::DebuggerModel& model, const RulesState& state) {
    nlohmann::json j;
    j["rules_file"] = state.rules ? state.rules->file : std::string();
    j["ontology_file"] = state.ontology ? state.ontology->file : std::string();
    if (!state.error.empty()) j["error"] = state.error;
    nlohmann::json verdicts = nlohmann::json::array();
    const bool have = state.rules && state.evaluation.has_value() && state.evaluation.value().report &&
                      state.evaluation.key().loads == state.loads;
    if (!state.evaluation.error().empty()) j["evaluation_error"] = state.evaluation.error();
    if (state.rules)
        for (size_t i = 0; i < state.rules->rules.size(); ++i) {
            nlohmann::json r{{"id", state.rules->rules[i].id}};
            if (have && i < state.evaluation.value().report->results.size()) {
                const RuleResult& result = state.evaluation.value().report->results[i];
                r["verdict"] = verdict_name(result.verdict);
                r["violations"] = result.violations;
            }
            // As the panel shows it: a step the runner found violated fails the rule before the
            // evaluation catches up.
            if (std::any_of(state.violations.begin(), state.violations.end(), [&](const Violation& v) { return v.rule == i && v.live; }))
                r["verdict"] = verdict_name(Verdict::Fail);
            verdicts.push_back(r);
        }
    j["verdicts"] = verdicts;
    nlohmann::json list = nlohmann::json::array();
    for (const Violation& v : state.violations) {
        nlohmann::json offending = nlohmann::json::array();
        for (const HeadRef& h : v.offending) offending.push_back({h.layer, h.head});
        list.push_back({{"rule", v.rule_id}, {"step", v.step}, {"query", model.display_range(v.query.begin, v.query.end)},
                        {"keys", violation_keys_text(model, v)}, {"value", v.value}, {"threshold", v.threshold},
                        {"op", rule_op_name(v.op)}, {"heads", offending}, {"worst", {v.worst.layer, v.worst.head}}, {"live", v.live}});
    }
    j["violations"] = list.size();
    j["violation_list"] = list;
    j["pulse"] = violation_pulse(state);
    if (!state.pause_reason.empty()) j["paused_by"] = state.pause_reason;
    if (state.ontology) {
        j["entity_spans"] = state.entity_spans.size();
        if (const OntologyReport* current = current_anomalies(state)) {
            j["anomalies"] = current->anomalies;
            std::vector<std::pair<uint32_t, uint32_t>> spans;
            for (const AnomalyNote& n : anomaly_notes(*state.ontology, *current))
                if (std::find(spans.begin(), spans.end(), std::make_pair(n.begin, n.end)) == spans.end()) spans.emplace_back(n.begin, n.end);
            j["anomaly_spans"] = spans.size();  // framed in the text view
        }
    }
    return j;
}

}  // namespace attn::panels
