// The cuda backend: a dispatcher over the per-op kernels (one op per file pair in kernels/), with
// the structure of the cpu backend (engine/cpu_backend.cpp) so the two can be read side by side.
//
// Streams and ordering (why each wait exists):
//   compute_  every kernel and GEMM, in model order. Never waits for the host or for the copy
//             stream except where reusing a staging buffer (see below).
//   copy_     device→pinned copies of the capture staging. Waits on computed_[set] (the chunk's
//             staging is written), then records copied_[set].
//   Prefill chunks alternate between two staging sets. Chunk c is enqueued before the host waits
//   for chunk c−1, so the host's record_layer of c−1 (a large memcpy into the CaptureStore) overlaps
//   chunk c's compute; before chunk c writes device staging set c%2, compute_ waits on copied_[c%2]
//   (the copy of chunk c−2 out of the same set), and the host finished reading pinned set c%2
//   (chunk c−2) before enqueueing c. forward() returns only when every copy has landed and been
//   recorded, so nothing is in flight between calls.
//
// Decode with graphs: the whole step (embedding … logits) is stream-captured into a graph each
// step and applied to one executable graph with cudaGraphExecUpdate (positions and pointers are
// kernel arguments, so re-capturing is what keeps it simple and correct; the update is cheap when
// the topology is unchanged, and falls back to re-instantiation when it is not). The copy of the
// step's capture and of the logits are plain async copies after the launch. Any failure in capture
// or instantiation turns graphs off for this backend (one line on stderr) and re-runs eagerly.
#include "kernels/cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "engine/memory.h"
#include "engine/ops_cpu.h"
#include "engine/session.h"
#include "kernels/add.cuh"
#include "kernels/convert.cuh"
#include "kernels/cuda_check.h"
#include "kernels/decode_attention.cuh"
#include "kernels/device_memory.h"
#include "kernels/embedding.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/gelu.cuh"
#include "kernels/gemm.cuh"
#include "kernels/layer_norm.cuh"
#include "kernels/overview_row.cuh"
#include "kernels/rms_norm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"

