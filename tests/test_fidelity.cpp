// Fidelity against Hugging Face transformers (eager attention, fp32, CPU) on the same GGUF:
// fixtures made by tests/reference/make_reference.py.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/cpu_backend.h"
#include "engine/generation.h"
#include "engine/tile_source.h"
#include "tests/model_fixture.h"

using namespace attn;

namespace {

const nlohmann::json& reference() {
    static const nlohmann::json fixture = [] {
        std::ifstream in(std::string(ATTNSCOPE_FIXTURES_DIR) + "/reference/smollm2_reference.json");
        REQUIRE(in);
        return nlohmann::json::parse(in);
    }();
    return fixture;
}

struct PromptRun {
    std::vector<int32_t> ids;
    std::vector<float> logits;
    std::unique_ptr<CaptureStore> capture;
};

PromptRun run_prompt(const Model& model, const nlohmann::json& prompt) {
    PromptRun run;
    run.ids = prompt["token_ids"].get<std::vector<int32_t>>();
    run.logits.resize(model.config.vocab);
    run.capture = std::make_unique<CaptureStore>(capture_shape_of(model.config));
    auto backend = make_cpu_backend(model);
    backend->forward(run.ids, run.logits, run.capture.get());
    return run;
}

}  // namespace

TEST_CASE("reference fixture matches the model in the cache", "[fidelity]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    CHECK(model->hashed_identity().sha256 == reference()["meta"]["model"]["sha256"].get<std::string>());
}

TEST_CASE("token ids equal the reference tokenizer's", "[fidelity][tokenizer]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    for (const auto& [name, prompt] : reference()["prompts"].items()) {
        INFO("prompt " << name);
        const auto tokens = model->tokenizer->encode(prompt["text"].get<std::string>(), true,
                                                     model->tokenizer->add_bos_token());
        std::vector<int32_t> ids;
        for (const Token& t : tokens) ids.push_back(t.id);
        CHECK(ids == prompt["token_ids"].get<std::vector<int32_t>>());
    }
}

TEST_CASE("logits and attention probabilities match Hugging Face", "[fidelity]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    double worst_prob = 0, worst_logit = 0, worst_lse = 0;
    for (const auto& [name, prompt] : reference()["prompts"].items()) {
        INFO("prompt " << name);
        const PromptRun run = run_prompt(*model, prompt);
        for (const auto& pair : prompt["last_logits_top20"]) {
            const int id = pair[0].get<int>();
            worst_logit = std::max(worst_logit, std::abs(run.logits[id] - pair[1].get<double>()));
        }
        const CpuTileSource tiles(*run.capture);
        for (const auto& triple : prompt["attention"]) {
            const int layer = triple["layer"], head = triple["head"];
            const int64_t query = triple["query"].get<int64_t>();
            const auto expected = triple["probs"].get<std::vector<double>>();
            const std::vector<float> probs = tiles.row(layer, head, query);
            REQUIRE(probs.size() == expected.size());
            for (size_t j = 0; j < probs.size(); ++j) worst_prob = std::max(worst_prob, std::abs(probs[j] - expected[j]));
        }
        if (prompt.contains("hidden_check"))
            for (const auto& check : prompt["hidden_check"]["lse"]) {
                const int layer = check["layer"];
                const int64_t query = check["query"];
                const auto values = check["values"].get<std::vector<double>>();
                for (size_t h = 0; h < values.size(); ++h)
                    worst_lse = std::max(worst_lse, std::abs(run.capture->lse(layer, query, static_cast<int>(h)) - values[h]));
            }
    }
    WARN("max abs error vs Hugging Face: probabilities " << worst_prob << ", top-20 logits " << worst_logit
                                                          << ", LSE " << worst_lse);
    CHECK(worst_prob <= 1e-5);
    CHECK(worst_logit <= 1e-3);
    CHECK(worst_lse <= 1e-3);
}

TEST_CASE("greedy continuations match Hugging Face", "[fidelity]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    for (const auto& [name, prompt] : reference()["prompts"].items()) {
        INFO("prompt " << name);
        auto backend = make_cpu_backend(*model);
        std::vector<int32_t> ids = prompt["token_ids"].get<std::vector<int32_t>>();
        std::vector<float> logits(model->config.vocab);
        backend->forward(ids, logits, nullptr);
        std::vector<int32_t> generated;
        for (int step = 0; step < 16; ++step) {
            const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
            generated.push_back(next);
            backend->forward(std::span<const int32_t>(&next, 1), logits, nullptr);
        }
        CHECK(generated == prompt["greedy16"].get<std::vector<int32_t>>());
    }
}
