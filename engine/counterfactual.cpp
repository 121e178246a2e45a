#include "engine/counterfactual.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "engine/cpu_backend.h"
#include "engine/decoder.h"
#include "engine/error.h"
#include "engine/tile_source.h"

namespace attn {

// ---- describing interventions ---------------------------------------------------------------

Intervention Intervention::mask_keys(int64_t begin, int64_t end, std::vector<std::pair<int, int>> heads) {
    Intervention i;
    i.kind = Kind::MaskKeys;
    i.begin = begin, i.end = end;
    i.heads = std::move(heads);
    return i;
}

Intervention Intervention::ablate_heads(std::vector<std::pair<int, int>> heads, bool mean) {
    Intervention i;
    i.kind = Kind::AblateHeads;
    i.heads = std::move(heads);
    i.ablate_mean = mean;
    return i;
}

Intervention Intervention::remove_span(int64_t begin, int64_t end) {
    Intervention i;
    i.kind = Kind::RemoveSpan;
    i.begin = begin, i.end = end;
    return i;
}

Intervention Intervention::replace_span(int64_t begin, int64_t end, std::string text) {
    Intervention i;
    i.kind = Kind::ReplaceSpan;
    i.begin = begin, i.end = end;
    i.replacement = std::move(text);
    return i;
}

Intervention Intervention::embedding_noise(int64_t begin, int64_t end, double std_dev, uint64_t seed) {
    Intervention i;
    i.kind = Kind::EmbeddingNoise;
    i.begin = begin, i.end = end;
    i.noise_std = std_dev;
    i.seed = seed;
    return i;
}

const char* intervention_kind_name(Intervention::Kind kind) {
    switch (kind) {
        case Intervention::Kind::MaskKeys: return "mask_keys";
        case Intervention::Kind::AblateHeads: return "ablate_heads";
        case Intervention::Kind::RemoveSpan: return "remove_span";
        case Intervention::Kind::ReplaceSpan: return "replace_span";
        case Intervention::Kind::EmbeddingNoise: return "embedding_noise";
    }
    return "unknown";
}

namespace {

std::string heads_text(const std::vector<std::pair<int, int>>& heads) {
    std::string out;
    for (const auto& [layer, head] : heads) out += cat(out.empty() ? "" : ", ", "L", layer, "H", head);
    return out;
}

}  // namespace

std::string Intervention::describe() const {
    switch (kind) {
        case Kind::MaskKeys: return cat("mask keys [", begin, ", ", end, ") in ", heads_text(heads));
        case Kind::AblateHeads: return cat(ablate_mean ? "mean" : "zero", "-ablate ", heads_text(heads));
        case Kind::RemoveSpan: return cat("remove tokens [", begin, ", ", end, ")");
        case Kind::ReplaceSpan: return cat("replace tokens [", begin, ", ", end, ") with \"", replacement, "\"");
        case Kind::EmbeddingNoise:
            return cat("Gaussian noise (std ", noise_std, ", seed ", seed, ") on the embeddings of [", begin, ", ", end, ")");
    }
    return "unknown intervention";
}

nlohmann::json Intervention::to_json() const {
    nlohmann::json j{{"kind", intervention_kind_name(kind)}, {"description", describe()}};
    if (kind != Kind::AblateHeads) j["span"] = {begin, end};
    if (kind == Kind::MaskKeys || kind == Kind::AblateHeads) {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& [layer, head] : heads) list.push_back({{"layer", layer}, {"head", head}});
        j["heads"] = list;
    }
    if (kind == Kind::AblateHeads) j["ablation"] = ablate_mean ? "mean" : "zero";
    if (kind == Kind::ReplaceSpan) j["replacement"] = replacement;
    if (kind == Kind::EmbeddingNoise) {
        j["std"] = noise_std;
        j["seed"] = seed;
    }
    return j;
}

std::optional<int64_t> PositionAlignment::to_counterfactual(int64_t p) const {
    if (p < edit_begin) return p;
    if (p < edit_end) return std::nullopt;
    return p - (edit_end - edit_begin) + inserted;
}

