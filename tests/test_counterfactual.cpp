// Counterfactual re-runs (engine/counterfactual.h): key masks, head ablation, span removal and
// replacement, embedding noise, the position alignment, teacher-forced probabilities and the CLI,
// on the tiny Hugging Face fixtures (tests/fixtures/tiny_models) and once on the default model.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "engine/counterfactual.h"
#include "engine/cpu_backend.h"
#include "engine/error.h"
#include "engine/generation.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace attn;
using attn::testing::run_cli;
using attn::testing::TempDir;

namespace {

std::string tiny_dir(const std::string& name) { return std::string(ATTNSCOPE_FIXTURES_DIR) + "/tiny_models/" + name; }

const Model& tiny(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Model>> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, Model::load(tiny_dir(name))).first;
    return *it->second;
}

const char* kPrompt = "the cat sat on the mat and the dog sat on the log";

// A greedy session captured on the cpu backend (the counterfactual's own backend).
Session original_session(const Model& model, int steps = 5, const char* prompt = kPrompt) {
    auto backend = make_cpu_backend(model);
    GenerationRequest request;
    request.prompt = prompt;
    request.sampling.greedy = true;
    request.sampling.max_new_tokens = steps;
    request.sampling.stop_at_eos = false;
    return generate(model, *backend, request);
}

std::vector<float> row_of(const Session& s, int layer, int head, int64_t query) {
    return CpuTileSource(*s.capture).row(layer, head, query);
}

// The key span [begin, begin + width) with the most mass in (layer, head)'s row at `query`.
KeySpan most_attended_span(const Session& s, int layer, int head, int64_t query, int64_t width) {
    const std::vector<float> row = row_of(s, layer, head, query);
    KeySpan best{0, width};
    double best_mass = -1;
    for (int64_t b = 0; b + width <= query + 1; ++b) {
        const double mass = std::accumulate(row.begin() + b, row.begin() + b + width, 0.0);
        if (mass > best_mass) best_mass = mass, best = {b, b + width};
    }
    return best;
}

double span_mass(const std::vector<float>& row, const KeySpan& span) {
    double total = 0;
    for (int64_t k = span.begin; k < span.end && k < static_cast<int64_t>(row.size()); ++k) total += row[k];
    return total;
}

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("counterfactual: masking the attended key span drops its mass to exactly 0 in that head", "[counterfactual]") {
    for (const char* name : {"tiny_llama", "tiny_mistral", "tiny_gpt2"}) {
        INFO("model " << name);
        const Model& model = tiny(name);
        const Session original = original_session(model);
        const int64_t last_prompt = original.prompt_tokens - 1;
        const KeySpan span = most_attended_span(original, 0, 1, last_prompt, 2);
        const double before = span_mass(row_of(original, 0, 1, last_prompt), span);
        REQUIRE(before > 0.0);

        const CounterfactualResult r =
            run_counterfactual(model, original, Intervention::mask_keys(span.begin, span.end, {{0, 1}}));
        REQUIRE(r.forced.positions() == original.positions());
        const int64_t captured = r.forced.capture->positions();
        for (int64_t q = span.end; q < captured; ++q) {
            INFO("query " << q);
            const std::vector<float> row = counterfactual_row(r, 0, 1, q);
            // The capture's LSE is the masked softmax's: the unmasked keys alone sum to 1.
            const std::vector<float> raw = row_of(r.forced, 0, 1, q);
            double unmasked = 0;
            for (int64_t k = 0; k <= q; ++k)
                if (!span.contains(k)) unmasked += raw[k];
            CHECK(unmasked == Approx(1.0).margin(1e-5));
            CHECK(span_mass(row, span) == 0.0);
            CHECK(std::accumulate(row.begin(), row.end(), 0.0) == Approx(1.0).margin(1e-5));
        }
        // The summary reports the same: the masked head's mass on the span went to 0.
        const HeadChange& masked = r.heads[1];
        CHECK(masked.original_span_mass > 0.0);
        CHECK(masked.counterfactual_span_mass == 0.0);
        CHECK(masked.mean_jsd_bits > 0.0);
        CHECK(r.queries.front().original_query == last_prompt);
        CHECK(r.queries.size() == static_cast<size_t>(captured - last_prompt));

        // The other heads of layer 0 see the same Q and K: bit-identical rows at every query.
        for (int head = 0; head < model.config.n_head; ++head) {
            if (head == 1) continue;
            for (int64_t q = 0; q < captured; ++q) REQUIRE(row_of(r.forced, 0, head, q) == row_of(original, 0, head, q));
        }
        // Layer 1 reads the masked head's changed output: some row moves.
        double moved = 0;
        for (const QueryComparison& c : r.queries)
            for (int head = 0; head < model.config.n_head; ++head) moved = std::max(moved, c.diff.at(1, head).change.jsd_bits);
        CHECK(moved > 0.0);
    }
}