namespace attn {

using gpu::DeviceBuffer;
using gpu::PinnedBuffer;

namespace {

using bf16 = __nv_bfloat16;

constexpr int64_t kOvBlock = CaptureStore::kOverviewBlock;
constexpr size_t kCublasWorkspace = size_t(32) << 20;  // cuBLAS's own recommendation for Hopper
constexpr int kMaxDecodeSplits = 128;                   // decode_attention's upper bound

int64_t tri_entries(int64_t blocks) { return blocks * (blocks + 1) / 2; }
int64_t blocks_of(int64_t positions) { return (positions + kOvBlock - 1) / kOvBlock; }
size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// ---- RAII for streams and events -----------------------------------------------------------------

class StreamHandle {
public:
    StreamHandle() {
        // Non-blocking: no implicit synchronisation with the legacy default stream, which other
        // threads (tile sources, tests) may use while a decode step is being captured.
        CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
    }
    ~StreamHandle() {
        if (s_) (void)cudaStreamDestroy(s_);
    }
    StreamHandle(const StreamHandle&) = delete;
    StreamHandle& operator=(const StreamHandle&) = delete;
    cudaStream_t get() const { return s_; }

private:
    cudaStream_t s_ = nullptr;
};

class EventHandle {
public:
    explicit EventHandle(bool timing = false) {
        CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
    }
    ~EventHandle() {
        if (e_) (void)cudaEventDestroy(e_);
    }
    EventHandle(EventHandle&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    EventHandle& operator=(EventHandle&&) = delete;
    EventHandle(const EventHandle&) = delete;
    EventHandle& operator=(const EventHandle&) = delete;
    cudaEvent_t get() const { return e_; }

private:
    cudaEvent_t e_ = nullptr;
};

// ---- weights ---------------------------------------------------------------------------------------

struct GpuLayer {
    const bf16 *attn_norm = nullptr, *attn_norm_bias = nullptr;
    const bf16 *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
    const bf16 *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
    const bf16 *ffn_norm = nullptr, *ffn_norm_bias = nullptr;
    const bf16 *w_gate = nullptr, *w_up = nullptr, *w_down = nullptr;
    const bf16 *b_up = nullptr, *b_down = nullptr;
};

// Uploaded once per model and shared by forks (immutable after construction).
struct GpuWeights {
    DeviceBuffer storage;  // every tensor, bf16, 256-byte aligned
    DeviceBuffer inv_freq; // fp32 [head_dim / 2] (llama family)
    const bf16* token_embedding = nullptr;
    const bf16* position_embedding = nullptr;
    std::vector<GpuLayer> layers;
    const bf16 *output_norm = nullptr, *output_norm_bias = nullptr;
    const bf16* output_matrix = nullptr;  // the token embedding when tied
};

std::shared_ptr<const GpuWeights> upload_weights(const Model& model, cudaStream_t stream) {
    const ModelWeights& mw = model.weights;
    const ModelConfig& c = model.config;
    auto w = std::make_shared<GpuWeights>();
    w->layers.resize(c.n_layer);

    struct Item {
        const std::vector<float>* host;
        const bf16** dest;
    };
    std::vector<Item> items;
    auto add = [&](const std::vector<float>& v, const bf16*& dest) {
        if (!v.empty()) items.push_back({&v, &dest});
    };
    add(mw.token_embedding, w->token_embedding);
    add(mw.position_embedding, w->position_embedding);
    for (int l = 0; l < c.n_layer; ++l) {
        const LayerWeights& L = mw.layers[l];
        GpuLayer& G = w->layers[l];
        add(L.attn_norm, G.attn_norm);
        add(L.attn_norm_bias, G.attn_norm_bias);
        add(L.wq, G.wq);
        add(L.wk, G.wk);
        add(L.wv, G.wv);
        add(L.wo, G.wo);
        add(L.bq, G.bq);
        add(L.bk, G.bk);
        add(L.bv, G.bv);
        add(L.bo, G.bo);
        add(L.ffn_norm, G.ffn_norm);
        add(L.ffn_norm_bias, G.ffn_norm_bias);
        add(L.w_gate, G.w_gate);
        add(L.w_up, G.w_up);
        add(L.w_down, G.w_down);
        add(L.b_up, G.b_up);
        add(L.b_down, G.b_down);
    }
    add(mw.output_norm, w->output_norm);
    add(mw.output_norm_bias, w->output_norm_bias);
    add(mw.lm_head, w->output_matrix);

    size_t total = 0, largest = 0, parameters = 0;
    std::vector<size_t> offsets;
    for (const Item& it : items) {
        offsets.push_back(total);
        total += align_up(it.host->size() * sizeof(bf16), 256);
        largest = std::max(largest, it.host->size());
        parameters += it.host->size();
    }
    w->storage = DeviceBuffer(total, cat("the model's weights (", parameters, " parameters in bf16)"),
                              "use a smaller model or --backend cpu");
    // fp32 → bf16 on the GPU through a bounded staging buffer (the host copy stays fp32).
    const size_t chunk = std::min<size_t>(largest, size_t(16) << 20);
    DeviceBuffer staging(chunk * sizeof(float), "the weight upload's staging buffer");
    for (size_t i = 0; i < items.size(); ++i) {
        const std::vector<float>& host = *items[i].host;
        bf16* dest = reinterpret_cast<bf16*>(static_cast<char*>(w->storage.get()) + offsets[i]);
        for (size_t done = 0; done < host.size(); done += chunk) {
            const size_t n = std::min(chunk, host.size() - done);
            // Stream-ordered after the previous conversion, so the staging buffer is free again.
            CUDA_CHECK(cudaMemcpyAsync(staging.get(), host.data() + done, n * sizeof(float), cudaMemcpyHostToDevice,
                                       stream));
            gpu::f32_to_bf16(staging.as<float>(), dest + done, static_cast<int64_t>(n), stream);
        }
        *items[i].dest = dest;
    }
    if (!w->output_matrix) w->output_matrix = w->token_embedding;  // tied embeddings
    if (c.arch == Architecture::Llama) {
        const std::vector<float> inv = ops::rope_inverse_frequencies(c, mw.rope_freq_factors);
        w->inv_freq = DeviceBuffer(inv.size() * sizeof(float), "RoPE frequencies");
        CUDA_CHECK(cudaMemcpyAsync(w->inv_freq.get(), inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice,
                                   stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));  // staging and the host vectors' pages are released after this
    return w;
}

// ---- the backend -----------------------------------------------------------------------------------

class CudaBackend final : public Backend {
public:
    CudaBackend(const Model& model, const CudaBackendOptions& options, std::shared_ptr<const GpuWeights> weights);
    ~CudaBackend() override;

    std::string name() const override { return "cuda"; }
    int64_t cached() const override { return cached_; }
    int64_t capacity() const override { return kv_capacity_; }
    void truncate(int64_t positions) override {
        cached_ = std::min(cached_, std::max<int64_t>(positions, 0));
        if (cached_ < overview_rows_) overview_valid_ = false;  // block sums can't be un-summed
    }
    std::unique_ptr<Backend> fork() const override;
    void forward(std::span<const int32_t> ids, std::span<float> last_logits, CaptureStore* capture,
                 const ProgressFn& progress) override;

private:
    struct Pending {  // a chunk enqueued but not yet finished on the host
        bool active = false;
        int set = 0;
        int64_t pos0 = 0, n = 0, done_after = 0;
    };

    // Per-layer floats of one position in the capture staging: q, k, lse.
    int64_t q_row() const { return int64_t(c_.n_head) * c_.head_dim; }
    int64_t kv_row() const { return int64_t(c_.n_kv_head) * c_.head_dim; }
    int64_t stage_row() const { return q_row() + kv_row() + c_.n_head; }
    // Floats between two layers' regions in a staging set (fixed by the staging capacity).
    int64_t stage_layer_pitch() const { return staging_rows_ * stage_row(); }

    void reserve_kv(int64_t positions);
    void reserve_activations(int64_t rows, int64_t ids);
    void reserve_staging(int64_t rows);
    void reserve_overview(int64_t positions);
    void reserve_flash_workspace(int64_t first_pos0, int64_t total, bool emit);
    void begin_overview(const CaptureStore& store);
    void sync_overview_to_store(CaptureStore& store, int64_t first_position);

    // Enqueues one chunk [pos0, pos0 + n) on compute_: with capture, its Q/K/LSE go to staging
    // `set`; with `want_logits`, the logits of the chunk's last row go to logits_.
    void enqueue_chunk(const int32_t* device_ids, int64_t n, int64_t pos0, bool want_logits, bool capture, int set,
                       bool in_graph);
    void run_step_graph(const int32_t* device_ids, bool capture);
    void finish(const Pending& p, CaptureStore* capture, const ProgressFn& progress, int64_t total);
    void record_event(cudaEvent_t event, bool in_graph);

    const Model& model_;
    const ModelConfig& c_;
    CudaBackendOptions options_;
    std::shared_ptr<const GpuWeights> w_;

    StreamHandle compute_, copy_;
    DeviceBuffer blas_workspace_;                 // declared first: outlives the handle that uses it
    std::unique_ptr<gpu::CublasHandle> blas_;

    std::vector<DeviceBuffer> k_cache_, v_cache_;  // [layer]: bf16 [capacity, n_kv_head, head_dim]
    int64_t cached_ = 0, kv_capacity_ = 0;

    int64_t act_rows_ = 0, ids_capacity_ = 0;
    DeviceBuffer x_, h_, q_, att_, gate_, up_, logits_, ids_;
    PinnedBuffer ids_host_, logits_host_;
    DeviceBuffer flash_ws_, decode_ws_;

    int64_t staging_rows_ = 0;
    std::array<DeviceBuffer, 2> staging_;        // [layer][staging_rows_ × stage_row()] fp32
    std::array<PinnedBuffer, 2> staging_host_;   // same layout
    std::array<EventHandle, 2> computed_, copied_;
    std::array<std::vector<EventHandle>, 2> attention_start_, attention_end_;  // [set][layer], timing

    // Pooled overview on the device: [layer * n_head + head][overview_stride_] sums and maxes
    // (packed lower triangle), mirrored in pinned host memory with the same layout.
    int64_t overview_stride_ = 0;
    DeviceBuffer ov_sum_, ov_max_;
    PinnedBuffer ov_sum_host_, ov_max_host_;
    bool overview_valid_ = false;                  // device overview holds rows [0, overview_rows_)
    const CaptureStore* overview_store_ = nullptr; // ... of this store
    int64_t overview_rows_ = 0;
    bool emitting_ = false;                        // this forward emits the overview

    cudaGraphExec_t graph_exec_ = nullptr;
    bool graphs_ok_ = true;
};

CudaBackend::CudaBackend(const Model& model, const CudaBackendOptions& options,
                         std::shared_ptr<const GpuWeights> weights)
    : model_(model), c_(model.config), options_(options), w_(std::move(weights)),
      computed_{EventHandle(), EventHandle()}, copied_{EventHandle(), EventHandle()} {
    if (options_.prefill_chunk < 1) fail("cuda backend: prefill chunk must be ≥ 1");
    blas_workspace_ = DeviceBuffer(kCublasWorkspace, "the cuBLAS workspace");
    blas_ = std::make_unique<gpu::CublasHandle>();
    blas_->set_workspace(blas_workspace_.get(), blas_workspace_.bytes());
    k_cache_.resize(c_.n_layer);
    v_cache_.resize(c_.n_layer);
    decode_ws_ = DeviceBuffer(size_t(c_.n_head) * kMaxDecodeSplits * (c_.head_dim + 2) * sizeof(float),
                              "the decode attention workspace");
    logits_ = DeviceBuffer(size_t(c_.vocab) * sizeof(float), "the logits");
    logits_host_ = PinnedBuffer(size_t(c_.vocab) * sizeof(float), "the logits");
    for (int set = 0; set < 2; ++set)
        for (int l = 0; l < c_.n_layer; ++l) {
            attention_start_[set].emplace_back(true);
            attention_end_[set].emplace_back(true);
        }
    const char* env = std::getenv("ATTNSCOPE_CUDA_GRAPHS");
    if (env && std::string(env) == "0") options_.cuda_graphs = false;
}

CudaBackend::~CudaBackend() {
    // Let in-flight work finish before the buffers it uses are freed; errors are ignored here.
    (void)cudaStreamSynchronize(compute_.get());
    (void)cudaStreamSynchronize(copy_.get());
    if (graph_exec_) (void)cudaGraphExecDestroy(graph_exec_);
}

std::unique_ptr<Backend> CudaBackend::fork() const {
    auto copy = std::make_unique<CudaBackend>(model_, options_, w_);
    copy->reserve_kv(std::max<int64_t>(cached_, 1));
    // forward() leaves no work in flight, so the source cache is stable; copy on the new stream.
    const size_t bytes = size_t(cached_) * kv_row() * sizeof(bf16);
    for (int l = 0; l < c_.n_layer && bytes > 0; ++l) {
        CUDA_CHECK(cudaMemcpyAsync(copy->k_cache_[l].get(), k_cache_[l].get(), bytes, cudaMemcpyDeviceToDevice,
                                   copy->compute_.get()));
        CUDA_CHECK(cudaMemcpyAsync(copy->v_cache_[l].get(), v_cache_[l].get(), bytes, cudaMemcpyDeviceToDevice,
                                   copy->compute_.get()));
    }
    CUDA_CHECK(cudaStreamSynchronize(copy->compute_.get()));
    copy->cached_ = cached_;
    // The fork starts without a device overview; a capture continued on it re-seeds from its store.
    return copy;
}

void CudaBackend::reserve_kv(int64_t positions) {
    if (positions <= kv_capacity_) return;
    const uint64_t per_position = uint64_t(kv_row()) * sizeof(bf16) * 2 * c_.n_layer;
    int64_t grown = std::max<int64_t>({positions, kv_capacity_ * 2, 256});
    // Growth allocates the new cache before freeing the old one, layer by layer: the peak is the
    // whole new cache plus one old layer.
    const uint64_t free = gpu::gpu_memory_info().free;
    if (uint64_t(grown) * per_position > free) grown = positions;  // no slack when memory is tight
    gpu::require_gpu_memory(uint64_t(grown) * per_position, cat("a KV cache of ", positions, " positions"),
                            "use a shorter prompt or --backend cpu");
    CUDA_CHECK(cudaStreamSynchronize(compute_.get()));
    const size_t keep = size_t(cached_) * kv_row() * sizeof(bf16);
    const size_t bytes = size_t(grown) * kv_row() * sizeof(bf16);
    for (int l = 0; l < c_.n_layer; ++l) {
        for (std::vector<DeviceBuffer>* cache : {&k_cache_, &v_cache_}) {
            DeviceBuffer fresh(bytes, cat("a KV cache of ", positions, " positions"),
                               "use a shorter prompt or --backend cpu");
            if (keep > 0)
                CUDA_CHECK(cudaMemcpyAsync(fresh.get(), (*cache)[l].get(), keep, cudaMemcpyDeviceToDevice,
                                           compute_.get()));
            CUDA_CHECK(cudaStreamSynchronize(compute_.get()));
            (*cache)[l] = std::move(fresh);
        }
    }
    kv_capacity_ = grown;
}

void CudaBackend::reserve_activations(int64_t rows, int64_t ids) {
    if (ids > ids_capacity_) {
        ids_ = DeviceBuffer(size_t(ids) * sizeof(int32_t), "token ids");
        ids_host_ = PinnedBuffer(size_t(ids) * sizeof(int32_t), "token ids");
        ids_capacity_ = ids;
    }
    if (rows <= act_rows_) return;
    const std::string what = cat("activations for a prefill chunk of ", rows, " positions");
    const std::string hint = "use a smaller prefill chunk";
    x_ = DeviceBuffer(size_t(rows) * c_.d_model * sizeof(float), what, hint);
    h_ = DeviceBuffer(size_t(rows) * c_.d_model * sizeof(bf16), what, hint);
    q_ = DeviceBuffer(size_t(rows) * q_row() * sizeof(bf16), what, hint);
    att_ = DeviceBuffer(size_t(rows) * q_row() * sizeof(bf16), what, hint);
    gate_ = DeviceBuffer(size_t(rows) * c_.d_ff * sizeof(bf16), what, hint);
    up_ = DeviceBuffer(size_t(rows) * c_.d_ff * sizeof(bf16), what, hint);
    act_rows_ = rows;
}

void CudaBackend::reserve_staging(int64_t rows) {
    if (rows <= staging_rows_) return;
    const uint64_t bytes = uint64_t(rows) * stage_row() * c_.n_layer * sizeof(float);
    const std::string what = cat("capture staging for ", rows, " positions (Q, K, LSE of ", c_.n_layer, " layers, ×2)");
    for (int set = 0; set < 2; ++set) {
        staging_[set] = DeviceBuffer(bytes, what, "use a shorter prompt or capture with --backend cpu");
        staging_host_[set] = PinnedBuffer(bytes, what);
    }
    staging_rows_ = rows;
}

// Grows the device overview (and its pinned mirror) to cover `positions` query rows. New entries
// are zero; existing ones keep their values (a pitched copy, since the per-head stride changes).
void CudaBackend::reserve_overview(int64_t positions) {
    const int64_t needed = tri_entries(blocks_of(positions));
    if (needed <= overview_stride_) return;
    const int64_t stride = std::max<int64_t>(needed, tri_entries(2 * blocks_of(std::max<int64_t>(positions, 1))));
    const int64_t rows = int64_t(c_.n_layer) * c_.n_head;
    const uint64_t bytes = uint64_t(stride) * rows * sizeof(float);
    const std::string what = cat("the pooled overview of ", positions, " positions (", c_.n_layer, " layers × ",
                                 c_.n_head, " heads, sum and max)");
    const std::string hint = "use a shorter prompt or capture with --backend cpu";
    gpu::require_gpu_memory(2 * bytes, what, hint);
    CUDA_CHECK(cudaStreamSynchronize(compute_.get()));
    CUDA_CHECK(cudaStreamSynchronize(copy_.get()));
    for (int which = 0; which < 2; ++which) {
        DeviceBuffer& dev = which ? ov_max_ : ov_sum_;
        PinnedBuffer& host = which ? ov_max_host_ : ov_sum_host_;
        DeviceBuffer fresh(bytes, what, hint);
        PinnedBuffer fresh_host(bytes, what);
        CUDA_CHECK(cudaMemsetAsync(fresh.get(), 0, bytes, compute_.get()));
        std::memset(fresh_host.get(), 0, bytes);
        if (overview_stride_ > 0) {
            const size_t old_pitch = size_t(overview_stride_) * sizeof(float), pitch = size_t(stride) * sizeof(float);
            CUDA_CHECK(cudaMemcpy2DAsync(fresh.get(), pitch, dev.get(), old_pitch, old_pitch, size_t(rows),
                                         cudaMemcpyDeviceToDevice, compute_.get()));
            for (int64_t r = 0; r < rows; ++r)
                std::memcpy(fresh_host.as<char>() + r * pitch, host.as<char>() + r * old_pitch, old_pitch);
        }
        CUDA_CHECK(cudaStreamSynchronize(compute_.get()));
        dev = std::move(fresh);
        host = std::move(fresh_host);
    }
    overview_stride_ = stride;
}

// Decides whether this forward emits the overview, and brings the device overview in line with
// the store's: continue (same store, rows [0, cached_) already there), start fresh (nothing cached),
// or re-seed from the store's complete overview. Otherwise (the store's overview is incomplete, e.g.
// after CaptureStore::truncate) no overview is emitted — the store's stays incomplete, exactly as
// with the cpu backend, whose rows after a truncate never complete it either.
void CudaBackend::begin_overview(const CaptureStore& store) {
    emitting_ = false;
    if (!options_.emit_overview) return;
    const int64_t rows = int64_t(c_.n_layer) * c_.n_head;
    if (overview_valid_ && overview_store_ == &store && overview_rows_ == cached_) {
        emitting_ = true;
        return;
    }
    if (cached_ == 0) {
        reserve_overview(1);
        CUDA_CHECK(cudaMemsetAsync(ov_sum_.get(), 0, ov_sum_.bytes(), compute_.get()));
        CUDA_CHECK(cudaMemsetAsync(ov_max_.get(), 0, ov_max_.bytes(), compute_.get()));
        std::memset(ov_sum_host_.get(), 0, ov_sum_host_.bytes());
        std::memset(ov_max_host_.get(), 0, ov_max_host_.bytes());
    } else if (store.overview_complete()) {
        reserve_overview(cached_);
        const int64_t entries = tri_entries(blocks_of(cached_));
        std::memset(ov_sum_host_.get(), 0, ov_sum_host_.bytes());
        std::memset(ov_max_host_.get(), 0, ov_max_host_.bytes());
        for (int l = 0; l < c_.n_layer; ++l)
            for (int h = 0; h < c_.n_head; ++h) {
                const std::span<const float> s = store.overview_sums(l, h), m = store.overview_maxes(l, h);
                if (static_cast<int64_t>(s.size()) < entries || static_cast<int64_t>(m.size()) < entries) {
                    overview_valid_ = false;
                    return;
                }
                const int64_t r = int64_t(l) * c_.n_head + h;
                std::memcpy(ov_sum_host_.as<float>() + r * overview_stride_, s.data(), entries * sizeof(float));
                std::memcpy(ov_max_host_.as<float>() + r * overview_stride_, m.data(), entries * sizeof(float));
            }
        CUDA_CHECK(cudaMemcpyAsync(ov_sum_.get(), ov_sum_host_.get(), size_t(rows) * overview_stride_ * sizeof(float),
                                   cudaMemcpyHostToDevice, compute_.get()));
        CUDA_CHECK(cudaMemcpyAsync(ov_max_.get(), ov_max_host_.get(), size_t(rows) * overview_stride_ * sizeof(float),
                                   cudaMemcpyHostToDevice, compute_.get()));
    } else {
        overview_valid_ = false;
        return;
    }
    overview_valid_ = true;
    overview_store_ = &store;
    overview_rows_ = cached_;
    emitting_ = true;
}

// After a forward that emitted rows [first_position, cached_): copies the overview entries those
// rows touched (block rows first_position/128 … end, contiguous in the packed layout) into the
// pinned mirror and hands the same block rows to the store — one block row per decode step, not
// the whole triangle (about 165 MB per step at 50k tokens on SmolLM2 by count of entries).
void CudaBackend::sync_overview_to_store(CaptureStore& store, int64_t first_position) {
    const int64_t e0 = tri_entries(first_position / kOvBlock), e1 = tri_entries(blocks_of(cached_));
    const int64_t rows = int64_t(c_.n_layer) * c_.n_head;
    const size_t pitch = size_t(overview_stride_) * sizeof(float), width = size_t(e1 - e0) * sizeof(float);
    if (width > 0) {  // finish() has waited for the last chunk's compute: the overview is final
        CUDA_CHECK(cudaMemcpy2DAsync(ov_sum_host_.as<float>() + e0, pitch, ov_sum_.as<float>() + e0, pitch, width,
                                     size_t(rows), cudaMemcpyDeviceToHost, copy_.get()));
        CUDA_CHECK(cudaMemcpy2DAsync(ov_max_host_.as<float>() + e0, pitch, ov_max_.as<float>() + e0, pitch, width,
                                     size_t(rows), cudaMemcpyDeviceToHost, copy_.get()));
        CUDA_CHECK(cudaStreamSynchronize(copy_.get()));
    }
    if (store.positions() != cached_) fail("capture holds ", store.positions(), " positions but the KV cache ", cached_);
    store.replace_overview_rows(first_position / kOvBlock, ov_sum_host_.as<float>(), ov_max_host_.as<float>(),
                                overview_stride_);
    overview_store_ = &store;
    overview_rows_ = cached_;
}

void CudaBackend::reserve_flash_workspace(int64_t first_pos0, int64_t total, bool emit) {
    // The workspace depends on the chunk's length and end (overview key blocks) and on the SM
    // count; the largest over this forward's chunks is allocated once, before anything is enqueued.
    size_t need = 0;
    for (int64_t done = 0; done < total; done += options_.prefill_chunk) {
        const int64_t n = std::min(options_.prefill_chunk, total - done);
        if (n == 1) continue;  // decode_attention
        gpu::FlashAttentionParams p;
        p.q = q_.get();
        p.k = k_cache_[0].get();
        p.v = v_cache_[0].get();
        p.o = att_.get();
        p.emit_overview = emit;
        p.overview_sum = emit ? ov_sum_.as<float>() : nullptr;
        p.overview_max = emit ? ov_max_.as<float>() : nullptr;
        p.overview_head_stride = overview_stride_;
        p.T = n;
        p.pos0 = first_pos0 + done;
        p.T_kv = p.pos0 + n;
        p.n_head = c_.n_head;
        p.n_kv_head = c_.n_kv_head;
        p.head_dim = c_.head_dim;
        p.scale = c_.attention_scale();
        p.sliding_window = c_.sliding_window;
        need = std::max(need, gpu::flash_attention_workspace_bytes(p));
    }
    if (need > flash_ws_.bytes())
        flash_ws_ = DeviceBuffer(need, "the fused attention's overview scratch", "use a shorter prompt");
}

void CudaBackend::record_event(cudaEvent_t event, bool in_graph) {
    // In a captured graph a plain record only orders nodes; an external record is a real event
    // node, so the per-layer attention timings work with graphs too.
    if (in_graph)
        CUDA_CHECK(cudaEventRecordWithFlags(event, compute_.get(), cudaEventRecordExternal));
    else
        CUDA_CHECK(cudaEventRecord(event, compute_.get()));
}

void CudaBackend::enqueue_chunk(const int32_t* device_ids, int64_t n, int64_t pos0, bool want_logits, bool capture,
                                int set, bool in_graph) {
    const cudaStream_t s = compute_.get();
    const GpuWeights& w = *w_;
    const int64_t d = c_.d_model, qo = q_row(), kvo = kv_row(), ff = c_.d_ff;
    const int nh = c_.n_head, nkv = c_.n_kv_head, hd = c_.head_dim;
    const bool gpt2 = c_.arch == Architecture::Gpt2;
    const float eps = static_cast<float>(c_.norm_eps);
    const gpu::RopeLayout layout =
        c_.rope_pairing == RopePairing::Interleaved ? gpu::RopeLayout::Interleaved : gpu::RopeLayout::HalfSplit;
    float* x = x_.as<float>();
    bf16* h = h_.as<bf16>();
    bf16* q = q_.as<bf16>();
    bf16* att = att_.as<bf16>();
    bf16* gate = gate_.as<bf16>();
    bf16* up = up_.as<bf16>();

    // Capture staging of this chunk: per layer [q: n × qo | k: n × kvo | lse: n × nh], fp32.
    if (capture && !in_graph) CUDA_CHECK(cudaStreamWaitEvent(s, copied_[set].get(), 0));  // set's previous copy done
    auto stage = [&](int l) { return staging_[set].as<float>() + int64_t(l) * stage_layer_pitch(); };

    gpu::embedding(w.token_embedding, gpt2 ? w.position_embedding : nullptr, device_ids, n, c_.vocab, d, pos0, x, s);
    auto norm = [&](const bf16* weight, const bf16* bias, const float* in, int64_t rows, bf16* out) {
        if (gpt2) gpu::layer_norm(in, weight, bias, out, rows, d, eps, s);
        else gpu::rms_norm(in, weight, out, rows, d, eps, s);
    };

    for (int l = 0; l < c_.n_layer; ++l) {
        const GpuLayer& L = w.layers[l];
        bf16* kc = k_cache_[l].as<bf16>() + pos0 * kvo;  // this chunk's rows of the cache
        bf16* vc = v_cache_[l].as<bf16>() + pos0 * kvo;
        norm(L.attn_norm, L.attn_norm_bias, x, n, h);
        // Q into the activation buffer; K and V straight into the cache.
        gpu::linear(*blas_, h, n, d, L.wq, qo, q, s);
        gpu::linear(*blas_, h, n, d, L.wk, kvo, kc, s);
        gpu::linear(*blas_, h, n, d, L.wv, kvo, vc, s);
        if (L.bq) gpu::add_bias(q, L.bq, n, qo, s);
        if (L.bk) gpu::add_bias(kc, L.bk, n, kvo, s);
        if (L.bv) gpu::add_bias(vc, L.bv, n, kvo, s);
        if (!gpt2) {
            gpu::rope(q, n, nh, hd, pos0, w.inv_freq.as<float>(), layout, s);
            gpu::rope(kc, n, nkv, hd, pos0, w.inv_freq.as<float>(), layout, s);
        }

        float* lse = capture ? stage(l) + n * (qo + kvo) : nullptr;
        float* layer_ov_sum = emitting_ ? ov_sum_.as<float>() + int64_t(l) * nh * overview_stride_ : nullptr;
        float* layer_ov_max = emitting_ ? ov_max_.as<float>() + int64_t(l) * nh * overview_stride_ : nullptr;
        record_event(attention_start_[set][l].get(), in_graph);
        if (n == 1) {
            gpu::DecodeAttentionParams p;
            p.q = q;
            p.k = k_cache_[l].get();
            p.v = v_cache_[l].get();
            p.o = att;
            p.lse = lse;
            p.L = pos0 + 1;
            p.n_head = nh;
            p.n_kv_head = nkv;
            p.head_dim = hd;
            p.scale = c_.attention_scale();
            p.sliding_window = c_.sliding_window;
            gpu::decode_attention(p, decode_ws_.get(), decode_ws_.bytes(), s);
            if (capture && emitting_) {
                gpu::OverviewRowParams r;
                r.q = q;
                r.k = k_cache_[l].get();
                r.lse = lse;
                r.L = pos0 + 1;
                r.n_head = nh;
                r.n_kv_head = nkv;
                r.head_dim = hd;
                r.scale = c_.attention_scale();
                r.sliding_window = c_.sliding_window;
                r.overview_sum = layer_ov_sum;
                r.overview_max = layer_ov_max;
                r.overview_head_stride = overview_stride_;
                gpu::overview_accumulate_row(r, s);
            }
        } else {
            gpu::FlashAttentionParams p;
            p.q = q;
            p.k = k_cache_[l].get();
            p.v = v_cache_[l].get();
            p.o = att;
            p.lse = lse;
            p.emit_overview = capture && emitting_;
            p.overview_sum = p.emit_overview ? layer_ov_sum : nullptr;
            p.overview_max = p.emit_overview ? layer_ov_max : nullptr;
            p.overview_head_stride = overview_stride_;
            p.T = n;
            p.pos0 = pos0;
            p.T_kv = pos0 + n;
            p.n_head = nh;
            p.n_kv_head = nkv;
            p.head_dim = hd;
            p.scale = c_.attention_scale();
            p.sliding_window = c_.sliding_window;
            gpu::flash_attention_forward(p, flash_ws_.get(), flash_ws_.bytes(), s);
        }
        record_event(attention_end_[set][l].get(), in_graph);
        if (capture) {
            // The exact bf16 values the kernels used, widened: the store's P is the GPU's P.
            gpu::bf16_to_f32(q, stage(l), n * qo, s);
            gpu::bf16_to_f32(kc, stage(l) + n * qo, n * kvo, s);
        }

        // x += att · Woᵀ (+ bo): the residual add fused into the GEMM (beta = 1, fp32 output).
        gpu::linear(*blas_, att, n, qo, L.wo, d, x, s, /*accumulate=*/true);
        if (L.bo) gpu::add_bias(x, L.bo, n, d, s);

        norm(L.ffn_norm, L.ffn_norm_bias, x, n, h);
        if (gpt2) {
            gpu::linear(*blas_, h, n, d, L.w_up, ff, up, s);
            if (L.b_up) gpu::add_bias(up, L.b_up, n, ff, s);
            gpu::gelu_tanh(up, up, n * ff, s);
        } else {
            gpu::linear(*blas_, h, n, d, L.w_gate, ff, gate, s);
            gpu::linear(*blas_, h, n, d, L.w_up, ff, up, s);
            gpu::swiglu(gate, up, up, n * ff, s);
        }
        gpu::linear(*blas_, up, n, ff, L.w_down, d, x, s, /*accumulate=*/true);
        if (L.b_down) gpu::add_bias(x, L.b_down, n, d, s);
    }

    if (want_logits) {
        norm(w.output_norm, w.output_norm_bias, x + (n - 1) * d, 1, h);
        gpu::linear(*blas_, h, 1, d, w.output_matrix, c_.vocab, logits_.as<float>(), s);
    }
}

void CudaBackend::run_step_graph(const int32_t* device_ids, bool capture) {
    const cudaStream_t s = compute_.get();
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
        enqueue_chunk(device_ids, 1, cached_, true, capture, 0, /*in_graph=*/true);
    } catch (...) {
        (void)cudaStreamEndCapture(s, &graph);  // leaves capture mode; the partial graph is discarded
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    bool updated = false;
    if (graph_exec_) {
        cudaGraphExecUpdateResultInfo info{};
        updated = cudaGraphExecUpdate(graph_exec_, graph, &info) == cudaSuccess;
        if (!updated) {
            (void)cudaGetLastError();  // topology changed (e.g. the split count): instantiate anew
            (void)cudaGraphExecDestroy(graph_exec_);
            graph_exec_ = nullptr;
        }
    }
    if (!updated) {
        const cudaError_t err = cudaGraphInstantiate(&graph_exec_, graph, 0);
        if (err != cudaSuccess) {
            graph_exec_ = nullptr;
            (void)cudaGraphDestroy(graph);
            gpu::cuda_fail("cudaGraphInstantiate", err, __FILE__, __LINE__);
        }
    }
    CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaGraphLaunch(graph_exec_, s));
}

// Host side of a finished chunk: wait for its compute (and its capture copy), add its attention
// timings, record its capture, report progress.
void CudaBackend::finish(const Pending& p, CaptureStore* capture, const ProgressFn& progress, int64_t total) {
    CUDA_CHECK(cudaEventSynchronize(computed_[p.set].get()));
    for (int l = 0; l < c_.n_layer; ++l) {
        float ms = 0.f;
        // Not fatal: a timing that can't be read (e.g. an event node the graph update dropped) is 0.
        if (cudaEventElapsedTime(&ms, attention_start_[p.set][l].get(), attention_end_[p.set][l].get()) == cudaSuccess)
            timings_.attention_ms[l] += ms;
        else
            (void)cudaGetLastError();
    }
    if (capture) {
        CUDA_CHECK(cudaEventSynchronize(copied_[p.set].get()));
        const float* base = staging_host_[p.set].as<float>();
        const int64_t n = p.n, qo = q_row(), kvo = kv_row();
        for (int l = 0; l < c_.n_layer; ++l) {
            const float* region = base + int64_t(l) * stage_layer_pitch();
            capture->record_layer(l, p.pos0, n, region, region + n * qo, region + n * (qo + kvo));
        }
        // Hidden states (CaptureStore::record_hidden, for paragraph topics) are not copied back from
        // this backend yet: its sessions have none, and the topics view says so (capture with cpu).
    }
    if (progress) progress(p.done_after, total);
}

void CudaBackend::forward(std::span<const int32_t> ids, std::span<float> last_logits, CaptureStore* capture,
                          const ProgressFn& progress) {
    if (ids.empty()) fail("forward: no tokens to run");
    if (static_cast<int64_t>(last_logits.size()) != c_.vocab)
        fail("forward: logits buffer has ", last_logits.size(), " entries, the vocabulary ", c_.vocab);
    for (int32_t id : ids)
        if (id < 0 || id >= c_.vocab) fail("token id ", id, " is outside the vocabulary (", c_.vocab, ")");
    const int64_t total = static_cast<int64_t>(ids.size());
    if (c_.arch == Architecture::Gpt2 && cached_ + total > c_.max_context)
        fail("GPT-2 has learned positions only up to ", c_.max_context, "; the sequence would reach ",
             cached_ + total);
    if (capture && capture->positions() != cached_)
        fail("capture holds ", capture->positions(), " positions but the KV cache ", cached_);
    if (capture && !(capture->shape() == capture_shape_of(c_)))
        fail("capture shape does not match the model (layers, heads, head dim, scale or window)");

    const auto started = std::chrono::steady_clock::now();
    const int64_t first_position = cached_;
    const int64_t chunk = std::min(options_.prefill_chunk, total);
    reserve_kv(cached_ + total);
    reserve_activations(chunk, total);
    if (capture) {
        reserve_staging(chunk);
        begin_overview(*capture);
        if (emitting_) reserve_overview(cached_ + total);
    } else {
        emitting_ = false;
    }
    reserve_flash_workspace(cached_, total, capture && emitting_);
    timings_.attention_ms.assign(c_.n_layer, 0.f);

    std::memcpy(ids_host_.get(), ids.data(), size_t(total) * sizeof(int32_t));
    CUDA_CHECK(cudaMemcpyAsync(ids_.get(), ids_host_.get(), size_t(total) * sizeof(int32_t), cudaMemcpyHostToDevice,
                               compute_.get()));

    Pending pending;
    int index = 0;
    for (int64_t done = 0; done < total; done += chunk, ++index) {
        const int64_t n = std::min(chunk, total - done);
        const bool last = done + n == total;
        const int set = index % 2;
        const int64_t pos0 = cached_;
        bool ran = false;
        if (n == 1 && total == 1 && options_.cuda_graphs && graphs_ok_) {
            try {
                run_step_graph(ids_.as<int32_t>(), capture != nullptr);
                ran = true;
            } catch (const Error& e) {
                graphs_ok_ = false;
                std::fprintf(stderr, "attnscope: CUDA graphs turned off for this backend: %s\n", e.what());
            }
        }
        if (!ran) enqueue_chunk(ids_.as<int32_t>() + done, n, pos0, last, capture != nullptr, set, false);
        cached_ += n;
        if (last) CUDA_CHECK(cudaMemcpyAsync(logits_host_.get(), logits_.get(), size_t(c_.vocab) * sizeof(float),
                                             cudaMemcpyDeviceToHost, compute_.get()));
        CUDA_CHECK(cudaEventRecord(computed_[set].get(), compute_.get()));
        if (capture) {
            CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), computed_[set].get(), 0));
            const size_t pitch = size_t(stage_layer_pitch()) * sizeof(float);
            CUDA_CHECK(cudaMemcpy2DAsync(staging_host_[set].get(), pitch, staging_[set].get(), pitch,
                                         size_t(n * stage_row()) * sizeof(float), size_t(c_.n_layer),
                                         cudaMemcpyDeviceToHost, copy_.get()));
            CUDA_CHECK(cudaEventRecord(copied_[set].get(), copy_.get()));
        }
        // The previous chunk's host work overlaps this chunk's compute.
        if (pending.active) finish(pending, capture, progress, total);
        pending = {true, set, pos0, n, done + n};
    }
    finish(pending, capture, progress, total);
    if (capture && emitting_) sync_overview_to_store(*capture, first_position);
    std::memcpy(last_logits.data(), logits_host_.get(), size_t(c_.vocab) * sizeof(float));
    timings_.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace

CudaBackendOptions CudaBackendOptions::from_environment() {
    CudaBackendOptions options;
    const char* graphs = std::getenv("ATTNSCOPE_CUDA_GRAPHS");
    if (graphs && std::string(graphs) == "0") options.cuda_graphs = false;
    return options;
}

std::string cuda_backend_unsupported_reason(const ModelConfig& c) {
    if (c.head_dim != 64 && c.head_dim != 128)
        return cat("the cuda backend's attention kernels support head_dim 64 and 128; this model has ", c.head_dim);
    if (c.n_kv_head <= 0 || c.n_head % c.n_kv_head != 0)
        return cat("n_head ", c.n_head, " is not a multiple of n_kv_head ", c.n_kv_head);
    return {};
}

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const CudaBackendOptions& options) {
    std::string why;
    if (!gpu::cuda_kernels_runnable(&why)) fail("the cuda backend is unavailable: ", why);
    const std::string unsupported = cuda_backend_unsupported_reason(model.config);
    if (!unsupported.empty()) fail(unsupported, " (use --backend cpu)");
    cudaStream_t upload = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&upload, cudaStreamNonBlocking));
    std::shared_ptr<const GpuWeights> weights;
    try {
        weights = upload_weights(model, upload);
    } catch (...) {
        (void)cudaStreamDestroy(upload);
        throw;
    }
    CUDA_CHECK(cudaStreamDestroy(upload));
    return std::make_unique<CudaBackend>(model, options, std::move(weights));
}

std::unique_ptr<Backend> make_cuda_backend(const Model& model) {
    return make_cuda_backend(model, CudaBackendOptions::from_environment());
}

bool cuda_backend_available(std::string* why_not) { return gpu::cuda_kernels_runnable(why_not); }

}  // namespace attn
