#pragma once
// The cpu backend's per-row math, one function per operation, so that every CUDA kernel in
// kernels/ has a CPU twin to be checked against (tests/test_cuda_ops.cpp). These are the fp32
// reference: the engine library is built with -ffp-contract=off and the order of operations
// follows the Hugging Face reference, so the cpu backend's results are bit-identical to the
// code these were extracted from.
#include <cstdint>
#include <vector>

#include "engine/model.h"

namespace attn::ops {

// Y[rows, out] = X[rows, in] · Wᵀ (+ bias), W row-major {out, in}; bias may be null.
void linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out, float* y);

// One row of d values. eps is the config's (double) epsilon, applied as float.
void rms_norm(const float* x, const float* weight, int64_t d, double eps, float* y);
void layer_norm(const float* x, const float* weight, const float* bias, int64_t d, double eps, float* y);

float silu(float x);
float gelu_tanh(float x);  // GPT-2's "gelu_new"

// out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
void swiglu(const float* gate, const float* up, int64_t n, float* out);
// x[i] = gelu_tanh(x[i]).
void gelu_tanh_inplace(float* x, int64_t n);

// Inverse frequencies (head_dim / 2 of them) in fp32 for the config's RoPE, with linear / llama3
// scaling and GGUF per-frequency factors (may be empty).
std::vector<float> rope_inverse_frequencies(const ModelConfig& c, const std::vector<float>& freq_factors);

// Rotate x[rows, heads, head_dim] in place; row r is at position pos0 + r.
void rope(float* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq, RopePairing pairing);

// out[t, :] = table[ids[t], :] for t < n; the table is {vocab, d} row-major.
void embedding(const float* table, const int32_t* ids, int64_t n, int64_t d, float* out);

// Residual add: x[i] += y[i].
void add_inplace(float* x, const float* y, int64_t n);

}  // namespace attn::ops
