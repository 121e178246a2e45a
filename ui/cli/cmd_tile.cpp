// `attnscope tile`: one 256×256 tile of a session's attention, exact, as .npy or .png.
#include <cstdio>

#include "engine/error.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/tile_image.h"

namespace attn::cli {

namespace {
struct TileCommand {
    std::string path, png, npy, aggregate = "sum";
    TileRequest request;

    void run() const {
        if (png.empty() && npy.empty()) fail("give --png FILE or --npy FILE (or both)");
        const Session session = load_session(path);
        if (!session.capture) fail(path, ": the session holds no capture");
        const CpuTileSource source(*session.capture);
        const Tile tile = source.tile(request);
        const std::vector<float>& values = aggregate == "max" ? tile.max : tile.sum;
        if (!npy.empty()) write_npy(npy, values, Tile::kEdge, Tile::kEdge);
        if (!png.empty())
            write_heatmap_png(png, values, Tile::kEdge, Tile::kEdge, tile.valid_rows, tile.valid_cols);
        std::fprintf(stderr, "tile layer %d head %d level %d (%lld, %lld): %d×%d cells cover tokens; wrote %s%s%s\n",
                     request.layer, request.head, request.level, static_cast<long long>(request.tx),
                     static_cast<long long>(request.ty), tile.valid_rows, tile.valid_cols, npy.c_str(),
                     npy.empty() || png.empty() ? "" : " and ", png.c_str());
    }
};
}  // namespace

void add_tile_command(CLI::App& app) {
    auto cmd = std::make_shared<TileCommand>();
    CLI::App* c = app.add_subcommand("tile", "Write one exact 256×256 tile of attention (sum or max per cell)");
    c->add_option("session", cmd->path, "Session file (.attn)")->required();
    c->add_option("--layer", cmd->request.layer, "Layer")->required();
    c->add_option("--head", cmd->request.head, "Query head")->required();
    c->add_option("--level", cmd->request.level, "Each cell covers 2^level × 2^level token pairs")->required();
    c->add_option("--x", cmd->request.tx, "Tile column (keys)")->required();
    c->add_option("--y", cmd->request.ty, "Tile row (queries)")->required();
    c->add_option("--png", cmd->png, "Write a colour-mapped PNG (log scale)");
    c->add_option("--npy", cmd->npy, "Write the raw float32 values as a NumPy .npy file");
    c->add_option("--agg", cmd->aggregate, "Aggregate: sum (attention mass) or max (peaks)")
        ->check(CLI::IsMember({"sum", "max"}));
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
