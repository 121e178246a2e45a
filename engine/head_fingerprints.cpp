#include "engine/head_fingerprints.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <numbers>
#include <unordered_map>

#include "engine/attention_metrics.h"
#include "engine/error.h"

namespace attn {

namespace {

// Buffers of fewest_keys_holding_90, reused from row to row.
struct KeySelectionBuffers {
    std::vector<int64_t> counts;
    std::vector<double> masses;
    std::vector<float> values;
};

// The fewest of `values` whose sum reaches `target`: the largest ones. Expected O(n) rather than a
// sort's O(n log n): halve the candidates with nth_element, keep the upper half whole while it falls
// short. Reorders `values`.
int64_t fewest_values_reaching(std::span<float> values, double target) {
    auto lo = values.begin(), hi = values.end();
    int64_t count = 0;
    double remaining = target;
    while (hi - lo > 1) {
        const auto mid = lo + (hi - lo) / 2;
        std::nth_element(lo, mid, hi, std::greater<float>());  // [lo, mid): the largest of [lo, hi)
        double upper = 0;
        for (auto it = lo; it != mid; ++it) upper += *it;
        if (upper >= remaining) {
            hi = mid;
        } else {
            count += mid - lo;
            remaining -= upper;
            lo = mid;
        }
    }
    if (remaining > 0 && lo != hi) ++count;
    return count;
}

// The fewest keys of a row holding 90% of its mass (`total`; `largest` is its largest value). Exact,
// in two passes over the row instead of a selection over all of it (nth_element over a 50k-key
// row took most of the fingerprint's time):
// 1. Keys below 0.1·total / n can never be needed (all of them together hold less than a tenth).
//    The others go into bins of their float bit patterns (which order positive floats): 32 bins per
//    power of two, with the count and mass of each.
// 2. Walking the bins from the top finds the one where the mass reaches 90%; every key above it is
//    needed, and the keys of that bin alone are selected among.
int64_t fewest_keys_holding_90(std::span<const float> row, double total, float largest, KeySelectionBuffers& scratch) {
    if (!(total > 0)) return 0;
    const double target = 0.9 * total;
    const float floor = static_cast<float>(0.1 * total / static_cast<double>(row.size()));
    constexpr int kShift = 18;  // 23 mantissa bits − 5: 32 bins per power of two
    const auto bin_of = [](float p) { return static_cast<int64_t>(std::bit_cast<uint32_t>(p) >> kShift); };
    const int64_t low = bin_of(floor), bins = bin_of(largest) - low + 1;
    scratch.counts.assign(static_cast<size_t>(bins), 0);
    scratch.masses.assign(static_cast<size_t>(bins), 0.0);
    for (float p : row)
        if (p >= floor) {
            const size_t b = static_cast<size_t>(bin_of(p) - low);
            ++scratch.counts[b];
            scratch.masses[b] += p;
        }
    int64_t above = 0, crossing = 0;
    double remaining = target;
    for (int64_t b = bins - 1; b >= 0; --b) {
        crossing = b;
        if (scratch.masses[static_cast<size_t>(b)] >= remaining) break;
        remaining -= scratch.masses[static_cast<size_t>(b)];
        above += scratch.counts[static_cast<size_t>(b)];
    }
    if (remaining <= 0) return above;
    scratch.values.clear();
    for (float p : row)
        if (p >= floor && bin_of(p) - low == crossing) scratch.values.push_back(p);
    return above + fewest_values_reaching(scratch.values, remaining);
}

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

void check_head(const Session& session, int layer, int head) {
    if (!session.capture) fail("the session has no captured attention");
    const CaptureShape& shape = session.capture->shape();
    if (layer < 0 || layer >= shape.n_layer) fail("layer ", layer, " is out of range (0..", shape.n_layer - 1, ")");
    if (head < 0 || head >= shape.n_head) fail("head ", head, " is out of range (0..", shape.n_head - 1, ")");
}

}  // namespace

struct HeadFingerprints::KeySelection : KeySelectionBuffers {};

// Exact probability rows of one head for a group of queries (ascending): scores from one GEMM per
// block of keys for all of them, then exp(score − LSE) with the row sums the metrics need.
class HeadFingerprints::RowGroup {
public:
    static constexpr size_t kRows = 64;              // rows per GEMM at most: 64 × 50k floats = 12.8 MB …
    static constexpr int64_t kMostFloats = 1 << 22;  // … and at most 16 MB per head task on longer sessions
    static constexpr int64_t kKeysPerBlock = 1024;   // keys per GEMM (within one CaptureStore chunk)

