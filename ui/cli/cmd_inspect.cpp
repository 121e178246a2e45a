// `attnscope inspect`: what a session holds, one exact attention row, or per-head statistics
// of the last query — as text or JSON.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "engine/error.h"
#include "engine/pii.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/session_text.h"

namespace attn::cli {

namespace {

struct HeadStats {
    double entropy = 0;   // nats
    float max = 0;
    int64_t argmax = 0;
    double bos_mass = 0;  // probability on key 0 (the attention sink)
};

HeadStats stats_of(const std::vector<float>& probs) {
    HeadStats s;
    for (size_t j = 0; j < probs.size(); ++j) {
        const double p = probs[j];
        if (p > 0) s.entropy -= p * std::log(p);
        if (probs[j] > s.max) {
            s.max = probs[j];
            s.argmax = static_cast<int64_t>(j);
        }
    }
    s.bos_mass = probs.empty() ? 0 : probs[0];
    return s;
}

struct InspectCommand {
    std::string path;
    int layer = -1, head = -1;
    int64_t query = -1;
    int top = 10;
    bool json = false;

    void run() const {
        const Session session = load_session(path);
        if (!session.capture) fail(path, ": the session holds no capture");
        const CpuTileSource tiles(*session.capture);
        const int64_t n = session.capture->positions();
        if (n == 0) fail(path, ": the session holds no positions");
        const bool one_row = layer >= 0 || head >= 0 || query >= 0;
        if (one_row && (layer < 0 || head < 0)) fail("--layer and --head go together (and --query, default the last)");
        const int64_t i = query >= 0 ? query : n - 1;
        if (one_row) print_row(session, tiles, i);
        else print_head_stats(session, tiles, i);
    }

    void print_row(const Session& session, const CpuTileSource& tiles, int64_t i) const {
        const std::vector<float> probs = tiles.row(layer, head, i);
        if (json) {
            nlohmann::json out;
            out["layer"] = layer;
            out["head"] = head;
            out["query"] = i;
            out["query_token"] = token_json(session, i);
            out["probs"] = probs;
            out["tokens"] = nlohmann::json::array();
            for (int64_t j = 0; j <= i; ++j) out["tokens"].push_back(token_json(session, j));
            std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            return;
        }
        print_summary(session);
        std::printf("layer %d head %d, query %lld %s\n", layer, head, static_cast<long long>(i),
                    token_display(session, i).c_str());
        std::vector<int64_t> order(probs.size());
        std::iota(order.begin(), order.end(), 0);
        const size_t k = std::min<size_t>(top, order.size());
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [&](int64_t a, int64_t b) { return probs[a] > probs[b]; });
        std::printf("%8s  %10s  %s\n", "key", "prob", "token");
        for (size_t r = 0; r < k; ++r)
            std::printf("%8lld  %10.6f  %s\n", static_cast<long long>(order[r]), probs[order[r]],
                        token_display(session, order[r]).c_str());
    }

    void print_head_stats(const Session& session, const CpuTileSource& tiles, int64_t i) const {
        const CaptureShape& shape = session.capture->shape();
        nlohmann::json heads = nlohmann::json::array();
        if (!json) {
            print_summary(session);
            std::printf("last query %lld %s\n", static_cast<long long>(i), token_display(session, i).c_str());
            std::printf("%5s %4s  %9s  %8s  %8s  %8s\n", "layer", "head", "entropy", "max", "argmax", "bos");
        }
        for (int l = 0; l < shape.n_layer; ++l)
            for (int h = 0; h < shape.n_head; ++h) {
                const HeadStats s = stats_of(tiles.row(l, h, i));
                if (json) {
                    heads.push_back({{"layer", l}, {"head", h}, {"entropy", s.entropy}, {"max", s.max},
                                     {"argmax", s.argmax}, {"bos_mass", s.bos_mass}});
                } else {
                    std::printf("%5d %4d  %9.4f  %8.5f  %8lld  %8.5f\n", l, h, s.entropy, s.max,
                                static_cast<long long>(s.argmax), s.bos_mass);
                }
            }
        if (json) {
            nlohmann::json out = session_json(session);
            out["query"] = i;
            out["heads"] = heads;
            std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        }
    }
};

}  // namespace

void add_inspect_command(CLI::App& app) {
    auto cmd = std::make_shared<InspectCommand>();
    CLI::App* c = app.add_subcommand("inspect", "Show a session's attention: one exact row, or per-head statistics");
    c->add_option("session", cmd->path, "Session file (.attn)")->required();
    c->add_option("--layer", cmd->layer, "Layer of the row to show");
    c->add_option("--head", cmd->head, "Query head of the row to show");
    c->add_option("--query", cmd->query, "Query position (default: the last)");
    c->add_option("--top", cmd->top, "Keys to list in text mode")->check(CLI::PositiveNumber);
    c->add_flag("--json", cmd->json, "Machine-readable output");
    c->add_flag_callback("--no-pii-masking", [] { set_privacy_defaults(PrivacySettings{false}); },
                         "Show personal data (ID numbers, phones, cards, e-mail, IPs) in token texts unmasked");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
