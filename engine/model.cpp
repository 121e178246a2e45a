#include "engine/model.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/mapped_file.h"
#include "engine/safetensors.h"

namespace attn {

namespace fs = std::filesystem;


// ---- model cache and default model ---------------------------------------------------

std::string models_cache_dir() {
    if (const char* dir = std::getenv("ATTNSCOPE_MODELS"); dir && *dir) return dir;
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.cache/attnscope/models";
}

std::string default_model_path() { return models_cache_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }

std::string resolve_model_path(const std::string& spec) {
    if (!spec.empty() && spec != "default") {
        if (!fs::exists(spec)) fail("model '", spec, "' does not exist");
        return spec;
    }
    const std::string path = default_model_path();
    if (!fs::exists(path))
        fail("the default model is not in the models cache (", path,
             "). Fetch it with `bash scripts/fetch_model.sh`, or point --model at a local GGUF file "
             "or Hugging Face directory.");
    return path;
}

namespace {

// SHA-256 over any number of byte runs (libsodium), as lowercase hex.
class Sha256 {
public:
    Sha256() {
        if (sodium_init() < 0) fail("libsodium failed to initialise");
        crypto_hash_sha256_init(&state_);
    }
    void update(std::span<const std::byte> bytes) {
        // In slices so a huge mapping is streamed through the page cache, not touched all at once.
        constexpr size_t kSlice = size_t(64) << 20;
        for (size_t offset = 0; offset < bytes.size(); offset += kSlice)
            crypto_hash_sha256_update(&state_, reinterpret_cast<const unsigned char*>(bytes.data() + offset),
                                      std::min(kSlice, bytes.size() - offset));
    }
    std::string hex() {
        unsigned char digest[crypto_hash_sha256_BYTES];
        crypto_hash_sha256_final(&state_, digest);
        char text[crypto_hash_sha256_BYTES * 2 + 1];
        sodium_bin2hex(text, sizeof text, digest, sizeof digest);
        return text;
    }

private:
    crypto_hash_sha256_state state_;
};

}  // namespace

std::string sha256_file_hex(const std::string& path) {
    MappedFile file(path);
    Sha256 hash;
    hash.update(file.bytes());
    return hash.hex();
}

namespace {

// ---- weights from either file format -------------------------------------------------

// Looks tensors up by name and turns them into fp32 matrices of the expected shape.
class WeightReader {
public:
    virtual ~WeightReader() = default;
    virtual const TensorInfo* find(const std::string& name) const = 0;
    virtual std::string source() const = 0;

    const TensorInfo& require(const std::string& name) const {
        const TensorInfo* info = find(name);
        if (!info) fail(source(), ": required tensor '", name, "' is missing");
        return *info;
    }

