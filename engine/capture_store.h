#pragma once
// CaptureStore: just enough to recompute every attention probability exactly
// (DESIGN.md §1) — post-RoPE Q and K and each query row's log-sum-exp per layer — plus
// the pooled overview (sum and max of P over 128×128 token blocks) the attention
// kernel emits while it has P in hand anyway.
//
// Positions are appended in order (prompt, then one per decode step). Storage is in
// fixed chunks of positions so that growth never copies what is already captured and
// every aligned 256-position tile range is contiguous.
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace attn {

struct CaptureShape {
    int n_layer = 0;
    int n_head = 0;
    int n_kv_head = 0;
    int head_dim = 0;
    float scale = 0.f;       // multiplies q·k before the softmax
    int sliding_window = 0;  // 0 = full causal

    bool operator==(const CaptureShape&) const = default;
    int kv_head_of(int head) const { return head / (n_head / n_kv_head); }
    // True if query i may attend to key j.
    bool visible(int64_t i, int64_t j) const {
        return j <= i && (sliding_window <= 0 || i - j < sliding_window);
    }
};

class CaptureStore {
public:
    static constexpr int kChunkPositions = 1024;   // multiple of the 256-cell tile edge; small enough that the last chunk wastes little
    static constexpr int kOverviewBlock = 128;     // overview cell edge, in tokens

    explicit CaptureStore(const CaptureShape& shape);

    const CaptureShape& shape() const { return shape_; }
    int64_t positions() const { return positions_; }  // positions complete in every layer

    // Runtime side. For each layer, positions [pos0, pos0 + n) in order; pos0 must equal the
    // number already recorded for that layer. q: [n, n_head, head_dim]; k: [n, n_kv_head, head_dim];
    // lse: [n, n_head] (natural log of the sum of exp(scale·q·k) over visible keys).
    void record_layer(int layer, int64_t pos0, int64_t n, const float* q, const float* k, const float* lse);
    // Grows every (layer, head) overview to cover queries below `positions`. Call before adding
    // rows from several threads: accumulate_overview then never reallocates.
    void prepare_overview(int64_t positions);
    // Adds one query row's probabilities (over keys 0..query) into the overview of (layer, head).
    // Called by the runtime with the P it computed; rows may arrive in any order but once each.
    // Rows of different 128-row blocks may be added concurrently once prepare_overview covers them.
    void accumulate_overview(int layer, int head, int64_t query, std::span<const float> probs);
    // Throws away everything after `positions` (beam rewind / truncated file recovery).
    void truncate(int64_t positions);
    // Forgets the overview (all layers and heads) so it can be re-accumulated row by row.
    void clear_overview();

    // Reader side.
    const float* q(int layer, int64_t pos) const;  // [n_head, head_dim]
    const float* k(int layer, int64_t pos) const;  // [n_kv_head, head_dim]
    float lse(int layer, int64_t pos, int head) const;
    // Contiguous run of positions starting at pos within one chunk: how many.
    int64_t contiguous_from(int64_t pos) const { return kChunkPositions - pos % kChunkPositions; }

    // Overview: lower triangle of (query block, key block), kb <= qb.
    int64_t overview_blocks() const;  // number of query blocks covered so far
    float overview_sum(int layer, int head, int64_t qb, int64_t kb) const;
    float overview_max(int layer, int head, int64_t qb, int64_t kb) const;
    bool overview_complete() const {
        return overview_rows_ == static_cast<uint64_t>(positions_) * shape_.n_layer * shape_.n_head;
    }

    // Raw access for serialisation: per layer, all positions in order.
    void copy_q(int layer, int64_t pos0, int64_t n, float* out) const;
    void copy_k(int layer, int64_t pos0, int64_t n, float* out) const;
    void copy_lse(int layer, int64_t pos0, int64_t n, float* out) const;
    std::span<const float> overview_sums(int layer, int head) const;
    std::span<const float> overview_maxes(int layer, int head) const;
    // Restores an overview saved earlier (must match overview_blocks() for the current positions).
    void restore_overview(int layer, int head, std::span<const float> sums, std::span<const float> maxes);

    uint64_t bytes_held() const;

private:
    struct LayerChunks {
        std::vector<std::unique_ptr<float[]>> q, k, lse;
        int64_t recorded = 0;
    };
    struct Overview {
        std::vector<float> sum, max;  // packed lower triangle: index qb*(qb+1)/2 + kb
    };
    static int64_t tri_index(int64_t qb, int64_t kb) { return qb * (qb + 1) / 2 + kb; }
    void grow_overview(Overview& ov, int64_t query) const;
    void update_complete_positions();

    CaptureShape shape_;
    std::vector<LayerChunks> layers_;
    std::vector<Overview> overview_;  // [layer * n_head + head]
    int64_t positions_ = 0;
    std::atomic<uint64_t> overview_rows_ = 0;
};

}  // namespace attn