    // How many of `queries` (ascending) to take into the next group.
    static size_t rows_for(std::span<const int64_t> queries) {
        size_t count = std::min(kRows, queries.size());
        while (count > 1 && static_cast<int64_t>(count) * (queries[count - 1] + 1) > kMostFloats) count /= 2;
        return count;
    }

    void compute(const CaptureStore& store, int layer, int head, std::span<const int64_t> queries) {
        const CaptureShape& shape = store.shape();
        const int hd = shape.head_dim;
        window_ = shape.sliding_window;
        queries_.assign(queries.begin(), queries.end());
        const size_t m = queries_.size();
        stride_ = queries_.back() + 1;
        values_.resize(m * static_cast<size_t>(stride_));
        // The group's queries, gathered into one matrix [m × head_dim].
        gathered_.resize(m * static_cast<size_t>(hd));
        for (size_t r = 0; r < m; ++r)
            std::copy_n(store.q(layer, queries_[r]) + int64_t(head) * hd, hd, gathered_.begin() + static_cast<int64_t>(r) * hd);
        const int64_t k_stride = int64_t(shape.n_kv_head) * hd;
        const int64_t kv_offset = int64_t(shape.kv_head_of(head)) * hd;
        for (int64_t j0 = 0; j0 < stride_;) {
            const int64_t cols = std::min({stride_ - j0, kKeysPerBlock, store.contiguous_from(j0)});
            // Rows that see a key of the block: queries >= j0 (a suffix: queries ascend) whose
            // sliding window reaches back to the block (a prefix of that suffix).
            const size_t r0 = static_cast<size_t>(std::lower_bound(queries_.begin(), queries_.end(), j0) - queries_.begin());
            const size_t r1 = window_ > 0 ? static_cast<size_t>(std::upper_bound(queries_.begin(), queries_.end(),
                                                                                 j0 + cols - 2 + window_) - queries_.begin())
                                          : m;
            if (r0 < r1) {
                const float* keys = store.k(layer, j0) + kv_offset;
                const float* rows = gathered_.data() + static_cast<int64_t>(r0) * hd;
                float* out = values_.data() + static_cast<int64_t>(r0) * stride_ + j0;
                if (r1 - r0 == 1)  // one row (a decode step): OpenBLAS's sgemv is 5× its 1-row sgemm
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(cols), hd, shape.scale, keys,
                                static_cast<int>(k_stride), rows, 1, 0.0f, out, 1);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0), static_cast<int>(cols),
                                hd, shape.scale, rows, hd, keys, static_cast<int>(k_stride), 0.0f, out,
                                static_cast<int>(stride_));
            }
            j0 += cols;
        }
        // Scores → probabilities, taking the row sums on the way (one pass per row).
        stats_.assign(m, RowStats{});
        for (size_t r = 0; r < m; ++r) {
            const int64_t q = queries_[r];
            float* p = values_.data() + static_cast<int64_t>(r) * stride_;
            const int64_t first = first_visible(r);
            std::fill(p, p + first, 0.0f);
            const float lse = store.lse(layer, q, head);
            double total = 0, surprisal = 0, distance = 0;
            float largest = 0;
            for (int64_t k = first; k <= q; ++k) {
                const float log_p = p[k] - lse;
                const float value = std::exp(log_p);
                p[k] = value;
                largest = std::max(largest, value);
                total += value;
                surprisal -= static_cast<double>(value) * static_cast<double>(log_p);
                distance += static_cast<double>(value) * static_cast<double>(q - k);
            }
            stats_[r] = RowStats{total, std::max(surprisal, 0.0) / std::numbers::ln2, distance, largest};
        }
    }

    int64_t query(size_t r) const { return queries_[r]; }
    int64_t first_visible(size_t r) const { return window_ > 0 ? std::max<int64_t>(0, queries_[r] - window_ + 1) : 0; }
    std::span<const float> row(size_t r) const {  // keys 0..query
        return {values_.data() + static_cast<int64_t>(r) * stride_, static_cast<size_t>(queries_[r] + 1)};
    }
    double total(size_t r) const { return stats_[r].total; }
    double entropy_bits(size_t r) const { return stats_[r].entropy_bits; }
    double distance(size_t r) const { return stats_[r].distance; }
    float largest(size_t r) const { return stats_[r].largest; }

