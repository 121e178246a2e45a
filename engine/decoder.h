#pragma once
// Decoding one token at a time: the engine behind `generate` and the live debugger. A Decoder
// owns a Session (text, tokens, steps, capture) and advances it on a Backend: prefill() runs the
// prompt, step() appends one token (sampled, or chosen by the caller) and runs it through the model
// so that step t owns query row prompt_tokens + t. Sampling settings may change between steps.
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/sampler.h"
#include "engine/session.h"

namespace attn {

struct GenerationRequest {
    std::string prompt;  // raw text, or the user message when sampling.chat is set
    SamplingSettings sampling;
    bool capture = true;
    int top_alternatives = 5;
};

// Thrown out of prefill() when its cancel flag was raised; the decoder is left unprefilled.
struct Cancelled : Error {
    using Error::Error;
};

// How the next token is chosen when it isn't sampled.
struct StepChoice {
    std::optional<int32_t> token;  // this token instead of the sampler's pick
    bool forced_by_user = false;   // recorded as StepRecord::forced (a branch point)
    int32_t beam_id = 0;
};

class Decoder {
public:
    // Tokenizes the prompt (through the chat template if asked) and checks that the capture of
    // prompt + max_new_tokens positions fits in memory. Nothing runs yet.
    Decoder(const Model& model, Backend& backend, const GenerationRequest& request);
    // A prompt tokenized by the caller (a counterfactual's edited prompt, engine/counterfactual.h):
    // `prompt_tokens` span `prompt_text` as encode() would; request.prompt and sampling.chat are not used.
    Decoder(const Model& model, Backend& backend, std::string prompt_text, std::vector<Token> prompt_tokens,
            const GenerationRequest& request);

    // Runs the prompt (in chunks: progress after each; cancel checked between chunks → Cancelled).
    void prefill(const ProgressFn& progress = {}, const std::atomic<bool>* cancel = nullptr);
    bool prefilled() const { return prefilled_; }

    // Why decoding must stop here ("" if it may go on): end of sequence, a stop string, or the
    // model's context. The token budget (max_new_tokens) is the caller's to enforce.
    std::string stop_reason() const;
    // One token: appended to the session and run through the model. Returns the new step.
    const StepRecord& step(const StepChoice& choice = {});

    // Applies from the next step; the sampler starts a new random stream from settings.seed (so
    // re-applying the same settings restarts the same stream).
    void set_sampling(const SamplingSettings& settings);
    const SamplingSettings& sampling() const { return session_.sampling; }

    Session& session() { return session_; }
    const Session& session() const { return session_; }
    // Log-probabilities of the next token (after prefill or the last step).
    const std::vector<float>& next_log_probs() const { return log_probs_; }
    const std::vector<float>& next_logits() const { return logits_; }

    // A new decoder whose session is this one's first `steps` steps (prompt included) and whose
    // backend is a fork of this one's, rewound to match: ready for step() with a different choice.
    // The original is left as it is (the other branch).
    std::unique_ptr<Decoder> branch(int64_t steps, std::unique_ptr<Backend>& backend_out) const;

private:
    Decoder(const Model& model, Backend& backend);  // for branch()
    void start(const GenerationRequest& request);   // settings, capture and sampler for a tokenized prompt
    void run_and_record_logits(std::span<const int32_t> ids, const ProgressFn& progress);

    const Model& model_;
    Backend& backend_;
    Session session_;
    int top_alternatives_ = 5;
    std::vector<float> logits_, log_probs_;
    std::unique_ptr<Sampler> sampler_;
    bool prefilled_ = false;
    double cumulative_ = 0;
};

// Copies the first `positions` positions of a capture (Q, K, LSE and the overview of those rows).
std::unique_ptr<CaptureStore> copy_capture_prefix(const CaptureStore& store, int64_t positions);

}  // namespace attn
