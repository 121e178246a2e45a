#include "kernels/common.cuh"
#include "kernels/overview_row.cuh"

#include <algorithm>

namespace attn::gpu {

namespace {

using detail::bf16;
constexpr int kOvBlock = 128;  // CaptureStore::kOverviewBlock; one thread per key of the block

struct RParams {
    const bf16* q;
    const bf16* k;
    const float* lse;
    int64_t L, kv_stride, kb_lo, head_stride;
    int group, head_dim, window;
    float scale;
    float* ov_sum;
    float* ov_max;
};

__global__ void __launch_bounds__(kOvBlock) overview_row_kernel(RParams p) {
    __shared__ float qs[256];
    __shared__ float red_s[kOvBlock / 32], red_m[kOvBlock / 32];
    const int h = blockIdx.y;
    const int64_t kb = p.kb_lo + blockIdx.x;
    const int64_t i = p.L - 1;
    for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) qs[d] = __bfloat162float(p.q[int64_t(h) * p.head_dim + d]);
    __syncthreads();

    const int64_t j = kb * kOvBlock + threadIdx.x;
    const bool vis = j <= i && (p.window <= 0 || i - j < p.window);
    float pv = 0.f;
    if (vis) {
        const __nv_bfloat162* kr =
            reinterpret_cast<const __nv_bfloat162*>(p.k + j * p.kv_stride + int64_t(h / p.group) * p.head_dim);
        float s = 0.f;
        for (int d = 0; d < p.head_dim / 2; ++d) {
            const float2 kv = __bfloat1622float2(kr[d]);
            s = fmaf(qs[2 * d], kv.x, s);
            s = fmaf(qs[2 * d + 1], kv.y, s);
        }
        // The CPU twin's formula: exp(scale · (q·k) − LSE).
        pv = expf(p.scale * s - p.lse[h]);
    }
    float s = detail::warp_sum(pv), m = pv;
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        red_s[warp] = s;
        red_m[warp] = m;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float bs = 0.f, bm = 0.f;
        for (int w = 0; w < kOvBlock / 32; ++w) {
            bs += red_s[w];
            bm = fmaxf(bm, red_m[w]);
        }
        const int64_t qb = i / kOvBlock;
        const int64_t index = int64_t(h) * p.head_stride + qb * (qb + 1) / 2 + kb;
        p.ov_sum[index] += bs;
        p.ov_max[index] = fmaxf(p.ov_max[index], bm);
    }
}

}  // namespace

void overview_accumulate_row(const OverviewRowParams& a, Stream stream) {
    if (a.head_dim <= 0 || a.head_dim > 256 || a.head_dim % 2)
        fail("overview_accumulate_row: head_dim ", a.head_dim, " (supported: even, ≤ 256)");
    if (a.n_head <= 0 || a.n_kv_head <= 0 || a.n_head % a.n_kv_head)
        fail("overview_accumulate_row: n_head ", a.n_head, " is not a multiple of n_kv_head ", a.n_kv_head);
    if (a.L <= 0) fail("overview_accumulate_row: empty KV cache");
    if (a.kv_stride % 2) fail("overview_accumulate_row: kv_stride ", a.kv_stride, " must be even (bf16 pairs)");
    if (!a.q || !a.k || !a.lse || !a.overview_sum || !a.overview_max) fail("overview_accumulate_row: null pointer");
    const int64_t i = a.L - 1, qb = i / kOvBlock;
    if (a.overview_head_stride < (qb + 1) * (qb + 2) / 2)
        fail("overview_accumulate_row: overview_head_stride ", a.overview_head_stride, " < ", (qb + 1) * (qb + 2) / 2);
    const int64_t first_key = a.sliding_window > 0 ? std::max<int64_t>(0, i - a.sliding_window + 1) : 0;
    RParams p{};
    p.q = static_cast<const bf16*>(a.q);
    p.k = static_cast<const bf16*>(a.k);
    p.lse = a.lse;
    p.L = a.L;
    p.kv_stride = a.kv_stride ? a.kv_stride : int64_t(a.n_kv_head) * a.head_dim;
    p.kb_lo = first_key / kOvBlock;
    p.head_stride = a.overview_head_stride;
    p.group = a.n_head / a.n_kv_head;
    p.head_dim = a.head_dim;
    p.window = a.sliding_window;
    p.scale = a.scale;
    p.ov_sum = a.overview_sum;
    p.ov_max = a.overview_max;
    const dim3 grid(unsigned(qb - p.kb_lo + 1), unsigned(a.n_head));
    overview_row_kernel<<<grid, kOvBlock, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
}

}  // namespace attn::gpu
