#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/error.h"

namespace attn {

Sampler::Sampler(const SamplingSettings& settings) : settings_(settings), state_(settings.seed) {
    if (!settings.greedy) {
        if (!(settings.temperature > 0.f)) fail("temperature must be > 0 (use --greedy for argmax)");
        if (settings.top_k < 0) fail("top-k must be >= 0");
        if (!(settings.top_p > 0.f && settings.top_p <= 1.f)) fail("top-p must be in (0, 1]");
    }
}

double Sampler::next_uniform() {
    // splitmix64: tiny, fully specified, identical everywhere.
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t Sampler::pick(std::span<const float> logits) {
    if (settings_.greedy)
        return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    // Ties broken by id so the order (and so the sample) doesn't depend on the sort algorithm.
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    size_t keep = logits.size();
    if (settings_.top_k > 0 && static_cast<size_t>(settings_.top_k) < keep) {
        keep = settings_.top_k;
        std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
    } else {
        std::sort(order.begin(), order.end(), by_logit);
    }
    order.resize(keep);
    std::vector<double> probs(keep);
    const double max_logit = logits[order[0]];
    double total = 0;
    for (size_t i = 0; i < keep; ++i) {
        probs[i] = std::exp((logits[order[i]] - max_logit) / settings_.temperature);
        total += probs[i];
    }
    if (settings_.top_p < 1.f) {
        double cumulative = 0;
        size_t cut = keep;
        for (size_t i = 0; i < keep; ++i) {
            cumulative += probs[i] / total;
            if (cumulative >= settings_.top_p) {
                cut = i + 1;
                break;
            }
        }
        keep = cut;
        total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
    }
    double target = next_uniform() * total;
    for (size_t i = 0; i < keep; ++i) {
        target -= probs[i];
        if (target < 0) return order[i];
    }
    return order[keep - 1];
}

std::vector<float> log_softmax(std::span<const float> logits) {
    const float m = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float l : logits) sum += std::exp(static_cast<double>(l - m));
    const float log_sum = static_cast<float>(std::log(sum)) + m;
    std::vector<float> out(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_sum;
    return out;
}

std::vector<TokenAlternative> top_alternatives(std::span<const float> log_probs, int k) {
    k = std::min<int>(k, static_cast<int>(log_probs.size()));
    std::vector<int32_t> order(log_probs.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return log_probs[a] > log_probs[b] || (log_probs[a] == log_probs[b] && a < b);
    });
    std::vector<TokenAlternative> out(k);
    for (int i = 0; i < k; ++i) out[i] = {order[i], std::exp(log_probs[order[i]])};
    return out;
}

}  // namespace attn