    std::vector<float> load(const std::string& name, std::vector<int64_t> shape) const {
        return load_info(require(name), shape);
    }
    std::vector<float> load_optional(const std::string& name, std::vector<int64_t> shape) const {
        const TensorInfo* info = find(name);
        return info ? load_info(*info, shape) : std::vector<float>{};
    }

private:
    std::vector<float> load_info(const TensorInfo& info, const std::vector<int64_t>& shape) const {
        // A 1-D expectation also accepts {1, n}-style shapes some converters write.
        uint64_t expected = 1;
        for (int64_t d : shape) expected *= static_cast<uint64_t>(d);
        if (info.shape != shape && !(shape.size() == 1 && info.elements() == expected)) {
            std::string got, want;
            for (int64_t d : info.shape) got += (got.empty() ? "" : "×") + std::to_string(d);
            for (int64_t d : shape) want += (want.empty() ? "" : "×") + std::to_string(d);
            fail(source(), ": tensor '", info.name, "' has shape ", got, ", expected ", want);
        }
        return dequantize(info);
    }
};

class GgufWeights final : public WeightReader {
public:
    explicit GgufWeights(const GgufFile& file) : file_(file) {}
    const TensorInfo* find(const std::string& name) const override { return file_.find_tensor(name); }
    std::string source() const override { return file_.name(); }

private:
    const GgufFile& file_;
};

class SafetensorsWeights final : public WeightReader {
public:
    SafetensorsWeights(const SafetensorsModel& model, std::string dir) : model_(model), dir_(std::move(dir)) {}
    const TensorInfo* find(const std::string& name) const override { return model_.find(name); }
    std::string source() const override { return dir_; }

private:
    const SafetensorsModel& model_;
    std::string dir_;
};

constexpr const char* kSupportedArchitectures = "llama, mistral, qwen2, smollm (Llama family) and gpt2";

Architecture architecture_from_name(const std::string& name, const std::string& source) {
    if (name == "llama" || name == "mistral" || name == "qwen2" || name == "smollm") return Architecture::Llama;
    if (name == "gpt2") return Architecture::Gpt2;
    fail(source, ": architecture '", name, "' is not supported; supported: ", kSupportedArchitectures);
}

void check_config(const ModelConfig& c, const std::string& source) {
    auto positive = [&](int value, const char* what) {
        if (value <= 0 || value > (1 << 24)) fail(source, ": ", what, " = ", value, " is not a sane value");
    };
    positive(c.n_layer, "layer count");
    positive(c.n_head, "head count");
    positive(c.n_kv_head, "kv head count");
    positive(c.head_dim, "head dimension");
    positive(c.d_model, "embedding length");
    positive(c.d_ff, "feed-forward length");
    positive(c.vocab, "vocabulary size");
    if (c.n_head % c.n_kv_head != 0)
        fail(source, ": ", c.n_head, " query heads are not a multiple of ", c.n_kv_head, " kv heads");
    if (c.head_dim % 2 != 0) fail(source, ": head dimension ", c.head_dim, " is odd; RoPE needs pairs");
    if (c.n_layer > 1024 || c.head_dim > 1024) fail(source, ": model dimensions are absurd");
}

// ---- GGUF ------------------------------------------------------------------------------

ModelConfig config_from_gguf(const GgufFile& f) {
    ModelConfig c;
    c.arch_name = f.get_string("general.architecture");
    c.arch = architecture_from_name(c.arch_name, f.name());
    const std::string a = c.arch_name + ".";
    c.n_layer = static_cast<int>(f.get_int(a + "block_count"));
    c.d_model = static_cast<int>(f.get_int(a + "embedding_length"));
    c.d_ff = static_cast<int>(f.get_int(a + "feed_forward_length"));
    c.n_head = static_cast<int>(f.get_int(a + "attention.head_count"));
    c.n_kv_head = static_cast<int>(f.int_or(a + "attention.head_count_kv").value_or(c.n_head));
    c.max_context = static_cast<int>(f.int_or(a + "context_length").value_or(2048));
    c.head_dim = c.n_head > 0 ? c.d_model / c.n_head : 0;
    c.head_dim = static_cast<int>(f.int_or(a + "attention.key_length").value_or(c.head_dim));
    if (c.arch == Architecture::Gpt2) {
        c.norm_eps = f.float_or(a + "attention.layer_norm_epsilon").value_or(1e-5);
        c.qkv_bias = true;
    } else {
        c.norm_eps = f.float_or(a + "attention.layer_norm_rms_epsilon").value_or(1e-5);
        c.rope_theta = f.float_or(a + "rope.freq_base").value_or(10000.0);
        // llama.cpp's converter permutes Q/K of llama/mistral for interleaved rotation; qwen2 keeps
        // the Hugging Face layout and rotates halves.
        c.rope_pairing = c.arch_name == "qwen2" ? RopePairing::HalfSplit : RopePairing::Interleaved;
        if (auto type = f.string_or(a + "rope.scaling.type")) {
            if (*type == "linear") {
                c.rope_scaling.kind = RopeScaling::Kind::Linear;
                c.rope_scaling.factor = f.float_or(a + "rope.scaling.factor").value_or(1.0);
            } else if (*type != "none") {
                fail(f.name(), ": RoPE scaling '", *type, "' is not supported (linear and llama3 are)");
            }
        }
        c.sliding_window = static_cast<int>(f.int_or(a + "attention.sliding_window").value_or(0));
        c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
        c.output_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
    }
    const TensorInfo& embedding = f.tensor("token_embd.weight");
    c.vocab = embedding.shape.empty() ? 0 : static_cast<int>(embedding.shape[0]);
    c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
    check_config(c, f.name());
    return c;
}

void load_llama_layers(const WeightReader& r, const ModelConfig& c, ModelWeights& w,
                       const std::function<std::string(int, const char*)>& name) {
    const int64_t d = c.d_model, q_out = int64_t(c.n_head) * c.head_dim, kv_out = int64_t(c.n_kv_head) * c.head_dim;
    w.layers.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; ++l) {
        LayerWeights& L = w.layers[l];
        L.attn_norm = r.load(name(l, "attn_norm"), {d});
        L.wq = r.load(name(l, "wq"), {q_out, d});
        L.wk = r.load(name(l, "wk"), {kv_out, d});
        L.wv = r.load(name(l, "wv"), {kv_out, d});
        L.wo = r.load(name(l, "wo"), {d, q_out});
        if (c.qkv_bias) {
            L.bq = r.load(name(l, "bq"), {q_out});
            L.bk = r.load(name(l, "bk"), {kv_out});
            L.bv = r.load(name(l, "bv"), {kv_out});
        }
        if (c.output_bias) L.bo = r.load(name(l, "bo"), {d});
        L.ffn_norm = r.load(name(l, "ffn_norm"), {d});
        L.w_gate = r.load(name(l, "w_gate"), {c.d_ff, d});
        L.w_up = r.load(name(l, "w_up"), {c.d_ff, d});
        L.w_down = r.load(name(l, "w_down"), {d, c.d_ff});
    }
}

// Splits a fused {3d, d} QKV weight (and {3d} bias) into Q, K, V.
void split_qkv(const std::vector<float>& fused, int64_t rows_each, int64_t cols, std::vector<float>& q,
               std::vector<float>& k, std::vector<float>& v) {
    const size_t block = static_cast<size_t>(rows_each * cols);
    q.assign(fused.begin(), fused.begin() + block);
    k.assign(fused.begin() + block, fused.begin() + 2 * block);
    v.assign(fused.begin() + 2 * block, fused.begin() + 3 * block);
}

std::vector<float> transpose(const std::vector<float>& m, int64_t rows, int64_t cols) {
    std::vector<float> t(m.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t col = 0; col < cols; ++col) t[col * rows + r] = m[r * cols + col];
    return t;
}

void load_gguf_weights(const GgufFile& f, const ModelConfig& c, ModelWeights& w) {
    GgufWeights r(f);
    const int64_t d = c.d_model;
    w.token_embedding = r.load("token_embd.weight", {c.vocab, d});
    auto blk = [](int l, const std::string& suffix) { return "blk." + std::to_string(l) + "." + suffix; };
    if (c.arch == Architecture::Llama) {
        static const std::map<std::string, std::string> names = {
            {"attn_norm", "attn_norm.weight"}, {"wq", "attn_q.weight"},      {"wk", "attn_k.weight"},
            {"wv", "attn_v.weight"},           {"wo", "attn_output.weight"}, {"bq", "attn_q.bias"},
            {"bk", "attn_k.bias"},             {"bv", "attn_v.bias"},        {"bo", "attn_output.bias"},        {"ffn_norm", "ffn_norm.weight"},
            {"w_gate", "ffn_gate.weight"},     {"w_up", "ffn_up.weight"},    {"w_down", "ffn_down.weight"}};
        load_llama_layers(r, c, w, [&](int l, const char* key) { return blk(l, names.at(key)); });
        w.output_norm = r.load("output_norm.weight", {d});
    } else {
        w.position_embedding = r.load("position_embd.weight", {c.max_context, d});
        w.layers.resize(c.n_layer);
        for (int l = 0; l < c.n_layer; ++l) {
            LayerWeights& L = w.layers[l];
            L.attn_norm = r.load(blk(l, "attn_norm.weight"), {d});
            L.attn_norm_bias = r.load(blk(l, "attn_norm.bias"), {d});
            split_qkv(r.load(blk(l, "attn_qkv.weight"), {3 * d, d}), d, d, L.wq, L.wk, L.wv);
            split_qkv(r.load(blk(l, "attn_qkv.bias"), {3 * d}), d, 1, L.bq, L.bk, L.bv);
            L.wo = r.load(blk(l, "attn_output.weight"), {d, d});
            L.bo = r.load(blk(l, "attn_output.bias"), {d});
            L.ffn_norm = r.load(blk(l, "ffn_norm.weight"), {d});
            L.ffn_norm_bias = r.load(blk(l, "ffn_norm.bias"), {d});
            L.w_up = r.load(blk(l, "ffn_up.weight"), {c.d_ff, d});
            L.b_up = r.load(blk(l, "ffn_up.bias"), {c.d_ff});
            L.w_down = r.load(blk(l, "ffn_down.weight"), {d, c.d_ff});
            L.b_down = r.load(blk(l, "ffn_down.bias"), {d});
        }
        w.output_norm = r.load("output_norm.weight", {d});
        w.output_norm_bias = r.load("output_norm.bias", {d});
    }
    if (!c.tied_embeddings) w.lm_head = r.load("output.weight", {c.vocab, d});
    w.rope_freq_factors = r.load_optional("rope_freqs.weight", {c.head_dim / 2});
}

// ---- Hugging Face directory ------------------------------------------------------------

nlohmann::json read_json(const fs::path& path) {
    std::ifstream in(path);
    if (!in) fail(path.string(), ": cannot be opened");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(path.string(), ": invalid JSON (", e.what(), ")");
    }
}

