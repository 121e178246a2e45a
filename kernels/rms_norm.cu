#include "kernels/common.cuh"
#include "kernels/rms_norm.cuh"

namespace attn::gpu {
namespace {

using namespace detail;

// One block per row.
template <typename Tx, typename Tw, typename Ty>
__global__ void rms_norm_kernel(const Tx* x, const Tw* __restrict__ w, Ty* y, int64_t d, float eps) {
    const Tx* xr = x + int64_t(blockIdx.x) * d;
    Ty* yr = y + int64_t(blockIdx.x) * d;
    float sum_squares = 0.f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = to_f32(xr[i]);
        sum_squares += v * v;
    }
    sum_squares = block_sum(sum_squares);
    const float inv = 1.0f / sqrtf(sum_squares / static_cast<float>(d) + eps);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = from_f32<Ty>(to_f32(w[i]) * (to_f32(xr[i]) * inv));
}

template <typename Tx, typename Tw, typename Ty>
void launch(const Tx* x, const Tw* w, Ty* y, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
    check_rows("rms_norm", rows, d);
    if (rows == 0) return;
    const int threads = d >= 1024 ? 256 : d >= 256 ? 128 : 64;
    rms_norm_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, w, y, d, eps);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
    launch(x, w, y, rows, d, eps, stream);
}
void rms_norm(const bf16* x, const bf16* w, bf16* y, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
    launch(x, w, y, rows, d, eps, stream);
}
void rms_norm(const float* x, const bf16* w, bf16* y, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
    launch(x, w, y, rows, d, eps, stream);
}

}  // namespace attn::gpu
