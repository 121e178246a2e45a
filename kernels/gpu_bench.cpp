#include "kernels/gpu_bench.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "engine/bench_stats.h"
#include "engine/capture_store.h"
#include "engine/error.h"
#include "engine/generation.h"
#include "engine/session.h"
#include "engine/tile_source.h"
#include "kernels/convert.cuh"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_check.h"
#include "kernels/device_memory.h"
#include "kernels/flash_attention.cuh"
#include "kernels/gpu_tile_source.h"

namespace attn::gpu {

namespace {

using Clock = std::chrono::steady_clock;


template <typename Fn>
double wall_ms(Fn&& fn) {
    const auto start = Clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Deterministic uniform values in [-a, a).
void fill_uniform(float* out, size_t n, float a, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (size_t i = 0; i < n; ++i) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = a * (static_cast<float>(s >> 40) * 0x1.0p-23f - 1.0f);
    }
}

std::vector<int32_t> random_ids(int vocab, int64_t n, uint64_t seed) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    uint64_t s = seed;
    for (int32_t& id : ids) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        id = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(vocab));
    }
    return ids;
}

// ---- fused attention ---------------------------------------------------------------------------------

nlohmann::json bench_attention(const GpuBenchOptions& o) {
    nlohmann::json rows = nlohmann::json::array();
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaEvent_t start = nullptr, stop = nullptr;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    try {
        for (int hd : {64, 128}) {
            const int heads = 2048 / hd;  // d_model 2048, as torch_reference.py (batch 1, MHA)
            for (int64_t n : o.attention_lengths) {
                const size_t elems = size_t(n) * heads * hd;
                std::vector<float> host(elems);
                DeviceBuffer staging(elems * sizeof(float), "attention bench inputs");
                DeviceBuffer q(elems * 2, "attention bench Q"), k(elems * 2, "attention bench K"),
                    v(elems * 2, "attention bench V"), out(elems * 2, "attention bench O");
                for (int which = 0; which < 3; ++which) {
                    fill_uniform(host.data(), elems, 1.0f, 7 + which);
                    CUDA_CHECK(cudaMemcpy(staging.get(), host.data(), elems * sizeof(float), cudaMemcpyHostToDevice));
                    DeviceBuffer& dst = which == 0 ? q : which == 1 ? k : v;
                    f32_to_bf16(staging.as<float>(), dst.as<__nv_bfloat16>(), int64_t(elems), stream);
                }
                DeviceBuffer lse(size_t(n) * heads * sizeof(float), "attention bench LSE");
                const int64_t blocks = (n + 127) / 128;
                const int64_t tri = blocks * (blocks + 1) / 2;
                DeviceBuffer ov_sum(size_t(heads) * tri * sizeof(float), "attention bench overview"),
                    ov_max(size_t(heads) * tri * sizeof(float), "attention bench overview");
                CUDA_CHECK(cudaMemsetAsync(ov_sum.get(), 0, ov_sum.bytes(), stream));
                CUDA_CHECK(cudaMemsetAsync(ov_max.get(), 0, ov_max.bytes(), stream));
                for (bool emit : {false, true}) {
                    FlashAttentionParams p;
                    p.q = q.get();
                    p.k = k.get();
                    p.v = v.get();
                    p.o = out.get();
                    p.lse = lse.as<float>();
                    p.emit_overview = emit;
                    p.overview_sum = ov_sum.as<float>();
                    p.overview_max = ov_max.as<float>();
                    p.overview_head_stride = tri;
                    p.T = n;
                    p.T_kv = n;
                    p.n_head = heads;
                    p.n_kv_head = heads;
                    p.head_dim = hd;
                    p.scale = 1.0f / std::sqrt(float(hd));
                    DeviceBuffer ws(std::max<size_t>(flash_attention_workspace_bytes(p), 1), "attention bench scratch");
                    std::vector<double> ms;
                    for (int r = 0; r < o.warmup + o.repeats; ++r) {
                        CUDA_CHECK(cudaEventRecord(start, stream));
                        flash_attention_forward(p, ws.get(), ws.bytes(), stream);
                        CUDA_CHECK(cudaEventRecord(stop, stream));
                        CUDA_CHECK(cudaEventSynchronize(stop));
                        float t = 0;
                        CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
                        if (r >= o.warmup) ms.push_back(t);
                    }
                    // Causal forward: QKᵀ and PV, 2·N²·d each, half the matrix.
                    const double flops = 2.0 * double(n) * double(n) * hd * heads;
                    const double t = median(ms);
                    rows.push_back({{"head_dim", hd},
                                    {"heads", heads},
                                    {"tokens", n},
                                    {"emission", emit},
                                    {"ms", t},
                                    {"tflops", flops / (t * 1e-3) / 1e12}});
                }
            }
        }
    } catch (...) {
        (void)cudaEventDestroy(start);
        (void)cudaEventDestroy(stop);
        (void)cudaStreamDestroy(stream);
        throw;
    }
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    CUDA_CHECK(cudaStreamDestroy(stream));
    return rows;
}

