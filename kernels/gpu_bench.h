#pragma once
// `attnscope bench gpu`: the measurements issue 3 asks for, on the GPU, timed with CUDA events (or
// with wall clock around calls that synchronise) after warm-up, medians of the repeats:
//   - fused attention forward TFLOP/s (causal, head dim 64 and 128, each length, emission on/off);
//   - prefill and decode tokens/s of the cuda backend for the default model and a randomly
//     initialised model of Llama-3.2-1B's shape (generated in-process), capture off and on;
//   - GPU tile latency at levels 0, 4 and the top level on the default model's longest capture;
//   - capture memory per token.
// Plain C++; the CLI (ui/cli/cmd_bench_gpu.cpp) prints the table and the JSON.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model.h"

namespace attn::gpu {

struct GpuBenchOptions {
    std::string model_spec = "default";
    std::vector<int64_t> attention_lengths{4096, 16384, 50000};
    std::vector<int64_t> runtime_lengths{2048, 16384, 50000};
    int decode_tokens = 32;
    int warmup = 2;
    int repeats = 5;
    bool llama_1b = true;  // also bench the random Llama-3.2-1B-shaped model
    bool sections_attention = true, sections_runtime = true, sections_tiles = true;
};

nlohmann::json run_gpu_bench(const GpuBenchOptions& options);

// A Llama-3.2-1B-shaped model (16 layers, 32 heads, 8 KV heads, head dim 64, d_model 2048,
// d_ff 8192, vocab 128256, RoPE θ 500000 with llama3 scaling, tied embeddings) with random
// weights (speed does not depend on their values). No tokenizer. ~5 GB of host memory (fp32).
std::unique_ptr<Model> random_llama_3_2_1b(uint64_t seed = 1);

}  // namespace attn::gpu
