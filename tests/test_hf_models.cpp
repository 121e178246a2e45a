// Hugging Face directories of every supported architecture, against transformers: tiny
// random checkpoints (llama with llama3 RoPE, llama with linear RoPE in bf16 and a legacy
// config.json, qwen2 sharded, mistral with a sliding window, gpt2) and their reference
// outputs, made by tests/reference/make_tiny_models.py into tests/fixtures/tiny_models/.
// Also the loader's errors for unsupported, incomplete and malformed directories.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu_backend.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/session.h"
#include "engine/tile_source.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace attn;
using nlohmann::json;
using attn::testing::TempDir;

namespace {

constexpr double kLogitTolerance = 1e-4;
constexpr double kProbTolerance = 1e-5;

const std::vector<std::string> kModels = {"tiny_llama", "tiny_llama_linear", "tiny_qwen2", "tiny_mistral",
                                          "tiny_gpt2"};

std::string model_dir(const std::string& name) { return std::string(ATTNSCOPE_FIXTURES_DIR) + "/tiny_models/" + name; }

json read_json(const std::string& path) {
    std::ifstream in(path);
    REQUIRE(in);
    return json::parse(in);
}

const json& reference(const std::string& name) {
    static std::map<std::string, json> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, read_json(model_dir(name) + "/reference.json")).first;
    return it->second;
}

// Loaded once per model per test process.
const Model& tiny_model(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Model>> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, Model::load(model_dir(name))).first;
    return *it->second;
}

std::vector<int32_t> ids_of(const std::vector<Token>& tokens) {
    std::vector<int32_t> ids;
    for (const Token& t : tokens) ids.push_back(t.id);
    return ids;
}


std::string read_bytes(const std::string& path) {
    REQUIRE(fs::exists(path));
    return attn::testing::read_file_string(path);
}

void write_bytes(const std::string& path, std::string_view bytes) {
    std::error_code ignored;
    fs::remove(path, ignored);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(out);
}

// Copies a fixture model directory (all files) into a temp dir.
void copy_model(const std::string& name, const TempDir& dir) {
    for (const auto& entry : fs::directory_iterator(model_dir(name)))
        fs::copy_file(entry.path(), dir.file(entry.path().filename().string()), fs::copy_options::overwrite_existing);
}

// Rewrites a safetensors file without one tensor: the header loses the entry (padded with
// spaces to keep the data 8-byte aligned), the data section is kept as it is.
void drop_tensor_from_safetensors(const std::string& path, const std::string& tensor) {
    const std::string bytes = read_bytes(path);
    REQUIRE(bytes.size() >= 8);
    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes.data(), 8);
    json header = json::parse(bytes.substr(8, header_len));
    REQUIRE(header.erase(tensor) == 1);
    std::string text = header.dump();
    while ((8 + text.size()) % 8 != 0) text += ' ';
    const uint64_t new_len = text.size();
    std::string out(8, '\0');
    std::memcpy(out.data(), &new_len, 8);
    out += text;
    out += bytes.substr(8 + header_len);
    write_bytes(path, out);
}

