// Exact tiles, rows and masses on the GPU.
// Block kernel: a CTA of 256 threads computes a 64×64 block of scores (16×16 threads, 4×4
// scores each, fp32 FMA over 32-dim chunks of Q and K staged in shared memory as fp32), turns them
// into P with the row's LSE and folds them into the output cells:
//   level 0      : one P per cell, written directly;
//   level 1..5   : a cell is 2^level ≤ 32 tokens, inside this CTA's block: reduced in shared memory
//                  (atomics), then written directly (the CTA owns those cells);
//   level ≥ 6    : the whole block lies in one cell, shared by many CTAs: block reduction, then
//                  one global atomicAdd / atomicMax (bits of a non-negative float) per CTA;
//   mass         : block reduction, one double atomicAdd per CTA.
// Blocks entirely above the diagonal or outside the sliding window exit at once.
// Scores use CUDA cores in fp32 here (exact against the fp32 CPU twin); a tensor-core (WMMA)
// variant for bf16 captures is the next step for the 1 ms/tile target.
#include "kernels/attention_tiles.cuh"

#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace attn::gpu {

namespace {

using detail::bf16;
constexpr int kB = 64, kThreads = 256, kChunk = 32;

enum class Mode { Direct, SharedCells, OneCell, Mass };

struct BParams {
    const void* q;
    const void* k;
    const float* lse;
    int64_t q_stride, k_stride, lse_stride;
    int64_t n;  // positions
    int64_t q0, q1, k0, k1;  // region
    int head, kvh, head_dim, level, window;
    float scale;
    float* sum;
    float* max;
    double* mass;
};

__device__ __forceinline__ void atomic_max_nonneg(float* addr, float v) {
    atomicMax(reinterpret_cast<int*>(addr), __float_as_int(v));
}

template <typename T, Mode kMode>
__global__ void __launch_bounds__(kThreads) p_block_kernel(BParams p) {
    const int64_t i0 = p.q0 + int64_t(blockIdx.y) * kB, j0 = p.k0 + int64_t(blockIdx.x) * kB;
    if (i0 >= p.q1 || j0 >= p.k1) return;
    const int64_t i_last = min(i0 + kB, p.q1) - 1, j_last = min(j0 + kB, p.k1) - 1;
    if (j0 > i_last) return;                                       // above the diagonal
    if (p.window > 0 && i0 - j_last >= p.window) return;           // outside every row's window

    __shared__ float Qs[kB][kChunk + 1], Ks[kB][kChunk + 1];
    __shared__ float red_s[kThreads / 32], red_m[kThreads / 32];
    __shared__ float cell_s[kB * kB / 4], cell_m[kB * kB / 4];  // level ≥ 1: at most 32×32 cells
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    const T* Q = static_cast<const T*>(p.q);
    const T* K = static_cast<const T*>(p.k);
    float acc[4][4] = {};
    for (int c0 = 0; c0 < p.head_dim; c0 += kChunk) {
        for (int e = threadIdx.x; e < kB * kChunk; e += kThreads) {
            const int r = e / kChunk, c = e % kChunk;
            const bool in_d = c0 + c < p.head_dim;
            const int64_t i = i0 + r, j = j0 + r;
            Qs[r][c] = in_d && i < p.q1 ? detail::to_f32(Q[i * p.q_stride + int64_t(p.head) * p.head_dim + c0 + c]) : 0.f;
            Ks[r][c] = in_d && j < p.k1 ? detail::to_f32(K[j * p.k_stride + int64_t(p.kvh) * p.head_dim + c0 + c]) : 0.f;
        }
        __syncthreads();
#pragma unroll 8
        for (int c = 0; c < kChunk; ++c) {
            float a[4], b[4];
#pragma unroll
            for (int x = 0; x < 4; ++x) {
                a[x] = Qs[tr + 16 * x][c];
                b[x] = Ks[tc + 16 * x][c];
            }
#pragma unroll
            for (int x = 0; x < 4; ++x)
#pragma unroll
                for (int y = 0; y < 4; ++y) acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
        }
        __syncthreads();
    }

    if constexpr (kMode == Mode::SharedCells) {
        for (int e = threadIdx.x; e < kB * kB / 4; e += kThreads) cell_s[e] = cell_m[e] = 0.f;
        __syncthreads();
    }
    const int cells_across = kB >> p.level;  // SharedCells only
    float bsum = 0.f, bmax = 0.f;
#pragma unroll
    for (int x = 0; x < 4; ++x) {
        const int64_t i = i0 + tr + 16 * x;
        const float lse = i < p.q1 ? p.lse[i * p.lse_stride + p.head] : 0.f;
#pragma unroll
        for (int y = 0; y < 4; ++y) {
            const int64_t j = j0 + tc + 16 * y;
            const bool vis = i < p.q1 && j < p.k1 && j <= i && (p.window <= 0 || i - j < p.window);
            // Same arithmetic as the CPU twin: exp(scale·(q·k) − LSE).
            const float pv = vis ? expf(p.scale * acc[x][y] - lse) : 0.f;
            if constexpr (kMode == Mode::Direct) {
                if (i < p.q1 && j < p.k1) {
                    const int64_t cell = (i - p.q0) * kTileEdge + (j - p.k0);
                    p.sum[cell] = pv;
                    p.max[cell] = pv;
                }
            } else if constexpr (kMode == Mode::SharedCells) {
                if (vis) {
                    const int cr = (tr + 16 * x) >> p.level, cc = (tc + 16 * y) >> p.level;
                    atomicAdd(&cell_s[cr * cells_across + cc], pv);
                    atomic_max_nonneg(&cell_m[cr * cells_across + cc], pv);
                }
            } else {
                bsum += pv;
                bmax = fmaxf(bmax, pv);
            }
        }
    }

    if constexpr (kMode == Mode::SharedCells) {
        __syncthreads();
        const int64_t cr0 = (i0 - p.q0) >> p.level, cc0 = (j0 - p.k0) >> p.level;
        for (int e = threadIdx.x; e < cells_across * cells_across; e += kThreads) {
            const int cr = e / cells_across, cc = e % cells_across;
            if (i0 + (int64_t(cr) << p.level) >= p.q1 || j0 + (int64_t(cc) << p.level) >= p.k1) continue;
            const int64_t cell = (cr0 + cr) * kTileEdge + cc0 + cc;
            p.sum[cell] = cell_s[e];
            p.max[cell] = cell_m[e];
        }
    } else if constexpr (kMode == Mode::OneCell || kMode == Mode::Mass) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        bsum = detail::warp_sum(bsum);
        for (int off = 16; off > 0; off >>= 1) bmax = fmaxf(bmax, __shfl_xor_sync(0xffffffffu, bmax, off));
        if (lane == 0) {
            red_s[warp] = bsum;
            red_m[warp] = bmax;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float s = 0.f, m = 0.f;
            for (int w = 0; w < kThreads / 32; ++w) {
                s += red_s[w];
                m = fmaxf(m, red_m[w]);
            }
            if constexpr (kMode == Mode::Mass) {
                atomicAdd(p.mass, double(s));
            } else {
                const int64_t cell = ((i0 - p.q0) >> p.level) * kTileEdge + ((j0 - p.k0) >> p.level);
                atomicAdd(p.sum + cell, s);
                atomic_max_nonneg(p.max + cell, m);
            }
        }
    }
}

