#pragma once
// keys_for_90's exact selection as the GPU does it (kernels/head_fingerprints.cu): a bisection on
// the bit pattern of the probability threshold. Shared by the kernel and its host emulation
// (kernels/lab/fingerprint_emulation.h, run by the tests on any machine), so the emulation checks
// the very search the kernel runs. Compiles as CUDA (host and device) and as plain C++.
//
// Positive floats order as their bit patterns, so S(u) = Σ{p : bits(p) ≥ u} is non-increasing in
// u. The search keeps S(lo) ≥ target > S(hi), from lo = 0 (every key) and hi = bits(largest) + 1
// (none); each step the caller sums the mass and count of the keys with bits ≥ middle() and hands
// them to take(). At hi = lo + 1, lo is the bit pattern of an actual value t (otherwise
// S(lo) = S(lo + 1)); every key above t is needed and holds S(hi) < target, and keys() adds the
// fewest copies of t that close the gap. Exact up to the rounding of the double sums.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ATTN_HOST_DEVICE __host__ __device__
#else
#define ATTN_HOST_DEVICE
#endif

namespace attn::gpu {

ATTN_HOST_DEVICE inline uint32_t float_bits(float value) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(value);
#else
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
#endif
}

ATTN_HOST_DEVICE inline float float_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

struct ThresholdSearch {
    double target = 0;  // the mass to reach (0.9 · the row's total)
    uint32_t lo = 0, hi = 1;
    double count_lo = 0, mass_hi = 0, count_hi = 0;

    // visible_keys: how many keys the row has (all of them are at or above bit pattern 0).
    ATTN_HOST_DEVICE static ThresholdSearch start(double target, float largest, double visible_keys) {
        ThresholdSearch s;
        s.target = target;
        s.hi = float_bits(largest) + 1u;
        s.count_lo = visible_keys;
        return s;
    }
    ATTN_HOST_DEVICE bool done() const { return hi - lo <= 1; }
    ATTN_HOST_DEVICE uint32_t middle() const { return lo + (hi - lo) / 2; }
    // The mass and count of the keys whose bit pattern is ≥ middle().
    ATTN_HOST_DEVICE void take(double mass, double count) {
        const uint32_t mid = middle();
        if (mass >= target) {
            lo = mid;
            count_lo = count;
        } else {
            hi = mid;
            mass_hi = mass;
            count_hi = count;
        }
    }
    // Once done(): the fewest keys holding `target`.
    ATTN_HOST_DEVICE int64_t keys() const {
        const double threshold = double(float_from_bits(lo));
        const double remaining = target - mass_hi;  // > 0: S(hi) < target
        const double ties = count_lo - count_hi;    // keys equal to the threshold: they reach the target
        double copies = threshold > 0 ? remaining / threshold : 1.0;
        if (!(copies <= ties)) {
            copies = ties >= 1 ? ties : 1.0;  // only rounding gets here
        } else {
            copies = copies < 1.0 ? 1.0 : double(int64_t(copies));  // floor, then the first count that reaches
            while (copies > 1 && (copies - 1) * threshold >= remaining) copies -= 1;
            while (copies < ties && copies * threshold < remaining) copies += 1;
        }
        return int64_t(count_hi + copies);
    }
};

}  // namespace attn::gpu
