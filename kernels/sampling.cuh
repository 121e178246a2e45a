#pragma once
// Token selection on the GPU from device logits: greedy, temperature, top-k, top-p with a seeded
// generator. The CPU twin is attn::Sampler (engine/sampler.h); this follows it step by step:
//   greedy   : argmax, ties to the lowest id (std::max_element);
//   otherwise: order all ids by logit, descending, ties by id (a stable radix sort of the logits
//              with ids in ascending order — cub treats −0 and +0 as equal, like operator<);
//              keep the top_k (0 = all); p_i = exp((l_i − l_max) / T) in double; with top_p < 1
//              keep the shortest prefix whose cumulative p_i / Σp reaches top_p; then
//              u = splitmix64 uniform (53 bits, the same generator and state sequence as Sampler:
//              one draw per non-greedy pick), pick the first i with Σ_{≤i} p > u · Σp.
// Where it can differ from the CPU (documented, tested statistically): the CPU sums p in order
// with one running double, the GPU with a parallel reduction / scan, and CUDA's double exp is
// within 1 ulp of glibc's. So the sampled id can differ only when u·Σp (or the top-p threshold)
// falls within a few ulps (~1e-15 relative) of a cumulative boundary — about 1e-13 per draw.
// Greedy and top-k = 1 involve no floating point and are identical.
// Logits containing NaN are not supported (the CPU's comparisons are not a strict order either).
//
// Plain C++ header (see flash_attention.cuh).
#include <cstddef>
#include <cstdint>

#include "kernels/flash_attention.cuh"

namespace attn::gpu {

struct GpuSamplingParams {
    bool greedy = true;
    float temperature = 1.0f;
    int top_k = 0;       // 0 = off
    float top_p = 1.0f;  // 1 = off
    uint64_t seed = 0;
};

class GpuSampler {
public:
    // Validates like attn::Sampler (temperature > 0, top_k ≥ 0, top_p in (0, 1]) and allocates
    // the device scratch for `vocab` logits.
    GpuSampler(int vocab, const GpuSamplingParams& params);
    ~GpuSampler();
    GpuSampler(const GpuSampler&) = delete;
    GpuSampler& operator=(const GpuSampler&) = delete;

    // Enqueues the pick on `stream`; the id lands in device memory (*device_id). Capturable into a
    // CUDA graph (no allocation, no synchronisation). The generator state lives on the device and
    // advances once per non-greedy pick.
    void pick_async(const float* device_logits, int32_t* device_id, Stream stream);
    // Convenience: pick and wait; returns the id.
    int32_t pick(const float* device_logits, Stream stream = nullptr);

private:
    void release() noexcept;
    int vocab_;
    GpuSamplingParams params_;
    void* sort_temp_ = nullptr;
    size_t sort_temp_bytes_ = 0;
    float* keys_sorted_ = nullptr;
    int32_t* ids_ = nullptr;         // 0..vocab-1
    int32_t* ids_sorted_ = nullptr;
    double* probs_ = nullptr;
    uint64_t* state_ = nullptr;      // splitmix64 state (device)
    int32_t* result_ = nullptr;      // device id for pick()
    int32_t* result_host_ = nullptr; // pinned
};

}  // namespace attn::gpu
