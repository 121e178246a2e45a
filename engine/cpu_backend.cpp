#include "engine/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/error.h"
#include "engine/memory.h"
#include "engine/ops_cpu.h"
#include "engine/parallel.h"

namespace attn {

namespace {

using ops::gelu_tanh_inplace;
using ops::rope_inverse_frequencies;
using ops::swiglu;

// The per-row math lives in engine/ops_cpu.cpp (the CUDA kernels' CPU twins); these adapt the
// model's weight vectors (an empty bias means none).
const float* bias_or_null(const std::vector<float>& bias) { return bias.empty() ? nullptr : bias.data(); }

void linear(const float* x, int64_t rows, int64_t in, const std::vector<float>& w, const std::vector<float>& bias,
            int64_t out, float* y) {
    ops::linear(x, rows, in, w.data(), bias_or_null(bias), out, y);
}

void rms_norm(const float* x, const std::vector<float>& weight, int64_t d, double eps, float* y) {
    ops::rms_norm(x, weight.data(), d, eps, y);
}

void layer_norm(const float* x, const std::vector<float>& weight, const std::vector<float>& bias, int64_t d,
                double eps, float* y) {
    ops::layer_norm(x, weight.data(), bias.data(), d, eps, y);
}

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(const Model& model)
        : model_(model), config_(model.config),
          inv_freq_(config_.arch == Architecture::Llama
                        ? rope_inverse_frequencies(config_, model.weights.rope_freq_factors)
                        : std::vector<float>{}) {
        k_cache_.resize(config_.n_layer);
        v_cache_.resize(config_.n_layer);
    }

    std::string name() const override { return "cpu"; }
    int64_t cached() const override { return cached_; }
    int64_t capacity() const override { return capacity_; }
    void truncate(int64_t positions) override { cached_ = std::min(cached_, std::max<int64_t>(positions, 0)); }
    std::unique_ptr<Backend> fork() const override { return std::make_unique<CpuBackend>(*this); }
    void set_intervention(std::shared_ptr<const AttentionIntervention> intervention) override {
        if (intervention) check_intervention(*intervention);
        intervention_ = intervention && !intervention->empty() ? std::move(intervention) : nullptr;
    }

    void forward(std::span<const int32_t> ids, std::span<float> last_logits, CaptureStore* capture,
                 const ProgressFn& progress) override;

private:
    // Out-of-range heads or wrongly sized vectors would read or write outside the buffers.
    void check_intervention(const AttentionIntervention& i) const {
        auto check_head = [&](int layer, int head) {
            if (layer < 0 || layer >= config_.n_layer || head < 0 || head >= config_.n_head)
                fail("intervention on layer ", layer, " head ", head, ": the model has ", config_.n_layer,
                     " layers of ", config_.n_head, " heads");
        };
        for (const auto& [head, spans] : i.key_masks) check_head(head.first, head.second);
        for (const HeadOutputOverride& o : i.head_outputs) {
            check_head(o.layer, o.head);
            if (!o.zero && static_cast<int64_t>(o.value.size()) != config_.head_dim)
                fail("intervention: replacement output of layer ", o.layer, " head ", o.head, " has ", o.value.size(),
                     " values, a head has ", config_.head_dim);
        }
        for (const auto& [position, offset] : i.embedding_offsets)
            if (static_cast<int64_t>(offset.size()) != config_.d_model)
                fail("intervention: embedding offset at position ", position, " has ", offset.size(),
                     " values, the model's embeddings ", config_.d_model);
    }

    static constexpr int64_t kPrefillChunk = 512;  // bounds the scores buffer to chunk × context

    void forward_chunk(std::span<const int32_t> ids, std::span<float> last_logits, bool want_logits,
                       CaptureStore* capture);
    void reserve(int64_t positions);
    void apply_rope(float* x, int64_t rows, int heads, int64_t pos0) const;
    void attention(int layer, int64_t pos0, int64_t rows, const float* q, float* out, float* lse,
                   CaptureStore* capture);

