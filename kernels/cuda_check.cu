#include "kernels/cuda_check.h"

namespace attn::gpu {

bool cuda_device_available(std::string* why_not) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();  // not sticky: clear it so later calls start clean
        if (why_not) {
            *why_not = cat("cudaGetDeviceCount failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
            // Without libcuda (no NVIDIA driver at all) the runtime reports an "insufficient" driver.
            if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice)
                *why_not += "; no usable NVIDIA driver/GPU on this machine";
        }
        return false;
    }
    if (count <= 0) {
        if (why_not) *why_not = "cudaGetDeviceCount returned 0 devices";
        return false;
    }
    return true;
}

}  // namespace attn::gpu

namespace attn::gpu {

namespace {
__global__ void probe_kernel(int* out) {
    if (out) *out = 1;
}
}  // namespace

bool cuda_kernels_runnable(std::string* why_not) {
    if (!cuda_device_available(why_not)) return false;
    int dev = 0, major = 0, minor = 0;
    cudaDeviceProp prop{};
    cudaError_t err = cudaGetDevice(&dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (err == cudaSuccess) err = cudaGetDeviceProperties(&prop, dev);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        if (why_not) *why_not = cat("querying CUDA device ", dev, " failed: ", cudaGetErrorName(err));
        return false;
    }
    if (major < 8) {
        if (why_not)
            *why_not = cat(prop.name, " has compute capability ", major, ".", minor,
                           "; the bf16 tensor-core kernels need 8.0 (Ampere) or newer");
        return false;
    }
    // A device newer than every architecture this binary was built for (and no PTX to JIT) has
    // no image for our kernels: ask the runtime instead of failing at the first launch.
    cudaFuncAttributes attributes{};
    err = cudaFuncGetAttributes(&attributes, probe_kernel);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        if (why_not)
            *why_not = cat(prop.name, " (compute capability ", major, ".", minor,
                           ") has no kernel image in this build: ", cudaGetErrorName(err),
                           "; rebuild with -DATTNSCOPE_CUDA_ARCHITECTURES=", major, minor);
        return false;
    }
    return true;
}

}  // namespace attn::gpu
