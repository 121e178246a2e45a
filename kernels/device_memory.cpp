#include "kernels/device_memory.h"

#include <cuda_runtime.h>

#include "engine/error.h"
#include "engine/memory.h"
#include "kernels/cuda_check.h"

namespace attn::gpu {

GpuMemoryInfo gpu_memory_info() {
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return {free, total};
}

namespace {
[[noreturn]] void out_of_memory(uint64_t bytes, uint64_t free, const std::string& what, const std::string& hint) {
    fail(what, " needs ", format_bytes(bytes), " of GPU memory; ", format_bytes(free), " free",
         hint.empty() ? "" : "; ", hint);
}
}  // namespace

void require_gpu_memory(uint64_t bytes, const std::string& what, const std::string& hint) {
    const GpuMemoryInfo info = gpu_memory_info();
    if (bytes > info.free) out_of_memory(bytes, info.free, what, hint);
}

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what, const std::string& hint) {
    if (bytes == 0) return;
    require_gpu_memory(bytes, what, hint);
    const cudaError_t err = cudaMalloc(&p_, bytes);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();  // not sticky; clear it
        p_ = nullptr;
        out_of_memory(bytes, gpu_memory_info().free, what, hint);  // free memory is fragmented or raced away
    }
    if (err != cudaSuccess) cuda_fail("cudaMalloc", err, __FILE__, __LINE__);
    bytes_ = bytes;
}

void DeviceBuffer::reset() noexcept {
    if (p_) (void)cudaFree(p_);  // never throws; a failure here means the context is already gone
    p_ = nullptr;
    bytes_ = 0;
}

PinnedBuffer::PinnedBuffer(size_t bytes, const std::string& what) {
    if (bytes == 0) return;
    const cudaError_t err = cudaMallocHost(&p_, bytes);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        p_ = nullptr;
        fail(what, " needs ", format_bytes(bytes), " of page-locked host memory: cudaMallocHost failed with ",
             cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
    }
    bytes_ = bytes;
}

void PinnedBuffer::reset() noexcept {
    if (p_) (void)cudaFreeHost(p_);
    p_ = nullptr;
    bytes_ = 0;
}

}  // namespace attn::gpu
