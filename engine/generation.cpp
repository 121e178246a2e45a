#include "engine/generation.h"

#include <algorithm>
#include <cmath>

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

namespace {

struct Hypothesis {
    std::unique_ptr<Backend> backend;
    std::vector<int32_t> tokens;
    std::vector<int32_t> slots;  // beam slot this lineage occupied at each step (its branch id)
    double score = 0;
    bool finished = false;
    std::vector<float> logits;
};

// Beam search over forked backends (no capture while searching). Returns the winning token
// sequence and its per-step branch ids.
std::pair<std::vector<int32_t>, std::vector<int32_t>> beam_search(const Model& model, Backend& prefilled,
                                                                  std::span<const float> prompt_logits,
                                                                  const SamplingSettings& s) {
    const int beams = s.beams, vocab = model.config.vocab;
    const int32_t eos = model.tokenizer->eos_id();
    std::vector<Hypothesis> live(1);
    live[0].backend = prefilled.fork();
    live[0].logits.assign(prompt_logits.begin(), prompt_logits.end());
    std::vector<Hypothesis> done;
    for (int step = 0; step < s.max_new_tokens && !live.empty(); ++step) {
        struct Candidate { double score; int parent; int32_t token; };
        std::vector<Candidate> candidates;
        for (int b = 0; b < static_cast<int>(live.size()); ++b) {
            const std::vector<float> lp = log_softmax(live[b].logits);
            for (const TokenAlternative& alt : top_alternatives(lp, beams * 2))
                candidates.push_back({live[b].score + std::log(static_cast<double>(alt.prob)), b, alt.id});
        }
        std::stable_sort(candidates.begin(), candidates.end(),
                         [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
        std::vector<Hypothesis> next;
        for (const Candidate& c : candidates) {
            if (static_cast<int>(next.size()) >= beams) break;
            Hypothesis h;
            const Hypothesis& parent = live[c.parent];
            h.tokens = parent.tokens;
            h.slots = parent.slots;
            h.tokens.push_back(c.token);
            h.slots.push_back(static_cast<int32_t>(next.size()));
            h.score = c.score;
            if (s.stop_at_eos && c.token == eos) {
                h.finished = true;
                done.push_back(std::move(h));
                continue;
            }
            h.backend = parent.backend->fork();
            h.logits.resize(vocab);
            h.backend->forward(std::span<const int32_t>(&c.token, 1), h.logits, nullptr);
            next.push_back(std::move(h));
        }
        live = std::move(next);
        if (static_cast<int>(done.size()) >= beams) break;
    }
    for (Hypothesis& h : live) done.push_back(std::move(h));
    // Length-normalised score, as Hugging Face's default length_penalty = 1.
    auto normalised = [](const Hypothesis& h) { return h.score / std::max<size_t>(1, h.tokens.size()); };
    const auto best = std::max_element(done.begin(), done.end(), [&](const Hypothesis& a, const Hypothesis& b) {
        return normalised(a) < normalised(b);
    });
    return {best->tokens, best->slots};
}

}  // namespace

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

    // Beam search picks the whole continuation first; the loop below then replays it.
    std::vector<int32_t> planned, planned_slots;
    if (s.beams > 1) std::tie(planned, planned_slots) = beam_search(model, backend, decoder.next_logits(), s);

    const int steps = s.beams > 1 ? static_cast<int>(planned.size()) : s.max_new_tokens;
    for (int step = 0; step < steps; ++step) {
        StepChoice choice;
        if (s.beams > 1) {
            choice.token = planned[step];
            choice.beam_id = planned_slots[step];
        }
        const StepRecord& record = decoder.step(choice);
        if (callbacks.on_step) callbacks.on_step(session, record);
        if (!decoder.stop_reason().empty()) break;
    }
    return std::move(session);
}

}  // namespace attn
