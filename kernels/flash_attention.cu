// Fused causal prefill attention with LSE and pooled-overview emission (DESIGN.md §3).
//
// Tiling (per CTA: 4 warps = 128 threads, persistent grid over (query tile, head) work items,
// heaviest query tiles first):
//   BM = 64 query rows per CTA (16 per warp), aligned to ABSOLUTE positions, so a CTA's rows all
//   lie in one 128-token overview query block; BN = 64 keys per step for head_dim 64, 32 for 128.
//   Key tiles are aligned to absolute positions too, so each lies inside one overview key block.
//   S = Q·Kᵀ and O += P·V run on tensor cores through WMMA bf16 16×16×16 with fp32 accumulate.
//   The O accumulator lives in shared memory (fp32) so the online-softmax rescale is a plain
//   per-row multiply (the WMMA accumulator layout is opaque); every warp owns its 16 rows of S,
//   P and O, so only K/V loads need block barriers.
//   Softmax runs in the log2 domain (exp2f, scale·log2e folded in); LSE is converted back to
//   natural log on output. Two lanes own one row (each half of the columns).
// Shared memory (bytes, padded rows: +8 bf16 / +4 f32):
//   head_dim 64,  BN 64: Q 9216 + K 9216 + V 9216 + S 17408 + P 9216 + O 17408 + 256 ≈ 72 KB
//   head_dim 128, BN 32: Q 17408 + K 8704 + V 8704 + S 9216 + P 5120 + O 33792 + 256 ≈ 83 KB
//   (opt-in above 48 KB; fits the 99 KB of sm_86/89 and the 163/227 KB of sm_80/90).
// Emission (the single-pass method of §3): each row keeps, for the overview key block it is in,
//   a partial sum of exp2(s − m) relative to its running max m (rescaled with the same alpha as
//   l and O) and the block's max score. When the row leaves that key block it stores
//   (m + log2(partial), max score) to a per-CTA global scratch slice [key block][64 rows]. When the
//   query tile is done (LSE known), the CTA reduces the slice over its rows:
//   Σ_r exp2(a_r − LSE_r) and max_r exp2(smax_r − LSE_r), one atomicAdd / atomicMax per
//   (tile, key block) into the packed overview. Scratch traffic is 8 bytes per row per 128 keys
//   (≈1.5% of the K/V bytes at head_dim 64); with emission off the template drops all of it.
#include "kernels/flash_attention.cuh"

#include <mma.h>

#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace attn::gpu {

namespace {

using detail::bf16;
using namespace nvcuda;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBM = 64;          // query rows per CTA
constexpr int kOvBlock = 128;    // overview block edge (CaptureStore::kOverviewBlock)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D>
struct Cfg {
    static constexpr int BN = D == 64 ? 64 : 32;
    static constexpr int ldQ = D + 8, ldK = D + 8, ldV = D + 8;  // bf16 elements
    static constexpr int ldS = BN + 4;                            // f32
    static constexpr int ldP = BN + 8;                            // bf16
    static constexpr int ldO = D + 4;                             // f32
    static constexpr size_t q_off = 0;
    static constexpr size_t k_off = q_off + size_t(kBM) * ldQ * 2;
    static constexpr size_t v_off = k_off + size_t(BN) * ldK * 2;
    static constexpr size_t s_off = v_off + size_t(BN) * ldV * 2;
    static constexpr size_t p_off = s_off + size_t(kBM) * ldS * 4;
    static constexpr size_t o_off = p_off + size_t(kBM) * ldP * 2;
    static constexpr size_t lse_off = o_off + size_t(kBM) * ldO * 4;
    static constexpr size_t bytes = lse_off + kBM * 4;
    static_assert(k_off % 128 == 0 && v_off % 128 == 0 && s_off % 128 == 0 && p_off % 128 == 0 &&
                      o_off % 128 == 0 && lse_off % 128 == 0,
                  "shared sub-buffers must stay 32-byte aligned for WMMA");
    static_assert(kOvBlock % BN == 0, "key tiles must nest in overview blocks");
};

struct KParams {
    const bf16* q;
    const bf16* k;
    const bf16* v;
    void* o;
    float* lse;
    float* ov_sum;
    float* ov_max;
    float2* scratch;  // per CTA: [scratch_blocks][kBM]
    int64_t ov_head_stride;
    int64_t T, pos0, T_kv;
    int64_t q_stride, kv_stride, o_stride, lse_stride;
    int n_head, group;
    int n_qtiles;        // absolute 64-row tiles covering [pos0, pos0 + T)
    int64_t first_qtile; // pos0 / kBM
    int scratch_blocks;
    float scale_log2;
    int window;
};

// Copies `rows` × D bf16 rows (global row stride `stride`) into shared rows of `ld`, zeros for
// rows at or past `valid`. 16-byte vectors, coalesced across the block.
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, int ld, const bf16* src, int64_t stride, int rows, int valid) {
    constexpr int kVec = D / 8;
    for (int e = threadIdx.x; e < rows * kVec; e += kThreads) {
        const int r = e / kVec, c = (e % kVec) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (r < valid) val = *reinterpret_cast<const uint4*>(src + int64_t(r) * stride + c);
        *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
    }
}

