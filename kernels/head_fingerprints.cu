// Head fingerprints on the GPU: one CTA of 256 threads per (query row, head).
//
// Pass 1 (one thread per key, keys strided by 256): the score scale·q·k (q staged in shared
// memory, the key row read as float4 when head_dim allows), p = exp(score − LSE) as the CPU twin
// computes it, written to the block's scratch row, and the row sums taken on the way — Σp,
// −Σp·log p, Σp·(q − k), the local window, the induction keys (token[k − 1] == token[q], so every
// key is counted once) — in double per thread, as the CPU accumulates them, then one block
// reduction. Sink, previous-token and the offsets 0..64 are single entries of the row, kept in
// shared memory by the thread that computes them.
//
// keys_for_90 exactly, by bisection on the probability threshold's bit pattern
// (kernels/threshold_search.h explains the search; the host emulation runs the same code): each
// step one pass over the block's scratch row counting and summing the keys at or above the middle.
// That is the smallest k whose top-k mass reaches 90%, as the CPU's selection finds, up to the
// rounding of the double sums: only a row whose top-k mass equals the target to within that
// rounding can differ, by one key. About 30 passes over a row just written (L2-resident for rows up
// to a few thousand keys) rather than a sort: no shared-memory limit on the row length, no second
// copy of the row. A radix (histogram) selection would take 4 passes; the next step if this
// dominates.
#include "kernels/head_fingerprints.cuh"

#include <cmath>

#include "kernels/common.cuh"
#include "kernels/threshold_search.h"

namespace attn::gpu {

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;

// Sums of N doubles over the block; every thread gets the same result (the partials are added in
// one fixed order by each thread), so control flow that depends on it stays uniform.
template <int N>
__device__ __forceinline__ void block_sum_doubles(double (&v)[N], double (*partial)[N]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int i = 0; i < N; ++i)
        for (int offset = 16; offset > 0; offset >>= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], offset);
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < N; ++i) partial[warp][i] = v[i];
    __syncthreads();
#pragma unroll
    for (int i = 0; i < N; ++i) {
        double total = 0;
        for (int w = 0; w < kWarps; ++w) total += partial[w][i];
        v[i] = total;
    }
    __syncthreads();  // every thread has read partial[] before it is reused
}

__device__ __forceinline__ float block_max_nonneg(float v, float* partial) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float m = 0.f;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, partial[w]);
    __syncthreads();
    return m;
}

template <bool kVector>
__device__ __forceinline__ float dot_with_key(const float* qs, const float* key, int head_dim) {
    float dot = 0.f;
    if constexpr (kVector) {
        const float4* key4 = reinterpret_cast<const float4*>(key);
        for (int d4 = 0; d4 < head_dim / 4; ++d4) {
            const float4 kv = key4[d4];
            dot = fmaf(qs[4 * d4], kv.x, dot);
            dot = fmaf(qs[4 * d4 + 1], kv.y, dot);
            dot = fmaf(qs[4 * d4 + 2], kv.z, dot);
            dot = fmaf(qs[4 * d4 + 3], kv.w, dot);
        }
    } else {
        for (int d = 0; d < head_dim; ++d) dot = fmaf(qs[d], key[d], dot);
    }
    return dot;
}

