#include "kernels/add.cuh"
#include "kernels/common.cuh"

namespace attn::gpu {
namespace {

using namespace detail;
constexpr int kThreads = 256;

template <typename Ta, typename Tb, typename Ty>
__global__ void add_kernel(const Ta* a, const Tb* b, Ty* y, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = from_f32<Ty>(to_f32(a[i]) + to_f32(b[i]));
}

template <typename Ty, typename Tb>
__global__ void add_bias_kernel(Ty* y, const Tb* __restrict__ bias, int64_t n, int64_t cols) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = from_f32<Ty>(to_f32(y[i]) + to_f32(bias[i % cols]));
}

template <typename Ta, typename Tb, typename Ty>
void launch_add(const Ta* a, const Tb* b, Ty* y, int64_t n, cudaStream_t stream) {
    if (n < 0) fail("add: bad size ", n);
    if (n == 0) return;
    add_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(a, b, y, n);
    CUDA_CHECK_LAUNCH();
}

template <typename Ty, typename Tb>
void launch_bias(Ty* y, const Tb* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
    if (rows < 0 || cols <= 0) fail("add_bias: bad shape rows=", rows, " cols=", cols);
    const int64_t n = rows * cols;
    if (n == 0) return;
    add_bias_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(y, bias, n, cols);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void add(const float* a, const float* b, float* y, int64_t n, cudaStream_t stream) { launch_add(a, b, y, n, stream); }
void add(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t stream) { launch_add(a, b, y, n, stream); }
void add(const float* a, const bf16* b, float* y, int64_t n, cudaStream_t stream) { launch_add(a, b, y, n, stream); }

void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
    launch_bias(y, bias, rows, cols, stream);
}
void add_bias(bf16* y, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
    launch_bias(y, bias, rows, cols, stream);
}
void add_bias(float* y, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
    launch_bias(y, bias, rows, cols, stream);
}

}  // namespace attn::gpu
