#pragma once
// Owned device and pinned host allocations for the host-side dispatchers (the cuda backend, the
// GPU tile source, the benchmark). Every allocation checks free memory first and turns an
// out-of-memory into attn::Error naming what was requested and what is free, never a crash:
//   "a KV cache of 50000 positions needs 1.37 GiB of GPU memory; 1.02 GiB free; use a shorter prompt"
// Plain C++ (no CUDA headers), compiled by the host compiler.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace attn::gpu {

struct GpuMemoryInfo {
    uint64_t free = 0, total = 0;
};
GpuMemoryInfo gpu_memory_info();

// Throws attn::Error "<what> needs <bytes> of GPU memory; <free> free[; <hint>]" if `bytes` exceeds
// what cudaMemGetInfo reports free.
void require_gpu_memory(uint64_t bytes, const std::string& what, const std::string& hint = {});

class DeviceBuffer {
public:
    DeviceBuffer() = default;
    // Allocates `bytes` (cudaMalloc, 256-byte aligned); on failure the message names `what`.
    DeviceBuffer(size_t bytes, const std::string& what, const std::string& hint = {});
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void reset() noexcept;
    void* get() const { return p_; }
    template <typename T>
    T* as() const { return static_cast<T*>(p_); }
    size_t bytes() const { return bytes_; }
    explicit operator bool() const { return p_ != nullptr; }

private:
    void* p_ = nullptr;
    size_t bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost): the only memory an async D2H copy can overlap with.
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    PinnedBuffer(size_t bytes, const std::string& what);
    ~PinnedBuffer() { reset(); }
    PinnedBuffer(PinnedBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;

    void reset() noexcept;
    void* get() const { return p_; }
    template <typename T>
    T* as() const { return static_cast<T*>(p_); }
    size_t bytes() const { return bytes_; }

private:
    void* p_ = nullptr;
    size_t bytes_ = 0;
};

}  // namespace attn::gpu
