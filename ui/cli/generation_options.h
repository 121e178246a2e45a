#pragma once
// Options shared by `generate` and `capture` (and later the debugger's live mode).
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/generation.h"
#include "engine/model.h"

namespace attn::cli {

struct GenerationOptions {
    std::string model = "default";
    std::string prompt, prompt_file;
    int max_new_tokens = 32;
    bool greedy = false;
    float temperature = 0.f;  // 0 = not given
    int top_k = 0;
    float top_p = 1.f;
    uint64_t seed = 0;
    int beams = 1;
    bool chat = false;
    bool ignore_eos = false;
    std::vector<std::string> stop;
    std::string backend = "auto";
    bool quiet = false;

    void add_to(CLI::App& command);
    // Reads the prompt from --prompt, --prompt-file or standard input (in that order).
    std::string read_prompt() const;
    GenerationRequest request(bool capture) const;
};

// Prints a progress bar on stderr while a long prompt is prefilled.
ProgressFn prefill_progress_bar(bool enabled);

}  // namespace attn::cli
