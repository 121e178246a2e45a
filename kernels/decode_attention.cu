// Split-K decode attention (flash-decoding).
// Split kernel: grid (n_head, n_splits), 128 threads. Each warp walks keys start+warp, +4, …;
// a lane owns D/32 consecutive dims of q (fp32 registers) and of the accumulator, so a score is
// one 4- or 8-byte K load per lane and a warp shuffle reduction. Online softmax per warp (natural
// exp), then the 4 warps merge in shared memory and the split's (m, l, O·l) goes to scratch:
// [head][split] × (D + 2) floats. Combine kernel: grid n_head, D threads; M = max m_s,
// L = Σ l_s·e^{m_s−M}, O = Σ O_s·e^{m_s−M} / L, LSE = M + log L. Memory-bound: K and V are read
// once; the scratch is (D+2)·4 bytes per (head, split).
#include "kernels/decode_attention.cuh"

#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace attn::gpu {

namespace {

using detail::bf16;
constexpr int kWarps = 4;

struct DParams {
    const bf16* q;
    const bf16* k;
    const bf16* v;
    float* scratch;
    int64_t L, kv_stride, key_lo;
    int n_head, group, n_splits;
    float scale;
};

template <int D>
__global__ void __launch_bounds__(kWarps * 32) decode_split_kernel(DParams p) {
    constexpr int E = D / 32;  // dims per lane
    const int h = blockIdx.x, split = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = h / p.group;
    const int64_t span = p.L - p.key_lo;
    const int64_t per = (span + p.n_splits - 1) / p.n_splits;
    const int64_t j0 = p.key_lo + int64_t(split) * per;
    const int64_t j1 = j0 + per < p.L ? j0 + per : p.L;

    float q[E], acc[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
        q[e] = __bfloat162float(p.q[int64_t(h) * D + lane * E + e]) * p.scale;
        acc[e] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int64_t j = j0 + warp; j < j1; j += kWarps) {
        const bf16* kr = p.k + j * p.kv_stride + int64_t(kvh) * D + lane * E;
        const bf16* vr = p.v + j * p.kv_stride + int64_t(kvh) * D + lane * E;
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < E; ++e) s += q[e] * __bfloat162float(kr[e]);
        s = detail::warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float alpha = m == -INFINITY ? 0.f : __expf(m - m_new);
        const float pj = __expf(s - m_new);
        l = l * alpha + pj;
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] = acc[e] * alpha + pj * __bfloat162float(vr[e]);
        m = m_new;
    }

    __shared__ float sm_m[kWarps], sm_l[kWarps];
    __shared__ float sm_o[kWarps][D];
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) sm_o[warp][lane * E + e] = acc[e];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm_m[w]);
    float* out = p.scratch + (int64_t(h) * p.n_splits + split) * (D + 2);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < kWarps; ++w)
            if (sm_m[w] != -INFINITY) o += sm_o[w][d] * __expf(sm_m[w] - M);
        out[2 + d] = o;
    }
    if (threadIdx.x == 0) {
        float Ls = 0.f;
        for (int w = 0; w < kWarps; ++w)
            if (sm_m[w] != -INFINITY) Ls += sm_l[w] * __expf(sm_m[w] - M);
        out[0] = M;
        out[1] = Ls;
    }
}

template <int D, typename OutT>
__global__ void decode_combine_kernel(const float* scratch, int n_splits, OutT* o, float* lse) {
    const int h = blockIdx.x, d = threadIdx.x;
    const float* base = scratch + int64_t(h) * n_splits * (D + 2);
    float M = -INFINITY;
    for (int s = 0; s < n_splits; ++s) M = fmaxf(M, base[s * (D + 2)]);
    float L = 0.f, acc = 0.f;
    for (int s = 0; s < n_splits; ++s) {
        const float ms = base[s * (D + 2)];
        if (ms == -INFINITY) continue;
        const float w = expf(ms - M);
        L += base[s * (D + 2) + 1] * w;
        acc += base[s * (D + 2) + 2 + d] * w;
    }
    o[int64_t(h) * D + d] = detail::from_f32<OutT>(acc / L);
    if (lse && d == 0) lse[h] = M + logf(L);
}

