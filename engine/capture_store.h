#pragma once
// CaptureStore: just enough to recompute every attention probability exactly
// (DESIGN.md §1) — post-RoPE Q and K and each query row's log-sum-exp per layer — plus
// the pooled overview (sum and max of P over 128×128 token blocks) the attention
// kernel emits while it has P in hand anyway.
//
// Positions are appended in order (prompt, then one per decode step). Storage is in
// fixed chunks of positions so that growth never copies what is already captured and
// every aligned 256-position tile range is contiguous.
//
// Threads: one writer (the runtime, while it prefills and decodes) and any number of readers
// (tile producers, the UI) may work at the same time. Readers see positions() grow; everything
// below positions() is complete and never moves (chunk tables are allocated once, chunks are never
// reallocated). The overview is guarded by a reader/writer lock for its growth; its cells are
// read and written through relaxed atomics, so a reader may see the last block mid-update (the
// tile cache refreshes tiles of rows that changed). truncate(), clear_overview() and
// restore_overview() are for a writer with no concurrent readers.
//
// Hidden states (optional; paragraph topics, engine/paragraph_topics.h): per position, the model's
// last hidden state after the output norm — the vector the unembedding multiplies, d_model floats,
// kept in fp32 like the rest (2,304 bytes per position for SmolLM2-135M against 93,240 for its Q, K
// and LSE: 2.5% more). Backends that record them (cpu) append them after the position's layers, so
// hidden_positions() may lag positions() while a forward pass runs; a store from a backend that does
// not (cuda) or from an older session file has none (hidden_width() == 0).
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
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
    static constexpr int64_t kMaxChunks = 1024;    // chunk tables are fixed: at most 1,048,576 positions
    static constexpr int64_t kMaxPositions = kMaxChunks * kChunkPositions;

    explicit CaptureStore(const CaptureShape& shape);

    const CaptureShape& shape() const { return shape_; }
    int64_t positions() const { return positions_.load(std::memory_order_acquire); }  // complete in every layer

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
    // For an empty store of the same shape: Q, K, LSE (and hidden states, where it has them) of
    // `source`'s first `positions` positions,
    // and the overview of its whole 128-row blocks below that; the rows of the last partial block
    // are left for the caller to accumulate (accumulate_overview_rows in tile_source.h).
    // Returns the first query row whose overview is missing.
    int64_t copy_prefix_from(const CaptureStore& source, int64_t positions);

    // Hidden states of positions [pos0, pos0 + n), each `width` floats; pos0 must equal
    // hidden_positions() and pos0 + n may not exceed positions(). The width is fixed by the first
    // record (the store is otherwise model-agnostic).
    void record_hidden(int64_t pos0, int64_t n, int width, const float* hidden);
    int hidden_width() const { return hidden_width_.load(std::memory_order_acquire); }  // 0: none recorded
    int64_t hidden_positions() const { return hidden_positions_.load(std::memory_order_acquire); }
    const float* hidden(int64_t pos) const;  // [hidden_width()], pos < hidden_positions()
    void copy_hidden(int64_t pos0, int64_t n, float* out) const;

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
        return overview_rows_ == static_cast<uint64_t>(positions()) * shape_.n_layer * shape_.n_head;
    }
    // Many overview reads under one lock (a tile aggregated from the overview reads thousands).
    class OverviewReader {
    public:
        float sum(int64_t qb, int64_t kb) const;
        float max(int64_t qb, int64_t kb) const;

    private:
        friend class CaptureStore;
        OverviewReader(const CaptureStore& store, int layer, int head);
        std::shared_lock<std::shared_mutex> lock_;
        const std::vector<float>* sum_;
        const std::vector<float>* max_;
    };
    OverviewReader overview_reader(int layer, int head) const { return OverviewReader(*this, layer, head); }

    // Raw access for serialisation: per layer, all positions in order.
    void copy_q(int layer, int64_t pos0, int64_t n, float* out) const;
    void copy_k(int layer, int64_t pos0, int64_t n, float* out) const;
    void copy_lse(int layer, int64_t pos0, int64_t n, float* out) const;
    std::span<const float> overview_sums(int layer, int head) const;
    std::span<const float> overview_maxes(int layer, int head) const;
    // For a runtime that keeps its own copy of the overview (the cuda backend mirrors the one its
    // kernels emit): block rows [first_block, overview_blocks()) of every (layer, head) are replaced
    // from `sums` / `maxes`, which hold (layer * n_head + head) at `stride` floats each, packed like
    // the store (entry qb*(qb+1)/2 + kb). Rows below first_block must already be here; afterwards the
    // overview covers every position. Only what changed is copied: one block row per decode step,
    // not the whole triangle. Readers may work meanwhile.
    void replace_overview_rows(int64_t first_block, const float* sums, const float* maxes, int64_t stride);
    // Restores an overview saved earlier (must match overview_blocks() for the current positions).
    void restore_overview(int layer, int head, std::span<const float> sums, std::span<const float> maxes);

    uint64_t bytes_held() const;

private:
    // Chunk tables of kMaxChunks entries, allocated once: appending a chunk never moves a table a
    // reader is looking at.
    struct LayerChunks {
        std::unique_ptr<std::unique_ptr<float[]>[]> q, k, lse;
        int64_t allocated = 0;  // chunks
        int64_t recorded = 0;   // positions (writer side)
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
    std::unique_ptr<std::unique_ptr<float[]>[]> hidden_;  // chunk table (kMaxChunks), made by the first record
    int64_t hidden_allocated_ = 0;                        // chunks
    std::atomic<int> hidden_width_ = 0;
    std::atomic<int64_t> hidden_positions_ = 0;
    std::atomic<int64_t> positions_ = 0;
    std::atomic<uint64_t> overview_rows_ = 0;
    mutable std::shared_mutex overview_mutex_;  // held exclusively only while an overview grows
};

}  // namespace attn
