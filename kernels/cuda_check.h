#pragma once
// Every CUDA and cuBLAS call in attnscope goes through CUDA_CHECK / CUBLAS_CHECK, every kernel
// launch is followed by CUDA_CHECK_LAUNCH(): a failure throws attn::Error naming the call, the
// error and file:line, so the CLI prints it instead of crashing. Includable from .cu and .cpp.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "engine/error.h"

namespace attn::gpu {

[[noreturn]] inline void cuda_fail(const char* call, cudaError_t err, const char* file, int line) {
    fail("CUDA error: ", call, " failed with ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") at ", file,
         ":", line);
}

[[noreturn]] inline void cublas_fail(const char* call, cublasStatus_t status, const char* file, int line) {
    fail("cuBLAS error: ", call, " failed with ", cublasGetStatusName(status), " (", cublasGetStatusString(status),
         ") at ", file, ":", line);
}

// True when at least one CUDA device can be used; otherwise false with the reason in *why_not
// (e.g. "cudaGetDeviceCount: cudaErrorNoDevice (no CUDA-capable device is detected)").
bool cuda_device_available(std::string* why_not = nullptr);
// cuda_device_available, and the device can run this build's kernels: compute capability ≥ 8.0
// (bf16 WMMA) and a kernel image for it (ATTNSCOPE_CUDA_ARCHITECTURES).
bool cuda_kernels_runnable(std::string* why_not = nullptr);

}  // namespace attn::gpu

#define CUDA_CHECK(call)                                                                 \
    do {                                                                                 \
        const cudaError_t attn_cuda_err_ = (call);                                       \
        if (attn_cuda_err_ != cudaSuccess)                                               \
            ::attn::gpu::cuda_fail(#call, attn_cuda_err_, __FILE__, __LINE__);           \
    } while (0)

#define CUBLAS_CHECK(call)                                                               \
    do {                                                                                 \
        const cublasStatus_t attn_cublas_status_ = (call);                               \
        if (attn_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                \
            ::attn::gpu::cublas_fail(#call, attn_cublas_status_, __FILE__, __LINE__);    \
    } while (0)

// After a <<<...>>> launch: reports bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
