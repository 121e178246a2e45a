#pragma once
// Head fingerprints (issue 6, "Heads"): what each (layer, head) does, summarised in a few numbers
// computed exactly from rows of P, automatic labels derived from them, and the user's own labels
// (Session::head_labels).
//
// Rows of P are computed here as CpuTileSource::row computes them — fp32 scores scale·q·k from a
// GEMM, exp(score − LSE), zero where masked — but for a group of query rows at once: row() is one
// 1-row GEMM per query, which OpenBLAS runs at about 1 GFLOP/s (1.7 ms for a 25k-key row of head
// dim 64, against 0.1 ms per row in a 64-row GEMM). The entropy comes from the same
// log-probabilities (−Σ p·(score − LSE)), which saves a logarithm per key. Both agree with
// CpuTileSource::row and entropy_bits to float rounding (tests/test_head_fingerprints.cpp).
//
// Which query rows. Row 0 is left out everywhere: it sees only key 0 and says nothing about a
// head. Of rows 1..positions−1, a fingerprint uses all of them when there are at most
// FingerprintOptions::max_rows (512), else that many evenly spaced rows, always including the
// first (1) and the last (sample_query_rows). That is what keeps a 50k-token session cheap: the
// cost is max_rows exact rows per head, whatever the length (a row costs O(query) to compute).
// The CLI says when it sampled. The live debugger computes the fingerprints once over the rows
// captured so far (the prompt) and then folds in each decode step's row (HeadFingerprints::fold_in)
// instead of recomputing: the same numbers as one computation over the same rows (up to the float
// rounding of a score computed in a GEMM of another shape).
//
// Metrics of one head, each the mean over the rows used (q is the query, its row has the visible
// keys 0..q, fewer with a sliding window):
//   entropy_bits          Shannon entropy of the row, bits
//   normalized_entropy    entropy / log2(visible keys): 1 for a uniform row, 0 for a one-hot row
//   sink_mass             mass on key 0
//   previous_token        mass on key q − 1
//   induction             mass on the keys j + 1 for every earlier j < q with tokens[j].id ==
//                         tokens[q].id (each key once; j + 1 may be q itself). Rows whose token has
//                         no earlier occurrence are not counted: the mean is over induction_rows.
//   local_mass            mass on keys q − w..q (w = local_window, default 8; w + 1 keys)
//   local_mass_if_uniform what local_mass would be for uniform rows over the same queries (the
//                         baseline a short session gives every head)
//   mean_distance         Σ p_k · (q − k), in tokens
//   keys_for_90           the fewest keys holding 90% of the row's mass (sparsity) …
//   keys_for_90_fraction  … as a fraction of the visible keys
//   positional_offset/_mass  the relative offset δ ∈ {0} ∪ [2, 64] (δ = q − k; 0 is the query
//                         itself, 1 is previous_token) with the largest mean mass, and that mass.
//                         Offset δ is averaged over the rows where key q − δ exists and is not key 0
//                         (q > δ: the sink would otherwise pass for an offset), and only offsets that
//                         at least half of the rows have are considered.
//
// Automatic labels (LabelThresholds holds the numbers; a head can have several):
//   previous-token  previous_token ≥ 0.5
//   induction       induction ≥ 0.4 over at least 4 counted rows, and above previous_token (else the
//                   induction keys are mostly q − 1 and the head is a previous-token head seen through
//                   repeated bigrams)
//   sink            sink_mass ≥ 0.5
//   positional      positional_mass ≥ 0.5: most of the mass at one fixed relative offset other than 1
//                   (0 = attends to itself, δ ≥ 2 = a fixed distance back); previous-token is the δ = 1 case
//   local           local_mass ≥ 0.7 and at least 0.3 above local_mass_if_uniform, spread over the window
//                   rather than on one key: not previous-token, positional or sink by the rules above
//   broad           normalized_entropy ≥ 0.8 (spreads its mass nearly uniformly over what it sees)
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/capture_store.h"
#include "engine/session.h"