private:
    struct RowStats {
        double total = 0, entropy_bits = 0, distance = 0;
        float largest = 0;
    };
    int window_ = 0;
    std::vector<int64_t> queries_;
    int64_t stride_ = 0;
    std::vector<float> values_, gathered_;
    std::vector<RowStats> stats_;
};

const std::vector<std::string>& automatic_label_names() {
    static const std::vector<std::string> names{"previous-token", "induction", "sink", "positional", "local", "broad"};
    return names;
}

std::vector<std::string> automatic_labels(const HeadFingerprint& f, const LabelThresholds& t) {
    std::vector<std::string> labels;
    if (f.rows == 0) return labels;
    const bool previous = f.previous_token >= t.previous_token;
    const bool induction = f.induction >= t.induction && f.induction_rows >= t.induction_min_rows &&
                           f.induction > f.previous_token;
    const bool sink = f.sink_mass >= t.sink;
    const bool positional = f.positional_offset >= 0 && f.positional_mass >= t.positional;
    const bool local = f.local_mass >= t.local && f.local_mass - f.local_mass_if_uniform >= t.local_above_uniform &&
                       !previous && !positional && !sink;
    const bool broad = f.normalized_entropy >= t.broad;
    if (previous) labels.push_back("previous-token");
    if (induction) labels.push_back("induction");
    if (sink) labels.push_back("sink");
    if (positional) labels.push_back("positional");
    if (local) labels.push_back("local");
    if (broad) labels.push_back("broad");
    return labels;
}

std::vector<int64_t> sample_query_rows(int64_t end, int max_rows) {
    if (max_rows < 1) fail("the number of query rows per head must be at least 1 (got ", max_rows, ")");
    std::vector<int64_t> rows;
    const int64_t available = end - 1;  // rows 1..end-1
    if (available <= 0) return rows;
    if (available <= max_rows) {
        for (int64_t q = 1; q < end; ++q) rows.push_back(q);
        return rows;
    }
    if (max_rows == 1) return {end - 1};
    // Row i of m: 1 + round(i·(available − 1)/(m − 1)); distinct because the step is more than 1.
    const int64_t m = max_rows;
    for (int64_t i = 0; i < m; ++i) rows.push_back(1 + (i * (available - 1) + (m - 1) / 2) / (m - 1));
    return rows;
}

HeadFingerprints::HeadFingerprints(const CaptureShape& shape, const FingerprintOptions& options)
    : shape_(shape), options_(options) {
    if (options.max_rows < 1) fail("the number of query rows per head must be at least 1 (got ", options.max_rows, ")");
    if (options.local_window < 0) fail("the local window must not be negative (got ", options.local_window, ")");
    sums_.resize(static_cast<size_t>(shape.n_layer) * static_cast<size_t>(shape.n_head));
    for (Sums& s : sums_) s.offset_mass.assign(kMaxOffset + 1, 0.0);
    offset_rows_.assign(kMaxOffset + 1, 0);
}

HeadFingerprints HeadFingerprints::compute(const Session& session, const FingerprintOptions& options) {
    if (!session.capture) fail("the session has no captured attention");
    HeadFingerprints fingerprints(session.capture->shape(), options);
    const int64_t end = std::min(session.capture->positions(), session.positions());
    const std::vector<int64_t> rows = sample_query_rows(end, options.max_rows);
    fingerprints.fold_in(*session.capture, session.tokens, rows);
    fingerprints.rows_available_ = std::max<int64_t>(0, end - 1);
    return fingerprints;
}

void HeadFingerprints::check_queries(std::span<const int64_t> queries) const {
    int64_t previous = rows_.empty() ? 0 : rows_.back();
    for (int64_t q : queries) {
        if (q < 1) fail("query row ", q, " cannot be folded into a head fingerprint (rows start at 1)");
        if (q <= previous)
            fail("query row ", q, " cannot be folded into the head fingerprints: rows must come in order, after row ",
                 previous);
        previous = q;
    }
}

