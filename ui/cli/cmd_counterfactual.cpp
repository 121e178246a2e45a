// `attnscope counterfactual`: re-run a session's prompt with one intervention (mask a key span in
// chosen heads, ablate heads, remove or replace a token span, noise a span's embeddings) on the cpu
// backend and report how attention and the output moved (engine/counterfactual.h).
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/pii.h"
#include "engine/counterfactual.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/session_file.h"
#include "ui/cli/commands.h"
#include "ui/cli/session_text.h"

namespace attn::cli {

namespace {

int64_t parse_integer(const std::string& text, const std::string& what) {
    int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size())
        fail(what, ": '", text, "' is not an integer");
    return value;
}

std::vector<std::string> split(const std::string& text, char separator) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t at; (at = text.find(separator, start)) != std::string::npos; start = at + 1)
        parts.push_back(text.substr(start, at - start));
    parts.push_back(text.substr(start));
    return parts;
}

// "A:B" → [A, B).
KeySpan parse_span(const std::string& text, const std::string& option) {
    const std::vector<std::string> parts = split(text, ':');
    if (parts.size() != 2) fail(option, ": '", text, "' is not a token span A:B (positions [A, B))");
    return {parse_integer(parts[0], option), parse_integer(parts[1], option)};
}

std::string cat_fixed(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.4f", value);
    return text;
}

// A probability in 9 columns: fixed point, or scientific below 1e-4 so that a collapse is not shown as 0.
std::string probability(double p, bool padded = true) {
    char text[32];
    const bool tiny = p > 0 && p < 1e-4;
    std::snprintf(text, sizeof text, padded ? (tiny ? "%9.2e" : "%9.4f") : (tiny ? "%.2e" : "%.4f"), p);
    return text;
}