TEST_CASE("counterfactual: zero ablation changes later layers but not the ablated layer's P", "[counterfactual]") {
    const Model& model = tiny("tiny_llama");
    const Session original = original_session(model);
    const CounterfactualResult zero = run_counterfactual(model, original, Intervention::ablate_heads({{0, 2}}, false));
    const CounterfactualResult mean = run_counterfactual(model, original, Intervention::ablate_heads({{0, 2}}, true));
    const int64_t captured = original.capture->positions();
    double zero_moved = 0, mean_moved = 0, zero_vs_mean = 0;
    for (int head = 0; head < model.config.n_head; ++head) {
        for (int64_t q = 0; q < captured; ++q) {
            REQUIRE(row_of(zero.forced, 0, head, q) == row_of(original, 0, head, q));
            REQUIRE(row_of(mean.forced, 0, head, q) == row_of(original, 0, head, q));
            const RowComparison c = compare_rows(row_of(zero.forced, 1, head, q), row_of(mean.forced, 1, head, q));
            zero_vs_mean = std::max(zero_vs_mean, c.jsd_bits);
        }
        zero_moved = std::max(zero_moved, zero.heads[static_cast<size_t>(model.config.n_head + head)].max_jsd_bits);
        mean_moved = std::max(mean_moved, mean.heads[static_cast<size_t>(model.config.n_head + head)].max_jsd_bits);
        CHECK(zero.heads[static_cast<size_t>(head)].max_jsd_bits == 0.0);
    }
    CHECK(zero_moved > 0.0);
    CHECK(mean_moved > 0.0);
    CHECK(zero_vs_mean > 0.0);  // the mean is not zero: the two ablations differ
    // Ablating an out-of-range head is refused before anything runs.
    CHECK_THAT(error_of([&] { run_counterfactual(model, original, Intervention::ablate_heads({{0, 9}}, false)); }),
               Catch::Contains("head 9 is out of range (0..3)"));
    CHECK_THAT(error_of([&] { run_counterfactual(model, original, Intervention::ablate_heads({{5, 0}}, true)); }),
               Catch::Contains("layer 5 is out of range (0..1)"));
}

