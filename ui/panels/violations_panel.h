#pragma once
// Violations (issue 7, "Rules and alerts"): every failed rule check of the Rules panel's state
// (ui/panels/rules_panel.h) — rule id, step or prompt, the query and key text (masked as every
// display), the value against the threshold, the offending heads and the worst of them. The newest
// pulses red after it arrives. A click shows its step and opens its worst head in the map.
#include <cstddef>
#include <optional>

#include "ui/app/debugger_model.h"
#include "ui/panels/rules_panel.h"

namespace attn::panels {

// Returns the violation clicked (the window then calls jump_to_violation and shows the map).
std::optional<size_t> draw_violations_panel(const app::DebuggerModel& model, RulesState& state);
// A click (and the script verb `violation N`): the violation's step shown and its query row selected
// (the prompt: the query span's last row), its worst head in the map.
void jump_to_violation(app::DebuggerModel& model, const Violation& v);

}  // namespace attn::panels
