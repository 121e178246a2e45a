#pragma once
// A loaded model: architecture description, fp32 weights (the cpu backend's reference
// precision) and the tokenizer. Loaded from a GGUF file or a Hugging Face directory.
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

namespace attn {

enum class Architecture { Llama, Gpt2 };  // Llama covers llama, mistral, qwen2, smollm

// How rotary embeddings pair up dimensions within a head.
//  Interleaved: (2i, 2i+1) — GGUF llama/mistral, whose converter permuted the Q/K weights.
//  HalfSplit:   (i, i + d/2) — Hugging Face checkpoints and GGUF qwen2 ("NeoX" style).
enum class RopePairing { Interleaved, HalfSplit };

struct RopeScaling {
    enum class Kind { None, Linear, Llama3 } kind = Kind::None;
    double factor = 1.0;
    double low_freq_factor = 1.0;    // llama3
    double high_freq_factor = 4.0;   // llama3
    double original_context = 8192;  // llama3
};

struct ModelConfig {
    Architecture arch = Architecture::Llama;
    std::string arch_name;  // as the file spells it: "llama", "qwen2", "gpt2", ...
    int n_layer = 0;
    int n_head = 0;
    int n_kv_head = 0;
    int head_dim = 0;
    int d_model = 0;
    int d_ff = 0;
    int vocab = 0;
    int max_context = 0;  // trained context length (positions beyond it are allowed but warned)
    double norm_eps = 1e-5;
    double rope_theta = 10000.0;
    RopePairing rope_pairing = RopePairing::Interleaved;
    RopeScaling rope_scaling;
    bool qkv_bias = false;
    bool output_bias = false;  // attention output projection has a bias (Llama attention_bias)
    bool tied_embeddings = false;
    int sliding_window = 0;  // 0 = full causal attention

    float attention_scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }
    int kv_group() const { return n_head / n_kv_head; }  // query heads per KV head
};

// Where the model came from, recorded in session files.
struct ModelIdentity {
    std::string path;    // as given
    std::string format;  // "gguf" or "hf"
    std::string name;    // general.name or the directory name
    std::string sha256;  // of the GGUF file / of config.json + the safetensors headers
    uint64_t file_bytes = 0;
};

// Weights of one transformer block, fp32, row-major {out, in}.
struct LayerWeights {
    std::vector<float> attn_norm, attn_norm_bias;  // bias only for GPT-2 LayerNorm
    std::vector<float> wq, wk, wv, wo;             // GPT-2: split from c_attn
    std::vector<float> bq, bk, bv, bo;             // optional biases (qwen2, GPT-2)
    std::vector<float> ffn_norm, ffn_norm_bias;
    std::vector<float> w_gate, w_up, w_down;       // SwiGLU (Llama); GPT-2 uses w_up/w_down + biases
    std::vector<float> b_up, b_down;
};

struct ModelWeights {
    std::vector<float> token_embedding;     // {vocab, d_model}
    std::vector<float> position_embedding;  // GPT-2 only: {max_context, d_model}
    std::vector<LayerWeights> layers;
    std::vector<float> output_norm, output_norm_bias;
    std::vector<float> lm_head;  // {vocab, d_model}; empty when tied to token_embedding
    std::vector<float> rope_freq_factors;  // {head_dim/2}: per-frequency divisors (GGUF rope_freqs, llama3)
    const std::vector<float>& output_matrix() const { return lm_head.empty() ? token_embedding : lm_head; }
};

class Model {
public:
    // `path`: a .gguf file or a Hugging Face directory (config.json + safetensors + tokenizer.json).
    // Throws attn::Error naming the file and the problem (unknown architecture lists the supported ones).
    static std::unique_ptr<Model> load(const std::string& path);

    ModelConfig config;
    // Path, format, name and size. load() leaves sha256 empty: hashing a GGUF costs more than
    // loading it (0.3–0.45 s of a 0.8 s start for the default model), and only sessions need it.
    ModelIdentity identity;
    ModelWeights weights;
    std::unique_ptr<Tokenizer> tokenizer;

    // `identity` with its content hash, computed on first use (thread-safe).
    const ModelIdentity& hashed_identity() const;

private:
    mutable std::once_flag hash_once_;
    mutable ModelIdentity hashed_identity_;
};

// The default model (DESIGN.md §5) and where the models cache is.
std::string models_cache_dir();        // $ATTNSCOPE_MODELS or ~/.cache/attnscope/models
std::string default_model_path();      // models_cache_dir()/SmolLM2-135M-Instruct.Q4_1.gguf
// "default" or "" → default_model_path() (with a clear error telling how to fetch it if absent).
std::string resolve_model_path(const std::string& spec);

std::string sha256_file_hex(const std::string& path);

}  // namespace attn
