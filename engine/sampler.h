#pragma once
// Token selection from logits: greedy, temperature, top-k, top-p, with a seeded generator
// whose sequence is the same on every machine (same seed → same tokens).
#include <cstdint>
#include <span>
#include <vector>

#include "engine/session.h"

namespace attn {

class Sampler {
public:
    explicit Sampler(const SamplingSettings& settings);
    int32_t pick(std::span<const float> logits);

private:
    double next_uniform();  // [0, 1), 53 random bits
    SamplingSettings settings_;
    uint64_t state_;
};

// log-softmax of the logits at temperature 1 (the model's own distribution).
std::vector<float> log_softmax(std::span<const float> logits);
// The k most probable tokens (probabilities at temperature 1), most probable first.
std::vector<TokenAlternative> top_alternatives(std::span<const float> log_probs, int k);

}  // namespace attn