template <int D, bool kEmit, typename OutT>
__global__ void __launch_bounds__(kThreads) flash_fwd_kernel(KParams p) {
    using C = Cfg<D>;
    constexpr int BN = C::BN;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16* Qs = reinterpret_cast<bf16*>(smem + C::q_off);
    bf16* Ks = reinterpret_cast<bf16*>(smem + C::k_off);
    bf16* Vs = reinterpret_cast<bf16*>(smem + C::v_off);
    float* Ss = reinterpret_cast<float*>(smem + C::s_off);
    bf16* Ps = reinterpret_cast<bf16*>(smem + C::p_off);
    float* Os = reinterpret_cast<float*>(smem + C::o_off);
    float* lse2_s = reinterpret_cast<float*>(smem + C::lse_off);

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r_w = lane >> 1;           // row within the warp's 16
    const int half = lane & 1;           // which half of the columns
    const int row = warp * 16 + r_w;     // row within the CTA tile
    float* S_w = Ss + warp * 16 * C::ldS;
    bf16* P_w = Ps + warp * 16 * C::ldP;
    float* O_w = Os + warp * 16 * C::ldO;
    const int64_t total_items = int64_t(p.n_qtiles) * p.n_head;

    for (int64_t item = blockIdx.x; item < total_items; item += gridDim.x) {
        // Heaviest (latest) query tiles first.
        const int qt_rel = p.n_qtiles - 1 - int(item / p.n_head);
        const int h = int(item % p.n_head);
        const int kvh = h / p.group;
        const int64_t q0 = (p.first_qtile + qt_rel) * kBM;  // absolute position of tile row 0
        const int64_t q_first = q0 > p.pos0 ? q0 : p.pos0;
        const int64_t q_last = (q0 + kBM < p.pos0 + p.T ? q0 + kBM : p.pos0 + p.T) - 1;
        const int64_t key_lo = p.window > 0 && q_first - p.window + 1 > 0 ? q_first - p.window + 1 : 0;
        const int64_t key_hi = q_last < p.T_kv - 1 ? q_last : p.T_kv - 1;
        const int64_t kt_lo = key_lo / BN, kt_hi = key_hi / BN;
        const int64_t kb_lo = (kt_lo * BN) / kOvBlock;

        const int64_t i = q0 + row;  // this lane's absolute query position
        const bool row_valid = i >= p.pos0 && i < p.pos0 + p.T;

        __syncthreads();  // previous item fully done with shared memory
        // Q tile: rows [q_first, q_last] placed at their offset inside the aligned tile.
        {
            const int off = int(q_first - q0), n = int(q_last - q_first + 1);
            constexpr int kVec = D / 8;
            for (int e = threadIdx.x; e < kBM * kVec; e += kThreads) {
                const int r = e / kVec, c = (e % kVec) * 8;
                uint4 val = make_uint4(0, 0, 0, 0);
                if (r >= off && r < off + n)
                    val = *reinterpret_cast<const uint4*>(p.q + (q0 + r - p.pos0) * p.q_stride + int64_t(h) * D + c);
                *reinterpret_cast<uint4*>(Qs + r * C::ldQ + c) = val;
            }
        }
        for (int e = lane; e < 16 * D; e += 32) O_w[(e / D) * C::ldO + e % D] = 0.f;

        float m = -INFINITY, l = 0.f;
        float ov_part = 0.f, ov_smax = -INFINITY;
        float2* scratch = kEmit ? p.scratch + size_t(blockIdx.x) * p.scratch_blocks * kBM : nullptr;

        for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
            const int64_t k0 = kt * BN;
            const int valid_keys = p.T_kv - k0 < BN ? int(p.T_kv - k0) : BN;
            __syncthreads();  // everyone done with the previous K/V
            load_rows<D>(Ks, C::ldK, p.k + k0 * p.kv_stride + int64_t(kvh) * D, p.kv_stride, BN, valid_keys);
            load_rows<D>(Vs, C::ldV, p.v + k0 * p.kv_stride + int64_t(kvh) * D, p.kv_stride, BN, valid_keys);
            __syncthreads();

            // S_w = Q_w · Kᵀ
#pragma unroll
            for (int nt = 0; nt < BN / 16; ++nt) {
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
                wmma::fill_fragment(acc, 0.f);
#pragma unroll
                for (int kk = 0; kk < D / 16; ++kk) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
                    wmma::load_matrix_sync(a, Qs + warp * 16 * C::ldQ + kk * 16, C::ldQ);
                    wmma::load_matrix_sync(b, Ks + nt * 16 * C::ldK + kk * 16, C::ldK);
                    wmma::mma_sync(acc, a, b, acc);
                }
                wmma::store_matrix_sync(S_w + nt * 16, acc, C::ldS, wmma::mem_row_major);
            }
            __syncwarp();

            // Online softmax on this lane's half row.
            float* srow = S_w + r_w * C::ldS;
            bf16* prow = P_w + r_w * C::ldP;
            constexpr int kHalf = BN / 2;
            float smax = -INFINITY;
#pragma unroll 8
            for (int c = half * kHalf; c < (half + 1) * kHalf; ++c) {
                const int64_t j = k0 + c;
                const bool vis = row_valid && j < p.T_kv && j <= i && (p.window <= 0 || i - j < p.window);
                const float s = vis ? srow[c] * p.scale_log2 : -INFINITY;
                srow[c] = s;
                smax = fmaxf(smax, s);
            }
            smax = fmaxf(smax, __shfl_xor_sync(0xffffffffu, smax, 1));
            const float m_new = fmaxf(m, smax);
            const float alpha = m == -INFINITY ? 0.f : exp2f(m - m_new);
            float rsum = 0.f;
#pragma unroll 8
            for (int c = half * kHalf; c < (half + 1) * kHalf; ++c) {
                const float s = srow[c];
                const float e = s == -INFINITY ? 0.f : exp2f(s - m_new);
                prow[c] = __float2bfloat16_rn(e);
                rsum += e;
            }
            rsum += __shfl_xor_sync(0xffffffffu, rsum, 1);
            l = l * alpha + rsum;
            m = m_new;
            if constexpr (kEmit) {
                ov_part = ov_part * alpha + rsum;
                ov_smax = fmaxf(ov_smax, smax);
            }
            // Rescale this row of O (skipped when no row of the warp raised its max).
            if (__any_sync(0xffffffffu, alpha != 1.f)) {
                float* orow = O_w + r_w * C::ldO;
                for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) orow[d] *= alpha;
            }
            __syncwarp();

            // O_w += P_w · V