namespace attn {

struct FingerprintOptions {
    int max_rows = 512;    // query rows per head at most (evenly spaced sample beyond that)
    int local_window = 8;  // w of local_mass
    int threads = 0;       // as in for_each_parallel (attention_metrics.h); heads are spread over them
};

struct LabelThresholds {
    double previous_token = 0.5;
    double induction = 0.4;
    int64_t induction_min_rows = 4;
    double sink = 0.5;
    double positional = 0.5;
    double local = 0.7;
    double local_above_uniform = 0.3;
    double broad = 0.8;
};

struct HeadFingerprint {
    int layer = 0, head = 0;
    int64_t rows = 0;  // query rows used (0: nothing to measure, every metric 0, no labels)
    double entropy_bits = 0;
    double normalized_entropy = 0;
    double sink_mass = 0;
    double previous_token = 0;
    double induction = 0;
    int64_t induction_rows = 0;
    double local_mass = 0;
    double local_mass_if_uniform = 0;
    double mean_distance = 0;
    double keys_for_90 = 0;
    double keys_for_90_fraction = 0;
    int positional_offset = -1;  // -1: no offset had enough rows
    double positional_mass = 0;
    std::vector<std::string> labels;  // automatic, in the order listed above
};

// The automatic labels of a fingerprint (the rules above).
std::vector<std::string> automatic_labels(const HeadFingerprint& fingerprint, const LabelThresholds& thresholds = {});
// Every automatic label name, in order.
const std::vector<std::string>& automatic_label_names();

// Rows of [1, end) a fingerprint uses: all when end − 1 <= max_rows, else max_rows evenly spaced ones
// including 1 and end − 1. Ascending; empty when end <= 1. max_rows must be >= 1.
std::vector<int64_t> sample_query_rows(int64_t end, int max_rows);

// What one query row of one head contributes to its fingerprint, measured from the exact row of P
// (keys 0..query). The CPU measures rows in HeadFingerprints::fold_in; the GPU
// (kernels/head_fingerprints.cu) measures the same quantities and hands them to
// HeadFingerprints::from_rows, which averages them with the same code.
struct FingerprintRow {
    static constexpr int kMaxOffset = 64;
    int64_t query = 0;
    double total = 0;               // Σ p (1 up to rounding; not averaged, kept for checks)
    double entropy_bits = 0;        // −Σ p·(score − LSE) / ln 2, clamped at 0
    double sink = 0;                // p[0]
    double previous = 0;            // p[query − 1]
    double induction = 0;           // Σ p[j + 1] over earlier j with the query's token id
    bool has_earlier = false;       // whether there is such a j (else the row is not an induction row)
    double local = 0;               // Σ p[query − w .. query]
    double distance = 0;            // Σ p·(query − key)
    int64_t keys_for_90 = 0;        // fewest keys holding 90% of `total`
    std::array<double, kMaxOffset + 1> offset_mass{};  // [δ] = p[query − δ] for δ ≤ min(64, query − 1)
};

// Running sums for every head of a capture: fold_in adds rows, at() and all() give the means.
class HeadFingerprints {
public:
    HeadFingerprints(const CaptureShape& shape, const FingerprintOptions& options = {});

    // The fingerprints of every head over sample_query_rows(positions, max_rows) of the session.
    static HeadFingerprints compute(const Session& session, const FingerprintOptions& options = {});

    // Adds query rows (ascending, each after every row folded in before, >= 1, captured in `store`,
    // which has the shape given at construction) for every head, spread over heads as
    // for_each_parallel does. tokens: the session's tokens, at least through the last query (for the
    // induction keys). Fails, changing nothing, on a bad query.
    void fold_in(const CaptureStore& store, std::span<const Token> tokens, std::span<const int64_t> queries);
    // Fingerprints from rows measured elsewhere (the GPU): `measured` holds, for every head
    // (layer-major) in turn, one FingerprintRow per query of `queries` (ascending, >= 1), in that
    // order. rows_available: the rows the queries were sampled from (at least queries.size()).
    static HeadFingerprints from_rows(const CaptureShape& shape, const FingerprintOptions& options,
                                      std::span<const int64_t> queries, std::span<const FingerprintRow> measured,
                                      int64_t rows_available);

    // One decode step's row.
    void fold_in(const CaptureStore& store, std::span<const Token> tokens, int64_t query) {
        fold_in(store, tokens, std::span<const int64_t>(&query, 1));
    }