template <typename T>
T json_get(const nlohmann::json& j, const char* key, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) fail(source, ": missing '", key, "'");
    try {
        return j[key].get<T>();
    } catch (const nlohmann::json::exception&) {
        fail(source, ": '", key, "' has the wrong type");
    }
}

template <typename T>
T json_or(const nlohmann::json& j, const char* key, T fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    try {
        return j[key].get<T>();
    } catch (const nlohmann::json::exception&) {
        return fallback;
    }
}

ModelConfig config_from_hf(const nlohmann::json& j, const std::string& source) {
    ModelConfig c;
    c.arch_name = json_get<std::string>(j, "model_type", source);
    c.arch = architecture_from_name(c.arch_name, source);
    if (c.arch == Architecture::Gpt2) {
        c.n_layer = json_get<int>(j, "n_layer", source);
        c.d_model = json_get<int>(j, "n_embd", source);
        c.n_head = json_get<int>(j, "n_head", source);
        c.n_kv_head = c.n_head;
        c.head_dim = c.d_model / c.n_head;
        c.d_ff = json_or<int>(j, "n_inner", 4 * c.d_model);
        c.vocab = json_get<int>(j, "vocab_size", source);
        c.max_context = json_get<int>(j, "n_positions", source);
        c.norm_eps = json_or<double>(j, "layer_norm_epsilon", 1e-5);
        c.qkv_bias = true;
        c.tied_embeddings = true;
    } else {
        c.n_layer = json_get<int>(j, "num_hidden_layers", source);
        c.d_model = json_get<int>(j, "hidden_size", source);
        c.n_head = json_get<int>(j, "num_attention_heads", source);
        c.n_kv_head = json_or<int>(j, "num_key_value_heads", c.n_head);
        c.head_dim = json_or<int>(j, "head_dim", c.n_head > 0 ? c.d_model / c.n_head : 0);
        c.d_ff = json_get<int>(j, "intermediate_size", source);
        c.vocab = json_get<int>(j, "vocab_size", source);
        c.max_context = json_or<int>(j, "max_position_embeddings", 2048);
        c.norm_eps = json_or<double>(j, "rms_norm_eps", 1e-6);
        // transformers >= 5 writes "rope_parameters": {"rope_type", "rope_theta", factor, ...};
        // older checkpoints have a top-level "rope_theta" and "rope_scaling": {"type"|"rope_type", ...}.
        const bool has_rope_parameters = j.contains("rope_parameters") && j["rope_parameters"].is_object();
        const nlohmann::json no_rope_parameters = nlohmann::json::object();
        const nlohmann::json& rope_parameters = has_rope_parameters ? j["rope_parameters"] : no_rope_parameters;
        c.rope_theta = json_or<double>(rope_parameters, "rope_theta", json_or<double>(j, "rope_theta", 10000.0));
        c.rope_pairing = RopePairing::HalfSplit;
        c.tied_embeddings = json_or<bool>(j, "tie_word_embeddings", false);
        c.qkv_bias = c.arch_name == "qwen2" || json_or<bool>(j, "attention_bias", false);
        c.output_bias = json_or<bool>(j, "attention_bias", false);  // Llama's flag also biases o_proj
        if (json_or<bool>(j, "mlp_bias", false))
            fail(source, ": mlp_bias = true is not supported (feed-forward biases in a Llama-family model)");
        // Qwen2 windows only some layers (layer_types / max_window_layers); one window for all is wrong.
        if (c.arch_name == "qwen2" && json_or<bool>(j, "use_sliding_window", false))
            fail(source, ": qwen2 with use_sliding_window = true (per-layer windows) is not supported");
        if (json_or<bool>(j, "use_sliding_window", c.arch_name == "mistral"))
            c.sliding_window = json_or<int>(j, "sliding_window", 0);
        if (has_rope_parameters || (j.contains("rope_scaling") && j["rope_scaling"].is_object())) {
            const auto& s = has_rope_parameters ? rope_parameters : j["rope_scaling"];
            const std::string type = json_or<std::string>(s, "rope_type", json_or<std::string>(s, "type", "default"));
            if (type == "linear") {
                c.rope_scaling.kind = RopeScaling::Kind::Linear;
                c.rope_scaling.factor = json_or<double>(s, "factor", 1.0);
            } else if (type == "llama3") {
                c.rope_scaling.kind = RopeScaling::Kind::Llama3;
                c.rope_scaling.factor = json_or<double>(s, "factor", 8.0);
                c.rope_scaling.low_freq_factor = json_or<double>(s, "low_freq_factor", 1.0);
                c.rope_scaling.high_freq_factor = json_or<double>(s, "high_freq_factor", 4.0);
                c.rope_scaling.original_context = json_or<double>(s, "original_max_position_embeddings", 8192);
            } else if (type != "default") {
                fail(source, ": RoPE scaling '", type, "' is not supported (linear and llama3 are)");
            }
        }
    }
    check_config(c, source);
    return c;
}

