#pragma once
// Run controls for live decoding: the prompt (typed, pasted or read from a text file; chat mode
// for instruct models), Start/Restart, Step, Run, Run to (N tokens or a stop string), Pause,
// Cancel, the prefill progress bar and the sampling settings (applied from the next step).
// Every button is a command to the LiveRunner: none waits for the model.
#include <string>

#include "engine/live_runner.h"

namespace attn::panels {

struct RunControlsState {
    std::string prompt;
    bool chat = false;
    SamplingSettings sampling;
    int run_to_steps = 16;
    std::string stop_string;
    std::string text_file;
    std::string note;  // the last problem (a file that could not be read)
};

void draw_run_controls_panel(LiveRunner& runner, const LiveStatus& status, RunControlsState& state);

// The request Start sends (the prompt and settings of the panel).
GenerationRequest request_from(const RunControlsState& state);

}  // namespace attn::panels
