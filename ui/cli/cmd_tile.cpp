// `attnscope tile`: one 256×256 tile of a session's attention, exact, as .npy or .png.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "engine/error.h"
#include "engine/pii.h"
#include "engine/provenance.h"
#include "engine/signing.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/dp_options.h"
#include "ui/cli/tile_image.h"

namespace attn::cli {

namespace {
struct TileCommand {
    std::string path, png, npy, aggregate = "sum";
    TileRequest request;
    std::string sign;  // key file: write FILE.sig.json next to each output
    DpOptions dp_options;

    void run() const {
        if (png.empty() && npy.empty()) fail("give --png FILE or --npy FILE (or both)");
        std::optional<SigningKey> key;
        if (!sign.empty()) key = load_signing_key(sign);  // a bad key fails before any work
        std::optional<DpParams> dp = dp_options.params();
        const Session session = load_session(path);
        if (!session.capture) fail(path, ": the session holds no capture");
        const CpuTileSource source(*session.capture);
        const Tile tile = source.tile(request);
        const std::vector<float>& exact = aggregate == "max" ? tile.max : tile.sum;
        std::vector<float> values = exact;
        std::optional<DpNoiseReport> noise;
        if (dp) noise = add_dp_noise(values, *dp);
        if (!npy.empty()) write_npy(npy, values, Tile::kEdge, Tile::kEdge);
        if (!png.empty())
            write_heatmap_png(png, values, Tile::kEdge, Tile::kEdge, tile.valid_rows, tile.valid_cols);
        if (noise) print_dp_notice(*noise);
        record_outputs(session, exact, noise, key ? &*key : nullptr);
        std::fprintf(stderr, "tile layer %d head %d level %d (%lld, %lld): %d×%d cells cover tokens; wrote %s%s%s\n",
                     request.layer, request.head, request.level, static_cast<long long>(request.tx),
                     static_cast<long long>(request.ty), tile.valid_rows, tile.valid_cols, npy.c_str(),
                     npy.empty() || png.empty() ? "" : " and ", png.c_str());
    }

    // Every output gets its provenance record (FILE.provenance.json); with --sign also FILE.sig.json.
    void record_outputs(const Session& session, const std::vector<float>& exact, const std::optional<DpNoiseReport>& noise,
                        const SigningKey* key) const {
        ProvenanceRecord record = export_provenance(session, path);
        const std::string npy_name = npy.empty() ? "" : std::filesystem::path(npy).filename().string();
        AttentionArrayRecord& array = add_tile_array(record, "tile", request, aggregate == "max", exact, npy_name);
        array.noised = noise.has_value();
        if (noise) {
            record.privacy.has_dp = true;
            record.privacy.dp = *noise;
        }
        for (const std::string& file : {npy, png}) {
            if (file.empty()) continue;
            ProvenanceRecord for_file = record;
            for_file.exhibits.push_back({"tile", "tile", request.layer, request.head, -1, -1,
                                         std::filesystem::path(file).filename().string(),
                                         cat("level ", request.level, " tile (", request.tx, ", ", request.ty, "), ",
                                             aggregate, " per cell", noise ? ", with differential-privacy noise" : "")});
            write_provenance_beside(file, for_file);
            if (!key) continue;
            const std::string written = sign_file(file, for_file, *key);
            std::fprintf(stderr, "signed %s with key %s: %s\n", file.c_str(), key->public_key.key_id.c_str(), written.c_str());
        }
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
    c->add_option("--sign", cmd->sign, "Sign each written file with this key (writes FILE.sig.json with provenance)");
    cmd->dp_options.add_to(c, "the values");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