// JSON-safe, one-line display of token bytes.
std::string shown(const std::string& bytes) {
    return nlohmann::json(bytes).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct CounterfactualCommand {
    std::string path, model = "default", backend = "cpu", out;
    std::string mask_keys, remove, replace, text, noise;
    std::vector<std::string> ablate;
    int layer = -1;
    std::string heads;
    double noise_std = -1;
    uint64_t seed = 0;
    std::vector<int64_t> queries;
    std::vector<std::string> mass_spans;
    bool json = false, no_free_run = false, rerun_original = false;
    int top = 10;
    bool text_given = false;

    Intervention intervention() const {
        const int chosen = !mask_keys.empty() + !ablate.empty() + !remove.empty() + !replace.empty() + !noise.empty();
        if (chosen != 1)
            fail(chosen == 0 ? "choose an intervention" : "choose one intervention",
                 ": --mask-keys A:B --layer L --head H[,H..] | --ablate L:H[:zero|mean] | --remove A:B | "
                 "--replace A:B --text T | --noise A:B --std S [--seed N]");
        if (!mask_keys.empty()) {
            if (layer < 0) fail("--mask-keys needs --layer L (the layer of the masked heads)");
            if (heads.empty()) fail("--mask-keys needs --head H[,H..] (the masked heads of layer ", layer, ")");
            std::vector<std::pair<int, int>> masked;
            for (const std::string& h : split(heads, ','))
                masked.emplace_back(layer, static_cast<int>(parse_integer(h, "--head")));
            const KeySpan span = parse_span(mask_keys, "--mask-keys");
            return Intervention::mask_keys(span.begin, span.end, masked);
        }
        if (layer >= 0 || !heads.empty()) fail("--layer and --head go with --mask-keys");
        if (!ablate.empty()) {
            std::vector<std::pair<int, int>> ablated;
            std::string mode;
            for (const std::string& spec : ablate) {
                const std::vector<std::string> parts = split(spec, ':');
                if (parts.size() < 2 || parts.size() > 3)
                    fail("--ablate: '", spec, "' is not LAYER:HEAD or LAYER:HEAD:zero|mean");
                const std::string this_mode = parts.size() == 3 ? parts[2] : "zero";
                if (this_mode != "zero" && this_mode != "mean")
                    fail("--ablate: '", this_mode, "' is not an ablation (zero or mean)");
                if (!mode.empty() && mode != this_mode) fail("--ablate: all heads must use the same ablation (zero or mean)");
                mode = this_mode;
                ablated.emplace_back(static_cast<int>(parse_integer(parts[0], "--ablate layer")),
                                     static_cast<int>(parse_integer(parts[1], "--ablate head")));
            }
            return Intervention::ablate_heads(ablated, mode == "mean");
        }
        if (!remove.empty()) {
            const KeySpan span = parse_span(remove, "--remove");
            return Intervention::remove_span(span.begin, span.end);
        }
        if (!replace.empty()) {
            if (!text_given) fail("--replace needs --text T (the replacement text; \"\" removes the span)");
            const KeySpan span = parse_span(replace, "--replace");
            return Intervention::replace_span(span.begin, span.end, text);
        }
        if (noise_std < 0) fail("--noise needs --std S >= 0 (the noise's standard deviation)");
        const KeySpan span = parse_span(noise, "--noise");
        return Intervention::embedding_noise(span.begin, span.end, noise_std, seed);
    }

    void run() {
        if (parse_backend_kind(backend) != BackendKind::Cpu)
            fail("counterfactuals run on the cpu backend (the fp32 reference with intervention hooks), not '", backend, "'");
        if (top < 1) fail("--top must be >= 1");
        const Intervention what = intervention();  // argument errors before loading anything
        CounterfactualOptions options;
        options.queries = queries;
        options.free_run = !no_free_run;
        options.rerun_original = rerun_original;
        for (const std::string& s : mass_spans) options.key_spans.push_back(parse_span(s, "--mass-span"));
        const Session session = load_session(path);
        const auto loaded = Model::load(resolve_model_path(model));
        const CounterfactualResult result = run_counterfactual(*loaded, session, what, options);
        if (!out.empty()) save_session(out, result.forced);
        if (json) {
            nlohmann::json j = result.to_json();
            if (privacy_defaults().mask_pii) mask_pii_json(j, session.text, find_pii(session.text));
            j["session"] = path;
            if (!out.empty()) j["output"] = out;
            std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            return;
        }
        print_table(session, result);
        if (!out.empty()) std::printf("wrote the teacher-forced counterfactual session to %s\n", out.c_str());
    }

    void print_table(const Session& session, const CounterfactualResult& r) const {
        std::printf("intervention: %s\n", r.intervention.describe().c_str());
        if (r.baseline_rerun) std::printf("baseline: the original tokens re-run on the cpu backend\n");
        if (r.alignment.edited())
            std::printf("prompt edited: original tokens [%lld, %lld) → %lld tokens; later positions shift by %+lld; "
                        "rows compared over the aligned keys\n",
                        static_cast<long long>(r.alignment.edit_begin), static_cast<long long>(r.alignment.edit_end),
                        static_cast<long long>(r.alignment.inserted),
                        static_cast<long long>(r.alignment.inserted - (r.alignment.edit_end - r.alignment.edit_begin)));
        std::string spans;
        for (const KeySpan& s : r.key_spans) spans += cat(spans.empty() ? "" : ", ", "[", s.begin, ", ", s.end, ")");
        if (!r.queries.empty())
            std::printf("compared %zu query rows (original %lld..%lld) in %zu heads; span mass on %s\n", r.queries.size(),
                        static_cast<long long>(r.queries.front().original_query),
                        static_cast<long long>(r.queries.back().original_query), r.heads.size(),
                        spans.empty() ? "(no span)" : spans.c_str());
        std::printf("\nheads whose attention moved most (JSD in bits, L1; means over the compared rows):\n");
        std::printf("%5s %4s %9s %9s %7s %8s %14s\n", "layer", "head", "mean_jsd", "max_jsd", "@query", "mean_l1",
                    "span mass");
        const size_t shown_heads = std::min<size_t>(static_cast<size_t>(top), r.ranking.size());
        for (size_t k = 0; k < shown_heads; ++k) {
            const HeadChange& h = r.heads[static_cast<size_t>(r.ranking[k])];
            const std::string mass = r.key_spans.empty()
                                         ? std::string("-")
                                         : cat_fixed(h.original_span_mass) + " → " + cat_fixed(h.counterfactual_span_mass);
            std::printf("%5d %4d %9.4f %9.4f %7lld %8.4f  %s\n", h.layer, h.head, h.mean_jsd_bits, h.max_jsd_bits,
                        static_cast<long long>(h.max_jsd_query), h.mean_l1, mass.c_str());
        }
        if (!r.outputs.empty()) {
            std::printf("\noriginal output tokens, teacher-forced (probability before → after; the counterfactual's top token):\n");
            std::printf("%5s  %-16s %9s %9s  %s\n", "step", "token", "before", "after", "top after");
            for (const OutputChange& o : r.outputs)
                std::printf("%5lld  %-16s %s %s  %s %s\n", static_cast<long long>(o.step), shown(o.text).c_str(),
                            probability(o.original_prob).c_str(), probability(o.counterfactual_prob).c_str(),
                            shown(o.counterfactual_top_text).c_str(), probability(o.counterfactual_top_prob, false).c_str());
        }
        if (r.free_run.ran) {
            std::string original_text;
            for (const StepRecord& s : session.steps) original_text += s.text;
            std::printf("\nfree run (%s): %s\n", session.sampling.greedy ? "greedy" : "sampled, same seed",
                        shown(r.free_run.text).c_str());
            std::printf("original:  %s\n", shown(original_text).c_str());
            if (r.free_run.first_divergence < 0) std::printf("same tokens as the original\n");
            else std::printf("first divergence at step %lld\n", static_cast<long long>(r.free_run.first_divergence));
            if (!r.free_run.stop_reason.empty()) std::printf("stopped early: %s\n", r.free_run.stop_reason.c_str());
        }
    }
};

}  // namespace

