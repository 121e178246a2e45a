#include "kernels/common.cuh"
#include "kernels/swiglu.cuh"

namespace attn::gpu {
namespace {

using namespace detail;

template <typename T>
__global__ void swiglu_kernel(const T* gate, const T* up, T* out, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = to_f32(gate[i]);
        out[i] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(up[i]));
    }
}

template <typename T>
void launch(const T* gate, const T* up, T* out, int64_t n, cudaStream_t stream) {
    if (n < 0) fail("swiglu: bad size ", n);
    if (n == 0) return;
    constexpr int kThreads = 256;
    swiglu_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(gate, up, out, n);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
    launch(gate, up, out, n, stream);
}
void swiglu(const bf16* gate, const bf16* up, bf16* out, int64_t n, cudaStream_t stream) {
    launch(gate, up, out, n, stream);
}

}  // namespace attn::gpu
