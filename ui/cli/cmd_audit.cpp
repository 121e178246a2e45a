// `attnscope audit SESSION --rules FILE [--ontology FILE] [--key KEYFILE] -o DIR`: checks a rules
// file on a session and writes a report folder (engine/audit.h): index.html with map snapshots and
// text highlights, report.json (docs/schemas/audit-report.schema.json), provenance.json, the PNGs and
// .npy tiles, and with --key MANIFEST.sig.json so that `attnscope verify DIR` checks every byte.
//
// Exit codes as `attnscope rules`: 0 no rule failed, 1 a rule failed (the report is written either
// way), 2 an error (nothing is written).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "engine/audit.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/ontology.h"
#include "engine/pii.h"
#include "engine/rules.h"
#include "engine/session_file.h"
#include "engine/signing.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/dp_options.h"
#include "ui/cli/tile_image.h"

namespace attn::cli {

namespace {

struct AuditCommand {
    std::string session_path, rules_path, ontology_path, key_path, out, model_path;
    bool force = false;
    bool no_pii_masking = false;
    int max_checks = 6;
    DpOptions dp_options;

    int run() const {
        const auto started = std::chrono::steady_clock::now();
        // Everything that can be refused is checked before the session is read.
        if (no_pii_masking) set_privacy_defaults(PrivacySettings{false});
        std::optional<SigningKey> key;
        if (!key_path.empty()) key = load_signing_key(key_path);
        AuditOptions options;
        options.dp = dp_options.params();
        options.mask_pii = !no_pii_masking;
        options.max_checks = max_checks;
        options.session_path = session_path;
        std::shared_ptr<const Ontology> ontology;
        if (!ontology_path.empty()) ontology = std::make_shared<const Ontology>(load_ontology(ontology_path));
        const RuleSet rules = load_rules(rules_path, ontology);
        const Session session = load_session(session_path);
        if (!session.capture) fail(session_path, ": the session holds no capture");
        const CpuTileSource source(*session.capture);
        AuditReport report = build_audit(rules, session, source, options);
        if (!model_path.empty()) {
            const std::unique_ptr<Model> model = Model::load(resolve_model_path(model_path));
            add_audit_counterfactuals(report, *model);
        }
        AuditFileWriters writers;
        writers.png = [](const std::string& path, const AuditSnapshot& s) {
            write_heatmap_png_crop(path, s.tile, Tile::kEdge, Tile::kEdge, s.row0, s.row1, s.col0, s.col1, s.valid_rows,
                                   s.valid_cols, s.scale);
        };
        writers.npy = [](const std::string& path, const std::vector<float>& values, size_t rows, size_t cols) {
            write_npy(path, values, rows, cols);
        };
        const AuditWriteResult written = write_audit_report(report, out, writers, key ? &*key : nullptr, force);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::cout << audit_summary_text(report);
        if (report.dp) print_dp_notice(*report.dp);
        std::cout << "report: " << written.dir << "/index.html (" << written.files.size() << " files, "
                  << report.provenance.arrays.size() << " attention arrays"
                  << (report.pii_masking ? "" : ", personal data NOT masked") << ")"
                  << (key ? cat("; signed with key ", key->public_key.key_id, ": ", written.signature) : std::string())
                  << "\n";
        char timing[64];
        std::snprintf(timing, sizeof timing, "%.2f s", seconds);
        std::cout << "took " << timing << "\n";
        std::cout.flush();
        return report.result.failed > 0 ? 1 : 0;
    }
};

}  // namespace

void add_audit_command(CLI::App& app) {
    auto cmd = std::make_shared<AuditCommand>();
    CLI::App* c = app.add_subcommand(
        "audit", "Write an audit report (HTML, JSON, PNG snapshots, provenance, optional signature) of a rules file "
                 "checked on a session; exit 0 pass, 1 a rule failed, 2 error");
    c->add_option("session", cmd->session_path, "Session file (.attn)")->required();
    c->add_option("--rules", cmd->rules_path, "Rules file (.json or .toml; format in engine/rules.h)")->required();
    c->add_option("--ontology", cmd->ontology_path, "Ontology file for {type = ...} selectors (engine/ontology.h)");
    c->add_option("--key", cmd->key_path, "Sign the report with this secret key (attnscope keygen): DIR/MANIFEST.sig.json");
    c->add_option("-o,--out", cmd->out, "Report folder to write (must not exist or be empty, unless --force)")->required();
    c->add_option("--model", cmd->model_path,
                  "Run each suggested fix's intervention on this model (PATH or 'default'; the session's model) and "
                  "put the counterfactual result in the report");
    c->add_flag("--force", cmd->force, "Replace an existing, non-empty report folder");
    c->add_flag("--no-pii-masking", cmd->no_pii_masking,
                "Show personal data (ID numbers, phones, cards, e-mail, IPs) unmasked in the report");
    c->add_option("--max-checks", cmd->max_checks, "Checks per rule with evidence (failed first)")
        ->check(CLI::Range(1, 1000));
    cmd->dp_options.add_to(c, "the exported attention arrays (rows, tiles, snapshots)");
    c->callback([cmd] { run_with_exit_code([&] { return cmd->run(); }); });
}

}  // namespace attn::cli
