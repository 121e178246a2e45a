// `attnscope generate` streams a continuation; `attnscope capture` does the same and writes a
// session file as it goes (a killed capture leaves a recoverable <out>.partial).
#include <cstdio>
#include <memory>

#include "engine/error.h"
#include "engine/session_file.h"
#include "ui/cli/commands.h"
#include "ui/cli/generation_options.h"

namespace attn::cli {

namespace {

struct GenerateCommand {
    GenerationOptions options;
    std::string output;  // capture only
    int flush_every = 64;

    void run(bool capture) {
        auto model = Model::load(resolve_model_path(options.model));
        auto backend = make_backend(parse_backend_kind(options.backend), *model);
        GenerationRequest request = options.request(capture);
        std::unique_ptr<SessionWriter> writer;
        GenerationCallbacks callbacks;
        callbacks.prefill_progress = prefill_progress_bar(!options.quiet);
        if (capture) {
            // The file starts before the prefill and grows with every prefill chunk and every few
            // steps, so a killed capture keeps all but its last unflushed positions.
            callbacks.on_started = [&](const Session& session) {
                writer = std::make_unique<SessionWriter>(output, session);
            };
            callbacks.on_prefill_chunk = [&](const Session& session) { writer->flush(session); };
        }
        callbacks.on_step = [&](const Session& session, const StepRecord& step) {
            std::fwrite(step.text.data(), 1, step.text.size(), stdout);
            std::fflush(stdout);
            if (writer && session.steps.size() % flush_every == 0) writer->flush(session);
        };
        Session session = generate(*model, *backend, request, callbacks);
        std::fputc('\n', stdout);
        if (capture) {
            writer->finish(session);
            std::fprintf(stderr, "captured %lld positions (%lld prompt + %zu generated) into %s\n",
                         static_cast<long long>(session.positions()), static_cast<long long>(session.prompt_tokens),
                         session.steps.size(), output.c_str());
        }
    }
};

}  // namespace

void add_generate_commands(CLI::App& app) {
    auto generate_cmd = std::make_shared<GenerateCommand>();
    CLI::App* g = app.add_subcommand("generate", "Generate text, streaming tokens as they come");
    generate_cmd->options.add_to(*g);
    g->callback([generate_cmd] { generate_cmd->run(false); });

    auto capture_cmd = std::make_shared<GenerateCommand>();
    CLI::App* c = app.add_subcommand("capture", "Generate and record every layer's attention into a session file");
    capture_cmd->options.add_to(*c);
    c->add_option("-o,--output", capture_cmd->output, "Session file to write (.attn)")->required();
    c->add_option("--flush-every", capture_cmd->flush_every, "Steps between flushes to disk")
        ->check(CLI::PositiveNumber);
    c->callback([capture_cmd] { capture_cmd->run(true); });
}

}  // namespace attn::cli
