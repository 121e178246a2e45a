#pragma once
// GEMMs through cuBLAS: Y[rows, out] = X[rows, in] · Wᵀ (+ Y when accumulate), row-major X and Y,
// W row-major {out, in} — the conventions of the cpu backend's linear (attn::ops::linear, its
// CPU twin). bf16 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F), bf16 or fp32 output. Biases
// are a separate add_bias (kernels/add.cuh).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace attn::gpu {

// Owns a cuBLAS handle (one per stream/thread that issues GEMMs).
class CublasHandle {
public:
    CublasHandle();
    ~CublasHandle();
    CublasHandle(const CublasHandle&) = delete;
    CublasHandle& operator=(const CublasHandle&) = delete;
    cublasHandle_t get() const { return handle_; }
    // A caller-owned cuBLAS workspace (device memory that outlives the handle's use). Needed for
    // CUDA graph capture, where cuBLAS must not allocate; cublasSetStream resets the workspace to
    // the default pool, so linear() re-applies it after every cublasSetStream.
    void set_workspace(void* workspace, size_t bytes) {
        workspace_ = workspace;
        workspace_bytes_ = bytes;
    }
    void* workspace() const { return workspace_; }
    size_t workspace_bytes() const { return workspace_bytes_; }

private:
    cublasHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    size_t workspace_bytes_ = 0;
};

// accumulate = true computes Y = X·Wᵀ + Y (fuses a residual add into an fp32 Y).
void linear(const CublasHandle& handle, const __nv_bfloat16* x, int64_t rows, int64_t in, const __nv_bfloat16* w,
            int64_t out, __nv_bfloat16* y, cudaStream_t stream, bool accumulate = false);
void linear(const CublasHandle& handle, const __nv_bfloat16* x, int64_t rows, int64_t in, const __nv_bfloat16* w,
            int64_t out, float* y, cudaStream_t stream, bool accumulate = false);

}  // namespace attn::gpu
