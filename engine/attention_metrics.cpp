#include "engine/attention_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"
#include "engine/parallel.h"

namespace attn {

int64_t query_of_step(const Session& session, int64_t step) {
    const int64_t steps = static_cast<int64_t>(session.steps.size());
    if (step < 0 || step >= steps)
        fail("step ", step, " is out of range (the session has ", steps, " decode step", steps == 1 ? "" : "s", ")");
    const int64_t query = session.prompt_tokens + step;
    if (!session.capture || query >= session.capture->positions())
        fail("step ", step, " (query row ", query, ") has no captured attention");
    return query;
}

void for_each_parallel(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
    if (threads == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
    } else if (threads <= 0) {
        ThreadPool::current().parallel_for(n, fn);
    } else {
        ThreadPool pool(threads);
        pool.parallel_for(n, fn);
    }
}

// ---- comparing two rows -------------------------------------------------------------------

namespace {

const CaptureShape& shape_of(const Session& session) {
    if (!session.capture) fail("the session has no captured attention");
    return session.capture->shape();
}

// JSD and L1 of p/p_total and q/q_total over the same keys, without materialising the normalised rows.
template <typename T>
void divergences(std::span<const T> p, double p_total, std::span<const T> q, double q_total, double& jsd, double& l1) {
    const double p_scale = 1.0 / p_total, q_scale = 1.0 / q_total;
    double kl_p = 0, kl_q = 0, distance = 0;
    for (size_t k = 0; k < p.size(); ++k) {
        const double a = double(p[k]) * p_scale, b = double(q[k]) * q_scale;
        const double m = 0.5 * (a + b);
        if (a > 0) kl_p += a * std::log2(a / m);
        if (b > 0) kl_q += b * std::log2(b / m);
        distance += std::abs(a - b);
    }
    jsd = std::clamp(0.5 * (kl_p + kl_q), 0.0, 1.0);  // rounding can stray a hair outside
    l1 = std::min(distance, 2.0);
}

// Below this fraction of the later row on the shared keys, renormalising would blow up a remainder that
// says nothing about where the head looks: its focus has left the shared keys.
constexpr double kLeftSharedKeys = 1e-3;

struct SharedMasses {
    double earlier = 0;   // Σ earlier
    double shared = 0;    // Σ later over the shared keys
    double new_keys = 0;  // Σ later over the keys after the earlier query
};

SharedMasses shared_masses(std::span<const float> earlier, std::span<const float> later) {
    if (earlier.empty()) fail("comparing attention rows: the earlier row is empty");
    if (later.size() < earlier.size())
        fail("comparing attention rows: the later row (", later.size(), " keys) is shorter than the earlier row (",
             earlier.size(), " keys)");
    SharedMasses m;
    for (size_t k = 0; k < earlier.size(); ++k) {
        m.earlier += earlier[k];
        m.shared += later[k];
    }
    for (size_t k = earlier.size(); k < later.size(); ++k) m.new_keys += later[k];
    if (!(m.earlier > 0)) fail("comparing attention rows: the earlier row has no mass");
    if (!(m.shared + m.new_keys > 0)) fail("comparing attention rows: the later row has no mass");
    return m;
}

}  // namespace

double jensen_shannon_bits(std::span<const double> p, std::span<const double> q) {
    if (p.size() != q.size()) fail("Jensen–Shannon divergence: distributions of ", p.size(), " and ", q.size(), " values");
    const double p_total = std::accumulate(p.begin(), p.end(), 0.0), q_total = std::accumulate(q.begin(), q.end(), 0.0);
    if (!(p_total > 0) || !(q_total > 0)) fail("Jensen–Shannon divergence: a distribution has no mass");
    double jsd = 0, l1 = 0;
    divergences(p, p_total, q, q_total, jsd, l1);
    return jsd;
}

RowComparison compare_rows(std::span<const float> earlier, std::span<const float> later) {
    const SharedMasses m = shared_masses(earlier, later);
    RowComparison c;
    const double later_total = m.shared + m.new_keys;
    c.new_key_mass = m.new_keys / later_total;
    if (m.shared < kLeftSharedKeys * later_total) {
        c.jsd_bits = 1.0;
        c.l1 = 2.0;
        return c;
    }
    divergences(earlier, m.earlier, later.first(earlier.size()), m.shared, c.jsd_bits, c.l1);
    return c;
}

std::vector<float> attention_delta(std::span<const float> earlier, std::span<const float> later) {
    const SharedMasses m = shared_masses(earlier, later);
    const bool left = m.shared < kLeftSharedKeys * (m.shared + m.new_keys);
    const double earlier_scale = 1.0 / m.earlier, later_scale = left ? 0.0 : 1.0 / m.shared;
    std::vector<float> delta(earlier.size());
    for (size_t k = 0; k < earlier.size(); ++k)
        delta[k] = static_cast<float>(double(later[k]) * later_scale - double(earlier[k]) * earlier_scale);
    return delta;
}

// ---- diff of two steps ----------------------------------------------------------------------

StepDiff diff_steps(const CpuTileSource& source, const Session& session, int64_t query_a, int64_t query_b,
                    int threads) {
    const CaptureShape& shape = shape_of(session);
    StepDiff diff;
    diff.earlier_query = std::min(query_a, query_b);
    diff.later_query = std::max(query_a, query_b);
    diff.n_layer = shape.n_layer;
    diff.n_head = shape.n_head;
    const int64_t n_heads = int64_t(shape.n_layer) * shape.n_head;
    diff.heads.resize(static_cast<size_t>(n_heads));
    for_each_parallel(n_heads, threads, [&](int64_t index) {
        HeadDiff& d = diff.heads[static_cast<size_t>(index)];
        d.layer = static_cast<int>(index / shape.n_head);
        d.head = static_cast<int>(index % shape.n_head);
        const std::vector<float> earlier = source.row(d.layer, d.head, diff.earlier_query);
        const std::vector<float> later = source.row(d.layer, d.head, diff.later_query);
        d.change = compare_rows(earlier, later);
    });
    rank_head_diffs(diff);
    return diff;
}

void rank_head_diffs(StepDiff& diff) {
    diff.ranking.resize(diff.heads.size());
    std::iota(diff.ranking.begin(), diff.ranking.end(), 0);
    std::stable_sort(diff.ranking.begin(), diff.ranking.end(), [&](int a, int b) {
        const RowComparison &x = diff.heads[a].change, &y = diff.heads[b].change;
        if (x.jsd_bits != y.jsd_bits) return x.jsd_bits > y.jsd_bits;
        return x.l1 > y.l1;  // stable: equal heads stay in layer/head order
    });
}

std::vector<float> key_deltas(const CpuTileSource& source, int layer, int head, int64_t query_a, int64_t query_b) {
    const std::vector<float> earlier = source.row(layer, head, std::min(query_a, query_b));
    const std::vector<float> later = source.row(layer, head, std::max(query_a, query_b));
    return attention_delta(earlier, later);
}

// ---- one row -----------------------------------------------------------------------------

double entropy_bits(std::span<const float> row) {
    double h = 0;
    for (float p : row)
        if (p > 0) h -= double(p) * std::log2(double(p));
    return std::max(h, 0.0);
}

HeadFocus head_focus(std::span<const float> row) {
    HeadFocus f;
    if (row.empty()) return f;
    f.entropy_bits = entropy_bits(row);
    const auto top = std::max_element(row.begin(), row.end());
    f.top1 = *top;
    f.top1_key = top - row.begin();
    f.sink_mass = row[0];
    f.previous_token_mass = row.size() >= 2 ? row[row.size() - 2] : 0.0;
    return f;
}

double mass_on_keys(std::span<const float> row, std::span<const int64_t> keys) {
    double total = 0;
    for (int64_t k : keys)
        if (k >= 0 && k < static_cast<int64_t>(row.size())) total += row[static_cast<size_t>(k)];
    return total;
}

std::regex compile_pattern(std::string_view pattern, bool ignore_case) {
    auto flags = std::regex::ECMAScript | std::regex::optimize;
    if (ignore_case) flags |= std::regex::icase;
    try {
        return std::regex(pattern.begin(), pattern.end(), flags);
    } catch (const std::regex_error& e) {
        fail("invalid regular expression /", pattern, "/: ", e.what());
    }
}

std::vector<int64_t> tokens_matching(const Session& session, const std::regex& pattern, size_t text_end) {
    const std::string& text = session.text;
    const char* begin = text.data();
    const char* end = begin + std::min(text_end, text.size());
    const std::vector<Token>& tokens = session.tokens;
    std::vector<int64_t> positions;
    for (std::cregex_iterator it(begin, end, pattern), done; it != done; ++it) {
        if (it->length(0) == 0) continue;
        const auto match_begin = static_cast<uint32_t>(it->position(0));
        const auto match_end = static_cast<uint32_t>(match_begin + it->length(0));
        // Spans are ordered and contiguous (tokenizer.h): the first token ending after the match's start.
        auto token = std::partition_point(tokens.begin(), tokens.end(),
                                          [&](const Token& t) { return t.end <= match_begin; });
        for (; token != tokens.end() && token->begin < match_end; ++token) {
            if (token->end <= token->begin || token->end <= match_begin) continue;
            const int64_t position = token - tokens.begin();
            if (positions.empty() || positions.back() < position) positions.push_back(position);
        }
    }
    return positions;
}

// ---- loop alarm -----------------------------------------------------------------------------

LoopAlarm detect_loop(const Session& session, const CpuTileSource& source, int64_t step, const LoopAlarmParams& params) {
    if (params.min_ngram < 1 || params.max_ngram < params.min_ngram)
        fail("loop alarm: n-gram lengths ", params.min_ngram, "..", params.max_ngram, " are not a range of lengths >= 1");
    const CaptureShape& shape = shape_of(session);
    for (int layer : params.layers)
        if (layer < 0 || layer >= shape.n_layer)
            fail("loop alarm: layer ", layer, " is out of range (0..", shape.n_layer - 1, ")");
    LoopAlarm alarm;
    alarm.step = step;
    alarm.query = query_of_step(session, step);
    const int64_t q = alarm.query;
    if (q >= session.positions()) fail("loop alarm: step ", step, " has no token (query ", q, ")");

    // 1. The longest repeated n-gram ending at q, and every earlier occurrence of it.
    const int64_t prompt = session.prompt_tokens;
    const int longest_allowed = static_cast<int>(std::min<int64_t>(params.max_ngram, q - prompt + 1));
    if (longest_allowed < params.min_ngram) return alarm;
    const int64_t first_allowed = params.search_prompt ? 0 : prompt;  // where an earlier occurrence may start
    auto id = [&](int64_t position) { return session.tokens[static_cast<size_t>(position)].id; };
    int n = 0;
    std::vector<int64_t> ends;  // most recent first
    for (int64_t e = q - 1; e - params.min_ngram + 1 >= first_allowed; --e) {
        int common = 0;  // length of the common suffix of the texts ending at e and at q
        while (common < longest_allowed && e - common >= first_allowed && id(e - common) == id(q - common)) ++common;
        if (common < params.min_ngram || common < n) continue;
        if (common > n) {
            n = common;
            ends.clear();
        }
        ends.push_back(e);
    }
    if (n == 0) return alarm;
    alarm.ngram_length = n;
    alarm.ngram_begin = q - n + 1;
    alarm.earlier_begin = ends.front() - n + 1;
    alarm.occurrences = static_cast<int>(ends.size());
    const uint32_t text_begin = session.tokens[static_cast<size_t>(alarm.ngram_begin)].begin;
    alarm.ngram_text = session.text.substr(text_begin, session.tokens[static_cast<size_t>(q)].end - text_begin);

    // 2. Copying: mass on the keys after the earlier occurrences (self and previous token excluded).
    for (int64_t e : ends)
        if (e + 1 < q - 1) alarm.successor_keys.push_back(e + 1);
    std::sort(alarm.successor_keys.begin(), alarm.successor_keys.end());
    if (params.min_copying_heads <= 0) alarm.fired = true;  // repetition alone is enough
    if (alarm.successor_keys.empty()) return alarm;

    std::vector<int> layers = params.layers;
    if (layers.empty()) {
        layers.resize(static_cast<size_t>(shape.n_layer));
        std::iota(layers.begin(), layers.end(), 0);
    }
    const int64_t considered = static_cast<int64_t>(layers.size()) * shape.n_head;
    std::vector<double> copy_mass(static_cast<size_t>(considered));
    for_each_parallel(considered, params.threads, [&](int64_t index) {
        const int layer = layers[static_cast<size_t>(index / shape.n_head)];
        const int head = static_cast<int>(index % shape.n_head);
        copy_mass[static_cast<size_t>(index)] = mass_on_keys(source.row(layer, head, q), alarm.successor_keys);
    });
    alarm.considered_heads = static_cast<int>(considered);
    for (int64_t index = 0; index < considered; ++index) {
        const double mass = copy_mass[static_cast<size_t>(index)];
        if (mass >= params.copy_mass_threshold) ++alarm.copying_heads;
        if (alarm.best_layer < 0 || mass > alarm.score) {
            alarm.score = mass;
            alarm.best_layer = layers[static_cast<size_t>(index / shape.n_head)];
            alarm.best_head = static_cast<int>(index % shape.n_head);
        }
    }
    alarm.fired = alarm.copying_heads >= params.min_copying_heads;
    return alarm;
}

}  // namespace attn
