// GPU token selection, the twin of attn::Sampler (see sampling.cuh for the exact contract).
// Greedy: one CTA of 1024 threads, (value, id) arg-max with ties to the lowest id.
// Sampling: a stable descending radix sort of (logit, id) pairs (cub, from the CUDA toolkit), then
// one CTA of 1024 threads does the CPU's sequential steps as chunked block reductions and scans in
// double: probabilities, the top-p cut, the generator draw and the inverse-CDF pick.
#include <cub/device/device_radix_sort.cuh>

#include <climits>

#include "kernels/common.cuh"
#include "kernels/sampling.cuh"

namespace attn::gpu {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ double warp_sum_d(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Sum over the CTA; every thread gets it. `sh` holds kWarps doubles.
__device__ double block_sum_d(double v, double* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_d(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < kWarps ? sh[lane] : 0.0;
    v = warp_sum_d(v);
    __syncthreads();
    return v;
}

// Inclusive scan over the CTA in thread order; *total gets the CTA's sum.
__device__ double block_scan_d(double v, double* sh, double* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int off = 1; off < 32; off <<= 1) {
        const double up = __shfl_up_sync(0xffffffffu, v, off);
        if (lane >= off) v += up;
    }
    if (lane == 31) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = lane < kWarps ? sh[lane] : 0.0;
        for (int off = 1; off < 32; off <<= 1) {
            const double up = __shfl_up_sync(0xffffffffu, w, off);
            if (lane >= off) w += up;
        }
        sh[lane] = w;  // inclusive prefix of warp totals
    }
    __syncthreads();
    if (warp > 0) v += sh[warp - 1];
    *total = sh[kWarps - 1];
    __syncthreads();
    return v;
}

// First index i < n with prefix(values)[i] (optionally divided by `divisor`) ≥ / > threshold, or -1.
template <bool kGreaterEqual>
__device__ int first_crossing(const double* values, int n, double divisor, double threshold, double* sh, int* found) {
    double carry = 0.0;
    for (int base = 0; base < n; base += kThreads) {
        const int i = base + threadIdx.x;
        const double v = i < n ? values[i] / divisor : 0.0;
        double chunk_total;
        const double prefix = block_scan_d(v, sh, &chunk_total) + carry;
        if (threadIdx.x == 0) *found = INT_MAX;
        __syncthreads();
        if (i < n && (kGreaterEqual ? prefix >= threshold : prefix > threshold)) atomicMin(found, i);
        __syncthreads();
        const int hit = *found;
        __syncthreads();  // everyone read *found before the next chunk resets it
        if (hit != INT_MAX) return hit;
        carry += chunk_total;
    }
    return -1;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* logits, int n, int32_t* out) {
    __shared__ float sv[kWarps];
    __shared__ int si[kWarps];
    float best = -INFINITY;
    int best_i = INT_MAX;
    for (int i = threadIdx.x; i < n; i += kThreads) {
        const float v = logits[i];
        if (v > best || (v == best && i < best_i)) {
            best = v;
            best_i = i;
        }
    }
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, off);
        const int oi = __shfl_xor_sync(0xffffffffu, best_i, off);
        if (ov > best || (ov == best && oi < best_i)) {
            best = ov;
            best_i = oi;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = best_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float b = sv[0];
        int bi = si[0];
        for (int w = 1; w < kWarps; ++w)
            if (sv[w] > b || (sv[w] == b && si[w] < bi)) {
                b = sv[w];
                bi = si[w];
            }
        *out = bi == INT_MAX ? 0 : bi;  // all -inf: id 0, as std::max_element
    }
}

__global__ void iota_kernel(int32_t* ids, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) ids[i] = i;
}

// splitmix64, exactly attn::Sampler::next_uniform.
__device__ double next_uniform(uint64_t* state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
}

