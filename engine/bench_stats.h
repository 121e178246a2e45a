#pragma once
// Order statistics for the benchmarks (bench cpu, gpu, render): one definition, so every table
// reports the same thing under the same name.
#include <algorithm>
#include <vector>

namespace attn {

// The value at rank floor(p/100 · n) of the sorted samples (0 for none); percentile(v, 50) is the median.
inline double percentile(std::vector<double> samples, double p) {
    if (samples.empty()) return 0;
    std::sort(samples.begin(), samples.end());
    const size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(samples.size()));
    return samples[std::min(samples.size() - 1, rank)];
}

inline double median(std::vector<double> samples) { return percentile(std::move(samples), 50); }

}  // namespace attn
