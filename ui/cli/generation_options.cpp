#include "ui/cli/generation_options.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "engine/error.h"

namespace attn::cli {

void GenerationOptions::add_to(CLI::App& c) {
    c.add_option("--model", model, "GGUF file, Hugging Face directory, or 'default' (SmolLM2-135M-Instruct)");
    auto* prompt_opt = c.add_option("--prompt", prompt, "Prompt text");
    c.add_option("--prompt-file", prompt_file, "Read the prompt from a file")->excludes(prompt_opt);
    c.add_option("-n,--max-tokens", max_new_tokens, "Tokens to generate")->check(CLI::NonNegativeNumber);
    auto* greedy_opt = c.add_flag("--greedy", greedy, "Always pick the most likely token (the default)");
    c.add_option("--temperature", temperature, "Sample at this temperature")->excludes(greedy_opt);
    c.add_option("--top-k", top_k, "Sample among the k most likely tokens")->excludes(greedy_opt);
    c.add_option("--top-p", top_p, "Nucleus sampling threshold")->excludes(greedy_opt);
    c.add_option("--seed", seed, "Random seed (same seed, same tokens)");
    c.add_option("--beams", beams, "Beam search width")->check(CLI::Range(1, 64));
    c.add_flag("--chat", chat, "Wrap the prompt in the model's chat template as a user turn");
    c.add_flag("--ignore-eos", ignore_eos, "Keep generating after the end-of-sequence token");
    c.add_option("--stop", stop, "Stop when the generated text contains this string (repeatable)");
    c.add_option("--backend", backend, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    c.add_flag("-q,--quiet", quiet, "No progress bar");
}

std::string GenerationOptions::read_prompt() const {
    if (!prompt.empty()) return prompt;
    if (!prompt_file.empty()) {
        std::ifstream in(prompt_file, std::ios::binary);
        if (!in) fail("prompt file '", prompt_file, "' cannot be opened");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    if (isatty(STDIN_FILENO)) fail("no prompt: give --prompt, --prompt-file, or pipe text on standard input");
    std::ostringstream text;
    text << std::cin.rdbuf();
    return text.str();
}

GenerationRequest GenerationOptions::request(bool capture) const {
    GenerationRequest r;
    r.prompt = read_prompt();
    r.capture = capture;
    SamplingSettings& s = r.sampling;
    s.greedy = greedy || (temperature == 0.f && top_k == 0 && top_p >= 1.f);
    s.temperature = temperature > 0.f ? temperature : 1.0f;
    s.top_k = top_k;
    s.top_p = top_p;
    s.seed = seed;
    s.beams = beams;
    s.max_new_tokens = max_new_tokens;
    s.stop_strings = stop;
    s.chat = chat;
    s.stop_at_eos = !ignore_eos;
    return r;
}

ProgressFn prefill_progress_bar(bool enabled) {
    if (!enabled) return {};
    return [](int64_t done, int64_t total) {
        if (total <= 512) return;  // one chunk: nothing to watch
        constexpr int kWidth = 40;
        const int filled = static_cast<int>(kWidth * done / total);
        std::fprintf(stderr, "\rprefill [%.*s%*s] %lld/%lld tokens", filled,
                     "########################################", kWidth - filled, "",
                     static_cast<long long>(done), static_cast<long long>(total));
        if (done == total) std::fputc('\n', stderr);
        std::fflush(stderr);
    };
}

}  // namespace attn::cli