// ---- runtime -----------------------------------------------------------------------------------------

struct RuntimeResult {
    nlohmann::json rows = nlohmann::json::array();
    std::unique_ptr<CaptureStore> longest;  // the capture of the longest prefill (for the tile section)
};

RuntimeResult bench_runtime(const Model& model, const std::string& label, const GpuBenchOptions& o,
                            bool keep_capture) {
    RuntimeResult result;
    auto backend = make_cuda_backend(model, CudaBackendOptions::from_environment());
    std::vector<float> logits(model.config.vocab);
    const int reps = std::max(1, o.repeats / 2);  // long prefills are slow: fewer repeats
    for (int64_t n : o.runtime_lengths) {
        const std::vector<int32_t> ids = random_ids(model.config.vocab, n + o.decode_tokens, 99);
        const std::span<const int32_t> prompt(ids.data(), size_t(n));
        auto run = [&](bool capture, double* prefill_ms, double* decode_ms) {
            backend->truncate(0);
            std::unique_ptr<CaptureStore> store =
                capture ? std::make_unique<CaptureStore>(capture_shape_of(model.config)) : nullptr;
            *prefill_ms = wall_ms([&] { backend->forward(prompt, logits, store.get()); });
            *decode_ms = wall_ms([&] {
                for (int t = 0; t < o.decode_tokens; ++t)
                    backend->forward(std::span<const int32_t>(&ids[size_t(n + t)], 1), logits, store.get());
            });
            return store;
        };
        double p = 0, d = 0;
        for (int w = 0; w < std::min(o.warmup, 1); ++w) (void)run(false, &p, &d);  // warm-up (allocations, JIT)
        std::vector<double> prefill_off, prefill_on, decode_off, decode_on;
        for (int r = 0; r < reps; ++r) {
            (void)run(false, &p, &d);
            prefill_off.push_back(p);
            decode_off.push_back(d);
            auto store = run(true, &p, &d);
            prefill_on.push_back(p);
            decode_on.push_back(d);
            if (keep_capture && n == o.runtime_lengths.back()) result.longest = std::move(store);
        }
        const double po = median(prefill_off), pc = median(prefill_on), dof = median(decode_off), dc = median(decode_on);
        result.rows.push_back({{"model", label},
                               {"tokens", n},
                               {"prefill_tokens_per_s", n / (po * 1e-3)},
                               {"prefill_tokens_per_s_capture", n / (pc * 1e-3)},
                               {"prefill_capture_overhead", pc / po},
                               {"decode_tokens", o.decode_tokens},
                               {"decode_tokens_per_s", o.decode_tokens / (dof * 1e-3)},
                               {"decode_tokens_per_s_capture", o.decode_tokens / (dc * 1e-3)},
                               {"decode_capture_overhead", dc / dof}});
    }
    return result;
}

// ---- tiles -------------------------------------------------------------------------------------------

nlohmann::json bench_tiles(const CaptureStore& store, const GpuBenchOptions& o) {
    const GpuTileSource tiles(store);
    const int layer = store.shape().n_layer / 2, head = 0;
    const int64_t n = store.positions();
    int top = 0;
    while (CpuTileSource::tiles_across(n, top) > 1) ++top;
    DeviceBuffer sum(size_t(Tile::kEdge) * Tile::kEdge * sizeof(float), "a tile"),
        max(size_t(Tile::kEdge) * Tile::kEdge * sizeof(float), "a tile");
    nlohmann::json levels = nlohmann::json::array();
    for (int level : {0, 4, top}) {
        const int64_t across = CpuTileSource::tiles_across(n, level);
        const TileRequest request{layer, head, level, across - 1, across - 1};  // on the diagonal, the densest
        std::vector<double> device_ms, host_ms;
        for (int r = 0; r < o.warmup + o.repeats; ++r) {
            const double t_dev = wall_ms([&] { tiles.tile_to_device(request, sum.as<float>(), max.as<float>()); });
            const double t_host = wall_ms([&] { (void)tiles.tile(request); });
            if (r >= o.warmup) {
                device_ms.push_back(t_dev);
                host_ms.push_back(t_host);
            }
        }
        levels.push_back({{"level", level},
                          {"source", level >= CpuTileSource::kFirstOverviewLevel && store.overview_complete()
                                         ? "overview" : "exact"},
                          {"ms_on_device", median(device_ms)},
                          {"ms_to_host", median(host_ms)}});
    }
    return {{"positions", n}, {"layer", layer}, {"head", head}, {"tiles", levels}};
}

}  // namespace

