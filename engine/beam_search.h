#pragma once
// Beam search that keeps its tree: every hypothesis that was kept in a beam at some step (or
// finished there) is a node, linked to its parent, so the debugger can draw the search as a tree
// and follow any hypothesis (it replays that hypothesis' tokens with capture on a branch).
// The search itself runs without capture, on forks of the prefilled backend.
#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/model.h"
#include "engine/session.h"

namespace attn {

// Searches with settings.beams hypotheses for at most settings.max_new_tokens steps (stopping a
// hypothesis at end of sequence when settings.stop_at_eos). The best final hypothesis has the
// highest length-normalised log-probability (Hugging Face's default length_penalty = 1).
// progress(step, steps) after each step; a raised *cancel throws Cancelled between steps.
BeamTree beam_search(const Model& model, const Backend& prefilled, std::span<const float> prompt_logits,
                     const SamplingSettings& settings, const std::function<void(int, int)>& progress = {},
                     const std::atomic<bool>* cancel = nullptr);

}  // namespace attn