template <bool kVector>
__global__ void __launch_bounds__(kThreads)
    fingerprint_row_kernel(FingerprintInputs in, float* scratch, int64_t scratch_stride, double* out) {
    const int64_t r = blockIdx.x;
    const int head = blockIdx.y;
    const int tid = threadIdx.x;
    const int64_t q = in.queries[r];
    const int kv_head = head / (in.n_head / in.n_kv_head);
    const int hd = in.head_dim;

    __shared__ float qs[256];
    __shared__ float offsets[kFingerprintMaxOffset + 1];
    __shared__ float sink;
    __shared__ double partial5[kWarps][5];
    __shared__ double partial2[kWarps][2];
    __shared__ float partial_max[kWarps];

    for (int d = tid; d < hd; d += kThreads) qs[d] = in.q[(r * in.n_head + head) * hd + d];
    for (int d = tid; d <= kFingerprintMaxOffset; d += kThreads) offsets[d] = 0.f;
    if (tid == 0) sink = 0.f;
    __syncthreads();

    const float lse = in.lse[r * in.n_head + head];
    const int32_t token = in.tokens[q];
    const int64_t first = in.sliding_window > 0 ? max(int64_t(0), q - in.sliding_window + 1) : int64_t(0);
    const int64_t local_from = q - in.local_window;
    const int64_t k_stride = int64_t(in.n_kv_head) * hd;
    const float* keys = in.k + int64_t(kv_head) * hd;
    float* row = scratch + (int64_t(head) * in.rows + r) * scratch_stride;

    // Pass 1: the row of P and its sums (total, surprisal, distance, local, induction).
    double sums[5] = {0, 0, 0, 0, 0};
    float largest = 0.f;
    for (int64_t key = first + tid; key <= q; key += kThreads) {
        const float log_p = in.scale * dot_with_key<kVector>(qs, keys + key * k_stride, hd) - lse;
        const float p = expf(log_p);
        row[key] = p;
        largest = fmaxf(largest, p);
        sums[0] += p;
        sums[1] -= double(p) * double(log_p);
        sums[2] += double(p) * double(q - key);
        if (key >= local_from) sums[3] += p;
        if (key >= 1 && in.tokens[key - 1] == token) sums[4] += p;
        if (q - key <= kFingerprintMaxOffset) offsets[q - key] = p;
        if (key == 0) sink = p;
    }
    // Whether the token occurred before q at all: the CPU counts an induction row whenever it did,
    // whatever the sliding window hides.
    int earlier = 0;
    for (int64_t j = tid; j < q && !earlier; j += kThreads) earlier = in.tokens[j] == token;
    const int has_earlier = __syncthreads_or(earlier);
    block_sum_doubles<5>(sums, partial5);
    largest = block_max_nonneg(largest, partial_max);

    // keys_for_90: bisection on the threshold's bit pattern (kernels/threshold_search.h).
    const double total = sums[0];
    int64_t keys_for_90 = 0;
    if (total > 0) {
        ThresholdSearch search = ThresholdSearch::start(0.9 * total, largest, double(q - first + 1));
        while (!search.done()) {
            const uint32_t mid = search.middle();
            double at_or_above[2] = {0, 0};  // mass, count
            for (int64_t key = first + tid; key <= q; key += kThreads) {
                const float p = row[key];  // written by this same thread in pass 1
                if (__float_as_uint(p) >= mid) {
                    at_or_above[0] += p;
                    at_or_above[1] += 1.0;
                }
            }
            block_sum_doubles<2>(at_or_above, partial2);
            search.take(at_or_above[0], at_or_above[1]);
        }
        keys_for_90 = search.keys();
    }

    double* record = out + (int64_t(head) * in.rows + r) * kFingerprintFields;
    if (tid == 0) {
        record[kFpTotal] = total;
        record[kFpSurprisal] = sums[1];
        record[kFpDistance] = sums[2];
        record[kFpSink] = sink;
        record[kFpPrevious] = offsets[1];
        record[kFpInduction] = sums[4];
        record[kFpHasEarlier] = has_earlier ? 1.0 : 0.0;
        record[kFpLocal] = sums[3];
        record[kFpKeys90] = double(keys_for_90);
    }
    for (int d = tid; d <= kFingerprintMaxOffset; d += kThreads) record[kFpOffset0 + d] = offsets[d];
}

}  // namespace

void head_fingerprint_rows(const FingerprintInputs& in, float* scratch, int64_t scratch_stride, double* out,
                           Stream stream) {
    if (!in.q || !in.lse || !in.queries || !in.k || !in.tokens) fail("head fingerprints: null input");
    if (!scratch || !out) fail("head fingerprints: null scratch or output");
    if (in.head_dim <= 0 || in.head_dim > 256) fail("head fingerprints: head_dim ", in.head_dim, " (supported ≤ 256)");
    if (in.n_head <= 0 || in.n_kv_head <= 0 || in.n_head % in.n_kv_head)
        fail("head fingerprints: n_head ", in.n_head, " is not a multiple of n_kv_head ", in.n_kv_head);
    if (in.n_head > 65535) fail("head fingerprints: ", in.n_head, " heads exceed the grid limit");
    if (in.rows < 0 || in.rows > 0x7fffffff) fail("head fingerprints: ", in.rows, " rows exceed the grid limit");
    if (in.local_window < 0) fail("head fingerprints: the local window must not be negative");
    if (scratch_stride < in.positions) fail("head fingerprints: scratch rows of ", scratch_stride, " floats for ",
                                            in.positions, " positions");
    if (in.rows == 0) return;
    const dim3 grid{unsigned(in.rows), unsigned(in.n_head)};
    // float4 key loads need 16-byte aligned key rows: head_dim a multiple of 4 on a cudaMalloc'd base.
    const bool vector = in.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(in.k) % 16 == 0;
    if (vector)
        fingerprint_row_kernel<true><<<grid, kThreads, 0, stream>>>(in, scratch, scratch_stride, out);
    else
        fingerprint_row_kernel<false><<<grid, kThreads, 0, stream>>>(in, scratch, scratch_stride, out);
    CUDA_CHECK_LAUNCH();
}

}  // namespace attn::gpu