template <typename T>
__global__ void row_kernel(BParams p, int64_t query, float* probs) {
    // One warp per key; 8 keys per CTA.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t j = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;
    if (j > query) return;
    const T* q = static_cast<const T*>(p.q) + query * p.q_stride + int64_t(p.head) * p.head_dim;
    const T* k = static_cast<const T*>(p.k) + j * p.k_stride + int64_t(p.kvh) * p.head_dim;
    float s = 0.f;
    for (int d = lane; d < p.head_dim; d += 32) s = fmaf(detail::to_f32(q[d]), detail::to_f32(k[d]), s);
    s = detail::warp_sum(s);
    if (lane == 0) {
        const bool vis = p.window <= 0 || query - j < p.window;
        probs[j] = vis ? expf(p.scale * s - p.lse[query * p.lse_stride + p.head]) : 0.f;
    }
}

BParams base_params(const TileInputs& in, int head) {
    if (!in.q || !in.k || !in.lse) fail("attention tiles: null Q, K or LSE");
    if (in.head_dim <= 0 || in.head_dim > 256) fail("attention tiles: head_dim ", in.head_dim, " (supported ≤ 256)");
    if (in.n_head <= 0 || in.n_kv_head <= 0 || in.n_head % in.n_kv_head)
        fail("attention tiles: n_head ", in.n_head, " is not a multiple of n_kv_head ", in.n_kv_head);
    if (head < 0 || head >= in.n_head) fail("head ", head, " is out of range (0..", in.n_head - 1, ")");
    BParams p{};
    p.q = in.q;
    p.k = in.k;
    p.lse = in.lse;
    p.q_stride = in.q_stride ? in.q_stride : int64_t(in.n_head) * in.head_dim;
    p.k_stride = in.k_stride ? in.k_stride : int64_t(in.n_kv_head) * in.head_dim;
    p.lse_stride = in.lse_stride ? in.lse_stride : in.n_head;
    p.n = in.positions;
    p.head = head;
    p.kvh = head / (in.n_head / in.n_kv_head);
    p.head_dim = in.head_dim;
    p.window = in.sliding_window;
    p.scale = in.scale;
    return p;
}

