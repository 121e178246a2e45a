// `attnscope open`: opens a session (or captures one on the default model first). Until the
// Vulkan debugger lands (issue 4) this renders the chosen head's whole attention matrix to a PNG
// at the level of detail that fits, and says where it is.
#include <algorithm>
#include <filesystem>
#include <cstdio>

#include "engine/error.h"
#include "engine/generation.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/generation_options.h"
#include "ui/cli/tile_image.h"

namespace attn::cli {

namespace {
struct OpenCommand {
    std::string session_path;
    GenerationOptions options;
    std::string png;
    int layer = -1, head = 0;

    void run() {
        std::string path = session_path;
        if (path.empty()) {
            const std::filesystem::path dir = std::filesystem::path(models_cache_dir()).parent_path() / "sessions";
            std::filesystem::create_directories(dir);
            path = (dir / "demo.attn").string();
            if (options.prompt.empty() && options.prompt_file.empty())
                options.prompt = "Explain in two sentences why the sky is blue.";
            options.chat = true;
            auto model = Model::load(resolve_model_path(options.model));
            auto backend = make_backend(parse_backend_kind(options.backend), *model);
            GenerationCallbacks callbacks;
            callbacks.prefill_progress = prefill_progress_bar(!options.quiet);
            callbacks.on_step = [](const Session&, const StepRecord& step) {
                std::fwrite(step.text.data(), 1, step.text.size(), stdout);
                std::fflush(stdout);
            };
            const Session captured = generate(*model, *backend, options.request(true), callbacks);
            std::fputc('\n', stdout);
            save_session(path, captured);
            std::printf("session saved to %s\n", path.c_str());
        }
        const Session session = load_session(path);
        if (!session.capture || session.capture->positions() == 0) fail(path, ": the session holds no capture");
        const CaptureShape& shape = session.capture->shape();
        const int chosen_layer = layer >= 0 ? layer : shape.n_layer / 2;
        // The coarsest level whose single tile still covers the whole sequence.
        int level = 0;
        while (CpuTileSource::tiles_across(session.capture->positions(), level) > 1) ++level;
        const Tile tile = CpuTileSource(*session.capture).tile({chosen_layer, head, level, 0, 0});
        const std::string out = png.empty() ? path + ".png" : png;
        const int scale = std::max(1, 768 / std::max(tile.valid_rows, tile.valid_cols));
        write_heatmap_png_cropped(out, tile.max, Tile::kEdge, tile.valid_rows, tile.valid_cols, scale);
        std::printf("no display debugger in this build yet: rendered layer %d head %d (%lld tokens, peak per cell) to %s\n",
                    chosen_layer, head, static_cast<long long>(session.capture->positions()), out.c_str());
    }
};
}  // namespace

void add_open_command(CLI::App& app) {
    auto cmd = std::make_shared<OpenCommand>();
    CLI::App* c = app.add_subcommand("open", "Open a session (default: capture a demo on the default model)");
    c->add_option("session", cmd->session_path, "Session file (.attn); omit to capture a demo first");
    cmd->options.add_to(*c);
    c->add_option("--png", cmd->png, "Where to write the rendering (default: next to the session)");
    c->add_option("--layer", cmd->layer, "Layer to show (default: the middle one)");
    c->add_option("--head", cmd->head, "Query head to show");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
