#pragma once
// Drives a model through a prompt and a decode loop, optionally capturing every position
// into the session's CaptureStore: the engine behind `generate` and `capture`.
#include <functional>
#include <string>

#include "engine/backend.h"
#include "engine/decoder.h"
#include "engine/session.h"

namespace attn {

struct GenerationCallbacks {
    ProgressFn prefill_progress;  // long prompts
    // The session is tokenized and about to be prefilled (a writer can start the file here).
    std::function<void(const Session&)> on_started;
    // After each prefill chunk of positions has been captured (a writer can flush it).
    std::function<void(const Session&)> on_prefill_chunk;
    std::function<void(const Session&, const StepRecord&)> on_step;  // after each generated token
};


// Tokenizes (through the chat template if asked), prefills, decodes. Generated tokens are
// appended to session.text and session.tokens with spans into the text. Each generated token is
// also run through the model so that step t owns query row prompt_tokens + t.
// Throws attn::Error for empty prompts, a prompt that doesn't fit in memory, bad settings.
Session generate(const Model& model, Backend& backend, const GenerationRequest& request,
                 const GenerationCallbacks& callbacks = {});

// Bytes the capture store will hold per position for this model (Q, K, LSE; the overview grows
// with the square of the length and is counted separately by capture_bytes).
uint64_t capture_bytes_per_position(const ModelConfig& config);
uint64_t capture_bytes(const ModelConfig& config, int64_t positions);

}  // namespace attn