std::unique_ptr<Model> random_llama_3_2_1b(uint64_t seed) {
    auto model = std::make_unique<Model>();
    ModelConfig& c = model->config;
    c.arch = Architecture::Llama;
    c.arch_name = "llama";
    c.n_layer = 16;
    c.n_head = 32;
    c.n_kv_head = 8;
    c.head_dim = 64;
    c.d_model = 2048;
    c.d_ff = 8192;
    c.vocab = 128256;
    c.max_context = 131072;
    c.norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.rope_pairing = RopePairing::HalfSplit;
    c.rope_scaling.kind = RopeScaling::Kind::Llama3;
    c.rope_scaling.factor = 32.0;
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_context = 8192;
    c.tied_embeddings = true;
    model->identity.name = "random Llama-3.2-1B shape";
    model->identity.format = "random";
    ModelWeights& w = model->weights;
    const size_t d = c.d_model, ff = c.d_ff, qo = size_t(c.n_head) * c.head_dim, kvo = size_t(c.n_kv_head) * c.head_dim;
    auto random = [&](size_t n, float a, uint64_t s) {
        std::vector<float> v(n);
        fill_uniform(v.data(), n, a, s);
        return v;
    };
    // Scales keep activations O(1) through 16 layers (values don't affect speed, NaNs would not).
    w.token_embedding = random(size_t(c.vocab) * d, 0.02f, seed);
    w.output_norm.assign(d, 1.0f);
    w.layers.resize(c.n_layer);
    std::vector<std::thread> workers;
    for (int l = 0; l < c.n_layer; ++l)
        workers.emplace_back([&, l] {
            LayerWeights& L = w.layers[l];
            const uint64_t s = seed * 1000 + uint64_t(l) * 16;
            L.attn_norm.assign(d, 1.0f);
            L.ffn_norm.assign(d, 1.0f);
            L.wq = random(qo * d, 0.02f, s + 1);
            L.wk = random(kvo * d, 0.02f, s + 2);
            L.wv = random(kvo * d, 0.02f, s + 3);
            L.wo = random(d * qo, 0.02f, s + 4);
            L.w_gate = random(ff * d, 0.02f, s + 5);
            L.w_up = random(ff * d, 0.02f, s + 6);
            L.w_down = random(d * ff, 0.02f, s + 7);
        });
    for (std::thread& t : workers) t.join();
    return model;
}

nlohmann::json run_gpu_bench(const GpuBenchOptions& o) {
    std::string why;
    if (!cuda_kernels_runnable(&why)) fail("no CUDA device: ", why);
    if (o.repeats < 1 || o.warmup < 0 || o.decode_tokens < 1) fail("bench gpu: repeats ≥ 1, warmup ≥ 0, decode ≥ 1");
    for (int64_t n : o.attention_lengths)
        if (n < 1) fail("bench gpu: attention length ", n);
    for (int64_t n : o.runtime_lengths)
        if (n < 1) fail("bench gpu: prefill length ", n);

    nlohmann::json out;
    int dev = 0;
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    const GpuMemoryInfo memory = gpu_memory_info();
    out["device"] = prop.name;
    out["compute_capability"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    out["gpu_memory_bytes"] = memory.total;
    out["cuda_graphs"] = CudaBackendOptions::from_environment().cuda_graphs;

    if (o.sections_attention) out["attention"] = bench_attention(o);

    std::unique_ptr<CaptureStore> longest;
    if (o.sections_runtime || o.sections_tiles) {
        auto model = Model::load(resolve_model_path(o.model_spec));
        out["model"] = model->identity.name;
        RuntimeResult r = bench_runtime(*model, model->identity.name, o, o.sections_tiles);
        out["runtime"] = r.rows;
        longest = std::move(r.longest);
        if (longest && longest->positions() > 0) {
            out["capture"] = {{"positions", longest->positions()},
                              {"bytes_per_token_host", double(longest->bytes_held()) / double(longest->positions())},
                              {"bytes_per_token_qkl_fp32", capture_bytes_per_position(model->config)},
                              {"overview_complete", longest->overview_complete()}};
        }
        if (o.sections_tiles && longest) out["tile_latency"] = bench_tiles(*longest, o);
        longest.reset();
        if (o.sections_runtime && o.llama_1b) {
            auto big = random_llama_3_2_1b();
            RuntimeResult rb = bench_runtime(*big, big->identity.name, o, false);
            for (auto& row : rb.rows) out["runtime"].push_back(row);
        }
    }
    return out;
}

}  // namespace attn::gpu
