#pragma once
// Counterfactuals in the debugger (issue 7): choose an intervention — mask a key span in chosen heads,
// ablate heads (zero or mean), remove or replace a prompt span, noise a span's embeddings — run it on
// a worker (engine/counterfactual.h, the same function and numbers as `attnscope counterfactual`) and
// show how attention redistributed: the heads ranked by how far their rows moved (JSD, L1; click one
// to open it in the map), the mass on the chosen key span before → after, each output token's
// probability before → after, the free run and where it first leaves the original, and for the shown
// head at the chosen query the keys that gained and lost attention. The result exports as JSON.
//
// The run needs the model that captured the session: the live model, or (for a reopened session)
// one loaded in the Model panel; run_counterfactual refuses a model of another architecture or shape.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/counterfactual.h"
#include "engine/model.h"
#include "ui/app/debugger_model.h"
#include "ui/panels/async_value.h"
#include "ui/panels/rules_panel.h"

namespace attn::panels {

// What a worker hands back: the result with the session it was computed from, or why there is none.
struct CounterfactualOutcome {
    std::shared_ptr<const CounterfactualResult> result;
    std::shared_ptr<const Session> original;  // the snapshot the run compared against
    std::string error;
    bool cancelled = false;
};

struct CounterfactualState {
    // ---- the form ----
    Intervention::Kind kind = Intervention::Kind::MaskKeys;
    std::string span;             // "A:B", token positions [A, B)
    bool shown_head = true;       // mask / ablate the head shown in the map …
    std::string heads;            // … or these: "L:H, L:H"
    bool ablate_mean = false;
    std::string replacement;
    float noise_std = 1.0f;
    int seed = 0;
    bool free_run = true;
    bool rerun_original = false;  // baseline = the original tokens re-run on the cpu backend (cuda captures)
    std::string form_error;       // why the form does not describe an intervention
    int64_t last_map_key = -1;    // the last key hovered in the map (the panel is elsewhere when clicked)

    // ---- set by the window every frame ----
    const Model* model = nullptr;  // the model to run (live or loaded in the Model panel); null: none
    bool live_decoding = false;    // the live run is decoding: its session is still growing

    // ---- the run ----
    AsyncValue<uint64_t, CounterfactualOutcome> job;
    uint64_t runs = 0;
    std::shared_ptr<CounterfactualProgress> progress;
    std::shared_ptr<const CounterfactualResult> shown;  // the last finished result (kept while the next runs)
    std::shared_ptr<const Session> shown_original;
    std::string error;             // the last run's failure ("" when it succeeded)
    double run_ms = 0;
    unsigned long long taken_version = 0;

    // ---- the key deltas of the shown head at the chosen query (cached) ----
    std::vector<float> delta;          // per original key: counterfactual − original probability
    double inserted_mass = 0;          // mass the counterfactual puts on inserted tokens (replace)
    int delta_layer = -1, delta_head = -1;
    int64_t delta_query = -1;
    const CounterfactualResult* delta_result = nullptr;

    bool reveal = false;               // a run started: the window opens the panel's section
    std::string export_path = "counterfactual.json";
    std::string export_note;
};

// Takes a finished run and remembers the map's hovered key; call once per frame (also when the
// panel is collapsed).
void update_counterfactual(app::DebuggerModel& model, CounterfactualState& state);

// Starts a run of `intervention` on a worker against a snapshot of the session shown. Throws
// attn::Error when it cannot start (no model, a live run decoding, a run already going).
void start_counterfactual(const app::DebuggerModel& model, CounterfactualState& state, const Intervention& intervention);
// What would the violation be without its attention? Its attended keys masked in its offending
// heads (one span, from the first attended token to the last: the intervention masks one span);
// a violation without key tokens (an entropy rule) gets its offending heads ablated instead.
Intervention intervention_for_violation(const Violation& violation);
// The script verb `counterfactual KIND ARGS…` (mask A B | ablate L H zero|mean | remove A B |
// replace A B TEXT… | noise A B STD [SEED]); mask uses the shown head.
Intervention intervention_from_words(const app::DebuggerModel& model, const std::vector<std::string>& words);
void cancel_counterfactual(CounterfactualState& state);
bool counterfactual_busy(const CounterfactualState& state);
// Blocks until the running job ends (before the model it uses goes away).
void wait_counterfactual(CounterfactualState& state);

// The original query whose diff is shown: the selected row when it was compared, else the last compared.
std::optional<size_t> shown_comparison(const app::DebuggerModel& model, const CounterfactualState& state);

// Draws the panel. Returns true when a head was clicked (it is selected; the caller shows the map).
bool draw_counterfactual_panel(app::DebuggerModel& model, CounterfactualState& state);

// The result for export: CounterfactualResult::to_json with personal data masked when the view masks it.
nlohmann::json counterfactual_export_json(const app::DebuggerModel& model, const CounterfactualState& state);
// Writes it atomically (attn::Error when there is no result or the file cannot be written).
void export_counterfactual(const app::DebuggerModel& model, const CounterfactualState& state, const std::string& path);
// The `state` line's summary: the run's state and, for the result, the shown head's span mass, top heads,
// outputs and free run.
nlohmann::json counterfactual_json(app::DebuggerModel& model, CounterfactualState& state);

}  // namespace attn::panels