template <Mode kMode>
void launch_blocks(const TileInputs& in, const BParams& p, Stream stream) {
    const int64_t bx = (p.k1 - p.k0 + kB - 1) / kB, by = (p.q1 - p.q0 + kB - 1) / kB;
    if (bx <= 0 || by <= 0) return;
    if (bx > 0x7fffffff || by > 65535) fail("attention tiles: region of ", by * kB, " rows is too large for one launch");
    const dim3 grid{unsigned(bx), unsigned(by)};
    if (in.bf16)
        p_block_kernel<bf16, kMode><<<grid, kThreads, 0, stream>>>(p);
    else
        p_block_kernel<float, kMode><<<grid, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_tile(const TileInputs& in, int head, int level, int64_t tx, int64_t ty, float* sum, float* max,
                    Stream stream) {
    BParams p = base_params(in, head);
    if (level < 0 || level > 40) fail("tile level ", level, " is out of range");
    const int64_t span = int64_t(kTileEdge) << level;
    const int64_t across = (in.positions + span - 1) / span;
    if (tx < 0 || ty < 0 || tx >= across || ty >= across)
        fail("tile (", tx, ", ", ty, ") does not exist at level ", level, " (", across, "×", across, " tiles)");
    if (!sum || !max) fail("attention_tile: null output");
    CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(float) * kTileEdge * kTileEdge, stream));
    CUDA_CHECK(cudaMemsetAsync(max, 0, sizeof(float) * kTileEdge * kTileEdge, stream));
    p.level = level;
    p.q0 = ty * span;
    p.q1 = std::min(in.positions, p.q0 + span);
    p.k0 = tx * span;
    p.k1 = std::min(in.positions, p.k0 + span);
    p.sum = sum;
    p.max = max;
    if (p.k0 >= p.q1) return;  // entirely above the diagonal
    if (level == 0)
        launch_blocks<Mode::Direct>(in, p, stream);
    else if (level < 6)
        launch_blocks<Mode::SharedCells>(in, p, stream);
    else
        launch_blocks<Mode::OneCell>(in, p, stream);
}

void attention_row(const TileInputs& in, int head, int64_t query, float* probs, Stream stream) {
    BParams p = base_params(in, head);
    if (query < 0 || query >= in.positions) fail("query ", query, " is out of range (0..", in.positions - 1, ")");
    if (!probs) fail("attention_row: null output");
    const int64_t ctas = (query + 1 + 7) / 8;
    if (in.bf16)
        row_kernel<bf16><<<unsigned(ctas), 256, 0, stream>>>(p, query, probs);
    else
        row_kernel<float><<<unsigned(ctas), 256, 0, stream>>>(p, query, probs);
    CUDA_CHECK_LAUNCH();
}

double attention_mass(const TileInputs& in, int head, int64_t q0, int64_t q1, int64_t k0, int64_t k1, Stream stream) {
    BParams p = base_params(in, head);
    const int64_t n = in.positions;
    p.q0 = std::clamp<int64_t>(q0, 0, n);
    p.q1 = std::clamp<int64_t>(q1, 0, n);
    p.k0 = std::clamp<int64_t>(k0, 0, n);
    p.k1 = std::clamp<int64_t>(k1, 0, n);
    if (p.q1 <= p.q0 || p.k1 <= p.k0) return 0.0;
    double* d = nullptr;
    CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&d), sizeof(double), stream));
    double result = 0.0;
    try {
        CUDA_CHECK(cudaMemsetAsync(d, 0, sizeof(double), stream));
        p.mass = d;
        launch_blocks<Mode::Mass>(in, p, stream);
        CUDA_CHECK(cudaMemcpyAsync(&result, d, sizeof(double), cudaMemcpyDeviceToHost, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
    } catch (...) {
        (void)cudaFreeAsync(d, stream);
        throw;
    }
    CUDA_CHECK(cudaFreeAsync(d, stream));
    return result;
}

}  // namespace attn::gpu
