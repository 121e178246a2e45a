// `attnscope ontology SESSION --ontology FILE [--layers R] [--heads R] [--label L] [--json]`: the
// session's spans labelled with the ontology's entity types, and the anomalies among the expected
// relations (engine/ontology.h): expected-strong links with little attention, expected-near-zero
// links with a lot. Exit code 0 (1 on errors, as every command), whether or not anomalies were found.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/error.h"
#include "engine/ontology.h"
#include "engine/pii.h"
#include "engine/rules.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/session_text.h"

namespace attn::cli {

namespace {

// The span's bytes quoted, personal data masked with `pii` (empty: as they are).
std::string quoted_bytes(const std::string& text, const TextSpan& span, const std::vector<PiiSpan>& pii) {
    const size_t end = std::min<size_t>(span.end, text.size());
    const size_t begin = std::min<size_t>(span.begin, end);
    const std::string shown = pii.empty() ? text.substr(begin, end - begin) : mask_pii_range(text, begin, end, pii);
    std::string out = "\"";
    for (char c : shown) out += c == '\n' ? std::string("\\n") : std::string(1, c);
    return out + "\"";
}

struct OntologyCommand {
    std::string session_path, ontology_path;
    std::string layers = "*", heads = "*";
    std::vector<std::string> labels;
    bool json = false;
    bool all_pairs = false;
    bool no_pii_masking = false;

    void run() const {
        const Ontology ontology = load_ontology(ontology_path);
        const IndexRange layer_range = parse_index_range(layers, "layer");
        const IndexRange head_range = parse_index_range(heads, "head");
        const Session session = load_session(session_path);
        if (!session.capture) fail(session_path, ": the session holds no capture");
        const std::vector<HeadRef> selected = select_heads(session, layer_range, head_range, labels);
        if (selected.empty()) fail("no head is selected (--layers ", layers, " --heads ", heads, " and the labels given)");
        const CpuTileSource source(*session.capture);
        const OntologyReport report = check_ontology(ontology, session, source, selected);
        const std::vector<PiiSpan> pii = no_pii_masking ? std::vector<PiiSpan>{} : find_pii(session.text);
        if (json) {
            nlohmann::json out = ontology_report_json(ontology, session, report);
            if (!no_pii_masking) mask_pii_json(out, session.text, pii);
            out["session"] = session_json(session);
            std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            return;
        }
        print_summary(session);
        std::printf("ontology: %s (%zu types, %zu relations); %zu heads\n", ontology_path.c_str(), ontology.types.size(),
                    ontology.relations.size(), selected.size());
        std::printf("spans (%zu):\n", report.spans.size());
        for (const TextSpan& span : report.spans)
            std::printf("  %-16s bytes %u..%u tokens %lld..%lld  %s\n", ontology.types[span.type].name.c_str(), span.begin,
                        span.end, static_cast<long long>(span.first), static_cast<long long>(span.last),
                        quoted_bytes(session.text, span, pii).c_str());
        for (const RelationCheck& check : report.relations) {
            const ExpectedRelation& r = ontology.relations[check.relation];
            std::printf("relation %s -> %s (%s, expected %s share in [%.4g, %.4g], line %d): %zu pairs, %lld flagged\n",
                        r.from.c_str(), r.to.c_str(), strength_name(r.strength), head_aggregate_name(r.aggregate), r.min,
                        r.max, r.line, check.pairs.size(), static_cast<long long>(check.flagged));
            for (const RelationPair& pair : check.pairs) {
                if (!pair.flagged && !all_pairs) continue;
                std::printf("  %-5s %s attends to %s: %s %.4g (mean %.4g, max %.4g in L%dH%d)\n",
                            pair.flagged ? (pair.flag == "low" ? "LOW" : "HIGH") : "ok",
                            quoted_bytes(session.text, report.spans[pair.query_span], pii).c_str(),
                            quoted_bytes(session.text, report.spans[pair.key_span], pii).c_str(), head_aggregate_name(r.aggregate),
                            pair.value, pair.mean, pair.max, pair.best.layer, pair.best.head);
            }
        }
        std::printf("anomalies: %lld\n", static_cast<long long>(report.anomalies));
    }
};

}  // namespace

void add_ontology_command(CLI::App& app) {
    auto cmd = std::make_shared<OntologyCommand>();
    CLI::App* c = app.add_subcommand(
        "ontology", "Label a session's spans with an ontology's entity types and flag unexpected attention between them");
    c->add_option("session", cmd->session_path, "Session file (.attn)")->required();
    c->add_option("--ontology", cmd->ontology_path, "Ontology file (.json or .toml; format in engine/ontology.h)")->required();
    c->add_option("--layers", cmd->layers, "Layers of the head set: N, A-B or *")->capture_default_str();
    c->add_option("--heads", cmd->heads, "Heads (within each layer) of the head set: N, A-B or *")->capture_default_str();
    c->add_option("--label", cmd->labels, "Only heads with this automatic or user label (repeat: any of them)");
    c->add_flag("--all-pairs", cmd->all_pairs, "List every measured pair, not only the flagged ones");
    c->add_flag("--json", cmd->json, "Machine-readable output");
    c->add_flag("--no-pii-masking", cmd->no_pii_masking, "Show personal data in span texts unmasked");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