void add_counterfactual_command(CLI::App& app) {
    auto cmd = std::make_shared<CounterfactualCommand>();
    CLI::App* c = app.add_subcommand(
        "counterfactual",
        "Re-run a session with an intervention (mask keys, ablate heads, remove/replace a span, embedding noise) and "
        "show how attention and the output tokens moved");
    c->add_option("session", cmd->path, "Session file (.attn)")->required();
    c->add_option("--model", cmd->model, "The model that captured the session: PATH or default")->capture_default_str();
    c->add_option("--backend", cmd->backend, "Backend (counterfactuals need cpu)")->capture_default_str();
    c->add_option("--mask-keys", cmd->mask_keys, "Mask keys [A, B) (scores −inf before the softmax) in --layer/--head");
    c->add_option("--layer", cmd->layer, "Layer of the masked heads");
    c->add_option("--head", cmd->heads, "Masked heads of that layer: H[,H..]");
    c->add_option("--ablate", cmd->ablate,
                  "Ablate a head's output: LAYER:HEAD[:zero|mean] (mean: its mean over the original's positions); repeatable");
    c->add_option("--remove", cmd->remove, "Remove the prompt's tokens [A, B)");
    c->add_option("--replace", cmd->replace, "Replace the prompt's tokens [A, B) with --text");
    c->add_option("--text", cmd->text, "Replacement text for --replace")->each([cmd](const std::string&) {
        cmd->text_given = true;
    });
    c->add_option("--noise", cmd->noise, "Add Gaussian noise to the embeddings of tokens [A, B)");
    c->add_option("--std", cmd->noise_std, "Standard deviation of the --noise");
    c->add_option("--seed", cmd->seed, "Seed of the --noise")->capture_default_str();
    c->add_option("--query", cmd->queries,
                  "Original query row to compare (repeatable; default: the last prompt position and every decode step)");
    c->add_option("--mass-span", cmd->mass_spans,
                  "Key span A:B whose mass is reported before/after (repeatable; default: the intervention's span)");
    c->add_option("--top", cmd->top, "Heads shown in the table")->capture_default_str();
    c->add_flag("--no-free-run", cmd->no_free_run, "Skip the free-running decode (teacher-forced only)");
    c->add_flag("--rerun-original", cmd->rerun_original,
                "Compare against the original tokens re-run on the cpu backend, not the session's capture (for "
                "sessions captured on cuda)");
    c->add_flag("--json", cmd->json, "One JSON object instead of the table");
    c->add_flag_callback("--no-pii-masking", [] { set_privacy_defaults(PrivacySettings{false}); },
                         "Show personal data (ID numbers, phones, cards, e-mail, IPs) in token texts unmasked");
    c->add_option("-o,--output", cmd->out, "Save the teacher-forced counterfactual session (.attn, atomically)");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