namespace {

// ---- checks -----------------------------------------------------------------------------------

void check_model_matches(const Model& model, const Session& session) {
    if (!session.capture) fail("the session has no captured attention to compare against");
    const ModelConfig &m = model.config, &s = session.config;
    if (m.arch != s.arch || m.n_layer != s.n_layer || m.n_head != s.n_head || m.n_kv_head != s.n_kv_head ||
        m.head_dim != s.head_dim || m.d_model != s.d_model || m.vocab != s.vocab)
        fail("the model (", m.arch_name, ": ", m.n_layer, " layers × ", m.n_head, " heads (", m.n_kv_head,
             " KV) × ", m.head_dim, ", d_model ", m.d_model, ", vocabulary ", m.vocab,
             ") does not match the session's (", s.arch_name, ": ", s.n_layer, " layers × ", s.n_head, " heads (",
             s.n_kv_head, " KV) × ", s.head_dim, ", d_model ", s.d_model, ", vocabulary ", s.vocab, ")");
    if (!(session.capture->shape() == capture_shape_of(m)))
        fail("the model's attention (scale, sliding window) does not match the session's capture");
    if (!session.identity.sha256.empty()) {
        const std::string& sha = model.hashed_identity().sha256;
        if (!sha.empty() && sha != session.identity.sha256)
            fail("the model's content hash ", sha.substr(0, 16), "… differs from the session's ",
                 session.identity.sha256.substr(0, 16), "… (", session.identity.path,
                 "): counterfactuals need the model that captured the session");
    }
    const int64_t steps = static_cast<int64_t>(session.steps.size());
    if (session.prompt_tokens <= 0 || session.prompt_tokens + steps > session.positions())
        fail("the session's prompt (", session.prompt_tokens, " tokens) and ", steps, " steps do not fit its ",
             session.positions(), " tokens");
    if (session.capture->positions() < session.prompt_tokens)
        fail("the session's capture holds ", session.capture->positions(), " positions, fewer than its prompt (",
             session.prompt_tokens, ")");
}

void check_intervention(const Intervention& i, const Session& session) {
    const ModelConfig& c = session.config;
    auto check_span = [&](int64_t limit, const char* what) {
        if (i.begin < 0 || i.end <= i.begin || i.end > limit)
            fail(intervention_kind_name(i.kind), ": span [", i.begin, ", ", i.end, ") is not a non-empty range of ",
                 what, " [0, ", limit, ")");
    };
    auto check_heads = [&] {
        if (i.heads.empty()) fail(intervention_kind_name(i.kind), ": no heads given");
        for (const auto& [layer, head] : i.heads) {
            if (layer < 0 || layer >= c.n_layer)
                fail(intervention_kind_name(i.kind), ": layer ", layer, " is out of range (0..", c.n_layer - 1, ")");
            if (head < 0 || head >= c.n_head)
                fail(intervention_kind_name(i.kind), ": head ", head, " is out of range (0..", c.n_head - 1, ")");
        }
    };
    switch (i.kind) {
        case Intervention::Kind::MaskKeys:
            check_span(session.positions(), "the session's positions");
            check_heads();
            break;
        case Intervention::Kind::AblateHeads: check_heads(); break;
        case Intervention::Kind::RemoveSpan:
            check_span(session.prompt_tokens, "prompt positions");
            if (i.end - i.begin == session.prompt_tokens) fail("remove_span: removing the whole prompt leaves nothing to run");
            break;
        case Intervention::Kind::ReplaceSpan: check_span(session.prompt_tokens, "prompt positions"); break;
        case Intervention::Kind::EmbeddingNoise:
            check_span(session.positions(), "the session's positions");
            if (!(i.noise_std >= 0) || !std::isfinite(i.noise_std))
                fail("embedding_noise: the standard deviation ", i.noise_std, " must be a finite number >= 0");
            break;
    }
}

// ---- the edited prompt ------------------------------------------------------------------------

struct Prompt {
    std::string text;
    std::vector<Token> tokens;
};

// Appends original token `t` (its bytes from the original text) to the prompt being built.
void append_original(Prompt& prompt, const Session& original, const Token& t) {
    Token copy = t;
    copy.begin = static_cast<uint32_t>(prompt.text.size());
    prompt.text.append(original.text, t.begin, t.end - t.begin);
    copy.end = static_cast<uint32_t>(prompt.text.size());
    prompt.tokens.push_back(copy);
}

Prompt original_prompt(const Session& original) {
    Prompt prompt;
    for (int64_t p = 0; p < original.prompt_tokens; ++p) append_original(prompt, original, original.tokens[static_cast<size_t>(p)]);
    return prompt;
}

Prompt edited_prompt(const Model& model, const Session& original, const Intervention& i, PositionAlignment& alignment) {
    Prompt prompt;
    const bool edits = i.kind == Intervention::Kind::RemoveSpan || i.kind == Intervention::Kind::ReplaceSpan;
    for (int64_t p = 0; p < original.prompt_tokens; ++p) {
        const Token& t = original.tokens[static_cast<size_t>(p)];
        if (edits && p == i.begin && i.kind == Intervention::Kind::ReplaceSpan && !i.replacement.empty()) {
            const uint32_t offset = static_cast<uint32_t>(prompt.text.size());
            for (Token r : model.tokenizer->encode(i.replacement, true, false)) {
                r.begin += offset, r.end += offset;
                prompt.tokens.push_back(r);
            }
            prompt.text += i.replacement;
            alignment.inserted = static_cast<int64_t>(prompt.tokens.size()) - i.begin;
        }
        if (edits && p >= i.begin && p < i.end) continue;
        append_original(prompt, original, t);
    }
    if (edits) alignment.edit_begin = i.begin, alignment.edit_end = i.end;
    if (prompt.tokens.empty()) fail(intervention_kind_name(i.kind), ": the edited prompt is empty");
    return prompt;
}

// ---- hooks ------------------------------------------------------------------------------------

// splitmix64: a tiny generator whose stream is the same everywhere (unlike std::normal_distribution).
uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// d values of N(0, std²) for one position (Box–Muller over 53-bit uniforms in (0, 1]).
std::vector<float> gaussian_noise(uint64_t seed, int64_t position, int64_t d, double std_dev) {
    uint64_t state = seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(position + 1));
    std::vector<float> noise(static_cast<size_t>(d));
    constexpr double kTwoPi = 6.283185307179586;
    for (int64_t k = 0; k < d; k += 2) {
        const double u1 = (double(splitmix64(state) >> 11) + 1.0) * 0x1.0p-53;
        const double u2 = double(splitmix64(state) >> 11) * 0x1.0p-53;
        const double radius = std::sqrt(-2.0 * std::log(u1)) * std_dev;
        noise[static_cast<size_t>(k)] = static_cast<float>(radius * std::cos(kTwoPi * u2));
        if (k + 1 < d) noise[static_cast<size_t>(k + 1)] = static_cast<float>(radius * std::sin(kTwoPi * u2));
    }
    return noise;
}