void load_hf_weights(const SafetensorsModel& m, const std::string& dir, ModelConfig& c, ModelWeights& w) {
    SafetensorsWeights r(m, dir);
    const int64_t d = c.d_model;
    if (c.arch == Architecture::Llama) {
        w.token_embedding = r.load("model.embed_tokens.weight", {c.vocab, d});
        static const std::map<std::string, std::string> names = {
            {"attn_norm", "input_layernorm.weight"},
            {"wq", "self_attn.q_proj.weight"},
            {"wk", "self_attn.k_proj.weight"},
            {"wv", "self_attn.v_proj.weight"},
            {"wo", "self_attn.o_proj.weight"},
            {"bq", "self_attn.q_proj.bias"},
            {"bk", "self_attn.k_proj.bias"},
            {"bv", "self_attn.v_proj.bias"},
            {"bo", "self_attn.o_proj.bias"},
            {"ffn_norm", "post_attention_layernorm.weight"},
            {"w_gate", "mlp.gate_proj.weight"},
            {"w_up", "mlp.up_proj.weight"},
            {"w_down", "mlp.down_proj.weight"}};
        load_llama_layers(r, c, w, [&](int l, const char* key) {
            return "model.layers." + std::to_string(l) + "." + names.at(key);
        });
        w.output_norm = r.load("model.norm.weight", {d});
        if (r.find("lm_head.weight")) {
            w.lm_head = r.load("lm_head.weight", {c.vocab, d});
            c.tied_embeddings = false;
        } else {
            c.tied_embeddings = true;
        }
        return;
    }
    // GPT-2: Conv1D weights are stored {in, out}; names may carry a "transformer." prefix.
    const std::string p = r.find("transformer.wte.weight") ? "transformer." : "";
    w.token_embedding = r.load(p + "wte.weight", {c.vocab, d});
    w.position_embedding = r.load(p + "wpe.weight", {c.max_context, d});
    w.layers.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; ++l) {
        const std::string h = p + "h." + std::to_string(l) + ".";
        LayerWeights& L = w.layers[l];
        L.attn_norm = r.load(h + "ln_1.weight", {d});
        L.attn_norm_bias = r.load(h + "ln_1.bias", {d});
        split_qkv(transpose(r.load(h + "attn.c_attn.weight", {d, 3 * d}), d, 3 * d), d, d, L.wq, L.wk, L.wv);
        split_qkv(r.load(h + "attn.c_attn.bias", {3 * d}), d, 1, L.bq, L.bk, L.bv);
        L.wo = transpose(r.load(h + "attn.c_proj.weight", {d, d}), d, d);
        L.bo = r.load(h + "attn.c_proj.bias", {d});
        L.ffn_norm = r.load(h + "ln_2.weight", {d});
        L.ffn_norm_bias = r.load(h + "ln_2.bias", {d});
        L.w_up = transpose(r.load(h + "mlp.c_fc.weight", {d, c.d_ff}), d, c.d_ff);
        L.b_up = r.load(h + "mlp.c_fc.bias", {c.d_ff});
        L.w_down = transpose(r.load(h + "mlp.c_proj.weight", {c.d_ff, d}), c.d_ff, d);
        L.b_down = r.load(h + "mlp.c_proj.bias", {d});
    }
    w.output_norm = r.load(p + "ln_f.weight", {d});
    w.output_norm_bias = r.load(p + "ln_f.bias", {d});
}