std::string load_error(const std::string& path) {
    try {
        Model::load(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("HF tiny models: fixtures are present and small", "[hf]") {
    uintmax_t total = 0;
    for (const std::string& name : kModels) {
        INFO("model " << name);
        REQUIRE(fs::exists(model_dir(name) + "/config.json"));
        REQUIRE(fs::exists(model_dir(name) + "/tokenizer.json"));
        REQUIRE(fs::exists(model_dir(name) + "/reference.json"));
        for (const auto& entry : fs::directory_iterator(model_dir(name))) total += entry.file_size();
    }
    CHECK(total < 2u * 1024 * 1024);
}

TEST_CASE("HF tiny models: config is what transformers uses", "[hf]") {
    const std::string name = GENERATE(from_range(kModels));
    INFO("model " << name);
    const Model& model = tiny_model(name);
    const json& expected = reference(name)["config"];
    const ModelConfig& c = model.config;

    CHECK(model.identity.format == "hf");
    CHECK(model.identity.name == name);
    CHECK(c.arch_name == expected["model_type"].get<std::string>());
    CHECK(c.arch == (name == "tiny_gpt2" ? Architecture::Gpt2 : Architecture::Llama));
    CHECK(c.n_layer == expected["n_layer"].get<int>());
    CHECK(c.n_head == expected["n_head"].get<int>());
    CHECK(c.n_kv_head == expected["n_kv_head"].get<int>());
    CHECK(c.head_dim == expected["head_dim"].get<int>());
    CHECK(c.d_model == expected["d_model"].get<int>());
    CHECK(c.d_ff == expected["d_ff"].get<int>());
    CHECK(c.vocab == expected["vocab"].get<int>());
    CHECK(c.max_context == expected["max_context"].get<int>());
    CHECK(c.norm_eps == Approx(expected["norm_eps"].get<double>()).epsilon(1e-12));
    CHECK(c.sliding_window == expected["sliding_window"].get<int>());
    CHECK(c.tied_embeddings == expected["tied"].get<bool>());
    CHECK(model.weights.lm_head.empty() == expected["tied"].get<bool>());
    CHECK(c.qkv_bias == expected["qkv_bias"].get<bool>());
    CHECK(model.tokenizer->vocab_size() == c.vocab);

    const std::string scaling = expected["rope_scaling"];
    if (c.arch == Architecture::Llama) {
        CHECK(c.rope_pairing == RopePairing::HalfSplit);
        CHECK(c.rope_theta == Approx(expected["rope_theta"].get<double>()).epsilon(1e-12));
        const RopeScaling::Kind kind = scaling == "llama3"   ? RopeScaling::Kind::Llama3
                                       : scaling == "linear" ? RopeScaling::Kind::Linear
                                                             : RopeScaling::Kind::None;
        CHECK(c.rope_scaling.kind == kind);
        if (kind != RopeScaling::Kind::None) CHECK(c.rope_scaling.factor == expected["rope_factor"].get<double>());
        if (kind == RopeScaling::Kind::Llama3) {
            CHECK(c.rope_scaling.low_freq_factor == 1.0);
            CHECK(c.rope_scaling.high_freq_factor == 4.0);
            CHECK(c.rope_scaling.original_context == 32.0);
        }
    } else {
        CHECK(scaling == "none");
        CHECK(model.weights.position_embedding.size() == size_t(c.max_context) * c.d_model);
    }

    // The per-model points each fixture exists for.
    if (name == "tiny_llama") CHECK(c.head_dim * c.n_head != c.d_model);  // explicit head_dim
    if (name == "tiny_llama_linear") CHECK(reference(name)["meta"]["stored_dtype"] == "bfloat16");
    if (name == "tiny_qwen2") CHECK(fs::exists(model_dir(name) + "/model.safetensors.index.json"));
}

TEST_CASE("HF tiny models: tokenizer ids equal transformers'", "[hf][tokenizer]") {
    const std::string name = GENERATE(from_range(kModels));
    INFO("model " << name);
    const Model& model = tiny_model(name);
    const json& ref = reference(name);
    const std::string text = ref["text"];
    const auto expected = ref["token_ids"].get<std::vector<int32_t>>();

    const auto tokens = model.tokenizer->encode(text, true, model.tokenizer->add_bos_token());
    CHECK(ids_of(tokens) == expected);
    // The llama fixtures' tokenizer adds BOS through its TemplateProcessing post-processor.
    CHECK(model.tokenizer->add_bos_token() == (name == "tiny_llama" || name == "tiny_llama_linear"));
    const std::string bos_text = model.tokenizer->add_bos_token() ? "<s>" : "";
    CHECK(model.tokenizer->decode(expected) == bos_text + text);
    // The special token in the middle of the prompt is matched whole.
    CHECK(std::count(expected.begin(), expected.end(), model.tokenizer->find_token("<|endoftext|>")) == 1);
}

TEST_CASE("HF tiny models: logits and attention rows match transformers", "[hf]") {
    const std::string name = GENERATE(from_range(kModels));
    INFO("model " << name);
    const Model& model = tiny_model(name);
    const json& ref = reference(name);
    const auto ids = ref["token_ids"].get<std::vector<int32_t>>();

    std::vector<float> logits(model.config.vocab);
    CaptureStore capture(capture_shape_of(model.config));
    make_cpu_backend(model)->forward(ids, logits, &capture);
    REQUIRE(capture.positions() == static_cast<int64_t>(ids.size()));

    const auto expected_logits = ref["last_logits"].get<std::vector<double>>();
    REQUIRE(expected_logits.size() == logits.size());
    double worst_logit = 0;
    for (size_t i = 0; i < logits.size(); ++i)
        worst_logit = std::max(worst_logit, std::abs(logits[i] - expected_logits[i]));

    const CpuTileSource tiles(capture);
    double worst_prob = 0;
    for (const auto& triple : ref["attention"]) {
        const int layer = triple["layer"], head = triple["head"];
        const int64_t query = triple["query"];
        const auto expected = triple["probs"].get<std::vector<double>>();
        const std::vector<float> probs = tiles.row(layer, head, query);
        INFO("layer " << layer << " head " << head << " query " << query);
        REQUIRE(probs.size() == expected.size());
        for (size_t j = 0; j < probs.size(); ++j) worst_prob = std::max(worst_prob, std::abs(probs[j] - expected[j]));
    }
    WARN(name << ": max abs error vs transformers: logits " << worst_logit << ", attention probabilities "
              << worst_prob);
    CHECK(worst_logit <= kLogitTolerance);
    CHECK(worst_prob <= kProbTolerance);
}

TEST_CASE("HF tiny models: greedy continuation matches transformers", "[hf]") {
    const std::string name = GENERATE(from_range(kModels));
    INFO("model " << name);
    const Model& model = tiny_model(name);
    const json& ref = reference(name);
    const auto ids = ref["token_ids"].get<std::vector<int32_t>>();
    const auto expected = ref["greedy8"].get<std::vector<int32_t>>();

    auto backend = make_cpu_backend(model);
    std::vector<float> logits(model.config.vocab);
    backend->forward(ids, logits, nullptr);
    std::vector<int32_t> generated;
    for (size_t step = 0; step < expected.size(); ++step) {
        const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        generated.push_back(next);
        backend->forward(std::span<const int32_t>(&next, 1), logits, nullptr);
    }
    CHECK(generated == expected);
}

TEST_CASE("HF loader: unsupported model_type names it and lists the supported ones", "[hf][errors]") {
    TempDir dir("bert");
    copy_model("tiny_llama", dir);
    json config = read_json(dir.file("config.json"));
    config["model_type"] = "bert";
    config["architectures"] = json::array({"BertModel"});
    write_bytes(dir.file("config.json"), config.dump(2));

    const std::string message = load_error(dir.path());
    INFO(message);
    CHECK_THAT(message, Catch::Contains("'bert'"));
    CHECK_THAT(message, Catch::Contains("config.json"));
    for (const char* supported : {"llama", "mistral", "qwen2", "gpt2"}) CHECK_THAT(message, Catch::Contains(supported));
}

TEST_CASE("HF loader: a tensor missing from model.safetensors is named", "[hf][errors]") {
    TempDir dir("missing_tensor");
    copy_model("tiny_llama", dir);
    const std::string tensor = "model.layers.1.mlp.down_proj.weight";
    drop_tensor_from_safetensors(dir.file("model.safetensors"), tensor);

    const std::string message = load_error(dir.path());
    INFO(message);
    CHECK_THAT(message, Catch::Contains("'" + tensor + "'"));
    CHECK_THAT(message, Catch::Contains("missing"));
}

TEST_CASE("HF loader: a tensor missing from a sharded checkpoint is named", "[hf][errors]") {
    TempDir dir("missing_sharded");
    copy_model("tiny_qwen2", dir);
    const std::string tensor = "model.layers.0.self_attn.k_proj.bias";
    json index = read_json(dir.file("model.safetensors.index.json"));
    const std::string shard = index["weight_map"][tensor];
    index["weight_map"].erase(tensor);
    write_bytes(dir.file("model.safetensors.index.json"), index.dump(2));
    drop_tensor_from_safetensors(dir.file(shard), tensor);

    const std::string message = load_error(dir.path());
    INFO(message);
    CHECK_THAT(message, Catch::Contains("'" + tensor + "'"));
}

TEST_CASE("HF loader: a config expecting more layers than stored names the first absent tensor", "[hf][errors]") {
    for (const std::string name : {"tiny_mistral", "tiny_gpt2"}) {
        INFO("model " << name);
        TempDir dir("more_layers");
        copy_model(name, dir);
        json config = read_json(dir.file("config.json"));
        config[name == "tiny_gpt2" ? "n_layer" : "num_hidden_layers"] = 3;
        write_bytes(dir.file("config.json"), config.dump(2));

        const std::string message = load_error(dir.path());
        INFO(message);
        CHECK_THAT(message, Catch::Contains(name == "tiny_gpt2" ? "h.2." : "model.layers.2."));
        CHECK_THAT(message, Catch::Contains("missing"));
    }
}

TEST_CASE("HF loader: invalid JSON in config.json names the file", "[hf][errors]") {
    TempDir dir("bad_json");
    copy_model("tiny_qwen2", dir);
    write_bytes(dir.file("config.json"), "{\"model_type\": \"qwen2\", \"hidden_size\": 32,,}");

    const std::string message = load_error(dir.path());
    INFO(message);
    CHECK_THAT(message, Catch::Contains("config.json"));
    CHECK_THAT(message, Catch::Contains("JSON"));
}