// Mean of each head's output over every position of the original session (first pass, no capture).
std::vector<std::vector<float>> mean_head_outputs(const Model& model, const Session& original,
                                                  const std::vector<std::pair<int, int>>& heads) {
    const ModelConfig& c = model.config;
    const int64_t hd = c.head_dim, stride = int64_t(c.n_head) * hd;
    std::vector<std::vector<double>> sums(heads.size(), std::vector<double>(static_cast<size_t>(hd), 0.0));
    auto observer = std::make_shared<AttentionIntervention>();
    observer->on_head_outputs = [&](int layer, int64_t, int64_t rows, const float* out) {
        for (size_t i = 0; i < heads.size(); ++i) {
            if (heads[i].first != layer) continue;
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t k = 0; k < hd; ++k) sums[i][static_cast<size_t>(k)] += out[r * stride + heads[i].second * hd + k];
        }
    };
    auto backend = make_cpu_backend(model);
    backend->set_intervention(observer);
    std::vector<int32_t> ids;
    for (const Token& t : original.tokens) ids.push_back(t.id);
    std::vector<float> logits(static_cast<size_t>(c.vocab));
    backend->forward(ids, logits, nullptr);
    std::vector<std::vector<float>> means;
    for (const std::vector<double>& sum : sums) {
        std::vector<float> mean(sum.size());
        for (size_t k = 0; k < sum.size(); ++k) mean[k] = static_cast<float>(sum[k] / double(ids.size()));
        means.push_back(std::move(mean));
    }
    return means;
}