std::string hash_hf_identity(const fs::path& dir) {
    // The identity of a directory is its config plus the safetensors headers (cheap, and it
    // changes whenever any tensor's name, type, shape or placement does).
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (name == "config.json" || name.ends_with(".safetensors")) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    Sha256 hash;
    for (const fs::path& file : files) {
        MappedFile map(file.string());
        auto bytes = map.bytes();
        size_t n = bytes.size();
        if (file.extension() == ".safetensors" && n >= 8) {
            uint64_t header = 0;
            std::memcpy(&header, bytes.data(), 8);
            n = static_cast<size_t>(std::min<uint64_t>(n, 8 + header));
        }
        hash.update(bytes.first(n));
    }
    return hash.hex();
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path) {
    auto model = std::make_unique<Model>();
    model->identity.path = path;
    if (fs::is_directory(path)) {
        const fs::path dir(path);
        const fs::path config_path = dir / "config.json";
        if (!fs::exists(config_path)) fail(path, ": not a model directory (no config.json)");
        model->config = config_from_hf(read_json(config_path), config_path.string());
        auto tensors = SafetensorsModel::open_dir(path);
        load_hf_weights(*tensors, path, model->config, model->weights);
        const fs::path tokenizer_path = dir / "tokenizer.json";
        if (!fs::exists(tokenizer_path)) fail(path, ": tokenizer.json is missing");
        model->tokenizer = Tokenizer::from_hf_json(tokenizer_path.string());
        model->identity.format = "hf";
        model->identity.name = dir.filename().string();
    } else {
        auto file = GgufFile::open(path);
        model->config = config_from_gguf(*file);
        load_gguf_weights(*file, model->config, model->weights);
        model->tokenizer = Tokenizer::from_gguf(*file);
        model->identity.format = "gguf";
        model->identity.name = file->string_or("general.name").value_or(fs::path(path).stem().string());
        model->identity.file_bytes = fs::file_size(path);
    }
    if (model->tokenizer->vocab_size() > model->config.vocab)
        fail(path, ": tokenizer has ", model->tokenizer->vocab_size(), " tokens but the embedding only ",
             model->config.vocab);
    return model;
}

const ModelIdentity& Model::hashed_identity() const {
    std::call_once(hash_once_, [this] {
        hashed_identity_ = identity;
        hashed_identity_.sha256 =
            identity.format == "hf" ? hash_hf_identity(identity.path) : sha256_file_hex(identity.path);
    });
    return hashed_identity_;
}

}  // namespace attn
