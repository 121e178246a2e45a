#include "kernels/common.cuh"
#include "kernels/rope.cuh"

namespace attn::gpu {
namespace {

using namespace detail;

// One thread per (row, head, frequency i): rotates one pair.
template <typename T>
__global__ void rope_kernel(T* x, int64_t pairs, int heads, int head_dim, int64_t pos0,
                            const float* __restrict__ inv_freq, bool interleaved) {
    const int half = head_dim / 2;
    for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
        const int i = static_cast<int>(p % half);
        const int64_t row_head = p / half;
        const int64_t r = row_head / heads;
        const float angle = static_cast<float>(pos0 + r) * inv_freq[i];  // fp32 product, as the CPU twin
        float s, c;
        sincosf(angle, &s, &c);
        T* v = x + row_head * head_dim;
        const int a = interleaved ? 2 * i : i;
        const int b = interleaved ? 2 * i + 1 : i + half;
        const float x0 = to_f32(v[a]), x1 = to_f32(v[b]);
        v[a] = from_f32<T>(x0 * c - x1 * s);
        v[b] = from_f32<T>(x1 * c + x0 * s);
    }
}

template <typename T>
void launch(T* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq, RopeLayout layout,
            cudaStream_t stream) {
    if (rows < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || pos0 < 0)
        fail("rope: bad shape rows=", rows, " heads=", heads, " head_dim=", head_dim, " pos0=", pos0);
    const int64_t pairs = rows * heads * (head_dim / 2);
    if (pairs == 0) return;
    constexpr int kThreads = 256;
    rope_kernel<<<elementwise_blocks(pairs, kThreads), kThreads, 0, stream>>>(x, pairs, heads, head_dim, pos0, inv_freq,
                                                                               layout == RopeLayout::Interleaved);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope(float* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq, RopeLayout layout,
          cudaStream_t stream) {
    launch(x, rows, heads, head_dim, pos0, inv_freq, layout, stream);
}
void rope(bf16* x, int64_t rows, int heads, int head_dim, int64_t pos0, const float* inv_freq, RopeLayout layout,
          cudaStream_t stream) {
    launch(x, rows, heads, head_dim, pos0, inv_freq, layout, stream);
}

}  // namespace attn::gpu
