#include "engine/generation.h"

#include <algorithm>
#include <cmath>

#include "engine/beam_search.h"
#include "engine/error.h"
#include "engine/memory.h"
#include "engine/sampler.h"

namespace attn {

uint64_t capture_bytes_per_position(const ModelConfig& c) {
    return uint64_t(c.n_layer) * (uint64_t(c.n_head + c.n_kv_head) * c.head_dim + c.n_head) * sizeof(float);
}

uint64_t capture_bytes(const ModelConfig& c, int64_t positions) {
    const uint64_t blocks = (positions + CaptureStore::kOverviewBlock - 1) / CaptureStore::kOverviewBlock;
    const uint64_t overview = blocks * (blocks + 1) / 2 * 2 * sizeof(float) * c.n_layer * c.n_head;
    return capture_bytes_per_position(c) * positions + overview;
}


Session generate(const Model& model, Backend& backend, const GenerationRequest& request,
                 const GenerationCallbacks& callbacks) {
    const SamplingSettings& s = request.sampling;
    Decoder decoder(model, backend, request);
    Session& session = decoder.session();
    if (callbacks.on_started) callbacks.on_started(session);
    decoder.prefill([&](int64_t done, int64_t total) {
        if (callbacks.prefill_progress) callbacks.prefill_progress(done, total);
        if (callbacks.on_prefill_chunk) callbacks.on_prefill_chunk(session);
    });

    // Beam search picks the whole continuation first; the loop below then replays the best
    // hypothesis with capture on.
    std::vector<int32_t> planned;
    if (s.beams > 1) {
        session.beam_tree = beam_search(model, backend, decoder.next_logits(), s);
        if (session.beam_tree.best >= 0) planned = session.beam_tree.lineage(session.beam_tree.best);
    }

    const int steps = s.beams > 1 ? static_cast<int>(planned.size()) : s.max_new_tokens;
    for (int step = 0; step < steps; ++step) {
        StepChoice choice;
        if (s.beams > 1) {
            const BeamNode& node = session.beam_tree.nodes[planned[step]];
            choice.token = node.token_id;
            choice.beam_id = node.slot;
        }
        const StepRecord& record = decoder.step(choice);
        if (callbacks.on_step) callbacks.on_step(session, record);
        if (!decoder.stop_reason().empty()) break;
    }
    return std::move(session);
}

}  // namespace attn
