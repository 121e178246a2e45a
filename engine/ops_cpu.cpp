#include "engine/ops_cpu.h"

#include <cblas.h>

#include <cmath>
#include <cstring>

namespace attn::ops {

void linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out, float* y) {
    if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), 1.0f, w,
                    static_cast<int>(in), x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out),
                    static_cast<int>(in), 1.0f, x, static_cast<int>(in), w, static_cast<int>(in), 0.0f, y,
                    static_cast<int>(out));
    }
    if (bias)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
}

void rms_norm(const float* x, const float* weight, int64_t d, double eps, float* y) {
    // Same order of operations as the Hugging Face reference: mean of squares, rsqrt, then weight.
    float sum_squares = 0.f;
    for (int64_t i = 0; i < d; ++i) sum_squares += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(sum_squares / static_cast<float>(d) + static_cast<float>(eps));
    for (int64_t i = 0; i < d; ++i) y[i] = weight[i] * (x[i] * inv);
}

void layer_norm(const float* x, const float* weight, const float* bias, int64_t d, double eps, float* y) {
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
    const float c = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

void gelu_tanh_inplace(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = gelu_tanh(x[i]);
}

// Computed the way the Hugging Face reference does (float pow, then reciprocal), then adjusted for
// linear / llama3 scaling and GGUF per-frequency factors.
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

void rope(float* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq,
          RopePairing pairing) {
    const int hd = head_dim, half = hd / 2;
    const bool interleaved = pairing == RopePairing::Interleaved;
    std::vector<float> cos_table(half), sin_table(half);
    for (int64_t r = 0; r < rows; ++r) {
        const float position = static_cast<float>(pos0 + r);
        for (int i = 0; i < half; ++i) {
            const float angle = position * inv_freq[i];  // fp32 product, as the reference computes it
            cos_table[i] = std::cos(angle);
            sin_table[i] = std::sin(angle);
        }
        for (int h = 0; h < heads; ++h) {
            float* v = x + (r * heads + h) * hd;
            for (int i = 0; i < half; ++i) {
                const int a = interleaved ? 2 * i : i;
                const int b = interleaved ? 2 * i + 1 : i + half;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * cos_table[i] - x1 * sin_table[i];
                v[b] = x1 * cos_table[i] + x0 * sin_table[i];
            }
        }
    }
}

void embedding(const float* table, const int32_t* ids, int64_t n, int64_t d, float* out) {
    for (int64_t t = 0; t < n; ++t) std::memcpy(out + t * d, table + int64_t(ids[t]) * d, d * sizeof(float));
}

void add_inplace(float* x, const float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace attn::ops
