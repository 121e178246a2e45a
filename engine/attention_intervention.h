#pragma once
// Hooks a backend applies while it runs a forward pass, for counterfactual re-runs
// (engine/counterfactual.h). Only the cpu backend implements them (Backend::set_intervention);
// an unset or empty intervention leaves every computed value exactly as without it.
//
// What each hook does, at absolute positions of the sequence being run:
//  - key_masks: for a (layer, head), the scores of the listed keys are set to −inf before the
//    softmax, so P there is exactly 0 and the row's LSE (what the capture records) is the masked
//    softmax's. A query whose visible keys are all masked has no distribution to renormalise
//    onto: its row is left unmasked (masked_row() applies the same rule).
//  - head_outputs: after P·V, a head's output vector (head_dim values, before the output
//    projection) is replaced at every position: by zeros, or by a given vector.
//  - embedding_offsets: added to a position's input embedding (after GPT-2's position embedding).
//  - on_head_outputs: sees every layer's concatenated head outputs [rows, n_head · head_dim]
//    (after head_outputs were applied), e.g. to average a head's output for mean ablation.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

namespace attn {

struct KeySpan {
    int64_t begin = 0, end = 0;  // [begin, end), absolute key positions
    bool contains(int64_t key) const { return key >= begin && key < end; }
};

struct HeadOutputOverride {
    int layer = 0, head = 0;
    bool zero = true;            // false: replace with `value`
    std::vector<float> value;    // head_dim values when !zero
};

struct AttentionIntervention {
    std::map<std::pair<int, int>, std::vector<KeySpan>> key_masks;  // (layer, head) → masked keys
    std::vector<HeadOutputOverride> head_outputs;
    std::map<int64_t, std::vector<float>> embedding_offsets;         // position → d_model values
    std::function<void(int layer, int64_t pos0, int64_t rows, const float* head_outputs)> on_head_outputs;

    bool empty() const {
        return key_masks.empty() && head_outputs.empty() && embedding_offsets.empty() && !on_head_outputs;
    }
    // The masked spans of (layer, head), or nullptr.
    const std::vector<KeySpan>* mask_of(int layer, int head) const {
        const auto it = key_masks.find({layer, head});
        return it == key_masks.end() || it->second.empty() ? nullptr : &it->second;
    }
};

inline bool key_is_masked(const std::vector<KeySpan>& spans, int64_t key) {
    for (const KeySpan& span : spans)
        if (span.contains(key)) return true;
    return false;
}

// Whether `query`'s row is masked at all: it is unless every visible key in [first_key, query] is masked.
inline bool row_is_maskable(const std::vector<KeySpan>& spans, int64_t first_key, int64_t query) {
    for (int64_t j = first_key; j <= query; ++j)
        if (!key_is_masked(spans, j)) return true;
    return false;
}

// A row read back from the capture of a masked run (CpuTileSource::row computes exp(score − LSE)
// for every visible key and knows nothing of the mask): zeroes the masked keys, as the softmax did.
// The unmasked keys are exact already, since the captured LSE is the masked softmax's.
inline void masked_row(const std::vector<KeySpan>& spans, int sliding_window, int64_t query, std::span<float> row) {
    const int64_t first_key = sliding_window > 0 ? std::max<int64_t>(0, query - sliding_window + 1) : 0;
    if (!row_is_maskable(spans, first_key, query)) return;
    for (int64_t j = 0; j < static_cast<int64_t>(row.size()); ++j)
        if (key_is_masked(spans, j)) row[static_cast<size_t>(j)] = 0.f;
}

}  // namespace attn