#pragma unroll
            for (int nt = 0; nt < D / 16; ++nt) {
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
                wmma::load_matrix_sync(acc, O_w + nt * 16, C::ldO, wmma::mem_row_major);
#pragma unroll
                for (int kk = 0; kk < BN / 16; ++kk) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
                    wmma::load_matrix_sync(a, P_w + kk * 16, C::ldP);
                    wmma::load_matrix_sync(b, Vs + kk * 16 * C::ldV + nt * 16, C::ldV);
                    wmma::mma_sync(acc, a, b, acc);
                }
                wmma::store_matrix_sync(O_w + nt * 16, acc, C::ldO, wmma::mem_row_major);
            }
            __syncwarp();

            if constexpr (kEmit) {
                // Leaving an overview key block (or the last tile): park this row's partial.
                if ((k0 + BN) % kOvBlock == 0 || kt == kt_hi) {
                    if (half == 0) {
                        const int64_t kb = k0 / kOvBlock;
                        const float a = ov_part > 0.f ? m + log2f(ov_part) : -INFINITY;
                        scratch[(kb - kb_lo) * kBM + row] = make_float2(a, ov_smax);
                    }
                    ov_part = 0.f;
                    ov_smax = -INFINITY;
                }
            }
        }

        // Finalise the row: O /= l, LSE.
        const float lse2 = row_valid ? m + log2f(l) : -INFINITY;
        if (half == 0) lse2_s[row] = lse2;
        if (row_valid) {
            const float inv = 1.f / l;
            const float* orow = O_w + r_w * C::ldO;
            const int64_t r_g = i - p.pos0;
            if (p.lse && half == 0) p.lse[r_g * p.lse_stride + h] = lse2 * kLn2;
            OutT* out = static_cast<OutT*>(p.o) + r_g * p.o_stride + int64_t(h) * D;
            for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d)
                out[d] = detail::from_f32<OutT>(orow[d] * inv);
        }

        if constexpr (kEmit) {
            __syncthreads();  // scratch (global) and lse2_s visible to the whole CTA
            const int64_t qb = q0 / kOvBlock;
            const int64_t kb_hi = key_hi / kOvBlock;
            float* sums = p.ov_sum + int64_t(h) * p.ov_head_stride + qb * (qb + 1) / 2;
            float* maxes = p.ov_max + int64_t(h) * p.ov_head_stride + qb * (qb + 1) / 2;
            for (int64_t kb = kb_lo + warp; kb <= kb_hi; kb += kWarps) {
                float s = 0.f, mx = 0.f;
#pragma unroll
                for (int rr = 0; rr < 2; ++rr) {
                    const int r = lane + rr * 32;
                    const float L = lse2_s[r];
                    if (L != -INFINITY) {
                        const float2 v = scratch[(kb - kb_lo) * kBM + r];
                        s += v.x == -INFINITY ? 0.f : exp2f(v.x - L);
                        mx = fmaxf(mx, v.y == -INFINITY ? 0.f : exp2f(v.y - L));
                    }
                }
                s = detail::warp_sum(s);
                for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
                if (lane == 0) {
                    atomicAdd(sums + kb, s);
                    atomicMax(reinterpret_cast<int*>(maxes + kb), __float_as_int(mx));  // P ≥ 0
                }
            }
        }
    }
}

