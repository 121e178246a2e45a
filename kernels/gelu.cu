#include "kernels/common.cuh"
#include "kernels/gelu.cuh"

namespace attn::gpu {
namespace {

using namespace detail;

template <typename T>
__global__ void gelu_tanh_kernel(const T* x, T* y, int64_t n) {
    constexpr float c = 0.7978845608028654f;  // sqrt(2/pi)
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float v = to_f32(x[i]);
        y[i] = from_f32<T>(0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v))));
    }
}

template <typename T>
void launch(const T* x, T* y, int64_t n, cudaStream_t stream) {
    if (n < 0) fail("gelu_tanh: bad size ", n);
    if (n == 0) return;
    constexpr int kThreads = 256;
    gelu_tanh_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void gelu_tanh(const float* x, float* y, int64_t n, cudaStream_t stream) { launch(x, y, n, stream); }
void gelu_tanh(const bf16* x, bf16* y, int64_t n, cudaStream_t stream) { launch(x, y, n, stream); }

}  // namespace attn::gpu
