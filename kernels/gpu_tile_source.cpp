#include "kernels/gpu_tile_source.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "engine/error.h"
#include "kernels/attention_tiles.cuh"
#include "kernels/cuda_check.h"
#include "kernels/device_memory.h"
#include "kernels/overview_tile.cuh"

namespace attn {

using gpu::DeviceBuffer;

namespace {

struct LayerData {
    bool uploaded = false;
    DeviceBuffer q, k, lse;        // fp32 [positions, n_head | n_kv_head, head_dim], [positions, n_head]
    DeviceBuffer ov_sum, ov_max;   // [n_head][tri] when the overview is complete
    int64_t ov_entries = 0;
};

void check_request(const CaptureShape& s, int layer, int head) {
    if (layer < 0 || layer >= s.n_layer) fail("layer ", layer, " is out of range (0..", s.n_layer - 1, ")");
    if (head < 0 || head >= s.n_head) fail("head ", head, " is out of range (0..", s.n_head - 1, ")");
}

}  // namespace

struct GpuTileSource::Impl {
    cudaStream_t stream = nullptr;
    std::vector<LayerData> layers;
    DeviceBuffer tile_sum, tile_max, row;
    ~Impl() {
        if (stream) (void)cudaStreamDestroy(stream);
    }
};

GpuTileSource::GpuTileSource(const CaptureStore& store)
    : impl_(std::make_unique<Impl>()), store_(store), positions_(store.positions()),
      overview_complete_(store.overview_complete()) {
    std::string why;
    if (!gpu::cuda_device_available(&why)) fail("the GPU tile source is unavailable: no CUDA device: ", why);
    CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
    impl_->layers.resize(store.shape().n_layer);
    const size_t cells = size_t(Tile::kEdge) * Tile::kEdge * sizeof(float);
    impl_->tile_sum = DeviceBuffer(cells, "a tile");
    impl_->tile_max = DeviceBuffer(cells, "a tile");
    impl_->row = DeviceBuffer(size_t(std::max<int64_t>(positions_, 1)) * sizeof(float), "an attention row");
}

GpuTileSource::~GpuTileSource() = default;

uint64_t GpuTileSource::device_bytes() const {
    std::lock_guard lock(mutex_);
    uint64_t total = 0;
    for (const LayerData& d : impl_->layers)
        total += d.q.bytes() + d.k.bytes() + d.lse.bytes() + d.ov_sum.bytes() + d.ov_max.bytes();
    return total;
}

namespace {

// Uploads one layer of the store (positions [0, n)) on first use. Called with the mutex held.
const LayerData& layer_data(std::vector<LayerData>& layers, const CaptureStore& store, int layer, int64_t n,
                            bool overview, cudaStream_t stream) {
    LayerData& d = layers[layer];
    if (d.uploaded) return d;
    const CaptureShape& s = store.shape();
    const int64_t q_row = int64_t(s.n_head) * s.head_dim, k_row = int64_t(s.n_kv_head) * s.head_dim;
    const std::string what = cat("layer ", layer, "'s capture (", n, " positions, fp32)");
    const std::string hint = "use the cpu tile source";
    std::vector<float> host(size_t(std::max<int64_t>(n, 1) * std::max(q_row, k_row)));
    d.q = DeviceBuffer(size_t(std::max<int64_t>(n, 1)) * q_row * sizeof(float), what, hint);
    d.k = DeviceBuffer(size_t(std::max<int64_t>(n, 1)) * k_row * sizeof(float), what, hint);
    d.lse = DeviceBuffer(size_t(std::max<int64_t>(n, 1)) * s.n_head * sizeof(float), what, hint);
    // Synchronous copies from the one host vector: it is reused for Q, K and LSE in turn.
    store.copy_q(layer, 0, n, host.data());
    CUDA_CHECK(cudaMemcpy(d.q.get(), host.data(), size_t(n) * q_row * sizeof(float), cudaMemcpyHostToDevice));
    store.copy_k(layer, 0, n, host.data());
    CUDA_CHECK(cudaMemcpy(d.k.get(), host.data(), size_t(n) * k_row * sizeof(float), cudaMemcpyHostToDevice));
    store.copy_lse(layer, 0, n, host.data());
    CUDA_CHECK(cudaMemcpy(d.lse.get(), host.data(), size_t(n) * s.n_head * sizeof(float), cudaMemcpyHostToDevice));
    if (overview) {
        const int64_t blocks = store.overview_blocks();
        d.ov_entries = blocks * (blocks + 1) / 2;
        d.ov_sum = DeviceBuffer(size_t(s.n_head) * std::max<int64_t>(d.ov_entries, 1) * sizeof(float), what, hint);
        d.ov_max = DeviceBuffer(size_t(s.n_head) * std::max<int64_t>(d.ov_entries, 1) * sizeof(float), what, hint);
        for (int h = 0; h < s.n_head; ++h) {
            const std::span<const float> sums = store.overview_sums(layer, h), maxes = store.overview_maxes(layer, h);
            if (static_cast<int64_t>(sums.size()) < d.ov_entries || static_cast<int64_t>(maxes.size()) < d.ov_entries)
                fail("the capture's overview for layer ", layer, " head ", h, " is shorter than its positions");
            CUDA_CHECK(cudaMemcpy(d.ov_sum.as<float>() + h * d.ov_entries, sums.data(), d.ov_entries * sizeof(float),
                                  cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(d.ov_max.as<float>() + h * d.ov_entries, maxes.data(),
                                  d.ov_entries * sizeof(float), cudaMemcpyHostToDevice));
        }
    }
    (void)stream;
    d.uploaded = true;
    return d;
}

gpu::TileInputs inputs_of(const CaptureShape& s, const LayerData& d, int64_t n) {
    gpu::TileInputs in;
    in.q = d.q.get();
    in.k = d.k.get();
    in.lse = d.lse.as<float>();
    in.bf16 = false;
    in.positions = n;
    in.n_head = s.n_head;
    in.n_kv_head = s.n_kv_head;
    in.head_dim = s.head_dim;
    in.scale = s.scale;
    in.sliding_window = s.sliding_window;
    return in;
}

}  // namespace

std::vector<float> GpuTileSource::row(int layer, int head, int64_t query) const {
    check_request(store_.shape(), layer, head);
    if (query < 0 || query >= positions_) fail("query ", query, " is out of range (0..", positions_ - 1, ")");
    std::lock_guard lock(mutex_);
    const LayerData& d = layer_data(impl_->layers, store_, layer, positions_, overview_complete_, impl_->stream);
    gpu::attention_row(inputs_of(store_.shape(), d, positions_), head, query, impl_->row.as<float>(), impl_->stream);
    std::vector<float> probs(size_t(query + 1));
    CUDA_CHECK(cudaMemcpyAsync(probs.data(), impl_->row.get(), probs.size() * sizeof(float), cudaMemcpyDeviceToHost,
                               impl_->stream));
    CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
    return probs;
}

double GpuTileSource::mass(int layer, int head, int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
    check_request(store_.shape(), layer, head);
    std::lock_guard lock(mutex_);
    const LayerData& d = layer_data(impl_->layers, store_, layer, positions_, overview_complete_, impl_->stream);
    return gpu::attention_mass(inputs_of(store_.shape(), d, positions_), head, q0, q1, k0, k1, impl_->stream);
}

namespace {

int valid_cells(int64_t positions, int level, int64_t t) {
    const int64_t cell = int64_t(1) << level;
    const int64_t first = t * Tile::kEdge * cell;
    return static_cast<int>(std::clamp<int64_t>((positions - first + cell - 1) / cell, 0, Tile::kEdge));
}

}  // namespace

// Validates like CpuTileSource::tile and enqueues the tile; the caller holds the mutex.
void GpuTileSource::enqueue_tile(const TileRequest& r, float* device_sum, float* device_max) const {
    check_request(store_.shape(), r.layer, r.head);
    if (r.level < 0 || r.level > 40) fail("tile level ", r.level, " is out of range");
    const int64_t across = CpuTileSource::tiles_across(positions_, r.level);
    if (r.tx < 0 || r.ty < 0 || r.tx >= across || r.ty >= across)
        fail("tile (", r.tx, ", ", r.ty, ") does not exist at level ", r.level, " (", across, "×", across, " tiles)");
    const LayerData& d = layer_data(impl_->layers, store_, r.layer, positions_, overview_complete_, impl_->stream);
    // The CPU's rule: the overview serves levels whose cells hold whole 128-token blocks, when complete.
    if (r.level >= CpuTileSource::kFirstOverviewLevel && overview_complete_) {
        const int64_t blocks = (positions_ + CaptureStore::kOverviewBlock - 1) / CaptureStore::kOverviewBlock;
        gpu::overview_tile(d.ov_sum.as<float>() + r.head * d.ov_entries, d.ov_max.as<float>() + r.head * d.ov_entries,
                           blocks, r.level, r.tx, r.ty, valid_cells(positions_, r.level, r.ty),
                           valid_cells(positions_, r.level, r.tx), device_sum, device_max, impl_->stream);
    } else {
        gpu::attention_tile(inputs_of(store_.shape(), d, positions_), r.head, r.level, r.tx, r.ty, device_sum,
                            device_max, impl_->stream);
    }
}

void GpuTileSource::tile_to_device(const TileRequest& request, float* device_sum, float* device_max) const {
    std::lock_guard lock(mutex_);
    enqueue_tile(request, device_sum, device_max);
    CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}

Tile GpuTileSource::tile(const TileRequest& request) const {
    // The tile kernel makes the map's square, origin-aligned tiles; waterfall tiles (a row level
    // of their own, rows from a first query) come from the cpu source until the kernel learns them.
    if (!request.square())
        fail("the cuda tile source makes square map tiles only (row level delta ", request.row_level_delta,
             ", first query ", request.first_query, "); use the cpu tile source for waterfall tiles");
    Tile tile;
    tile.request = request;
    tile.sum.resize(size_t(Tile::kEdge) * Tile::kEdge);
    tile.max.resize(size_t(Tile::kEdge) * Tile::kEdge);
    std::lock_guard lock(mutex_);  // the scratch tile is shared by callers
    enqueue_tile(request, impl_->tile_sum.as<float>(), impl_->tile_max.as<float>());
    tile.valid_rows = valid_cells(positions_, request.level, request.ty);
    tile.valid_cols = valid_cells(positions_, request.level, request.tx);
    CUDA_CHECK(cudaMemcpyAsync(tile.sum.data(), impl_->tile_sum.get(), tile.sum.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, impl_->stream));
    CUDA_CHECK(cudaMemcpyAsync(tile.max.data(), impl_->tile_max.get(), tile.max.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, impl_->stream));
    CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
    return tile;
}

}  // namespace attn
