#include "engine/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/error.h"
#include "engine/memory.h"
#include "engine/parallel.h"

namespace attn {

namespace {

// Y[rows, out] = X[rows, in] · Wᵀ (+ bias), W row-major {out, in}.
void linear(const float* x, int64_t rows, int64_t in, const std::vector<float>& w, const std::vector<float>& bias,
            int64_t out, float* y) {
    if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), 1.0f, w.data(),
                    static_cast<int>(in), x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out),
                    static_cast<int>(in), 1.0f, x, static_cast<int>(in), w.data(), static_cast<int>(in), 0.0f, y,
                    static_cast<int>(out));
    }
    if (!bias.empty())
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
}

void rms_norm(const float* x, const std::vector<float>& weight, int64_t d, double eps, float* y) {
    // Same order of operations as the Hugging Face reference: mean of squares, rsqrt, then weight.
    float sum_squares = 0.f;
    for (int64_t i = 0; i < d; ++i) sum_squares += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(sum_squares / static_cast<float>(d) + static_cast<float>(eps));
    for (int64_t i = 0; i < d; ++i) y[i] = weight[i] * (x[i] * inv);
}

void layer_norm(const float* x, const std::vector<float>& weight, const std::vector<float>& bias, int64_t d,
                double eps, float* y) {
    float mean = 0.f;
    for (int64_t i = 0; i < d; ++i) mean += x[i];
    mean /= static_cast<float>(d);
    float variance = 0.f;
    for (int64_t i = 0; i < d; ++i) variance += (x[i] - mean) * (x[i] - mean);
    variance /= static_cast<float>(d);
    const float inv = 1.0f / std::sqrt(variance + static_cast<float>(eps));
    for (int64_t i = 0; i < d; ++i) y[i] = (x[i] - mean) * inv * weight[i] + bias[i];
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

float gelu_tanh(float x) {
    // GPT-2's "gelu_new".
    const float c = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}

// Inverse frequencies in fp32, computed the way the Hugging Face reference does (float pow, then
// reciprocal), then adjusted for linear / llama3 scaling and GGUF per-frequency factors.
std::vector<float> rope_inverse_frequencies(const ModelConfig& c, const std::vector<float>& freq_factors) {
    const int half = c.head_dim / 2;
    std::vector<float> inv(half);
    for (int i = 0; i < half; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
        inv[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
    }
    const RopeScaling& s = c.rope_scaling;
    if (s.kind == RopeScaling::Kind::Linear) {
        for (float& f : inv) f /= static_cast<float>(s.factor);
    } else if (s.kind == RopeScaling::Kind::Llama3) {
        const double low_wavelen = s.original_context / s.low_freq_factor;
        const double high_wavelen = s.original_context / s.high_freq_factor;
        for (float& f : inv) {
            const double wavelen = 2 * M_PI / f;
            if (wavelen < high_wavelen) continue;
            if (wavelen > low_wavelen) {
                f = static_cast<float>(f / s.factor);
            } else {
                const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                                      (s.high_freq_factor - s.low_freq_factor);
                f = static_cast<float>((1 - smooth) * f / s.factor + smooth * f);
            }
        }
    }
    if (!freq_factors.empty())
        for (int i = 0; i < half; ++i) inv[i] /= freq_factors[i];
    return inv;
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

    void forward(std::span<const int32_t> ids, std::span<float> last_logits, CaptureStore* capture,
                 const ProgressFn& progress) override;

private:
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
    const int hd = config_.head_dim, half = hd / 2;
    std::vector<float> cos_table(half), sin_table(half);
    for (int64_t r = 0; r < rows; ++r) {
        const float position = static_cast<float>(pos0 + r);
        for (int i = 0; i < half; ++i) {
            const float angle = position * inv_freq_[i];  // fp32 product, as the reference computes it
            cos_table[i] = std::cos(angle);
            sin_table[i] = std::sin(angle);
        }
        for (int h = 0; h < heads; ++h) {
            float* v = x + (r * heads + h) * hd;
            for (int i = 0; i < half; ++i) {
                const int a = config_.rope_pairing == RopePairing::Interleaved ? 2 * i : i;
                const int b = config_.rope_pairing == RopePairing::Interleaved ? 2 * i + 1 : i + half;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * cos_table[i] - x1 * sin_table[i];
                v[b] = x1 * cos_table[i] + x0 * sin_table[i];
            }
        }
    }
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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(keys), hd,
                    scale, q + int64_t(h) * hd, static_cast<int>(q_stride), k_all + int64_t(kvh) * hd,
                    static_cast<int>(kv_stride), 0.0f, scores.data(), static_cast<int>(keys));
        ThreadPool::shared().parallel_for(last_block - first_block + 1, [&](int64_t b) {
            const int64_t block = first_block + b;
            const int64_t r0 = std::max<int64_t>(block * kBlock, pos0) - pos0;
            const int64_t r1 = std::min<int64_t>((block + 1) * kBlock, pos0 + rows) - pos0;
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t i = pos0 + r;
                float* s = scores.data() + r * keys;
                const int64_t first_key = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
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
    for (int64_t done = 0; done < total; done += kPrefillChunk) {
        const int64_t n = std::min(kPrefillChunk, total - done);
        forward_chunk(ids.subspan(done, n), last_logits, done + n == total, capture);
        if (progress) progress(done + n, total);
    }
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
        std::memcpy(&x[t * d], &w.token_embedding[int64_t(ids[t]) * d], d * sizeof(float));
        if (gpt2)
            for (int64_t i = 0; i < d; ++i) x[t * d + i] += w.position_embedding[(pos0 + t) * d + i];
    }
    auto norm_rows = [&](const std::vector<float>& weight, const std::vector<float>& bias, float* out) {
        ThreadPool::shared().parallel_for(T, [&](int64_t t) {
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
        attention(l, pos0, T, q.data(), att.data(), lse.data(), capture);
        if (capture) capture->record_layer(l, pos0, T, q.data(), k.data(), lse.data());
        linear(att.data(), T, q_out, L.wo, L.bo, d, proj.data());
        for (int64_t i = 0; i < T * d; ++i) x[i] += proj[i];

        norm_rows(L.ffn_norm, L.ffn_norm_bias, h.data());
        if (gpt2) {
            linear(h.data(), T, d, L.w_up, L.b_up, config_.d_ff, up.data());
            for (float& u : up) u = gelu_tanh(u);
        } else {
            linear(h.data(), T, d, L.w_gate, {}, config_.d_ff, gate.data());
            linear(h.data(), T, d, L.w_up, {}, config_.d_ff, up.data());
            for (size_t i = 0; i < up.size(); ++i) up[i] = silu(gate[i]) * up[i];
        }
        linear(up.data(), T, config_.d_ff, L.w_down, L.b_down, d, proj.data());
        for (int64_t i = 0; i < T * d; ++i) x[i] += proj[i];
    }
    cached_ += T;

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