TEST_CASE("counterfactual: removing and replacing a span align positions outside it", "[counterfactual]") {
    const Model& model = tiny("tiny_llama");
    const Session original = original_session(model);
    const int64_t prompt = original.prompt_tokens, last = original.capture->positions() - 1;
    REQUIRE(prompt >= 8);
    const int64_t begin = 3, end = 5;

    CounterfactualOptions options;
    options.queries = {begin - 1, end, prompt - 1, last};
    const CounterfactualResult removed = run_counterfactual(model, original, Intervention::remove_span(begin, end), options);
    CHECK(removed.alignment.edited());
    CHECK(removed.alignment.inserted == 0);
    CHECK(removed.forced.prompt_tokens == prompt - 2);
    REQUIRE(removed.forced.positions() == original.positions() - 2);
    for (int64_t p = 0; p < original.positions(); ++p) {
        const std::optional<int64_t> mapped = removed.alignment.to_counterfactual(p);
        if (p >= begin && p < end) {
            CHECK(!mapped);
            continue;
        }
        REQUIRE(mapped);
        CHECK(*mapped == (p < begin ? p : p - 2));
        CHECK(removed.forced.tokens[*mapped].id == original.tokens[p].id);
    }
    // The edited prompt's text is the original's without the removed tokens' bytes.
    const std::string cut = original.text.substr(original.tokens[begin].begin,
                                                 original.tokens[end - 1].end - original.tokens[begin].begin);
    const std::string original_prompt = original.text.substr(0, original.tokens[prompt - 1].end);
    CHECK(removed.to_json()["counterfactual_prompt"] ==
          original_prompt.substr(0, original.tokens[begin].begin) + original_prompt.substr(original.tokens[end].begin));
    CHECK(!cut.empty());
    REQUIRE(removed.queries.size() == 4);
    CHECK(removed.queries[0].counterfactual_query == begin - 1);
    CHECK(removed.queries[1].counterfactual_query == begin);
    CHECK(removed.queries[3].counterfactual_query == last - 2);
    // Before the edit nothing can change (causal); after it, every row is compared over aligned keys.
    for (const HeadDiff& d : removed.queries[0].diff.heads) CHECK(d.change.jsd_bits == 0.0);
    double moved = 0;
    for (const HeadDiff& d : removed.queries[3].diff.heads) moved = std::max(moved, d.change.jsd_bits);
    CHECK(moved > 0.0);
    // The removed keys carry no mass in the counterfactual (they are gone).
    CHECK(removed.counterfactual_key_spans.empty());
    for (const HeadChange& h : removed.heads) CHECK(h.counterfactual_span_mass == 0.0);
    // A query inside the removed span has no counterpart.
    CounterfactualOptions inside;
    inside.queries = {begin};
    CHECK_THAT(error_of([&] { run_counterfactual(model, original, Intervention::remove_span(begin, end), inside); }),
               Catch::Contains("inside the edited span [3, 5)"));

    const std::string replacement = " a bird flew";
    const int64_t inserted = static_cast<int64_t>(model.tokenizer->encode(replacement, true, false).size());
    const CounterfactualResult replaced =
        run_counterfactual(model, original, Intervention::replace_span(begin, end, replacement), options);
    CHECK(replaced.alignment.inserted == inserted);
    REQUIRE(replaced.forced.positions() == original.positions() - 2 + inserted);
    for (int64_t p = end; p < original.positions(); ++p)
        CHECK(replaced.forced.tokens[p - 2 + inserted].id == original.tokens[p].id);
    REQUIRE(replaced.counterfactual_key_spans.size() == 1);
    CHECK(replaced.counterfactual_key_spans[0].begin == begin);
    CHECK(replaced.counterfactual_key_spans[0].end == begin + inserted);
    CHECK(replaced.queries[3].counterfactual_query == last - 2 + inserted);

    CHECK_THAT(error_of([&] { run_counterfactual(model, original, Intervention::remove_span(prompt - 1, prompt + 1)); }),
               Catch::Contains("span [" + std::to_string(prompt - 1) + ", " + std::to_string(prompt + 1) +
                               ") is not a non-empty range of prompt positions"));
    CHECK_THAT(error_of([&] { run_counterfactual(model, original, Intervention::remove_span(0, prompt)); }),
               Catch::Contains("removing the whole prompt"));
}

