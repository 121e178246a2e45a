#include <climits>

#include "kernels/common.cuh"
#include "kernels/gemm.cuh"

namespace attn::gpu {

using detail::bf16;

CublasHandle::CublasHandle() { CUBLAS_CHECK(cublasCreate(&handle_)); }

CublasHandle::~CublasHandle() {
    if (handle_) (void)cublasDestroy(handle_);  // destructors don't throw
}

namespace {

// Row-major Y[rows, out] is column-major Yᶜ[out, rows] = Wᶜᵀ · Xᶜ with Wᶜ = column-major {in, out}
// (W row-major {out, in}) and Xᶜ = column-major {in, rows}: one GemmEx with op(A) = T, op(B) = N.
void gemm_ex(const CublasHandle& handle, const void* x, int64_t rows, int64_t in, const void* w, int64_t out, void* y,
             cudaDataType_t y_type, cudaStream_t stream, bool accumulate) {
    if (rows < 0 || in <= 0 || out <= 0) fail("linear: bad shape rows=", rows, " in=", in, " out=", out);
    if (rows > INT_MAX || in > INT_MAX || out > INT_MAX)
        fail("linear: shape rows=", rows, " in=", in, " out=", out, " exceeds cuBLAS's int dimensions");
    if (rows == 0) return;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasSetStream(handle.get(), stream));
    if (handle.workspace()) CUBLAS_CHECK(cublasSetWorkspace(handle.get(), handle.workspace(), handle.workspace_bytes()));
    CUBLAS_CHECK(cublasGemmEx(handle.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
                              static_cast<int>(in), &alpha, w, CUDA_R_16BF, static_cast<int>(in), x, CUDA_R_16BF,
                              static_cast<int>(in), &beta, y, y_type, static_cast<int>(out), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void linear(const CublasHandle& handle, const bf16* x, int64_t rows, int64_t in, const bf16* w, int64_t out, bf16* y,
            cudaStream_t stream, bool accumulate) {
    gemm_ex(handle, x, rows, in, w, out, y, CUDA_R_16BF, stream, accumulate);
}
void linear(const CublasHandle& handle, const bf16* x, int64_t rows, int64_t in, const bf16* w, int64_t out, float* y,
            cudaStream_t stream, bool accumulate) {
    gemm_ex(handle, x, rows, in, w, out, y, CUDA_R_32F, stream, accumulate);
}

}  // namespace attn::gpu