std::shared_ptr<const AttentionIntervention> backend_hooks(const Model& model, const Session& original,
                                                           const Intervention& i) {
    auto hooks = std::make_shared<AttentionIntervention>();
    switch (i.kind) {
        case Intervention::Kind::MaskKeys:
            for (const auto& head : i.heads) hooks->key_masks[head].push_back({i.begin, i.end});
            break;
        case Intervention::Kind::AblateHeads: {
            std::vector<std::vector<float>> means;
            if (i.ablate_mean) means = mean_head_outputs(model, original, i.heads);
            for (size_t k = 0; k < i.heads.size(); ++k)
                hooks->head_outputs.push_back({i.heads[k].first, i.heads[k].second, !i.ablate_mean,
                                               i.ablate_mean ? means[k] : std::vector<float>{}});
            break;
        }
        case Intervention::Kind::EmbeddingNoise:
            for (int64_t p = i.begin; p < i.end; ++p)
                hooks->embedding_offsets[p] = gaussian_noise(i.seed, p, model.config.d_model, i.noise_std);
            break;
        case Intervention::Kind::RemoveSpan:
        case Intervention::Kind::ReplaceSpan: break;  // the prompt itself changes
    }
    return hooks;
}

// ---- running ----------------------------------------------------------------------------------

Session run_forced(const Model& model, const Session& original, const Prompt& prompt,
                   std::shared_ptr<const AttentionIntervention> hooks) {
    auto backend = make_cpu_backend(model);
    backend->set_intervention(std::move(hooks));
    GenerationRequest request;
    request.sampling = original.sampling;
    request.sampling.beams = 1;
    request.sampling.max_new_tokens = static_cast<int>(original.steps.size());
    Decoder decoder(model, *backend, prompt.text, prompt.tokens, request);
    decoder.prefill();
    for (const StepRecord& step : original.steps) {
        StepChoice choice;
        choice.token = step.token_id;
        choice.forced_by_user = true;
        decoder.step(choice);
    }
    return std::move(decoder.session());
}

Session run_free(const Model& model, const Session& original, const Prompt& prompt,
                 std::shared_ptr<const AttentionIntervention> hooks, FreeRunResult& free) {
    auto backend = make_cpu_backend(model);
    backend->set_intervention(std::move(hooks));
    GenerationRequest request;
    request.sampling = original.sampling;
    request.sampling.beams = 1;  // a beam search's best hypothesis is replayed as one stream
    const int64_t steps = static_cast<int64_t>(original.steps.size());
    request.sampling.max_new_tokens = static_cast<int>(steps);
    Decoder decoder(model, *backend, prompt.text, prompt.tokens, request);
    decoder.prefill();
    free.ran = true;
    for (int64_t t = 0; t < steps; ++t) {
        const StepRecord& record = decoder.step();
        free.tokens.push_back(record.token_id);
        free.text += record.text;
        if (free.first_divergence < 0 && record.token_id != original.steps[static_cast<size_t>(t)].token_id)
            free.first_divergence = t;
        if (t + 1 < steps && !(free.stop_reason = decoder.stop_reason()).empty()) break;
    }
    // Stopping early with every token equal so far still diverges: the original went on.
    if (free.first_divergence < 0 && static_cast<int64_t>(free.tokens.size()) < steps)
        free.first_divergence = static_cast<int64_t>(free.tokens.size());
    return std::move(decoder.session());
}

std::vector<int64_t> keys_of(const std::vector<KeySpan>& spans) {
    std::vector<int64_t> keys;
    for (const KeySpan& s : spans)
        for (int64_t k = s.begin; k < s.end; ++k) keys.push_back(k);
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return keys;
}

// The counterfactual keys of original spans (prompt edited): the parts before and after the edit,
// shifted as positions are, and every inserted token where a span overlaps the edited one.
std::vector<KeySpan> spans_in_counterfactual(const std::vector<KeySpan>& spans, const PositionAlignment& a) {
    const int64_t shift = a.inserted - (a.edit_end - a.edit_begin);
    std::vector<KeySpan> out;
    for (const KeySpan& s : spans) {
        if (s.begin < a.edit_begin) out.push_back({s.begin, std::min(s.end, a.edit_begin)});
        if (s.begin < a.edit_end && s.end > a.edit_begin && a.inserted > 0)
            out.push_back({a.edit_begin, a.edit_begin + a.inserted});
        if (s.end > a.edit_end) out.push_back({std::max(s.begin, a.edit_end) + shift, s.end + shift});
    }
    return out;
}

}  // namespace