TEST_CASE("counterfactual: noise with std 0 reproduces the original exactly; noise moves it", "[counterfactual]") {
    const Model& model = tiny("tiny_llama");
    const Session original = original_session(model, 6);
    const int64_t prompt = original.prompt_tokens;
    const CounterfactualResult same = run_counterfactual(model, original, Intervention::embedding_noise(1, prompt, 0.0, 7));
    for (const QueryComparison& c : same.queries)
        for (const HeadDiff& d : c.diff.heads) {
            CHECK(d.change.jsd_bits == 0.0);
            CHECK(d.change.l1 == 0.0);
        }
    // Teacher-forced probabilities of the original tokens are the original's, to the bit.
    REQUIRE(same.outputs.size() == original.steps.size());
    for (const OutputChange& o : same.outputs) CHECK(o.counterfactual_prob == o.original_prob);
    CHECK(same.free_run.ran);
    CHECK(same.free_run.first_divergence == -1);
    CHECK(same.free->steps.size() == original.steps.size());

    const CounterfactualResult noisy = run_counterfactual(model, original, Intervention::embedding_noise(1, prompt, 0.5, 7));
    const CounterfactualResult again = run_counterfactual(model, original, Intervention::embedding_noise(1, prompt, 0.5, 7));
    double moved = 0, changed_prob = 0;
    for (const HeadChange& h : noisy.heads) moved = std::max(moved, h.max_jsd_bits);
    for (const OutputChange& o : noisy.outputs) changed_prob = std::max(changed_prob, std::abs(o.counterfactual_prob - o.original_prob));
    CHECK(moved > 0.0);
    CHECK(changed_prob > 0.0);
    // Seeded: the same seed gives the same run.
    for (size_t t = 0; t < noisy.outputs.size(); ++t) CHECK(noisy.outputs[t].counterfactual_prob == again.outputs[t].counterfactual_prob);
    CHECK(noisy.free_run.tokens == again.free_run.tokens);

    // The session was captured on the cpu backend: re-running the original as the baseline changes nothing.
    CounterfactualOptions rerun;
    rerun.rerun_original = true;
    rerun.free_run = false;
    const CounterfactualResult against_rerun =
        run_counterfactual(model, original, Intervention::embedding_noise(1, prompt, 0.5, 7), rerun);
    CHECK(against_rerun.baseline_rerun);
    CHECK(!against_rerun.free);
    for (size_t h = 0; h < noisy.heads.size(); ++h) CHECK(against_rerun.heads[h].mean_jsd_bits == noisy.heads[h].mean_jsd_bits);
    for (size_t t = 0; t < noisy.outputs.size(); ++t) CHECK(against_rerun.outputs[t].original_prob == noisy.outputs[t].original_prob);

    CHECK_THAT(error_of([&] { run_counterfactual(model, original, Intervention::embedding_noise(0, 2, -1.0, 0)); }),
               Catch::Contains("standard deviation"));
}

