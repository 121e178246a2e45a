// `attnscope bench cpu`: speed and memory of the cpu backend, capture and tile recompute.
// Prints a table, then one JSON object (the same numbers) on the last line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/bench_stats.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "engine/generation.h"
#include "engine/memory.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"

namespace attn::cli {

namespace {

using Clock = std::chrono::steady_clock;

template <typename Fn>
double seconds(Fn&& fn) {
    const auto start = Clock::now();
    fn();
    return std::chrono::duration<double>(Clock::now() - start).count();
}


// Deterministic, ordinary tokens (not control tokens) so every run does the same work.
std::vector<int32_t> bench_tokens(const Model& model, int64_t n) {
    std::vector<int32_t> ids;
    uint64_t state = 12345;
    while (static_cast<int64_t>(ids.size()) < n) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        const int32_t id = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(model.config.vocab));
        if (!model.tokenizer->is_special(id)) ids.push_back(id);
    }
    return ids;
}

struct BenchCommand {
    std::string model_spec = "default";
    std::vector<int64_t> prefill_sizes{128, 512, 2048};
    int decode_tokens = 32;
    int repeats = 3;
    bool json_only = false;

    void run() const {
        auto model = Model::load(resolve_model_path(model_spec));
        auto backend = make_backend(BackendKind::Cpu, *model);
        std::vector<float> logits(model->config.vocab);
        nlohmann::json out;
        out["backend"] = "cpu";
        out["model"] = model->identity.name;
        out["threads"] = std::thread::hardware_concurrency();

        // Prefill, capture off and on interleaved so both see the same machine state.
        nlohmann::json prefill = nlohmann::json::array();
        std::unique_ptr<CaptureStore> largest_capture;
        int64_t largest = 0;
        for (int64_t n : prefill_sizes) {
            const std::vector<int32_t> ids = bench_tokens(*model, n);
            std::vector<double> off, on;
            for (int r = 0; r < repeats; ++r) {
                backend->truncate(0);
                off.push_back(seconds([&] { backend->forward(ids, logits, nullptr); }));
                backend->truncate(0);
                auto store = std::make_unique<CaptureStore>(capture_shape_of(model->config));
                on.push_back(seconds([&] { backend->forward(ids, logits, store.get()); }));
                if (n >= largest) {
                    largest = n;
                    largest_capture = std::move(store);
                }
            }
            prefill.push_back({{"tokens", n},
                               {"tokens_per_s", n / median(off)},
                               {"tokens_per_s_capture", n / median(on)},
                               {"capture_overhead", median(on) / median(off)}});
        }
        out["prefill"] = prefill;

        // Decode after a 128-token prompt, one token at a time, capture off and on.
        {
            const std::vector<int32_t> prompt = bench_tokens(*model, 128);
            const std::vector<int32_t> steps = bench_tokens(*model, 128 + decode_tokens);
            auto decode_time = [&](bool capture) {
                backend->truncate(0);
                auto store = capture ? std::make_unique<CaptureStore>(capture_shape_of(model->config)) : nullptr;
                backend->forward(prompt, logits, store.get());
                return seconds([&] {
                    for (int t = 0; t < decode_tokens; ++t)
                        backend->forward(std::span<const int32_t>(&steps[128 + t], 1), logits, store.get());
                });
            };
            std::vector<double> off, on;
            for (int r = 0; r < repeats; ++r) {
                off.push_back(decode_time(false));
                on.push_back(decode_time(true));
            }
            out["decode"] = {{"context", 128},
                             {"tokens", decode_tokens},
                             {"tokens_per_s", decode_tokens / median(off)},
                             {"tokens_per_s_capture", decode_tokens / median(on)},
                             {"capture_overhead", median(on) / median(off)}};
        }

        // Capture memory and exact recompute on the largest prefill.
        const CaptureStore& store = *largest_capture;
        out["capture_bytes_per_token"] = static_cast<double>(store.bytes_held()) / store.positions();
        out["capture_bytes_per_token_qkl"] = capture_bytes_per_position(model->config);
        const CpuTileSource tiles(store);
        const int layer = model->config.n_layer / 2, head = 0;
        const int64_t last = store.positions() - 1;
        const int64_t diagonal = last / Tile::kEdge;
        std::vector<double> row_t, tile0_t, tile3_t, tile_top_t;
        int top_level = 0;
        while (CpuTileSource::tiles_across(store.positions(), top_level) > 1) ++top_level;
        for (int r = 0; r < std::max(repeats, 3); ++r) {
            row_t.push_back(seconds([&] { (void)tiles.row(layer, head, last); }));
            tile0_t.push_back(seconds([&] { (void)tiles.tile({layer, head, 0, diagonal, diagonal}); }));
            tile3_t.push_back(seconds([&] { (void)tiles.tile({layer, head, 3, 0, 0}); }));
            tile_top_t.push_back(seconds([&] { (void)tiles.tile({layer, head, top_level, 0, 0}); }));
        }
        out["recompute"] = {{"positions", store.positions()},
                            {"row_ms", 1e3 * median(row_t)},
                            {"tile_level0_ms", 1e3 * median(tile0_t)},
                            {"tile_level3_ms", 1e3 * median(tile3_t)},
                            {"tile_top_level", top_level},
                            {"tile_top_ms", 1e3 * median(tile_top_t)}};
        print(out);
    }