CounterfactualResult run_counterfactual(const Model& model, const Session& original, const Intervention& intervention,
                                        const CounterfactualOptions& options) {
    check_model_matches(model, original);
    check_intervention(intervention, original);
    CounterfactualResult result;
    result.intervention = intervention;
    const Prompt prompt = edited_prompt(model, original, intervention, result.alignment);
    const PositionAlignment& alignment = result.alignment;

    // Queries: validated before the (costly) runs.
    std::vector<int64_t> queries = options.queries;
    const int64_t captured = original.capture->positions();
    if (queries.empty()) {
        for (int64_t q = original.prompt_tokens - 1; q < captured; ++q)
            if (alignment.to_counterfactual(q)) queries.push_back(q);
    }
    for (int64_t q : queries) {
        if (q < 0 || q >= captured) fail("query ", q, " is out of range (the capture holds rows 0..", captured - 1, ")");
        if (!alignment.to_counterfactual(q))
            fail("query ", q, " lies inside the edited span [", alignment.edit_begin, ", ", alignment.edit_end,
                 "): it has no counterpart in the counterfactual");
    }
    for (const KeySpan& s : options.key_spans)
        if (s.begin < 0 || s.end <= s.begin || s.end > original.positions())
            fail("key span [", s.begin, ", ", s.end, ") is not a non-empty range of the session's positions [0, ",
                 original.positions(), ")");
    result.key_spans = options.key_spans;
    if (result.key_spans.empty() && intervention.kind != Intervention::Kind::AblateHeads)
        result.key_spans.push_back({intervention.begin, intervention.end});
    result.counterfactual_key_spans = alignment.edited() ? spans_in_counterfactual(result.key_spans, alignment)
                                                         : result.key_spans;

    const auto hooks = backend_hooks(model, original, intervention);
    result.forced = run_forced(model, original, prompt, hooks);
    // The original as the cpu backend computes it, when the session came from another backend (or to check).
    std::optional<Session> rerun;
    if (options.rerun_original) {
        rerun = run_forced(model, original, original_prompt(original), nullptr);
    }
    result.baseline_rerun = options.rerun_original;
    const Session& baseline = rerun ? *rerun : original;
    if (options.free_run) result.free = run_free(model, original, prompt, hooks, result.free_run);

    // Output probabilities of the original tokens, before and after.
    for (size_t t = 0; t < original.steps.size(); ++t) {
        const StepRecord &before = baseline.steps[t], &after = result.forced.steps[t];
        OutputChange o;
        o.step = static_cast<int64_t>(t);
        o.token_id = before.token_id;
        o.text = before.text;
        o.original_prob = std::exp(double(before.logprob));
        o.counterfactual_prob = std::exp(double(after.logprob));
        if (!after.top.empty()) {
            o.counterfactual_top_id = after.top.front().id;
            o.counterfactual_top_prob = after.top.front().prob;
            o.counterfactual_top_text = model.tokenizer->token_bytes(o.counterfactual_top_id);
        }
        result.outputs.push_back(std::move(o));
    }

    // Row comparisons.
    const CaptureShape& shape = original.capture->shape();
    const CpuTileSource original_source(*baseline.capture, options.threads);
    const CpuTileSource counterfactual_source(*result.forced.capture, options.threads);
    const std::vector<int64_t> original_keys = keys_of(result.key_spans);
    const std::vector<int64_t> counterfactual_keys = keys_of(result.counterfactual_key_spans);
    const int64_t n_heads = int64_t(shape.n_layer) * shape.n_head;
    for (int64_t q : queries) {
        QueryComparison c;
        c.original_query = q;
        c.counterfactual_query = *alignment.to_counterfactual(q);
        c.diff.earlier_query = q;
        c.diff.later_query = c.counterfactual_query;
        c.diff.n_layer = shape.n_layer;
        c.diff.n_head = shape.n_head;
        c.diff.heads.resize(static_cast<size_t>(n_heads));
        c.original_span_mass.resize(static_cast<size_t>(n_heads));
        c.counterfactual_span_mass.resize(static_cast<size_t>(n_heads));
        for_each_parallel(n_heads, options.threads, [&](int64_t index) {
            HeadDiff& d = c.diff.heads[static_cast<size_t>(index)];
            d.layer = static_cast<int>(index / shape.n_head);
            d.head = static_cast<int>(index % shape.n_head);
            const std::vector<float> before = original_source.row(d.layer, d.head, q);
            std::vector<float> after = counterfactual_source.row(d.layer, d.head, c.counterfactual_query);
            if (const std::vector<KeySpan>* mask = hooks->mask_of(d.layer, d.head))
                masked_row(*mask, shape.sliding_window, c.counterfactual_query, after);
            c.original_span_mass[static_cast<size_t>(index)] = mass_on_keys(before, original_keys);
            c.counterfactual_span_mass[static_cast<size_t>(index)] = mass_on_keys(after, counterfactual_keys);
            if (!alignment.edited()) {
                d.change = compare_rows(before, after);
                return;
            }
            // Over the aligned keys only: the original's keys outside the edit and their counterparts.
            std::vector<float> before_aligned, after_aligned;
            for (int64_t k = 0; k <= q; ++k) {
                const std::optional<int64_t> mapped = alignment.to_counterfactual(k);
                if (!mapped) continue;
                before_aligned.push_back(before[static_cast<size_t>(k)]);
                after_aligned.push_back(after[static_cast<size_t>(*mapped)]);
            }
            d.change = compare_rows(before_aligned, after_aligned);
        });
        rank_head_diffs(c.diff);
        result.queries.push_back(std::move(c));
    }

    // Per head over the queries.
    result.heads.resize(static_cast<size_t>(n_heads));
    for (int64_t index = 0; index < n_heads; ++index) {
        HeadChange& h = result.heads[static_cast<size_t>(index)];
        h.layer = static_cast<int>(index / shape.n_head);
        h.head = static_cast<int>(index % shape.n_head);
        h.max_jsd_bits = -1;
        for (const QueryComparison& c : result.queries) {
            const RowComparison& change = c.diff.heads[static_cast<size_t>(index)].change;
            h.mean_jsd_bits += change.jsd_bits;
            h.mean_l1 += change.l1;
            if (change.jsd_bits > h.max_jsd_bits) {
                h.max_jsd_bits = change.jsd_bits;
                h.max_jsd_query = c.original_query;
            }
            h.original_span_mass += c.original_span_mass[static_cast<size_t>(index)];
            h.counterfactual_span_mass += c.counterfactual_span_mass[static_cast<size_t>(index)];
        }
        h.max_jsd_bits = std::max(h.max_jsd_bits, 0.0);
        const double n = std::max<double>(1.0, double(result.queries.size()));
        h.mean_jsd_bits /= n, h.mean_l1 /= n, h.original_span_mass /= n, h.counterfactual_span_mass /= n;
    }
    result.ranking.resize(result.heads.size());
    std::iota(result.ranking.begin(), result.ranking.end(), 0);
    std::stable_sort(result.ranking.begin(), result.ranking.end(), [&](int a, int b) {
        const HeadChange &x = result.heads[a], &y = result.heads[b];
        if (x.mean_jsd_bits != y.mean_jsd_bits) return x.mean_jsd_bits > y.mean_jsd_bits;
        return x.mean_l1 > y.mean_l1;
    });
    return result;
}

