#pragma once
// Head fingerprints on the GPU (issue 6, engine/head_fingerprints.h): for query rows of every head,
// the exact row of P = exp(scale · q · k − LSE) (zero where masked) reduced on the device to the
// per-row quantities the CPU's HeadFingerprints::fold_in measures; the host averages them with the
// CPU's own code (HeadFingerprints::from_rows). kernels/gpu_head_fingerprints.cpp drives it.
// Plain C++ header (see flash_attention.cuh).
#include <cstdint>

#include "kernels/flash_attention.cuh"

namespace attn::gpu {

struct FingerprintInputs {
    const float* q = nullptr;          // [rows, n_head, head_dim]: the measured query rows, gathered
    const float* lse = nullptr;        // [rows, n_head], natural log
    const int64_t* queries = nullptr;  // [rows]: each row's position (>= 1, < positions)
    int64_t rows = 0;
    const float* k = nullptr;          // [positions, n_kv_head, head_dim]: keys 0..positions − 1
    const int32_t* tokens = nullptr;   // [positions]: token ids (induction keys)
    int64_t positions = 0;
    int n_head = 0, n_kv_head = 0, head_dim = 0;  // head_dim ≤ 256; GQA: head h reads KV head h / (n_head / n_kv_head)
    float scale = 0.f;
    int sliding_window = 0;  // > 0: query i sees keys i − window + 1 .. i
    int local_window = 0;    // w of local_mass: keys q − w .. q
};

// One record of kFingerprintFields doubles per (head, row), at out[(head · rows + row) · fields].
constexpr int kFingerprintMaxOffset = 64;
enum FingerprintField : int {
    kFpTotal,       // Σ p
    kFpSurprisal,   // −Σ p·(score − LSE), nats
    kFpDistance,    // Σ p·(q − k)
    kFpSink,        // p[0]
    kFpPrevious,    // p[q − 1]
    kFpInduction,   // Σ p[k] over k ≥ 1 with token[k − 1] == token[q]
    kFpHasEarlier,  // 1 when token[q] occurs before q (anywhere, window or not), else 0
    kFpLocal,       // Σ p[max(0, q − w) .. q]
    kFpKeys90,      // fewest keys holding 90% of kFpTotal
    kFpOffset0,     // kFpOffset0 + δ: p[q − δ] for δ = 0..64 (0 where q − δ < 0)
    kFingerprintFields = kFpOffset0 + kFingerprintMaxOffset + 1
};

// Measures every (head, row) of `in`. scratch: device floats, rows · n_head · scratch_stride, with
// scratch_stride > every query (the block's row of P lives there between passes). out: device
// doubles, rows · n_head · kFingerprintFields; every field is written. Asynchronous on `stream`.
void head_fingerprint_rows(const FingerprintInputs& in, float* scratch, int64_t scratch_stride, double* out,
                           Stream stream = nullptr);

}  // namespace attn::gpu
