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