    const Model& model_;
    const ModelConfig& config_;
    std::vector<float> inv_freq_;
    std::vector<std::vector<float>> k_cache_, v_cache_;  // [layer][pos, kv_head, head_dim]
    int64_t cached_ = 0;
    int64_t capacity_ = 0;
    // Counterfactual hooks; nullptr (the normal case) skips every hook with one pointer test.
    std::shared_ptr<const AttentionIntervention> intervention_;
};

void CpuBackend::reserve(int64_t positions) {
    if (positions <= capacity_) return;
    int64_t grown = std::max<int64_t>({positions, capacity_ * 2, 256});
    const int64_t kv_row = int64_t(config_.n_kv_head) * config_.head_dim;
    const uint64_t grown_bytes = uint64_t(grown) * kv_row * sizeof(float) * 2 * config_.n_layer;
    const uint64_t needed_bytes = uint64_t(positions) * kv_row * sizeof(float) * 2 * config_.n_layer;
    const uint64_t available = available_memory_bytes();
    if (available != 0 && grown_bytes > available) grown = positions;  // no slack when memory is tight
    require_memory(grown == positions ? needed_bytes : grown_bytes,
                   cat("a KV cache of ", positions, " positions"));
    for (int l = 0; l < config_.n_layer; ++l) {
        k_cache_[l].resize(static_cast<size_t>(grown * kv_row));
        v_cache_[l].resize(static_cast<size_t>(grown * kv_row));
    }
    capacity_ = grown;
}

void CpuBackend::apply_rope(float* x, int64_t rows, int heads, int64_t pos0) const {
    ops::rope(x, rows, heads, config_.head_dim, pos0, inv_freq_.data(), config_.rope_pairing);
}

// Attention of `rows` queries at positions [pos0, pos0 + rows) against keys [0, pos0 + rows).
// Scores come from one GEMM per head; softmax rows run on the pool in 128-row blocks aligned to
// the overview's blocks, so overview accumulation never races.
void CpuBackend::attention(int layer, int64_t pos0, int64_t rows, const float* q, float* out, float* lse,
                           CaptureStore* capture) {
    const int hd = config_.head_dim, nh = config_.n_head, nkv = config_.n_kv_head;
    const int64_t keys = pos0 + rows;
    const int64_t q_stride = int64_t(nh) * hd, kv_stride = int64_t(nkv) * hd;
    const float scale = config_.attention_scale();
    const int window = config_.sliding_window;
    std::vector<float> scores(static_cast<size_t>(rows * keys));
    const float* k_all = k_cache_[layer].data();
    const float* v_all = v_cache_[layer].data();
    constexpr int64_t kBlock = CaptureStore::kOverviewBlock;
    const int64_t first_block = pos0 / kBlock, last_block = (pos0 + rows - 1) / kBlock;

    for (int h = 0; h < nh; ++h) {
        const int kvh = h / config_.kv_group();
        const std::vector<KeySpan>* mask = intervention_ ? intervention_->mask_of(layer, h) : nullptr;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(keys), hd,
                    scale, q + int64_t(h) * hd, static_cast<int>(q_stride), k_all + int64_t(kvh) * hd,
                    static_cast<int>(kv_stride), 0.0f, scores.data(), static_cast<int>(keys));
        ThreadPool::current().parallel_for(last_block - first_block + 1, [&](int64_t b) {
            const int64_t block = first_block + b;
            const int64_t r0 = std::max<int64_t>(block * kBlock, pos0) - pos0;
            const int64_t r1 = std::min<int64_t>((block + 1) * kBlock, pos0 + rows) - pos0;
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t i = pos0 + r;
                float* s = scores.data() + r * keys;
                const int64_t first_key = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
                if (mask && row_is_maskable(*mask, first_key, i))
                    for (int64_t j = first_key; j <= i; ++j)
                        if (key_is_masked(*mask, j)) s[j] = -std::numeric_limits<float>::infinity();
                float m = -std::numeric_limits<float>::infinity();
                for (int64_t j = first_key; j <= i; ++j) m = std::max(m, s[j]);
                float sum = 0.f;
                for (int64_t j = first_key; j <= i; ++j) {
                    s[j] = std::exp(s[j] - m);
                    sum += s[j];
                }
                const float inv = 1.0f / sum;
                for (int64_t j = 0; j < first_key; ++j) s[j] = 0.f;
                for (int64_t j = first_key; j <= i; ++j) s[j] *= inv;
                for (int64_t j = i + 1; j < keys; ++j) s[j] = 0.f;
                lse[r * nh + h] = m + std::log(sum);
                if (capture) capture->accumulate_overview(layer, h, i, std::span<const float>(s, i + 1));
            }
        });
        // out[:, h] = P · V_kvh
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), hd, static_cast<int>(keys),
                    1.0f, scores.data(), static_cast<int>(keys), v_all + int64_t(kvh) * hd,
                    static_cast<int>(kv_stride), 0.0f, out + int64_t(h) * hd, static_cast<int>(q_stride));
    }
    if (!intervention_) return;
    for (const HeadOutputOverride& o : intervention_->head_outputs) {
        if (o.layer != layer) continue;
        for (int64_t r = 0; r < rows; ++r) {
            float* head_out = out + r * q_stride + int64_t(o.head) * hd;
            if (o.zero) std::fill(head_out, head_out + hd, 0.f);
            else std::copy(o.value.begin(), o.value.end(), head_out);
        }
    }
    if (intervention_->on_head_outputs) intervention_->on_head_outputs(layer, pos0, rows, out);
}

