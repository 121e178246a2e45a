#pragma once
// Beam tree: the hypotheses of a beam search (SamplingSettings::beams > 1) as a tree — one column
// per decode step, one row per beam slot, an edge from each token to its parent. The hypothesis the
// shown branch replays is drawn bright; hovering a node shows its token and scores; clicking a node
// follows the hypothesis that ends there (live: a branch that replays it with capture).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ui/app/debugger_model.h"

namespace attn::panels {

struct BeamTreeActions {
    std::function<void(int32_t node)> follow;  // set when a model is live
};

// The deepest node whose hypothesis matches the session's decoded tokens (-1 if none does: a
// sampled or forced branch). Unique: siblings always differ in their token.
int32_t beam_node_followed(const Session& session);

// Each node's token as the panel shows it. With the model's masking on, a token is "●●●●" when its
// bytes fall inside personal data (find_pii) in the text of a hypothesis through it: the prompt,
// then the path's tokens down to a leaf (a number spread over several tokens is only recognisable
// whole, and beams may differ in whether they complete it).
std::vector<std::string> beam_node_labels(const app::DebuggerModel& model);

// followed: the node whose hypothesis the shown branch replays (-1: none).
void draw_beam_tree_panel(const app::DebuggerModel& model, int32_t followed, const BeamTreeActions& actions);

}  // namespace attn::panels
