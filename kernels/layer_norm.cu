#include "kernels/common.cuh"
#include "kernels/layer_norm.cuh"

namespace attn::gpu {
namespace {

using namespace detail;

// One block per row; mean first, then the variance about it (as the CPU twin), both in fp32.
template <typename Tx, typename Tw, typename Ty>
__global__ void layer_norm_kernel(const Tx* x, const Tw* __restrict__ w, const Tw* __restrict__ b, Ty* y,
                                  int64_t d, float eps) {
    const Tx* xr = x + int64_t(blockIdx.x) * d;
    Ty* yr = y + int64_t(blockIdx.x) * d;
    float sum = 0.f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sum += to_f32(xr[i]);
    const float mean = block_sum(sum) / static_cast<float>(d);
    float squares = 0.f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float c = to_f32(xr[i]) - mean;
        squares += c * c;
    }
    const float variance = block_sum(squares) / static_cast<float>(d);
    const float inv = 1.0f / sqrtf(variance + eps);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        yr[i] = from_f32<Ty>((to_f32(xr[i]) - mean) * inv * to_f32(w[i]) + to_f32(b[i]));
}

template <typename Tx, typename Tw, typename Ty>
void launch(const Tx* x, const Tw* w, const Tw* b, Ty* y, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
    check_rows("layer_norm", rows, d);
    if (rows == 0) return;
    const int threads = d >= 1024 ? 256 : d >= 256 ? 128 : 64;
    layer_norm_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, w, b, y, d, eps);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t d, float eps,
                cudaStream_t stream) {
    launch(x, w, b, y, rows, d, eps, stream);
}
void layer_norm(const bf16* x, const bf16* w, const bf16* b, bf16* y, int64_t rows, int64_t d, float eps,
                cudaStream_t stream) {
    launch(x, w, b, y, rows, d, eps, stream);
}
void layer_norm(const float* x, const bf16* w, const bf16* b, bf16* y, int64_t rows, int64_t d, float eps,
                cudaStream_t stream) {
    launch(x, w, b, y, rows, d, eps, stream);
}

}  // namespace attn::gpu