void HeadFingerprints::count_offset_rows(std::span<const int64_t> queries) {
    for (int64_t q : queries)
        for (int64_t d = 0; d <= std::min<int64_t>(kMaxOffset, q - 1); ++d) ++offset_rows_[static_cast<size_t>(d)];
    rows_.insert(rows_.end(), queries.begin(), queries.end());
    rows_available_ += static_cast<int64_t>(queries.size());
}

void HeadFingerprints::fold_in(const CaptureStore& store, std::span<const Token> tokens,
                               std::span<const int64_t> queries) {
    if (!(store.shape() == shape_)) fail("head fingerprints: the capture's shape is not the one they were made for");
    check_queries(queries);
    for (int64_t q : queries) {
        if (q >= static_cast<int64_t>(tokens.size()))
            fail("query row ", q, " has no token (the session has ", tokens.size(), ")");
        if (q >= store.positions())
            fail("query row ", q, " is not captured (", store.positions(), " positions)");
    }
    if (queries.empty()) return;

    // Earlier occurrences of each query's token, for the induction keys: one pass over the tokens
    // before the last query, keeping only the ids some query has.
    std::unordered_map<int32_t, std::vector<int64_t>> occurrences;
    for (int64_t q : queries) occurrences.try_emplace(tokens[static_cast<size_t>(q)].id);
    for (int64_t j = 0; j < queries.back(); ++j) {
        const auto found = occurrences.find(tokens[static_cast<size_t>(j)].id);
        if (found != occurrences.end()) found->second.push_back(j);
    }
    std::vector<std::span<const int64_t>> earlier(queries.size());  // positions j < q with q's token id
    for (size_t r = 0; r < queries.size(); ++r) {
        const std::vector<int64_t>& list = occurrences.at(tokens[static_cast<size_t>(queries[r])].id);
        earlier[r] = std::span<const int64_t>(list.data(), static_cast<size_t>(std::lower_bound(list.begin(), list.end(),
                                                                                               queries[r]) - list.begin()));
    }

    // Each head's sums are updated by one task, rows in order: the result does not depend on the
    // threads. The tasks work on a copy, swapped in at the end, so a failure changes nothing.
    std::vector<Sums> updated = sums_;
    for_each_parallel(static_cast<int64_t>(updated.size()), options_.threads, [&](int64_t index) {
        const int layer = static_cast<int>(index / shape_.n_head);
        const int head = static_cast<int>(index % shape_.n_head);
        Sums& sums = updated[static_cast<size_t>(index)];
        RowGroup group;
        KeySelection scratch;
        for (size_t first = 0, count = 0; first < queries.size(); first += count) {
            count = RowGroup::rows_for(queries.subspan(first));
            group.compute(store, layer, head, queries.subspan(first, count));
            for (size_t r = 0; r < count; ++r) {
                const FingerprintRow row = measure_row(group, r, earlier[first + r], options_.local_window, scratch);
                add_row(sums, row, group.query(r) - group.first_visible(r) + 1, options_.local_window);
            }
        }
    });
    sums_ = std::move(updated);
    count_offset_rows(queries);
}

HeadFingerprints HeadFingerprints::from_rows(const CaptureShape& shape, const FingerprintOptions& options,
                                             std::span<const int64_t> queries, std::span<const FingerprintRow> measured,
                                             int64_t rows_available) {
    HeadFingerprints fingerprints(shape, options);
    fingerprints.check_queries(queries);
    const size_t heads = fingerprints.sums_.size();
    if (measured.size() != heads * queries.size())
        fail("head fingerprints: ", measured.size(), " measured rows for ", heads, " heads × ", queries.size(),
             " queries");
    if (rows_available < static_cast<int64_t>(queries.size()))
        fail("head fingerprints: ", queries.size(), " rows sampled from only ", rows_available);
    for (size_t index = 0; index < heads; ++index)
        for (size_t r = 0; r < queries.size(); ++r) {
            const FingerprintRow& row = measured[index * queries.size() + r];
            const int64_t q = queries[r];
            if (row.query != q)
                fail("head fingerprints: measured row ", index * queries.size() + r, " is of query ", row.query,
                     ", expected ", q);
            const int64_t first = shape.sliding_window > 0 ? std::max<int64_t>(0, q - shape.sliding_window + 1) : 0;
            add_row(fingerprints.sums_[index], row, q - first + 1, options.local_window);
        }
    fingerprints.count_offset_rows(queries);
    fingerprints.rows_available_ = rows_available;
    return fingerprints;
}

