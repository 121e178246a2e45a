// `attnscope bench gpu`: speed of the CUDA path (kernels/gpu_bench.h does the measuring). Prints a
// table, then one JSON object (the same numbers) on the last line; --json prints only the JSON.
// Without a usable GPU (or in a build without CUDA) it says "no CUDA device: <reason>" and exits 1.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/memory.h"
#include "ui/cli/commands.h"

#ifdef ATTNSCOPE_HAVE_CUDA
#include "kernels/gpu_bench.h"
#endif

namespace attn::cli {

namespace {

struct BenchGpuCommand {
    std::string model_spec = "default";
    std::vector<int64_t> attention_lengths{4096, 16384, 50000};
    std::vector<int64_t> runtime_lengths{2048, 16384, 50000};
    int decode_tokens = 32;
    int repeats = 5;
    bool no_llama_1b = false;
    bool json_only = false;

    void run() const {
        std::string why;
        if (!cuda_backend_available(&why)) fail("no CUDA device: ", why);
#ifdef ATTNSCOPE_HAVE_CUDA
        gpu::GpuBenchOptions o;
        o.model_spec = model_spec;
        o.attention_lengths = attention_lengths;
        o.runtime_lengths = runtime_lengths;
        o.decode_tokens = decode_tokens;
        o.repeats = repeats;
        o.llama_1b = !no_llama_1b;
        print(gpu::run_gpu_bench(o));
#endif
    }

    void print(const nlohmann::json& out) const {
        if (!json_only) {
            std::printf("attnscope bench gpu — %s (sm_%s), CUDA graphs %s\n\n", out.value("device", "?").c_str(),
                        out.value("compute_capability", "?").c_str(), out.value("cuda_graphs", false) ? "on" : "off");
            if (out.contains("attention")) {
                std::printf("fused causal attention forward (batch 1, d_model 2048)\n");
                std::printf("%8s %6s %8s %9s %10s %9s\n", "head dim", "heads", "tokens", "emission", "ms", "TFLOP/s");
                for (const auto& r : out["attention"])
                    std::printf("%8d %6d %8lld %9s %10.3f %9.1f\n", r["head_dim"].get<int>(), r["heads"].get<int>(),
                                r["tokens"].get<long long>(), r["emission"].get<bool>() ? "on" : "off",
                                r["ms"].get<double>(), r["tflops"].get<double>());
                std::printf("\n");
            }
            if (out.contains("runtime")) {
                std::printf("%-28s %7s %12s %12s %7s %11s %11s %7s\n", "model", "tokens", "prefill t/s", "+capture",
                            "ratio", "decode t/s", "+capture", "ratio");
                for (const auto& r : out["runtime"])
                    std::printf("%-28.28s %7lld %12.0f %12.0f %6.3fx %11.1f %11.1f %6.3fx\n",
                                r["model"].get<std::string>().c_str(), r["tokens"].get<long long>(),
                                r["prefill_tokens_per_s"].get<double>(), r["prefill_tokens_per_s_capture"].get<double>(),
                                r["prefill_capture_overhead"].get<double>(), r["decode_tokens_per_s"].get<double>(),
                                r["decode_tokens_per_s_capture"].get<double>(), r["decode_capture_overhead"].get<double>());
                std::printf("\n");
            }
            if (out.contains("capture"))
                std::printf("capture at %lld positions: %s per token on the host (Q, K, LSE: %s)\n",
                            out["capture"]["positions"].get<long long>(),
                            format_bytes(static_cast<uint64_t>(out["capture"]["bytes_per_token_host"].get<double>()))
                                .c_str(),
                            format_bytes(out["capture"]["bytes_per_token_qkl_fp32"].get<uint64_t>()).c_str());
            if (out.contains("tile_latency")) {
                const auto& t = out["tile_latency"];
                std::printf("tile latency at %lld positions (layer %d, head %d):\n", t["positions"].get<long long>(),
                            t["layer"].get<int>(), t["head"].get<int>());
                for (const auto& l : t["tiles"])
                    std::printf("  level %2d (%s): %.3f ms on the device, %.3f ms to the host\n", l["level"].get<int>(),
                                l["source"].get<std::string>().c_str(), l["ms_on_device"].get<double>(),
                                l["ms_to_host"].get<double>());
            }
            std::printf("\n");
        }
        std::cout << out.dump() << std::endl;
    }
};

}  // namespace

void add_bench_gpu_command(CLI::App& bench) {
    auto cmd = std::make_shared<BenchGpuCommand>();
    CLI::App* gpu = bench.add_subcommand(
        "gpu", "cuda backend: fused attention TFLOP/s, prefill/decode tokens/s with capture on/off, tile latency");
    gpu->add_option("--model", cmd->model_spec, "Model (default: SmolLM2-135M-Instruct)");
    gpu->add_option("--attention", cmd->attention_lengths, "Attention lengths to time")->check(CLI::PositiveNumber);
    gpu->add_option("--prefill", cmd->runtime_lengths, "Prompt lengths to time (prefill, then decode at that context)")
        ->check(CLI::PositiveNumber);
    gpu->add_option("--decode", cmd->decode_tokens, "Tokens to decode")->check(CLI::PositiveNumber);
    gpu->add_option("--repeats", cmd->repeats, "Repetitions (the median is reported)")->check(CLI::PositiveNumber);
    gpu->add_flag("--no-llama-1b", cmd->no_llama_1b, "Skip the random Llama-3.2-1B-shaped model");
    gpu->add_flag("--json", cmd->json_only, "Only the JSON line");
    gpu->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