int64_t first_key(const DecodeAttentionParams& a) {
    return a.sliding_window > 0 ? std::max<int64_t>(0, a.L - a.sliding_window) : 0;
}

void validate(const DecodeAttentionParams& a) {
    if (a.head_dim != 64 && a.head_dim != 128) fail("decode_attention: head_dim ", a.head_dim, " (supported: 64, 128)");
    if (a.n_head <= 0 || a.n_kv_head <= 0 || a.n_head % a.n_kv_head != 0)
        fail("decode_attention: n_head ", a.n_head, " is not a multiple of n_kv_head ", a.n_kv_head);
    if (a.L <= 0) fail("decode_attention: empty KV cache");
    if (!a.q || !a.k || !a.v || !a.o) fail("decode_attention: null input or output pointer");
}

}  // namespace

int decode_attention_splits(const DecodeAttentionParams& a) {
    validate(a);
    const int64_t span = a.L - first_key(a);
    int splits = a.n_splits;
    if (splits <= 0) {
        int dev = 0, sms = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        const int64_t want = (2 * int64_t(sms) + a.n_head - 1) / a.n_head;  // ≈ 2 CTAs per SM
        const int64_t by_len = (span + 255) / 256;                          // ≥ 256 keys per split
        splits = int(std::clamp<int64_t>(std::min(want, by_len), 1, 128));
    }
    return int(std::clamp<int64_t>(splits, 1, span));
}

size_t decode_attention_workspace_bytes(const DecodeAttentionParams& a) {
    return size_t(a.n_head) * decode_attention_splits(a) * (a.head_dim + 2) * sizeof(float);
}

void decode_attention(const DecodeAttentionParams& a, void* workspace, size_t workspace_bytes, Stream stream) {
    const int splits = decode_attention_splits(a);
    const size_t need = size_t(a.n_head) * splits * (a.head_dim + 2) * sizeof(float);
    if (need > workspace_bytes) fail("decode_attention: workspace of ", workspace_bytes, " bytes, need ", need);
    DParams p{};
    p.q = static_cast<const bf16*>(a.q);
    p.k = static_cast<const bf16*>(a.k);
    p.v = static_cast<const bf16*>(a.v);
    p.scratch = static_cast<float*>(workspace);
    p.L = a.L;
    p.kv_stride = a.kv_stride ? a.kv_stride : int64_t(a.n_kv_head) * a.head_dim;
    p.key_lo = first_key(a);
    p.n_head = a.n_head;
    p.group = a.n_head / a.n_kv_head;
    p.n_splits = splits;
    p.scale = a.scale;
    const dim3 grid(a.n_head, splits);
    const bool f32 = a.out_type == OutType::F32;
    if (a.head_dim == 64) {
        decode_split_kernel<64><<<grid, kWarps * 32, 0, stream>>>(p);
        CUDA_CHECK_LAUNCH();
        if (f32)
            decode_combine_kernel<64, float><<<a.n_head, 64, 0, stream>>>(p.scratch, splits, static_cast<float*>(a.o), a.lse);
        else
            decode_combine_kernel<64, bf16><<<a.n_head, 64, 0, stream>>>(p.scratch, splits, static_cast<bf16*>(a.o), a.lse);
    } else {
        decode_split_kernel<128><<<grid, kWarps * 32, 0, stream>>>(p);
        CUDA_CHECK_LAUNCH();
        if (f32)
            decode_combine_kernel<128, float><<<a.n_head, 128, 0, stream>>>(p.scratch, splits, static_cast<float*>(a.o), a.lse);
        else
            decode_combine_kernel<128, bf16><<<a.n_head, 128, 0, stream>>>(p.scratch, splits, static_cast<bf16*>(a.o), a.lse);
    }
    CUDA_CHECK_LAUNCH();
}

}  // namespace attn::gpu