FingerprintRow HeadFingerprints::measure_row(const RowGroup& group, size_t r, std::span<const int64_t> earlier,
                                             int window, KeySelection& scratch) {
    FingerprintRow m;
    const int64_t q = group.query(r);
    const std::span<const float> row = group.row(r);
    m.query = q;
    m.total = group.total(r);
    m.entropy_bits = group.entropy_bits(r);
    m.sink = row[0];
    m.previous = row[static_cast<size_t>(q - 1)];
    m.has_earlier = !earlier.empty();
    for (int64_t j : earlier) m.induction += row[static_cast<size_t>(j + 1)];
    for (int64_t k = std::max<int64_t>(0, q - window); k <= q; ++k) m.local += row[static_cast<size_t>(k)];
    m.distance = group.distance(r);
    for (int64_t d = 0; d <= std::min<int64_t>(kMaxOffset, q - 1); ++d)
        m.offset_mass[static_cast<size_t>(d)] = row[static_cast<size_t>(q - d)];
    m.keys_for_90 = fewest_keys_holding_90(row, group.total(r), group.largest(r), scratch);
    return m;
}

void HeadFingerprints::add_row(Sums& s, const FingerprintRow& m, int64_t keys, int window) {
    s.entropy += m.entropy_bits;
    s.normalized_entropy += keys > 1 ? m.entropy_bits / std::log2(static_cast<double>(keys)) : 0.0;
    s.sink += m.sink;
    s.previous += m.previous;
    if (m.has_earlier) {
        s.induction += m.induction;
        ++s.induction_rows;
    }
    s.local += m.local;
    s.local_uniform += static_cast<double>(std::min<int64_t>(window + 1, keys)) / static_cast<double>(keys);
    s.distance += m.distance;
    for (int64_t d = 0; d <= std::min<int64_t>(kMaxOffset, m.query - 1); ++d)
        s.offset_mass[static_cast<size_t>(d)] += m.offset_mass[static_cast<size_t>(d)];
    s.keys90 += static_cast<double>(m.keys_for_90);
    s.keys90_fraction += static_cast<double>(m.keys_for_90) / static_cast<double>(keys);
}

HeadFingerprint HeadFingerprints::at(int layer, int head, const LabelThresholds& thresholds) const {
    if (layer < 0 || layer >= shape_.n_layer) fail("layer ", layer, " is out of range (0..", shape_.n_layer - 1, ")");
    if (head < 0 || head >= shape_.n_head) fail("head ", head, " is out of range (0..", shape_.n_head - 1, ")");
    const Sums& s = sums_[static_cast<size_t>(layer) * shape_.n_head + head];
    HeadFingerprint f;
    f.layer = layer;
    f.head = head;
    f.rows = static_cast<int64_t>(rows_.size());
    if (f.rows == 0) return f;
    const double n = static_cast<double>(f.rows);
    f.entropy_bits = s.entropy / n;
    f.normalized_entropy = s.normalized_entropy / n;
    f.sink_mass = s.sink / n;
    f.previous_token = s.previous / n;
    f.induction_rows = s.induction_rows;
    f.induction = s.induction_rows > 0 ? s.induction / static_cast<double>(s.induction_rows) : 0.0;
    f.local_mass = s.local / n;
    f.local_mass_if_uniform = s.local_uniform / n;
    f.mean_distance = s.distance / n;
    f.keys_for_90 = s.keys90 / n;
    f.keys_for_90_fraction = s.keys90_fraction / n;
    for (int d = 0; d <= kMaxOffset; ++d) {
        if (d == 1) continue;  // that is previous_token
        const int64_t rows = offset_rows_[static_cast<size_t>(d)];
        if (rows == 0 || 2 * rows < f.rows) continue;  // too few rows see this offset
        const double mass = s.offset_mass[static_cast<size_t>(d)] / static_cast<double>(rows);
        if (f.positional_offset < 0 || mass > f.positional_mass) {
            f.positional_offset = d;
            f.positional_mass = mass;
        }
    }
    f.labels = automatic_labels(f, thresholds);
    return f;
}

