#pragma once
// The runtime's backend interface: one forward pass over a run of positions, with a KV
// cache. The cpu backend (fp32, OpenBLAS) is the reference; the cuda backend (issue 3)
// implements the same interface.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/attention_intervention.h"
#include "engine/capture_store.h"
#include "engine/error.h"
#include "engine/model.h"

namespace attn {

// Called during long prefills: positions done so far, positions in total.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// Wall-clock cost of the last forward() call, for the step inspector and performance tuners.
// attention_ms[l] is the time spent in layer l's attention (scores, softmax, capture, P·V).
struct ForwardTimings {
    double total_ms = 0;
    std::vector<float> attention_ms;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;

    // Runs tokens at positions [cached(), cached() + ids.size()) and appends them to the KV cache.
    // Writes the logits of the last position into `last_logits` (size vocab). With `capture`, records
    // post-RoPE Q, K, the row LSEs and the pooled overview of these positions, and (cpu only; the cuda
    // backend does not copy them back yet) each position's hidden state after the output norm;
    // capture never changes what is computed.
    virtual void forward(std::span<const int32_t> ids, std::span<float> last_logits, CaptureStore* capture,
                         const ProgressFn& progress = {}) = 0;
    virtual int64_t cached() const = 0;
    // Forgets positions from `positions` on (rewind for beam search, or reuse for a new prompt).
    virtual void truncate(int64_t positions) = 0;
    // Independent copy with the same KV cache contents (beam hypotheses).
    virtual std::unique_ptr<Backend> fork() const = 0;
    // Positions the KV cache can hold before it must grow; the backend grows it on demand and
    // throws attn::Error if that would exceed the memory it is allowed to use.
    virtual int64_t capacity() const = 0;
    // Hooks applied from the next forward() on (attention_intervention.h); nullptr clears them.
    // Forks share them. Only the cpu backend (the fp32 reference) implements interventions.
    virtual void set_intervention(std::shared_ptr<const AttentionIntervention> intervention) {
        if (intervention && !intervention->empty())
            fail("counterfactuals run on the cpu backend; the ", name(), " backend cannot apply interventions");
    }
    // Timings of the most recent forward() (empty before the first).
    virtual const ForwardTimings& last_timings() const { return timings_; }

protected:
    ForwardTimings timings_;
};

enum class BackendKind { Cpu, Cuda, Auto };
BackendKind parse_backend_kind(const std::string& name);  // "cpu", "cuda", "auto"
// Auto picks cuda when it was built and a device is present, else cpu.
std::unique_ptr<Backend> make_backend(BackendKind kind, const Model& model);
bool cuda_backend_available(std::string* why_not = nullptr);

}  // namespace attn