__global__ void __launch_bounds__(kThreads) select_kernel(const float* keys, const int32_t* ids, int n, int top_k,
                                                          float temperature, float top_p, double* probs,
                                                          uint64_t* state, int32_t* out) {
    __shared__ double sh[kWarps];
    __shared__ int found;
    __shared__ double u_shared;
    const int keep0 = top_k > 0 && top_k < n ? top_k : n;
    const double max_logit = keys[0];
    double local = 0.0;
    for (int i = threadIdx.x; i < keep0; i += kThreads) {
        // As the CPU: float logit promoted to double, minus the double max, over the float temperature.
        const double p = exp((static_cast<double>(keys[i]) - max_logit) / static_cast<double>(temperature));
        probs[i] = p;
        local += p;
    }
    double total = block_sum_d(local, sh);  // its barriers also publish probs[] to the CTA
    int keep = keep0;
    if (top_p < 1.f) {
        const int cut = first_crossing<true>(probs, keep0, total, static_cast<double>(top_p), sh, &found);
        keep = cut < 0 ? keep0 : cut + 1;
        local = 0.0;
        for (int i = threadIdx.x; i < keep; i += kThreads) local += probs[i];
        total = block_sum_d(local, sh);
    }
    if (threadIdx.x == 0) u_shared = next_uniform(state);
    __syncthreads();
    const double target = u_shared * total;
    const int hit = first_crossing<false>(probs, keep, 1.0, target, sh, &found);
    if (threadIdx.x == 0) *out = ids[hit < 0 ? keep - 1 : hit];
}

}  // namespace

GpuSampler::GpuSampler(int vocab, const GpuSamplingParams& params) : vocab_(vocab), params_(params) {
    if (vocab <= 0) fail("GPU sampler: vocabulary of ", vocab);
    if (!params.greedy) {
        if (!(params.temperature > 0.f)) fail("temperature must be > 0 (use --greedy for argmax)");
        if (params.top_k < 0) fail("top-k must be >= 0");
        if (!(params.top_p > 0.f && params.top_p <= 1.f)) fail("top-p must be in (0, 1]");
    }
    try {
        CUDA_CHECK(cudaMalloc(&result_, sizeof(int32_t)));
        CUDA_CHECK(cudaMallocHost(&result_host_, sizeof(int32_t)));
        if (!params.greedy) {
            CUDA_CHECK(cudaMalloc(&keys_sorted_, sizeof(float) * vocab));
            CUDA_CHECK(cudaMalloc(&ids_, sizeof(int32_t) * vocab));
            CUDA_CHECK(cudaMalloc(&ids_sorted_, sizeof(int32_t) * vocab));
            CUDA_CHECK(cudaMalloc(&probs_, sizeof(double) * vocab));
            CUDA_CHECK(cudaMalloc(&state_, sizeof(uint64_t)));
            CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, sort_temp_bytes_, static_cast<const float*>(nullptr),
                                                                 keys_sorted_, ids_, ids_sorted_, vocab));
            CUDA_CHECK(cudaMalloc(&sort_temp_, sort_temp_bytes_ ? sort_temp_bytes_ : 1));
            iota_kernel<<<detail::elementwise_blocks(vocab, 256), 256>>>(ids_, vocab);
            CUDA_CHECK_LAUNCH();
            CUDA_CHECK(cudaMemcpy(state_, &params.seed, sizeof(uint64_t), cudaMemcpyHostToDevice));
        }
    } catch (...) {
        release();
        throw;
    }
}

GpuSampler::~GpuSampler() { release(); }

void GpuSampler::release() noexcept {
    // Never throws: errors here are ignored (the context may already be gone at exit).
    (void)cudaFree(sort_temp_);
    (void)cudaFree(keys_sorted_);
    (void)cudaFree(ids_);
    (void)cudaFree(ids_sorted_);
    (void)cudaFree(probs_);
    (void)cudaFree(state_);
    (void)cudaFree(result_);
    (void)cudaFreeHost(result_host_);
    sort_temp_ = keys_sorted_ = nullptr;
    ids_ = ids_sorted_ = result_ = result_host_ = nullptr;
    probs_ = nullptr;
    state_ = nullptr;
}

void GpuSampler::pick_async(const float* device_logits, int32_t* device_id, Stream stream) {
    if (!device_logits || !device_id) fail("GPU sampler: null logits or output");
    if (params_.greedy) {
        argmax_kernel<<<1, kThreads, 0, stream>>>(device_logits, vocab_, device_id);
        CUDA_CHECK_LAUNCH();
        return;
    }
    size_t temp_bytes = sort_temp_bytes_;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(sort_temp_, temp_bytes, device_logits, keys_sorted_, ids_,
                                                         ids_sorted_, vocab_, 0, int(sizeof(float) * 8), stream));
    select_kernel<<<1, kThreads, 0, stream>>>(keys_sorted_, ids_sorted_, vocab_, params_.top_k, params_.temperature,
                                              params_.top_p, probs_, state_, device_id);
    CUDA_CHECK_LAUNCH();
}

int32_t GpuSampler::pick(const float* device_logits, Stream stream) {
    pick_async(device_logits, result_, stream);
    CUDA_CHECK(cudaMemcpyAsync(result_host_, result_, sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return *result_host_;
}

}  // namespace attn::gpu
