// `attnscope rules SESSION --rules FILE [--ontology FILE] [--json] [-o FILE]`: checks a rules file
// (engine/rules.h) on a session — the prompt and every decode step — and prints each rule's verdict
// with its violations (or the whole match log as JSON, docs/schemas/rules-result.schema.json).
//
// Exit codes (like grep and diff, for scripts and CI): 0 no rule failed (each passed or was not
// applicable), 1 at least one rule failed, 2 an error (a bad rules or ontology file — with its line —
// a session that cannot be read, layers beyond the model). Command-line mistakes exit as CLI11 does.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/atomic_file.h"
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

struct RulesCommand {
    std::string session_path, rules_path, ontology_path, out;
    bool json = false;
    bool prompt_only = false, steps_only = false;
    bool no_pii_masking = false;

    int run() const {
        if (prompt_only && steps_only) fail("--prompt-only and --steps-only exclude each other");
        std::shared_ptr<const Ontology> ontology;
        if (!ontology_path.empty()) ontology = std::make_shared<const Ontology>(load_ontology(ontology_path));
        const RuleSet rules = load_rules(rules_path, ontology);
        const Session session = load_session(session_path);
        if (!session.capture) fail(session_path, ": the session holds no capture");
        const CpuTileSource source(*session.capture);
        RuleEvaluationOptions options;
        options.prompt = !steps_only;
        options.steps = !prompt_only;
        const RulesReport report = evaluate_rules(rules, session, source, options);
        // Span texts show personal data as everywhere else (engine/pii.h).
        const std::vector<PiiSpan> pii = no_pii_masking ? std::vector<PiiSpan>{} : find_pii(session.text);
        nlohmann::json log = rules_report_json(report, rules, session);
        if (!no_pii_masking) mask_pii_json(log, session.text, pii);
        const std::string dumped = log.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        if (!out.empty()) write_file_atomically(out, dumped);
        if (json) {
            std::cout << dumped;
        } else {
            print_summary(session);
            std::cout << "rules: " << rules_path << " (" << rules.rules.size() << " rules)"
                      << (ontology ? cat(", ontology: ", ontology_path) : std::string()) << "\n";
            std::cout << rules_report_text(report, rules, session, pii);
            if (!out.empty()) std::cout << "match log written to " << out << "\n";
        }
        std::cout.flush();
        return report.failed > 0 ? 1 : 0;
    }
};

}  // namespace

void add_rules_command(CLI::App& app) {
    auto cmd = std::make_shared<RulesCommand>();
    CLI::App* c = app.add_subcommand(
        "rules", "Check a rules file (JSON or TOML) on a session: verdicts and violations; exit 0 pass, 1 a rule "
                 "failed, 2 error");
    c->add_option("session", cmd->session_path, "Session file (.attn)")->required();
    c->add_option("--rules", cmd->rules_path, "Rules file (.json or .toml; format in engine/rules.h)")->required();
    c->add_option("--ontology", cmd->ontology_path, "Ontology file for {type = ...} selectors (engine/ontology.h)");
    c->add_flag("--json", cmd->json, "Print the match log as JSON (docs/schemas/rules-result.schema.json)");
    c->add_option("-o,--out", cmd->out, "Also write the JSON match log to this file (atomically)");
    c->add_flag("--no-pii-masking", cmd->no_pii_masking, "Show personal data in span texts unmasked");
    c->add_flag("--prompt-only", cmd->prompt_only, "Check the prompt only (rules whose scope includes it)");
    c->add_flag("--steps-only", cmd->steps_only, "Check the decode steps only (rules whose scope includes them)");
    c->callback([cmd] { run_with_exit_code([&] { return cmd->run(); }); });
}

void run_with_exit_code(const std::function<int()>& run) {
    int code = 0;
    try {
        code = run();
    } catch (...) {
        std::cout.flush();
        report_current_exception();
        throw CLI::RuntimeError(2);
    }
    if (code != 0) throw CLI::RuntimeError(code);
}

}  // namespace attn::cli