std::vector<float> counterfactual_row(const CounterfactualResult& result, int layer, int head, int64_t query) {
    if (!result.forced.capture) fail("the counterfactual has no captured attention");
    std::vector<float> row = CpuTileSource(*result.forced.capture).row(layer, head, query);
    if (result.intervention.kind == Intervention::Kind::MaskKeys &&
        std::find(result.intervention.heads.begin(), result.intervention.heads.end(), std::make_pair(layer, head)) !=
            result.intervention.heads.end())
        masked_row({{result.intervention.begin, result.intervention.end}}, result.forced.capture->shape().sliding_window,
                   query, row);
    return row;
}

// ---- JSON -------------------------------------------------------------------------------------

nlohmann::json CounterfactualResult::to_json() const {
    auto spans_json = [](const std::vector<KeySpan>& spans) {
        nlohmann::json list = nlohmann::json::array();
        for (const KeySpan& s : spans) list.push_back({s.begin, s.end});
        return list;
    };
    nlohmann::json j;
    j["intervention"] = intervention.to_json();
    j["baseline"] = baseline_rerun ? "cpu rerun of the original tokens" : "the session's capture";
    j["alignment"] = {{"edited", alignment.edited()},
                      {"edit_begin", alignment.edit_begin},
                      {"edit_end", alignment.edit_end},
                      {"inserted_tokens", alignment.inserted}};
    j["key_spans"] = spans_json(key_spans);
    j["counterfactual_key_spans"] = spans_json(counterfactual_key_spans);
    j["counterfactual_prompt"] = forced.text.substr(0, forced.tokens.empty() || forced.prompt_tokens == 0
                                                             ? 0
                                                             : forced.tokens[static_cast<size_t>(forced.prompt_tokens - 1)].end);
    nlohmann::json query_list = nlohmann::json::array();
    for (const QueryComparison& c : queries) {
        nlohmann::json jsd = nlohmann::json::array(), l1 = nlohmann::json::array(), before = nlohmann::json::array(),
                       after = nlohmann::json::array();
        for (int layer = 0; layer < c.diff.n_layer; ++layer) {
            nlohmann::json jsd_row = nlohmann::json::array(), l1_row = nlohmann::json::array(),
                           before_row = nlohmann::json::array(), after_row = nlohmann::json::array();
            for (int head = 0; head < c.diff.n_head; ++head) {
                const size_t index = static_cast<size_t>(layer) * c.diff.n_head + head;
                jsd_row.push_back(c.diff.heads[index].change.jsd_bits);
                l1_row.push_back(c.diff.heads[index].change.l1);
                before_row.push_back(c.original_span_mass[index]);
                after_row.push_back(c.counterfactual_span_mass[index]);
            }
            jsd.push_back(jsd_row), l1.push_back(l1_row), before.push_back(before_row), after.push_back(after_row);
        }
        const HeadDiff& top = c.diff.moved_most();
        query_list.push_back({{"original_query", c.original_query},
                              {"counterfactual_query", c.counterfactual_query},
                              {"moved_most", {{"layer", top.layer}, {"head", top.head}, {"jsd_bits", top.change.jsd_bits}}},
                              {"jsd_bits", jsd},
                              {"l1", l1},
                              {"original_span_mass", before},
                              {"counterfactual_span_mass", after}});
    }
    j["queries"] = query_list;
    nlohmann::json head_list = nlohmann::json::array();
    for (int index : ranking) {
        const HeadChange& h = heads[static_cast<size_t>(index)];
        head_list.push_back({{"layer", h.layer},
                             {"head", h.head},
                             {"mean_jsd_bits", h.mean_jsd_bits},
                             {"max_jsd_bits", h.max_jsd_bits},
                             {"max_jsd_query", h.max_jsd_query},
                             {"mean_l1", h.mean_l1},
                             {"original_span_mass", h.original_span_mass},
                             {"counterfactual_span_mass", h.counterfactual_span_mass}});
    }
    j["heads"] = head_list;
    nlohmann::json output_list = nlohmann::json::array();
    for (const OutputChange& o : outputs)
        output_list.push_back({{"step", o.step},
                               {"token_id", o.token_id},
                               {"text", o.text},
                               {"original_prob", o.original_prob},
                               {"counterfactual_prob", o.counterfactual_prob},
                               {"counterfactual_top_id", o.counterfactual_top_id},
                               {"counterfactual_top_text", o.counterfactual_top_text},
                               {"counterfactual_top_prob", o.counterfactual_top_prob}});
    j["outputs"] = output_list;
    j["free_run"] = {{"ran", free_run.ran},
                     {"tokens", free_run.tokens},
                     {"text", free_run.text},
                     {"first_divergence", free_run.first_divergence},
                     {"stop_reason", free_run.stop_reason}};
    return j;
}

}  // namespace attn