    void print(const nlohmann::json& out) const {
        if (!json_only) {
            std::printf("attnscope bench cpu — %s, %u threads\n\n", out["model"].get<std::string>().c_str(),
                        out["threads"].get<unsigned>());
            std::printf("%-34s %14s %14s %10s\n", "what", "capture off", "capture on", "on/off");
            for (const auto& p : out["prefill"])
                std::printf("prefill %-6lld tokens (tok/s)      %14.1f %14.1f %9.3fx\n", p["tokens"].get<long long>(),
                            p["tokens_per_s"].get<double>(), p["tokens_per_s_capture"].get<double>(),
                            p["capture_overhead"].get<double>());
            const auto& d = out["decode"];
            std::printf("decode at context %-4lld (tok/s)     %14.2f %14.2f %9.3fx\n", d["context"].get<long long>(),
                        d["tokens_per_s"].get<double>(), d["tokens_per_s_capture"].get<double>(),
                        d["capture_overhead"].get<double>());
            const auto& r = out["recompute"];
            std::printf("\ncapture store: %s per token (Q, K, LSE: %s; the rest is the overview)\n",
                        format_bytes(static_cast<uint64_t>(out["capture_bytes_per_token"].get<double>())).c_str(),
                        format_bytes(out["capture_bytes_per_token_qkl"].get<uint64_t>()).c_str());
            std::printf("recompute at %lld positions: row %.3f ms, tile level 0 %.3f ms, level 3 %.3f ms, "
                        "level %d (whole matrix) %.3f ms\n\n",
                        r["positions"].get<long long>(), r["row_ms"].get<double>(), r["tile_level0_ms"].get<double>(),
                        r["tile_level3_ms"].get<double>(), r["tile_top_level"].get<int>(),
                        r["tile_top_ms"].get<double>());
        }
        std::cout << out.dump() << std::endl;
    }
};

}  // namespace

void add_bench_command(CLI::App& app) {
    CLI::App* bench = app.add_subcommand("bench", "Benchmarks (table + JSON)");
    bench->require_subcommand(1);
    auto cmd = std::make_shared<BenchCommand>();
    CLI::App* cpu = bench->add_subcommand("cpu", "cpu backend: prefill, decode, capture overhead, recompute");
    cpu->add_option("--model", cmd->model_spec, "Model (default: SmolLM2-135M-Instruct)");
    cpu->add_option("--prefill", cmd->prefill_sizes, "Prompt lengths to time")->check(CLI::PositiveNumber);
    cpu->add_option("--decode", cmd->decode_tokens, "Tokens to decode")->check(CLI::PositiveNumber);
    cpu->add_option("--repeats", cmd->repeats, "Repetitions (the median is reported)")->check(CLI::PositiveNumber);
    cpu->add_flag("--json", cmd->json_only, "Only the JSON line");
    cpu->callback([cmd] { cmd->run(); });
    add_bench_render_command(*bench);
}

}  // namespace attn::cli
