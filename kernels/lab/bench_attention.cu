// Kernel lab (not built by default): times the fused prefill kernel with emission on and off,
// and the decode kernel, with CUDA events after warm-up (median of repeats), on random bf16 data.
// Build and run on a GPU machine from the repository root:
//   nvcc -std=c++20 -O3 -arch=sm_90 -I. kernels/lab/bench_attention.cu kernels/flash_attention.cu \
//        kernels/decode_attention.cu kernels/cuda_check.cu -lcublas -o /tmp/bench_attention
//   /tmp/bench_attention            # prints a table: T, head_dim, emission, ms, TFLOP/s, overhead
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/decode_attention.cuh"
#include "kernels/flash_attention.cuh"

using namespace attn::gpu;

namespace {

__global__ void fill_random(__nv_bfloat16* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t x = uint32_t(i) * 2654435761u ^ seed;
        x ^= x >> 13;
        x *= 0x5bd1e995u;
        x ^= x >> 15;
        p[i] = __float2bfloat16(float(x & 0xFFFF) / 32768.f - 1.f);
    }
}

template <typename F>
float median_ms(F&& f, int reps = 20) {
    for (int w = 0; w < 3; ++w) f();
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < reps; ++r) {
        CUDA_CHECK(cudaEventRecord(a));
        f();
        CUDA_CHECK(cudaEventRecord(b));
        CUDA_CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

}  // namespace

int main() {
    std::string why;
    if (!cuda_device_available(&why)) {
        std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
        return 1;
    }
    std::printf("%8s %4s %5s %6s %10s %9s %9s\n", "T", "d", "heads", "emit", "ms", "TFLOP/s", "on/off");
    for (int d : {64, 128})
        for (int64_t T : {4096, 16384, 50000}) {
            const int nh = d == 64 ? 16 : 16, nkv = nh;  // 16 heads, MHA
            const size_t qn = size_t(T) * nh * d, kn = size_t(T) * nkv * d;
            __nv_bfloat16 *q, *k, *v, *o;
            float *lse, *ovs, *ovm;
            const int64_t blocks = (T + 127) / 128, tri = blocks * (blocks + 1) / 2;
            CUDA_CHECK(cudaMalloc(&q, qn * 2));
            CUDA_CHECK(cudaMalloc(&k, kn * 2));
            CUDA_CHECK(cudaMalloc(&v, kn * 2));
            CUDA_CHECK(cudaMalloc(&o, qn * 2));
            CUDA_CHECK(cudaMalloc(&lse, size_t(T) * nh * 4));
            CUDA_CHECK(cudaMalloc(&ovs, size_t(tri) * nh * 4));
            CUDA_CHECK(cudaMalloc(&ovm, size_t(tri) * nh * 4));
            fill_random<<<1024, 256>>>(q, qn, 1);
            fill_random<<<1024, 256>>>(k, kn, 2);
            fill_random<<<1024, 256>>>(v, kn, 3);
            CUDA_CHECK_LAUNCH();
            FlashAttentionParams a;
            a.q = q, a.k = k, a.v = v, a.o = o, a.lse = lse;
            a.overview_sum = ovs, a.overview_max = ovm, a.overview_head_stride = tri;
            a.T = T, a.pos0 = 0, a.T_kv = T, a.n_head = nh, a.n_kv_head = nkv, a.head_dim = d;
            a.scale = 1.f / std::sqrt(float(d));
            const double flops = 4.0 * double(T) * double(T) / 2 * d * nh;  // causal: half of QKᵀ and PV
            float off_ms = 0;
            for (bool emit : {false, true}) {
                a.emit_overview = emit;
                const size_t ws = flash_attention_workspace_bytes(a);
                void* work = nullptr;
                if (ws) CUDA_CHECK(cudaMalloc(&work, ws));
                const float ms = median_ms([&] {
                    if (emit) {
                        CUDA_CHECK(cudaMemsetAsync(ovs, 0, size_t(tri) * nh * 4));
                        CUDA_CHECK(cudaMemsetAsync(ovm, 0, size_t(tri) * nh * 4));
                    }
                    flash_attention_forward(a, work, ws);
                });
                if (!emit) off_ms = ms;
                std::printf("%8lld %4d %5d %6s %10.3f %9.1f %9.3f\n", (long long)T, d, nh, emit ? "on" : "off", ms,
                            flops / ms * 1e-9, ms / off_ms);
                if (work) CUDA_CHECK(cudaFree(work));
            }
            for (void* p : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)lse, (void*)ovs, (void*)ovm}) CUDA_CHECK(cudaFree(p));
        }
    // Decode: one token over an L-key cache (SmolLM2-like heads: 9 q, 3 kv, d 64).
    for (int64_t L : {2048, 16384, 50000}) {
        const int nh = 9, nkv = 3, d = 64;
        __nv_bfloat16 *q, *k, *v, *o;
        float* lse;
        CUDA_CHECK(cudaMalloc(&q, size_t(nh) * d * 2));
        CUDA_CHECK(cudaMalloc(&k, size_t(L) * nkv * d * 2));
        CUDA_CHECK(cudaMalloc(&v, size_t(L) * nkv * d * 2));
        CUDA_CHECK(cudaMalloc(&o, size_t(nh) * d * 2));
        CUDA_CHECK(cudaMalloc(&lse, size_t(nh) * 4));
        fill_random<<<64, 256>>>(q, size_t(nh) * d, 4);
        fill_random<<<1024, 256>>>(k, size_t(L) * nkv * d, 5);
        fill_random<<<1024, 256>>>(v, size_t(L) * nkv * d, 6);
        DecodeAttentionParams a;
        a.q = q, a.k = k, a.v = v, a.o = o, a.lse = lse, a.L = L;
        a.n_head = nh, a.n_kv_head = nkv, a.head_dim = d, a.scale = 0.125f;
        const size_t ws = decode_attention_workspace_bytes(a);
        void* work = nullptr;
        CUDA_CHECK(cudaMalloc(&work, ws));
        const float ms = median_ms([&] { decode_attention(a, work, ws); }, 50);
        const double bytes = double(L) * nkv * d * 2 * 2;
        std::printf("decode L=%lld splits=%d: %.4f ms, %.0f GB/s of K+V\n", (long long)L, decode_attention_splits(a), ms,
                    bytes / ms * 1e-6);
        for (void* p : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)lse, work}) CUDA_CHECK(cudaFree(p));
    }
    return 0;
}