TEST_CASE("counterfactual: result JSON, bad sessions and other backends", "[counterfactual]") {
    const Model& llama = tiny("tiny_llama");
    const Session original = original_session(llama, 3);
    const CounterfactualResult r = run_counterfactual(llama, original, Intervention::mask_keys(1, 3, {{1, 0}, {1, 3}}));
    const nlohmann::json j = nlohmann::json::parse(r.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    CHECK(j["intervention"]["kind"] == "mask_keys");
    CHECK(j["heads"].size() == 8);
    CHECK(j["queries"].size() == r.queries.size());
    CHECK(j["queries"][0]["jsd_bits"].size() == 2);
    CHECK(j["queries"][0]["jsd_bits"][0].size() == 4);
    CHECK(j["outputs"].size() == 3);
    // Masking layer 1 leaves all of layer 0 and the unmasked heads of layer 1 where they were.
    for (const QueryComparison& c : r.queries) {
        for (int head = 0; head < 4; ++head) CHECK(c.diff.at(0, head).change.jsd_bits == 0.0);
        CHECK(c.diff.at(1, 1).change.jsd_bits == 0.0);
        CHECK(c.diff.at(1, 2).change.jsd_bits == 0.0);
    }

    // A model of another shape than the session's.
    CHECK_THAT(error_of([&] { run_counterfactual(tiny("tiny_gpt2"), original, Intervention::remove_span(0, 1)); }),
               Catch::Contains("does not match the session's"));
    Session uncaptured = original;
    uncaptured.capture.reset();
    CHECK_THAT(error_of([&] { run_counterfactual(llama, uncaptured, Intervention::remove_span(0, 1)); }),
               Catch::Contains("no captured attention"));
    CounterfactualOptions outside;
    outside.queries = {original.positions() + 3};
    CHECK_THAT(error_of([&] { run_counterfactual(llama, original, Intervention::remove_span(0, 1), outside); }),
               Catch::Contains("is out of range"));

    // A backend without hooks refuses an intervention (the cuda backend inherits this).
    struct NoHooks final : Backend {
        std::string name() const override { return "cuda"; }
        void forward(std::span<const int32_t>, std::span<float>, CaptureStore*, const ProgressFn&) override {}
        int64_t cached() const override { return 0; }
        void truncate(int64_t) override {}
        std::unique_ptr<Backend> fork() const override { return nullptr; }
        int64_t capacity() const override { return 0; }
    } no_hooks;
    auto hooks = std::make_shared<AttentionIntervention>();
    hooks->key_masks[{0, 0}].push_back({0, 1});
    CHECK_THAT(error_of([&] { no_hooks.set_intervention(hooks); }), Catch::Contains("counterfactuals run on the cpu backend"));
    no_hooks.set_intervention(nullptr);  // clearing is always fine
    // The cpu backend checks what it is given.
    auto cpu = make_cpu_backend(llama);
    auto bad = std::make_shared<AttentionIntervention>();
    bad->embedding_offsets[0] = std::vector<float>(3, 0.f);
    CHECK_THAT(error_of([&] { cpu->set_intervention(bad); }), Catch::Contains("has 3 values"));
}

TEST_CASE("counterfactual: CLI table, JSON, output session and argument errors", "[counterfactual]") {
    TempDir dir("counterfactual");
    const Model& model = tiny("tiny_llama");
    const std::string session_path = dir.file("s.attn");
    save_session(session_path, original_session(model, 3));
    const std::string base = "counterfactual " + session_path + " --model " + tiny_dir("tiny_llama");

    const auto table = run_cli(base + " --mask-keys 1:3 --layer 0 --head 1 -o " + dir.file("cf.attn"));
    INFO(table.err);
    REQUIRE(table.exit_code == 0);
    CHECK_THAT(table.out, Catch::Contains("intervention: mask keys [1, 3) in L0H1"));
    CHECK_THAT(table.out, Catch::Contains("heads whose attention moved most"));
    CHECK_THAT(table.out, Catch::Contains("first divergence") || Catch::Contains("same tokens as the original"));
    const Session saved = load_session(dir.file("cf.attn"));
    CHECK(saved.steps.size() == 3);

    const auto json = run_cli(base + " --ablate 0:1:mean --json --no-free-run");
    REQUIRE(json.exit_code == 0);
    const nlohmann::json j = nlohmann::json::parse(json.out);
    CHECK(j["intervention"]["ablation"] == "mean");
    CHECK(j["free_run"]["ran"] == false);

    const auto check_error = [&](const std::string& args, const std::string& expected) {
        const auto r = run_cli(base + " " + args);
        INFO(args << " → " << r.err);
        CHECK(r.exit_code != 0);
        CHECK_THAT(r.err, Catch::Contains(expected));
    };
    check_error("", "choose an intervention");
    check_error("--remove 1:2 --noise 1:2 --std 1", "choose one intervention");
    check_error("--mask-keys 4:2 --layer 0 --head 1", "span [4, 2) is not a non-empty range");
    check_error("--mask-keys 1:2 --layer 0", "needs --head");
    check_error("--mask-keys 1:2 --layer 3 --head 1", "layer 3 is out of range (0..1)");
    check_error("--mask-keys 1:x --layer 0 --head 1", "'x' is not an integer");
    check_error("--ablate 0:1:half", "'half' is not an ablation");
    check_error("--replace 1:2", "needs --text");
    check_error("--noise 1:2", "needs --std");
    check_error("--remove 1:2 --backend cuda", "counterfactuals run on the cpu backend");
    check_error("--remove 1:2 --query 9999", "query 9999 is out of range");
    const auto other = run_cli("counterfactual " + session_path + " --model " + tiny_dir("tiny_gpt2") + " --remove 1:2");
    CHECK(other.exit_code != 0);
    CHECK_THAT(other.err, Catch::Contains("does not match the session's"));
}

TEST_CASE("counterfactual: default model, masking the most attended span", "[counterfactual][model]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    const Session original = original_session(*model, 4, "The capital of France is Paris. The capital of Italy is");
    const int64_t last_prompt = original.prompt_tokens - 1;
    const int layer = 3, head = 2;
    const KeySpan span = most_attended_span(original, layer, head, last_prompt, 1);
    const CounterfactualResult r =
        run_counterfactual(*model, original, Intervention::mask_keys(span.begin, span.end, {{layer, head}}));
    const std::vector<float> row = counterfactual_row(r, layer, head, last_prompt);
    CHECK(span_mass(row, span) == 0.0);
    CHECK(std::accumulate(row.begin(), row.end(), 0.0) == Approx(1.0).margin(1e-4));
    CHECK(r.heads[static_cast<size_t>(layer * model->config.n_head + head)].original_span_mass > 0.0);
    for (int h = 0; h < model->config.n_head; ++h)
        if (h != head) CHECK(r.queries.front().diff.at(layer, h).change.jsd_bits == 0.0);
    CHECK(r.outputs.size() == 4);
}