template <int D, bool kEmit, typename OutT>
void launch(const KParams& kp, int ctas, Stream stream) {
    auto kernel = flash_fwd_kernel<D, kEmit, OutT>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Cfg<D>::bytes)));
    kernel<<<ctas, kThreads, Cfg<D>::bytes, stream>>>(kp);
    CUDA_CHECK_LAUNCH();
}

template <int D, bool kEmit, typename OutT>
int resident_ctas() {
    auto kernel = flash_fwd_kernel<D, kEmit, OutT>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Cfg<D>::bytes)));
    int per_sm = 0, dev = 0, sms = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, Cfg<D>::bytes));
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return std::max(1, per_sm) * sms;
}

struct Plan {
    int64_t n_qtiles = 0, items = 0;
    int ctas = 0;
    int scratch_blocks = 0;
    size_t workspace = 0;
};

void validate(const FlashAttentionParams& a) {
    if (a.head_dim != 64 && a.head_dim != 128) fail("flash_attention: head_dim ", a.head_dim, " (supported: 64, 128)");
    if (a.n_head <= 0 || a.n_kv_head <= 0 || a.n_head % a.n_kv_head != 0)
        fail("flash_attention: n_head ", a.n_head, " is not a multiple of n_kv_head ", a.n_kv_head);
    if (a.T < 0 || a.pos0 < 0 || a.T_kv < a.pos0 + a.T)
        fail("flash_attention: need T_kv >= pos0 + T (T=", a.T, " pos0=", a.pos0, " T_kv=", a.T_kv, ")");
    if (a.T > 0 && (!a.q || !a.k || !a.v || !a.o)) fail("flash_attention: null input or output pointer");
    if (a.emit_overview && (!a.overview_sum || !a.overview_max))
        fail("flash_attention: emission on but no overview buffers");
    if (a.emit_overview && a.T > 0) {
        const int64_t blocks = (a.pos0 + a.T + kOvBlock - 1) / kOvBlock;
        if (a.overview_head_stride < blocks * (blocks + 1) / 2)
            fail("flash_attention: overview_head_stride ", a.overview_head_stride, " < ", blocks * (blocks + 1) / 2,
                 " entries needed for ", a.pos0 + a.T, " positions");
    }
    const int64_t qs = a.q_stride ? a.q_stride : int64_t(a.n_head) * a.head_dim;
    const int64_t ks = a.kv_stride ? a.kv_stride : int64_t(a.n_kv_head) * a.head_dim;
    if (qs % 8 || ks % 8 || reinterpret_cast<uintptr_t>(a.q) % 16 || reinterpret_cast<uintptr_t>(a.k) % 16 ||
        reinterpret_cast<uintptr_t>(a.v) % 16)
        fail("flash_attention: q/k/v must be 16-byte aligned with strides a multiple of 8 elements");
}

