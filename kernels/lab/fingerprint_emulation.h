#pragma once
// Kernel lab: a host emulation of fingerprint_row_kernel (kernels/head_fingerprints.cu) — the
// same 256-way striding of keys over threads, per-thread double partials, the sequential fmaf dot
// product of each key, the induction predicate token[k − 1] == token[q], the offsets kept by the
// thread that computes them, and the very ThresholdSearch the kernel runs for keys_for_90 — folded
// into fingerprints by HeadFingerprints::from_rows as the GPU dispatcher does. What it cannot show:
// CUDA semantics (barriers, shuffles, the order of the block reduction, expf's last bit); the GPU
// parity test (tests/test_cuda_fingerprints.cpp, [cuda]) checks those. It runs on any machine
// (tests/test_cuda_fingerprints.cpp, [heads]), the only evidence for the kernel's logic without a
// GPU.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <vector>

#include "engine/head_fingerprints.h"
#include "kernels/threshold_search.h"

namespace attn::lab {

inline FingerprintRow emulate_fingerprint_row(const CaptureStore& store, std::span<const Token> tokens, int layer,
                                              int head, int64_t q, int local_window) {
    constexpr int kThreads = 256, kMaxOffset = FingerprintRow::kMaxOffset;
    const CaptureShape& shape = store.shape();
    const int hd = shape.head_dim;
    const float* query = store.q(layer, q) + int64_t(head) * hd;
    const float lse = store.lse(layer, q, head);
    const int32_t token = tokens[size_t(q)].id;
    const int64_t first = shape.sliding_window > 0 ? std::max<int64_t>(0, q - shape.sliding_window + 1) : 0;
    const int64_t kv_offset = int64_t(shape.kv_head_of(head)) * hd;

    std::vector<float> row(size_t(q + 1), 0.f);
    std::array<float, kMaxOffset + 1> offsets{};
    float sink = 0.f, largest = 0.f;
    std::array<double, 5> sums{};  // total, surprisal, distance, local, induction
    for (int tid = 0; tid < kThreads; ++tid) {
        std::array<double, 5> own{};
        for (int64_t key = first + tid; key <= q; key += kThreads) {
            const float* k = store.k(layer, key) + kv_offset;
            float dot = 0.f;
            for (int d = 0; d < hd; ++d) dot = std::fma(query[d], k[d], dot);
            const float log_p = shape.scale * dot - lse;
            const float p = std::exp(log_p);
            row[size_t(key)] = p;
            largest = std::max(largest, p);
            own[0] += p;
            own[1] -= double(p) * double(log_p);
            own[2] += double(p) * double(q - key);
            if (key >= q - local_window) own[3] += p;
            if (key >= 1 && tokens[size_t(key - 1)].id == token) own[4] += p;
            if (q - key <= kMaxOffset) offsets[size_t(q - key)] = p;
            if (key == 0) sink = p;
        }
        for (size_t i = 0; i < sums.size(); ++i) sums[i] += own[i];
    }
    bool has_earlier = false;
    for (int64_t j = 0; j < q && !has_earlier; ++j) has_earlier = tokens[size_t(j)].id == token;

    int64_t keys_for_90 = 0;
    if (sums[0] > 0) {
        gpu::ThresholdSearch search = gpu::ThresholdSearch::start(0.9 * sums[0], largest, double(q - first + 1));
        while (!search.done()) {
            const uint32_t mid = search.middle();
            double mass = 0, count = 0;
            for (int tid = 0; tid < kThreads; ++tid) {
                double own_mass = 0, own_count = 0;
                for (int64_t key = first + tid; key <= q; key += kThreads)
                    if (gpu::float_bits(row[size_t(key)]) >= mid) {
                        own_mass += row[size_t(key)];
                        own_count += 1.0;
                    }
                mass += own_mass;
                count += own_count;
            }
            search.take(mass, count);
        }
        keys_for_90 = search.keys();
    }

    FingerprintRow out;  // as kernels/gpu_head_fingerprints.cpp turns a record into a row
    out.query = q;
    out.total = sums[0];
    out.entropy_bits = std::max(sums[1], 0.0) / std::numbers::ln2;
    out.distance = sums[2];
    out.sink = sink;
    out.previous = offsets[1];
    out.induction = sums[4];
    out.has_earlier = has_earlier;
    out.local = sums[3];
    out.keys_for_90 = keys_for_90;
    for (int64_t d = 0; d <= std::min<int64_t>(kMaxOffset, q - 1); ++d) out.offset_mass[size_t(d)] = offsets[size_t(d)];
    return out;
}

// HeadFingerprints::compute, measured row by row as the kernel does.
inline HeadFingerprints emulate_fingerprints(const Session& session, const FingerprintOptions& options = {}) {
    const CaptureStore& store = *session.capture;
    const CaptureShape& shape = store.shape();
    const int64_t end = std::min(store.positions(), session.positions());
    const std::vector<int64_t> queries = sample_query_rows(end, options.max_rows);
    std::vector<FingerprintRow> measured;
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head)
            for (int64_t q : queries)
                measured.push_back(emulate_fingerprint_row(store, session.tokens, layer, head, q, options.local_window));
    return HeadFingerprints::from_rows(shape, options, queries, measured, std::max<int64_t>(0, end - 1));
}

}  // namespace attn::lab
