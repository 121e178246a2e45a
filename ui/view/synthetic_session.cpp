#include "ui/view/synthetic_session.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <complex>
#include <numbers>

#include "engine/error.h"
#include "engine/parallel.h"

namespace attn::view {

namespace {

constexpr int kFrequencies = 16;               // ω_f = π / 2^f: offsets below 2^16 never realign
constexpr int kSinkDim = 2 * kFrequencies;     // set only in key 0
constexpr int kHeadDim = 2 * kFrequencies + 2;  // + one spare dimension, always zero

double omega(int f) { return std::numbers::pi / static_cast<double>(int64_t(1) << f); }

// One head's score as a function of the offset d = i − j: g(d) = Σ_f a_f cos(ω_f d − φ_f), and the
// extra score σ of key 0.
struct HeadScores {
    double amplitude[kFrequencies]{};
    double phase[kFrequencies]{};
    double sink = 0;

    // Adds a bump A·Σ cos(ω_f (d − δ)) over the chosen frequencies (phasors add per frequency).
    void add_peak(double delta, double strength, int f_begin, int f_end) {
        for (int f = f_begin; f < f_end; ++f) {
            const std::complex<double> current = std::polar(amplitude[f], -phase[f]);
            const std::complex<double> sum = current + std::polar(strength, -omega(f) * delta);
            amplitude[f] = std::abs(sum);
            phase[f] = -std::arg(sum);
        }
    }
    double g(int64_t d) const {
        double s = 0;
        for (int f = 0; f < kFrequencies; ++f) s += amplitude[f] * std::cos(omega(f) * static_cast<double>(d) - phase[f]);
        return s;
    }
};

HeadScores head_scores(SyntheticPattern pattern, int stripe_period) {
    HeadScores h;
    switch (pattern) {
        case SyntheticPattern::PreviousToken:
            h.add_peak(1, 4.0, 0, kFrequencies);
            break;
        case SyntheticPattern::Sink:
            h.sink = 12.0;
            break;
        case SyntheticPattern::Induction: {
            // Frequencies above 2π/period repeat every `period` offsets: stripes at d ≡ period − 1.
            const int f_end = std::clamp(static_cast<int>(std::log2(std::max(2, stripe_period))), 1, kFrequencies);
            h.add_peak(stripe_period - 1, 2.5, 0, f_end);
            h.add_peak(1, 1.0, 0, kFrequencies);
            h.sink = 6.0;
            break;
        }
        case SyntheticPattern::LocalBand:
            h.add_peak(0, 1.2, 2, 12);
            h.sink = 3.0;
            break;
    }
    return h;
}

// Range maxima over offsets in O(1) after O(N log N) set-up.
struct RangeMax {
    std::vector<std::vector<double>> levels;
    explicit RangeMax(const std::vector<double>& values) {
        levels.push_back(values);
        for (size_t width = 2; width <= values.size(); width *= 2) {
            const std::vector<double>& prev = levels.back();
            std::vector<double> next(values.size() - width + 1);
            for (size_t i = 0; i < next.size(); ++i) next[i] = std::max(prev[i], prev[i + width / 2]);
            levels.push_back(std::move(next));
        }
    }
    double max(int64_t lo, int64_t hi) const {  // inclusive, lo <= hi
        const int level = std::bit_width(static_cast<uint64_t>(hi - lo + 1)) - 1;
        return std::max(levels[level][lo], levels[level][hi - (int64_t(1) << level) + 1]);
    }
};

}  // namespace

const char* pattern_name(SyntheticPattern pattern) {
    switch (pattern) {
        case SyntheticPattern::PreviousToken: return "previous-token";
        case SyntheticPattern::Sink: return "sink";
        case SyntheticPattern::Induction: return "induction";
        case SyntheticPattern::LocalBand: return "local-band";
    }
    return "?";
}

Session make_synthetic_session(const SyntheticOptions& options) {
    const int64_t n = options.tokens;
    if (n < 1 || n > (int64_t(1) << kFrequencies)) fail("synthetic session: --tokens must be in 1..", int64_t(1) << kFrequencies);
    if (options.layers < 1 || options.heads.empty()) fail("synthetic session: needs at least one layer and one head");
    const int n_head = static_cast<int>(options.heads.size());

    Session session;
    session.config.arch_name = "synthetic";
    session.config.n_layer = options.layers;
    session.config.n_head = n_head;
    session.config.n_kv_head = 1;  // every head reads the same rotating keys
    session.config.head_dim = kHeadDim;
    session.config.d_model = n_head * kHeadDim;
    session.config.max_context = static_cast<int>(n);
    session.identity.name = "synthetic";
    session.identity.format = "synthetic";
    if (options.decode_steps < 0 || options.decode_steps >= n)
        fail("synthetic session: ", options.decode_steps, " decode steps do not fit in ", n, " tokens (one prompt token at least)");
    session.prompt_tokens = n - options.decode_steps;
    session.tokens.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const std::string word = (i ? " w" : "w") + std::to_string(i);
        Token token;
        token.id = static_cast<int32_t>(i % 49152);
        token.begin = static_cast<uint32_t>(session.text.size());
        session.text += word;
        token.end = static_cast<uint32_t>(session.text.size());
        session.tokens.push_back(token);
        if (i >= session.prompt_tokens) {
            StepRecord step;
            step.token_id = token.id;
            step.text = word;
            step.kv_length = i + 1;
            session.steps.push_back(step);
        }
    }

