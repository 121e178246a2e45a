// attnscope: real-time attention debugger. This is the command-line entry point.
#include <cstdio>
#include <exception>
#include <string>

#include "engine/error.h"
#include "ui/cli/commands.h"

int main(int argc, char** argv) {
    CLI::App app{"attnscope — attention debugger for transformer language models"};
    app.require_subcommand(1);
    app.set_help_all_flag("--help-all", "Help for every command");
    app.set_version_flag("--version", std::string("attnscope ") + ATTNSCOPE_VERSION);
    attn::cli::add_generate_commands(app);
    attn::cli::add_inspect_command(app);
    attn::cli::add_heads_command(app);
    attn::cli::add_tile_command(app);
    attn::cli::add_signing_commands(app);
    attn::cli::add_bench_command(app);
    attn::cli::add_rules_command(app);
    attn::cli::add_syntax_command(app);
    attn::cli::add_ontology_command(app);
    attn::cli::add_counterfactual_command(app);
    attn::cli::add_bench_gpu_command(*app.get_subcommand("bench"));
    attn::cli::add_view_command(app);
    attn::cli::add_demo_command(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (...) {
        return attn::report_current_exception();
    }
    return 0;
}
