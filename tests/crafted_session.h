#pragma once
// Test sessions whose attention is chosen by hand (shared by the metrics and watchpoint tests).
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/session.h"

namespace attn::testing {

// A session whose attention is chosen by hand. Keys are one-hot (k_j = e_j, so head_dim equals the
// number of positions): a query q_i = strength · Σ_{t ∈ focus} e_t puts almost all its mass evenly on
// the focus keys, and q_i = 0 (an empty focus) gives the uniform row over keys 0..i. LSE is exact.
struct CraftedSpec {
    std::vector<std::string> words;  // one token each, concatenated into session.text
    int64_t prompt_tokens = 1;
    int n_layer = 2, n_head = 2;
    std::function<std::vector<int64_t>(int layer, int head, int64_t query)> focus;  // none: uniform everywhere
    std::vector<float> logprobs;  // per decode step; missing ones are 0
    double strength = 30;
};

inline Session make_crafted_session(const CraftedSpec& spec) {
    const int64_t n = static_cast<int64_t>(spec.words.size());
    Session session;
    session.prompt_tokens = spec.prompt_tokens;
    std::map<std::string, int32_t> ids;  // the same word is the same token id
    for (const std::string& word : spec.words) {
        Token token;
        token.id = ids.emplace(word, static_cast<int32_t>(ids.size())).first->second;
        token.begin = static_cast<uint32_t>(session.text.size());
        session.text += word;
        token.end = static_cast<uint32_t>(session.text.size());
        session.tokens.push_back(token);
    }
    for (int64_t position = spec.prompt_tokens; position < n; ++position) {
        StepRecord step;
        step.token_id = session.tokens[position].id;
        step.text = spec.words[position];
        const size_t t = static_cast<size_t>(position - spec.prompt_tokens);
        step.logprob = t < spec.logprobs.size() ? spec.logprobs[t] : 0.0f;
        step.kv_length = position + 1;
        session.steps.push_back(step);
    }
    const int head_dim = static_cast<int>(n);
    session.capture = std::make_unique<CaptureStore>(CaptureShape{spec.n_layer, spec.n_head, spec.n_head, head_dim, 1.0f, 0});
    for (int layer = 0; layer < spec.n_layer; ++layer) {
        std::vector<float> q(static_cast<size_t>(n * spec.n_head * head_dim), 0.0f);
        std::vector<float> k(static_cast<size_t>(n * spec.n_head * head_dim), 0.0f);
        std::vector<float> lse(static_cast<size_t>(n * spec.n_head));
        for (int64_t i = 0; i < n; ++i)
            for (int head = 0; head < spec.n_head; ++head) {
                k[(i * spec.n_head + head) * head_dim + i] = 1.0f;
                const std::vector<int64_t> focus = spec.focus ? spec.focus(layer, head, i) : std::vector<int64_t>{};
                for (int64_t key : focus) {
                    REQUIRE(key >= 0);
                    REQUIRE(key <= i);
                    q[(i * spec.n_head + head) * head_dim + key] = static_cast<float>(spec.strength);
                }
                const double focused = static_cast<double>(focus.size());
                lse[i * spec.n_head + head] =
                    static_cast<float>(std::log(focused * std::exp(spec.strength) + (static_cast<double>(i + 1) - focused)));
            }
        session.capture->record_layer(layer, 0, n, q.data(), k.data(), lse.data());
    }
    return session;
}

}  // namespace attn::testing
