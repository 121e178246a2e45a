#include "kernels/common.cuh"
#include "kernels/convert.cuh"

namespace attn::gpu {

namespace {

using detail::bf16;

__global__ void f32_to_bf16_kernel(const float* x, bf16* y, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void bf16_to_f32_kernel(const bf16* x, float* y, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

}  // namespace

void f32_to_bf16(const float* x, bf16* y, int64_t n, cudaStream_t stream) {
    if (n < 0) fail("f32_to_bf16: negative length ", n);
    if (n == 0) return;
    f32_to_bf16_kernel<<<detail::elementwise_blocks(n, 256), 256, 0, stream>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

void bf16_to_f32(const bf16* x, float* y, int64_t n, cudaStream_t stream) {
    if (n < 0) fail("bf16_to_f32: negative length ", n);
    if (n == 0) return;
    bf16_to_f32_kernel<<<detail::elementwise_blocks(n, 256), 256, 0, stream>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

}  // namespace attn::gpu