void CpuBackend::forward(std::span<const int32_t> ids, std::span<float> last_logits, CaptureStore* capture,
                         const ProgressFn& progress) {
    if (ids.empty()) fail("forward: no tokens to run");
    if (static_cast<int64_t>(last_logits.size()) != config_.vocab)
        fail("forward: logits buffer has ", last_logits.size(), " entries, the vocabulary ", config_.vocab);
    for (int32_t id : ids)
        if (id < 0 || id >= config_.vocab) fail("token id ", id, " is outside the vocabulary (", config_.vocab, ")");
    const int64_t total = static_cast<int64_t>(ids.size());
    if (config_.arch == Architecture::Gpt2 && cached_ + total > config_.max_context)
        fail("GPT-2 has learned positions only up to ", config_.max_context, "; the sequence would reach ",
             cached_ + total);
    if (capture && capture->positions() != cached_)
        fail("capture holds ", capture->positions(), " positions but the KV cache ", cached_);
    reserve(cached_ + total);
    const auto started = std::chrono::steady_clock::now();
    timings_.attention_ms.assign(config_.n_layer, 0.f);
    for (int64_t done = 0; done < total; done += kPrefillChunk) {
        const int64_t n = std::min(kPrefillChunk, total - done);
        forward_chunk(ids.subspan(done, n), last_logits, done + n == total, capture);
        if (progress) progress(done + n, total);
    }
    timings_.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
}