std::vector<HeadFingerprint> HeadFingerprints::all(const LabelThresholds& thresholds) const {
    std::vector<HeadFingerprint> out;
    out.reserve(sums_.size());
    for (int layer = 0; layer < shape_.n_layer; ++layer)
        for (int head = 0; head < shape_.n_head; ++head) out.push_back(at(layer, head, thresholds));
    return out;
}

// ---- where the fingerprints are computed ---------------------------------------------------------

// The GPU side registers here when it is built (kernels/gpu_head_fingerprints.cpp), as the cuda
// backend does in engine/backend.cpp.
#ifndef ATTNSCOPE_HAVE_CUDA
bool cuda_fingerprints_available(std::string* why_not) {
    if (why_not) *why_not = "this attnscope was built without CUDA (nvcc was not found at configure time)";
    return false;
}
HeadFingerprints compute_head_fingerprints_cuda(const Session&, const FingerprintOptions&) {
    fail("head fingerprints on the GPU are unavailable: this attnscope was built without CUDA");
}
#endif

ComputedFingerprints compute_head_fingerprints(const Session& session, const FingerprintOptions& options,
                                               FingerprintDevice device) {
    if (!session.capture) fail("the session has no captured attention");
    std::string forced_by;
    if (device == FingerprintDevice::Auto) {
        const char* env = std::getenv("ATTNSCOPE_FINGERPRINTS");
        const std::string_view choice = env ? env : "";
        if (choice == "cpu") {
            device = FingerprintDevice::Cpu;
            forced_by = "ATTNSCOPE_FINGERPRINTS=cpu";
        } else if (choice == "cuda") {
            device = FingerprintDevice::Cuda;
        } else if (!choice.empty() && choice != "auto") {
            fail("ATTNSCOPE_FINGERPRINTS must be cpu, cuda or auto (got '", choice, "')");
        }
    }
    std::string why_not;
    if (device == FingerprintDevice::Cuda) {
        if (!cuda_fingerprints_available(&why_not))
            fail("head fingerprints on the GPU are unavailable: ", why_not);
        return {compute_head_fingerprints_cuda(session, options), "cuda", ""};
    }
    if (device == FingerprintDevice::Auto && cuda_fingerprints_available(&why_not))
        return {compute_head_fingerprints_cuda(session, options), "cuda", ""};
    if (device == FingerprintDevice::Cpu && forced_by.empty()) why_not = "the CPU was asked for";
    return {HeadFingerprints::compute(session, options), "cpu", forced_by.empty() ? why_not : forced_by};
}

// ---- user labels -----------------------------------------------------------------------------

void add_head_label(Session& session, int layer, int head, const std::string& text) {
    check_head(session, layer, head);
    if (text.empty()) fail("a head label needs some text");
    for (const HeadLabel& label : session.head_labels)
        if (label.layer == layer && label.head == head && label.text == text) return;
    session.head_labels.push_back({layer, head, text});
}

size_t remove_head_labels(Session& session, int layer, int head, const std::string& text) {
    check_head(session, layer, head);
    const size_t before = session.head_labels.size();
    std::erase_if(session.head_labels, [&](const HeadLabel& label) {
        return label.layer == layer && label.head == head && (text.empty() || label.text == text);
    });
    return before - session.head_labels.size();
}

std::vector<std::string> user_labels_of(const Session& session, int layer, int head) {
    std::vector<std::string> out;
    for (const HeadLabel& label : session.head_labels)
        if (label.layer == layer && label.head == head) out.push_back(label.text);
    return out;
}

std::vector<std::pair<int, int>> heads_with_label(const std::vector<HeadFingerprint>& fingerprints,
                                                  const std::vector<HeadLabel>& user_labels, std::string_view label) {
    std::vector<std::pair<int, int>> out;
    for (const HeadFingerprint& f : fingerprints) {
        bool match = std::any_of(f.labels.begin(), f.labels.end(),
                                 [&](const std::string& l) { return equal_ignoring_ascii_case(l, label); });
        match = match || std::any_of(user_labels.begin(), user_labels.end(), [&](const HeadLabel& l) {
                    return l.layer == f.layer && l.head == f.head && equal_ignoring_ascii_case(l.text, label);
                });
        if (match) out.emplace_back(f.layer, f.head);
    }
    return out;
}

}  // namespace attn
