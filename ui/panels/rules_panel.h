#pragma once
// Rules, ontology and violations in the debugger (issue 7, "Rules and alerts", "Ontology").
//
// The Rules panel loads a rules file (engine/rules.h) and optionally an ontology (engine/ontology.h)
// by path, shows a bad file's error (file:line:column: what is wrong), and lists each rule with its
// verdict on the session shown. Verdicts come from evaluate_rules over a snapshot of the session, on
// a worker, redone when the rules change or the session grows (live: once the run is idle; meanwhile
// the runner's own checks of each new step fail a rule at once) — the same function and numbers
// as `attnscope rules`. Live, the rules are also handed to the runner (LiveRunner::set_rules), which
// checks every new step, reports violations in StepFindings and pauses on a rule with pause = true.
//
// The violations list holds every failed check: the prompt's from the evaluation, each decode step's
// from the runner's findings when live (else from the evaluation). A new violation starts a red pulse
// (violation_pulse: a few seconds of animation, then a steady red) on the offending span in the text
// view, the worst head in the head grid and selector, and the step in the timeline.
//
// The ontology's matched spans are labelled in the text view and its anomalies (check_ontology:
// expected strong links with low attention, expected near-zero links with high attention) are
// computed on a worker for the text view's heads and listed here.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/live_runner.h"
#include "engine/ontology.h"
#include "engine/rules.h"
#include "ui/app/debugger_model.h"
#include "ui/panels/async_value.h"

namespace attn::panels {

struct Violation {
    size_t rule = 0;
    std::string rule_id;
    int64_t step = -1;             // -1: the prompt
    TextSpan query;                // the attending span (bytes, tokens)
    std::vector<TokenRun> keys;    // the attended tokens
    double value = 0, threshold = 0;
    RuleOp op = RuleOp::GreaterEqual;
    std::string aggregate;
    std::vector<HeadRef> offending;
    HeadRef worst{-1, -1};         // the offending head furthest on the wrong side of the threshold
    bool live = false;             // reported by the live runner (else by the evaluation)
};

struct RulesState {
    std::optional<size_t> counterfactual_request;  // a violation's "counterfactual" button (the window runs it)
    char rules_path[512] = "";
    char ontology_path[512] = "";
    std::shared_ptr<const RuleSet> rules;
    std::shared_ptr<const Ontology> ontology;
    std::string error;             // why the last load failed (file:line:column: …)
    bool rules_to_runner = false;  // live: set_rules is due
    uint64_t loads = 0;            // bumped by every load or clear: the results below name the load they are for

    struct EvalKey {
        uint64_t loads = 0;
        const CaptureStore* store = nullptr;
        int64_t positions = 0;
        size_t labels = 0;
        bool operator==(const EvalKey&) const = default;
    };
    struct Evaluation {
        std::shared_ptr<const Session> snapshot;
        std::shared_ptr<const RulesReport> report;
    };
    AsyncValue<EvalKey, Evaluation> evaluation;

    struct OntologyKey {
        uint64_t loads = 0;
        const CaptureStore* store = nullptr;
        int64_t positions = 0;
        std::vector<HeadRef> heads;
        bool operator==(const OntologyKey&) const = default;
    };
    AsyncValue<OntologyKey, std::shared_ptr<const OntologyReport>> anomalies;
    std::vector<TextSpan> entity_spans;  // the ontology's matches in the shown text
    size_t entity_text_bytes = ~size_t(0);
    uint64_t entity_loads = ~uint64_t(0);

    std::vector<Violation> violations;   // in step order (the prompt first)
    size_t seen_violations = 0;          // how many had been seen (more: a new one pulses)
    std::chrono::steady_clock::time_point pulse_start{};
    int64_t selected_violation = -1;
    std::string pause_reason;            // live: why the runner paused, when a rule did it
};

// Loads the files named in the state (the ontology first: rules may select by type). Throws
// attn::Error naming the file, line and problem; the state keeps the previous rules then.
void load_rules_files(RulesState& state, const std::string& rules_path, const std::string& ontology_path);
// Keeps the evaluation, the live runner's rules, the violations and the ontology matches current.
// `heads`: the text view's heads (anomalies are checked for them). wait: block (scripts).
void update_rules(const app::DebuggerModel& model, RulesState& state, LiveRunner* runner, const std::vector<StepFindings>& findings,
                  const std::vector<HeadRef>& heads, bool wait = false);
bool rules_settled(const app::DebuggerModel& model, const RulesState& state, const std::vector<HeadRef>& heads,
                   LiveRunner* runner = nullptr);

// Red pulse strength for a new violation: 1 → 0.35 over a few seconds (sine-modulated), then 0.35
// (still visibly red); 0 when there is no violation.
float violation_pulse(const RulesState& state);
// Whether the pulse is still animating (the window keeps drawing frames meanwhile).
bool violation_pulsing(const RulesState& state);
// The steps / heads / text bytes of the violations, for the other views' highlights.
bool step_violated(const RulesState& state, int64_t step);
bool head_violated(const RulesState& state, int layer, int head);

struct RulesActions {
    LiveRunner* runner = nullptr;
};
void draw_rules_panel(const app::DebuggerModel& model, RulesState& state, const RulesActions& actions);
// The attended tokens of a violation as displayed (personal data masked), " | " between runs.
std::string violation_keys_text(const app::DebuggerModel& model, const Violation& v);

// The anomaly report of the ontology loaded now (null while it computes or after an error).
const OntologyReport* current_anomalies(const RulesState& state);
// Each span in a flagged pair of an ontology report, with a line saying why (for the text view).
struct AnomalyNote {
    uint32_t begin = 0, end = 0;
    std::string text;  // "LOW id_number → overdue: 0.0012 (best L11H1)"
};
std::vector<AnomalyNote> anomaly_notes(const Ontology& ontology, const OntologyReport& report);

// For `state` lines: the files, each rule's verdict, the violations and the anomalies.
nlohmann::json rules_json(const app::DebuggerModel& model, const RulesState& state);

}  // namespace attn::panels