template <int D>
Plan plan_for(const FlashAttentionParams& a) {
    Plan pl;
    if (a.T == 0) return pl;
    const int64_t first = a.pos0 / kBM, last = (a.pos0 + a.T - 1) / kBM;
    pl.n_qtiles = last - first + 1;
    pl.items = pl.n_qtiles * a.n_head;
    const int resident = a.emit_overview ? resident_ctas<D, true, bf16>() : resident_ctas<D, false, bf16>();
    pl.ctas = int(std::min<int64_t>(pl.items, resident));
    if (a.emit_overview) {
        // Key blocks one query tile can touch.
        const int64_t all = (a.pos0 + a.T - 1) / kOvBlock + 1;
        const int64_t windowed = a.sliding_window > 0 ? (a.sliding_window + kBM) / kOvBlock + 2 : all;
        pl.scratch_blocks = int(std::min(all, windowed));
        pl.workspace = size_t(pl.ctas) * pl.scratch_blocks * kBM * sizeof(float2);
    }
    return pl;
}

Plan make_plan(const FlashAttentionParams& a) {
    validate(a);
    return a.head_dim == 64 ? plan_for<64>(a) : plan_for<128>(a);
}

}  // namespace

size_t flash_attention_workspace_bytes(const FlashAttentionParams& params) { return make_plan(params).workspace; }

void flash_attention_forward(const FlashAttentionParams& a, void* workspace, size_t workspace_bytes, Stream stream) {
    const Plan pl = make_plan(a);
    if (pl.items == 0) return;
    if (pl.workspace > workspace_bytes)
        fail("flash_attention: workspace of ", workspace_bytes, " bytes, need ", pl.workspace);
    KParams kp{};
    kp.q = static_cast<const bf16*>(a.q);
    kp.k = static_cast<const bf16*>(a.k);
    kp.v = static_cast<const bf16*>(a.v);
    kp.o = a.o;
    kp.lse = a.lse;
    kp.ov_sum = a.overview_sum;
    kp.ov_max = a.overview_max;
    kp.scratch = static_cast<float2*>(workspace);
    kp.ov_head_stride = a.overview_head_stride;
    kp.T = a.T;
    kp.pos0 = a.pos0;
    kp.T_kv = a.T_kv;
    kp.q_stride = a.q_stride ? a.q_stride : int64_t(a.n_head) * a.head_dim;
    kp.kv_stride = a.kv_stride ? a.kv_stride : int64_t(a.n_kv_head) * a.head_dim;
    kp.o_stride = a.o_stride ? a.o_stride : int64_t(a.n_head) * a.head_dim;
    kp.lse_stride = a.lse_stride ? a.lse_stride : a.n_head;
    kp.n_head = a.n_head;
    kp.group = a.n_head / a.n_kv_head;
    kp.n_qtiles = int(pl.n_qtiles);
    kp.first_qtile = a.pos0 / kBM;
    kp.scratch_blocks = pl.scratch_blocks;
    kp.scale_log2 = a.scale * kLog2e;
    kp.window = a.sliding_window;
    const bool f32 = a.out_type == OutType::F32;
#define ATTN_FA_DISPATCH(D)                                                     \
    if (a.emit_overview) {                                                      \
        f32 ? launch<D, true, float>(kp, pl.ctas, stream)                       \
            : launch<D, true, bf16>(kp, pl.ctas, stream);                       \
    } else {                                                                    \
        f32 ? launch<D, false, float>(kp, pl.ctas, stream)                      \
            : launch<D, false, bf16>(kp, pl.ctas, stream);                      \
    }
    if (a.head_dim == 64) {
        ATTN_FA_DISPATCH(64)
    } else {
        ATTN_FA_DISPATCH(128)
    }
#undef ATTN_FA_DISPATCH
}

bool attention_device_available(std::string* why_not) { return cuda_device_available(why_not); }

namespace dev {
void* alloc(size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}
void free(void* p) {
    if (p) CUDA_CHECK(cudaFree(p));
}
void copy_to_device(void* dst, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void fill_nan(void* p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0xFF, bytes)); }
void zero(void* p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0, bytes)); }
void synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }
}  // namespace dev

}  // namespace attn::gpu
