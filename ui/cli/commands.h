#pragma once
// The attnscope command line: one file per command, each registering its subcommand.
#include <CLI/CLI.hpp>

#include <functional>

namespace attn::cli {

// A command whose exit code says something (rules, audit: 0 pass, 1 a rule failed): runs it and
// exits with its code; an error is printed and exits with 2.
void run_with_exit_code(const std::function<int()>& run);

void add_generate_commands(CLI::App& app);  // generate, capture
void add_inspect_command(CLI::App& app);
void add_heads_command(CLI::App& app);             // heads: fingerprints, labels, projections
void add_tile_command(CLI::App& app);
void add_signing_commands(CLI::App& app);          // keygen, sign, verify
void add_bench_command(CLI::App& app);
void add_rules_command(CLI::App& app);             // rules: check a rules file on a session
void add_audit_command(CLI::App& app);             // audit: a signed report of a rules file on a session
void add_syntax_command(CLI::App& app);            // syntax: link-grammar relations, per-head shares
void add_ontology_command(CLI::App& app);          // ontology: labelled spans and anomalies
void add_counterfactual_command(CLI::App& app);    // counterfactual: re-run with an intervention, diff attention
void add_view_command(CLI::App& app);            // view (headless, and windowed where built)
void add_demo_command(CLI::App& app);            // demo
void add_bench_render_command(CLI::App& bench);  // bench render
void add_bench_gpu_command(CLI::App& bench);     // bench gpu

}  // namespace attn::cli