void CpuBackend::forward_chunk(std::span<const int32_t> ids, std::span<float> last_logits, bool want_logits,
                               CaptureStore* capture) {
    const ModelWeights& w = model_.weights;
    const int64_t T = static_cast<int64_t>(ids.size()), d = config_.d_model, pos0 = cached_;
    const int nh = config_.n_head, nkv = config_.n_kv_head, hd = config_.head_dim;
    const int64_t q_out = int64_t(nh) * hd, kv_out = int64_t(nkv) * hd;
    const bool gpt2 = config_.arch == Architecture::Gpt2;

    std::vector<float> x(T * d), h(T * d), q(T * q_out), k(T * kv_out), v(T * kv_out), att(T * q_out),
        lse(T * nh), gate(T * config_.d_ff), up(T * config_.d_ff), proj(T * d);
    for (int64_t t = 0; t < T; ++t) {
        ops::embedding(w.token_embedding.data(), &ids[t], 1, d, &x[t * d]);
        if (gpt2) ops::add_inplace(&x[t * d], &w.position_embedding[(pos0 + t) * d], d);
        if (intervention_) {
            const auto offset = intervention_->embedding_offsets.find(pos0 + t);
            if (offset != intervention_->embedding_offsets.end()) ops::add_inplace(&x[t * d], offset->second.data(), d);
        }
    }
    auto norm_rows = [&](const std::vector<float>& weight, const std::vector<float>& bias, float* out) {
        ThreadPool::current().parallel_for(T, [&](int64_t t) {
            if (gpt2) layer_norm(&x[t * d], weight, bias, d, config_.norm_eps, out + t * d);
            else rms_norm(&x[t * d], weight, d, config_.norm_eps, out + t * d);
        });
    };

    if (capture) capture->prepare_overview(pos0 + T);
    for (int l = 0; l < config_.n_layer; ++l) {
        const LayerWeights& L = w.layers[l];
        norm_rows(L.attn_norm, L.attn_norm_bias, h.data());
        linear(h.data(), T, d, L.wq, L.bq, q_out, q.data());
        linear(h.data(), T, d, L.wk, L.bk, kv_out, k.data());
        linear(h.data(), T, d, L.wv, L.bv, kv_out, v.data());
        if (!gpt2) {
            apply_rope(q.data(), T, nh, pos0);
            apply_rope(k.data(), T, nkv, pos0);
        }
        std::memcpy(&k_cache_[l][pos0 * kv_out], k.data(), T * kv_out * sizeof(float));
        std::memcpy(&v_cache_[l][pos0 * kv_out], v.data(), T * kv_out * sizeof(float));
        const auto attention_started = std::chrono::steady_clock::now();
        attention(l, pos0, T, q.data(), att.data(), lse.data(), capture);
        if (capture) capture->record_layer(l, pos0, T, q.data(), k.data(), lse.data());
        timings_.attention_ms[l] += static_cast<float>(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - attention_started).count());
        linear(att.data(), T, q_out, L.wo, L.bo, d, proj.data());
        ops::add_inplace(x.data(), proj.data(), T * d);

        norm_rows(L.ffn_norm, L.ffn_norm_bias, h.data());
        if (gpt2) {
            linear(h.data(), T, d, L.w_up, L.b_up, config_.d_ff, up.data());
            gelu_tanh_inplace(up.data(), static_cast<int64_t>(up.size()));
        } else {
            linear(h.data(), T, d, L.w_gate, {}, config_.d_ff, gate.data());
            linear(h.data(), T, d, L.w_up, {}, config_.d_ff, up.data());
            swiglu(gate.data(), up.data(), static_cast<int64_t>(up.size()), up.data());
        }
        linear(up.data(), T, config_.d_ff, L.w_down, L.b_down, d, proj.data());
        ops::add_inplace(x.data(), proj.data(), T * d);
    }
    cached_ += T;
    // The hidden states after the output norm, for every position (the logits below use the last
    // one, normed by the same code from the same x): `h` is free again once the layers are done.
    if (capture) {
        norm_rows(w.output_norm, w.output_norm_bias, h.data());
        capture->record_hidden(pos0, T, static_cast<int>(d), h.data());
    }

    if (!want_logits) return;
    std::vector<float> last(d);
    if (gpt2) layer_norm(&x[(T - 1) * d], w.output_norm, w.output_norm_bias, d, config_.norm_eps, last.data());
    else rms_norm(&x[(T - 1) * d], w.output_norm, d, config_.norm_eps, last.data());
    linear(last.data(), 1, d, w.output_matrix(), {}, config_.vocab, last_logits.data());
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Model& model) { return std::make_unique<CpuBackend>(model); }

BackendKind parse_backend_kind(const std::string& name) {
    if (name == "cpu") return BackendKind::Cpu;
    if (name == "cuda") return BackendKind::Cuda;
    if (name == "auto") return BackendKind::Auto;
    fail("unknown backend '", name, "' (choose cpu, cuda or auto)");
}

}  // namespace attn
