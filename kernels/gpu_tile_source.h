#pragma once
// The GPU TileSource (DESIGN.md §2): the twin of attn::CpuTileSource (engine/tile_source.h) with
// the same tile / row / mass semantics, over a CaptureStore uploaded to the device:
//   P[l, h, i, j] = exp(scale · q_i · k_j − LSE_i) for visible (i, j), else 0,
// tiles of 256×256 cells (sum and max over 2^level × 2^level blocks); levels ≥ 7 come from the
// pooled overview when the store's is complete (its 128-token blocks nest in the cells), exactly
// as the CPU does, else every level is recomputed from Q, K and LSE (kernels/attention_tiles).
// Q, K and LSE are uploaded in fp32 (what the store holds), one layer on first use; the overview
// with it. The source is a snapshot: positions() is the store's at construction.
// Thread-safe (calls are serialised on the source's own stream).
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/capture_store.h"
#include "engine/tile_source.h"

namespace attn {

class GpuTileSource {
public:
    explicit GpuTileSource(const CaptureStore& store);
    ~GpuTileSource();
    GpuTileSource(const GpuTileSource&) = delete;
    GpuTileSource& operator=(const GpuTileSource&) = delete;

    int64_t positions() const { return positions_; }
    std::vector<float> row(int layer, int head, int64_t query) const;
    Tile tile(const TileRequest& request) const;
    double mass(int layer, int head, int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;

    // The tile into caller-owned device memory (256 × 256 floats each), enqueued on the source's
    // stream and waited for — for consumers that keep tiles on the GPU (CUDA–Vulkan interop).
    void tile_to_device(const TileRequest& request, float* device_sum, float* device_max) const;
    // Device bytes held by the uploaded layers.
    uint64_t device_bytes() const;

private:
    void enqueue_tile(const TileRequest& request, float* device_sum, float* device_max) const;
    struct Impl;
    std::unique_ptr<Impl> impl_;
    const CaptureStore& store_;
    int64_t positions_ = 0;
    bool overview_complete_ = false;
    mutable std::mutex mutex_;
};

}  // namespace attn