    CaptureShape shape;
    shape.n_layer = options.layers;
    shape.n_head = n_head;
    shape.n_kv_head = 1;
    shape.head_dim = kHeadDim;
    shape.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));  // what capture_shape_of gives on reload
    session.capture = std::make_unique<CaptureStore>(shape);
    CaptureStore& store = *session.capture;

    // Keys: the same for every layer.
    std::vector<float> keys(static_cast<size_t>(n) * kHeadDim, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
        float* k = keys.data() + j * kHeadDim;
        for (int f = 0; f < kFrequencies; ++f) {
            const double angle = omega(f) * static_cast<double>(j);
            k[2 * f] = static_cast<float>(std::cos(angle));
            k[2 * f + 1] = static_cast<float>(std::sin(angle));
        }
        k[kSinkDim] = j == 0 ? 1.0f : 0.0f;
    }

    const int64_t blocks = (n + CaptureStore::kOverviewBlock - 1) / CaptureStore::kOverviewBlock;
    const size_t tri = static_cast<size_t>(blocks * (blocks + 1) / 2);
    std::vector<float> queries(static_cast<size_t>(n) * n_head * kHeadDim);
    std::vector<float> lse(static_cast<size_t>(n) * n_head);
    struct HeadOverview {
        std::vector<float> sum, max;
    };
    std::vector<std::vector<HeadOverview>> all_overviews;
    for (int layer = 0; layer < options.layers; ++layer) {
        std::vector<HeadOverview> overviews(static_cast<size_t>(n_head));
        ThreadPool::shared().parallel_for(n_head, [&](int64_t head) {
            const SyntheticPattern pattern = options.heads[(head + layer) % n_head];
            const HeadScores scores = head_scores(pattern, options.stripe_period);
            // Queries carry the amplitudes divided by the capture's scale so scale·q·k = g(i − j).
            const double inv_scale = 1.0 / static_cast<double>(shape.scale);
            for (int64_t i = 0; i < n; ++i) {
                float* q = queries.data() + (i * n_head + head) * kHeadDim;
                for (int f = 0; f < kFrequencies; ++f) {
                    const double angle = omega(f) * static_cast<double>(i) - scores.phase[f];
                    q[2 * f] = static_cast<float>(scores.amplitude[f] * inv_scale * std::cos(angle));
                    q[2 * f + 1] = static_cast<float>(scores.amplitude[f] * inv_scale * std::sin(angle));
                }
                q[kSinkDim] = static_cast<float>(scores.sink * inv_scale);
                q[kSinkDim + 1] = 0.0f;
            }
            // e^{g(d)} and its prefix sums over offsets; LSE_i = log(Σ_{d≤i} e^{g(d)} + e^{g(i)}(e^σ − 1)).
            std::vector<double> g(static_cast<size_t>(n)), eg(static_cast<size_t>(n)), prefix(static_cast<size_t>(n) + 1, 0.0);
            for (int64_t d = 0; d < n; ++d) {
                g[d] = scores.g(d);
                eg[d] = std::exp(g[d]);
                prefix[d + 1] = prefix[d] + eg[d];
            }
            const double sink_extra = std::exp(scores.sink) - 1.0;
            std::vector<double> inv_total(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) {
                const double total = prefix[i + 1] + eg[i] * sink_extra;
                lse[i * n_head + head] = static_cast<float>(std::log(total));
                inv_total[i] = 1.0 / total;
            }
            // Overview: block sums from prefix sums, block maxima from range maxima over offsets.
            const RangeMax range_max(g);
            HeadOverview& ov = overviews[head];
            ov.sum.assign(tri, 0.0f);
            ov.max.assign(tri, 0.0f);
            const int64_t B = CaptureStore::kOverviewBlock;
            for (int64_t qb = 0; qb < blocks; ++qb)
                for (int64_t kb = 0; kb <= qb; ++kb) {
                    double sum = 0, peak = 0;
                    const int64_t j0 = kb * B;
                    for (int64_t i = qb * B; i < std::min(n, (qb + 1) * B); ++i) {
                        const int64_t j1 = std::min(i, (kb + 1) * B - 1);  // last visible key of the block
                        if (j1 < j0) continue;
                        // Keys j0..j1 ↔ offsets i−j1..i−j0.
                        double s = prefix[i - j0 + 1] - prefix[i - j1];
                        double m = 0;
                        if (kb == 0) {
                            s += eg[i] * sink_extra;
                            m = std::exp(g[i] + scores.sink);                  // key 0
                            if (j1 >= 1) m = std::max(m, std::exp(range_max.max(i - j1, i - 1)));
                        } else {
                            m = std::exp(range_max.max(i - j1, i - j0));
                        }
                        sum += s * inv_total[i];
                        peak = std::max(peak, m * inv_total[i]);
                    }
                    const size_t index = static_cast<size_t>(qb * (qb + 1) / 2 + kb);
                    ov.sum[index] = static_cast<float>(sum);
                    ov.max[index] = static_cast<float>(peak);
                }
        });
        for (int64_t pos0 = 0; pos0 < n; pos0 += CaptureStore::kChunkPositions) {
            const int64_t count = std::min<int64_t>(CaptureStore::kChunkPositions, n - pos0);
            store.record_layer(layer, pos0, count, queries.data() + pos0 * n_head * kHeadDim, keys.data() + pos0 * kHeadDim,
                               lse.data() + pos0 * n_head);
        }
        all_overviews.push_back(std::move(overviews));
    }
    // restore_overview checks against the positions complete in every layer, so it comes last.
    for (int layer = 0; layer < options.layers; ++layer)
        for (int head = 0; head < n_head; ++head)
            store.restore_overview(layer, head, all_overviews[layer][head].sum, all_overviews[layer][head].max);
    return session;
}

}  // namespace attn::view