    int n_layer() const { return shape_.n_layer; }
    int n_head() const { return shape_.n_head; }
    const FingerprintOptions& options() const { return options_; }
    const std::vector<int64_t>& rows() const { return rows_; }  // the query rows folded in, ascending
    // Rows the fingerprints stand for: rows().size() plus those a sample skipped (compute() sampled
    // when this is larger than rows().size()).
    int64_t rows_available() const { return rows_available_; }
    bool sampled() const { return rows_available_ > static_cast<int64_t>(rows_.size()); }

    HeadFingerprint at(int layer, int head, const LabelThresholds& thresholds = {}) const;
    std::vector<HeadFingerprint> all(const LabelThresholds& thresholds = {}) const;  // layer-major

    static constexpr int kMaxOffset = FingerprintRow::kMaxOffset;  // largest relative offset positional_offset considers

private:
    struct Sums {
        double entropy = 0, normalized_entropy = 0, sink = 0, previous = 0, induction = 0, local = 0,
               local_uniform = 0, distance = 0, keys90 = 0, keys90_fraction = 0;
        int64_t induction_rows = 0;
        std::vector<double> offset_mass;  // [δ], over rows with q > δ
    };

    class RowGroup;      // exact rows of one head for a group of queries (head_fingerprints.cpp)
    struct KeySelection;  // buffers for keys_for_90
    static FingerprintRow measure_row(const RowGroup& group, size_t r, std::span<const int64_t> earlier, int window,
                                      KeySelection& scratch);
    static void add_row(Sums& sums, const FingerprintRow& row, int64_t visible_keys, int window);
    void check_queries(std::span<const int64_t> queries) const;
    void count_offset_rows(std::span<const int64_t> queries);

    CaptureShape shape_;
    FingerprintOptions options_;
    std::vector<Sums> sums_;           // [layer * n_head + head]
    std::vector<int64_t> offset_rows_;  // [δ]: rows with q > δ
    std::vector<int64_t> rows_;
    int64_t rows_available_ = 0;
};

// ---- where the fingerprints are computed --------------------------------------------------------

enum class FingerprintDevice { Auto, Cpu, Cuda };

struct ComputedFingerprints {
    HeadFingerprints fingerprints;
    std::string device;      // "cuda" or "cpu": where the rows were measured
    std::string cpu_reason;  // why the CPU did it ("" when the GPU did)
};

// HeadFingerprints::compute on the GPU when one is usable (a CUDA build, a device that runs its
// kernels), else on the CPU. Auto also reads ATTNSCOPE_FINGERPRINTS: "cpu" forces the CPU, "cuda"
// requires the GPU, "auto" or unset chooses; anything else fails. Cuda fails with the reason when no
// device is usable. The GPU result equals the CPU's to float rounding (tests/test_cuda_fingerprints.cpp).
ComputedFingerprints compute_head_fingerprints(const Session& session, const FingerprintOptions& options = {},
                                               FingerprintDevice device = FingerprintDevice::Auto);

// True when the GPU fingerprint kernels can run here; else false with the reason.
bool cuda_fingerprints_available(std::string* why_not = nullptr);
// The GPU computation itself (kernels/gpu_head_fingerprints.cpp); fails without a usable device.
HeadFingerprints compute_head_fingerprints_cuda(const Session& session, const FingerprintOptions& options);

// ---- user labels (Session::head_labels) --------------------------------------------------------

// Adds a label to a head (a label the head already has is not added twice). Fails on a head the
// capture does not have or an empty text.
void add_head_label(Session& session, int layer, int head, const std::string& text);
// Removes the head's label `text`, or all its labels when text is empty; returns how many went.
size_t remove_head_labels(Session& session, int layer, int head, const std::string& text = {});
// The user labels of one head, in the order added.
std::vector<std::string> user_labels_of(const Session& session, int layer, int head);

// Heads (layer, head), layer-major, that carry `label` as an automatic or a user label (ASCII case
// is ignored: "Induction" finds induction heads).
std::vector<std::pair<int, int>> heads_with_label(const std::vector<HeadFingerprint>& fingerprints,
                                                  const std::vector<HeadLabel>& user_labels, std::string_view label);

}  // namespace attn
