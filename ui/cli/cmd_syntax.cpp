// `attnscope syntax "TEXT"` or `attnscope syntax --session FILE [--shares]`: the link-grammar parse of
// each English sentence (words with their parts of speech, links with readable relations;
// engine/syntax.h), or why a sentence has no parser; with --shares (a session), every head's share of
// attention on syntactically linked word pairs, its best relation and the uniform baseline.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>

#include "engine/error.h"
#include "engine/pii.h"
#include "engine/rules.h"
#include "engine/session_file.h"
#include "engine/syntax.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/session_text.h"

namespace attn::cli {

namespace {

std::string shown(std::string_view text) {
    std::string out;
    for (char c : text) out += c == '\n' ? std::string("\\n") : std::string(1, c);
    return out;
}

struct SyntaxCommand {
    std::string text, session_path;
    bool json = false, shares = false;
    std::string layers = "*", heads = "*";
    std::vector<std::string> labels;
    int top = 0;
    SyntaxOptions options;

    void run() const {
        if (text.empty() == session_path.empty()) fail("give either a TEXT or --session FILE");
        if (shares && session_path.empty()) fail("--shares measures a session's heads: give --session FILE");
        Session session;
        SyntaxAnalysis analysis;
        if (!session_path.empty()) {
            session = load_session(session_path);
            analysis = parse_session_syntax(session, options);
        } else {
            analysis = parse_syntax(text, {}, options);
        }
        std::vector<SyntaxHeadShare> head_shares;
        if (shares) {
            if (!session.capture) fail(session_path, ": the session holds no capture");
            const std::vector<HeadRef> selected = select_heads(session, parse_index_range(layers, "layer"),
                                                               parse_index_range(heads, "head"), labels);
            if (selected.empty()) fail("no head is selected");
            const CpuTileSource source(*session.capture);
            head_shares = syntactic_shares(source, session, analysis, selected);
        }
        if (json) {
            nlohmann::json out = syntax_json(analysis);
            if (!session_path.empty()) out["session"] = session_json(session);
            if (shares) {
                nlohmann::json list = nlohmann::json::array();
                for (const SyntaxHeadShare& s : head_shares) list.push_back(syntax_share_json(s));
                out["heads"] = std::move(list);
            }
            std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            return;
        }
        const std::string& source_text = session_path.empty() ? text : session.text;
        print_parse(analysis, source_text, !session_path.empty());
        if (shares) print_shares(head_shares);
    }

    void print_parse(const SyntaxAnalysis& a, const std::string& source_text, bool with_tokens) const {
        if (!a.note.empty()) std::printf("%s\n", a.note.c_str());
        for (size_t s = 0; s < a.sentences.size(); ++s) {
            const SyntaxSentence& sentence = a.sentences[s];
            std::printf("sentence %zu (bytes %u..%u", s + 1, sentence.begin, sentence.end);
            if (with_tokens) std::printf(", tokens %lld..%lld", static_cast<long long>(sentence.first), static_cast<long long>(sentence.last));
            std::printf("): %s\n", shown(std::string_view(source_text).substr(sentence.begin, sentence.end - sentence.begin)).c_str());
            if (!sentence.parsed) {
                std::printf("  %s\n", sentence.note.c_str());
                continue;
            }
            std::printf("  parsed in %.1f ms%s\n", sentence.parse_ms,
                        sentence.null_count ? cat(", ", sentence.null_count, " words unlinked").c_str() : "");
            std::printf("  words:");
            for (int64_t w = sentence.first_word; w < sentence.last_word; ++w) {
                const SyntaxWord& word = a.words[static_cast<size_t>(w)];
                std::printf(" %s[%s%s]", shown(word.text).c_str(), word.pos.empty() ? "?" : word.pos.c_str(),
                            word.unknown ? ", unknown" : "");
            }
            std::printf("\n");
            for (const SyntaxLink& link : a.links) {
                if (a.words[static_cast<size_t>(link.left)].sentence != static_cast<int64_t>(s)) continue;
                const SyntaxWord &l = a.words[static_cast<size_t>(link.left)], &r = a.words[static_cast<size_t>(link.right)];
                std::printf("  %-10s %-28s %s%s — %s%s\n", link.label.c_str(), link.relation.c_str(), shown(l.text).c_str(),
                            link.left_role.empty() ? "" : cat(" (", link.left_role, ")").c_str(), shown(r.text).c_str(),
                            link.right_role.empty() ? "" : cat(" (", link.right_role, ")").c_str());
            }
        }
    }

    void print_shares(const std::vector<SyntaxHeadShare>& shares_list) const {
        std::vector<size_t> order(shares_list.size());
        std::iota(order.begin(), order.end(), 0);
        if (top > 0) {
            std::stable_sort(order.begin(), order.end(),
                             [&](size_t a, size_t b) { return shares_list[a].share > shares_list[b].share; });
            order.resize(std::min<size_t>(order.size(), static_cast<size_t>(top)));
        }
        const int64_t tokens = shares_list.empty() ? 0 : shares_list.front().query_tokens;
        std::printf("attention on syntactically linked earlier words, over %lld query tokens (exact)\n",
                    static_cast<long long>(tokens));
        std::printf("%5s %4s %8s %8s  %s\n", "layer", "head", "linked", "uniform", "best relation (share, uniform, tokens)");
        for (size_t i : order) {
            const SyntaxHeadShare& s = shares_list[i];
            std::string best = "-";
            if (!s.by_relation.empty()) {
                const RelationShare& r = s.by_relation.front();
                char buffer[160];
                std::snprintf(buffer, sizeof buffer, "%s (%.3f, %.3f, %lld)", r.relation.c_str(), r.share,
                              r.share_if_uniform, static_cast<long long>(r.query_tokens));
                best = buffer;
            }
            std::printf("%5d %4d %8.3f %8.3f  %s\n", s.layer, s.head, s.share, s.share_if_uniform, best.c_str());
        }
    }
};

}  // namespace

void add_syntax_command(CLI::App& app) {
    auto cmd = std::make_shared<SyntaxCommand>();
    CLI::App* c = app.add_subcommand(
        "syntax", "Link-grammar parse of English text or a session: words, parts of speech, links; per-head share of "
                  "attention on linked words");
    c->add_option("text", cmd->text, "Text to parse");
    c->add_option("--session", cmd->session_path, "Parse a session's text (words tied to its tokens)");
    c->add_flag("--shares", cmd->shares, "With --session: each head's share of attention on linked word pairs");
    c->add_option("--layers", cmd->layers, "Heads for --shares: layers N, A-B or *")->capture_default_str();
    c->add_option("--heads", cmd->heads, "Heads for --shares: heads N, A-B or * within each layer")->capture_default_str();
    c->add_option("--label", cmd->labels, "Heads for --shares: only heads with this label (repeat: any of them)");
    c->add_option("--top", cmd->top, "With --shares: only the N heads with the highest share, highest first");
    c->add_option("--max-words", cmd->options.max_words, "Sentences with more words are not parsed")->capture_default_str();
    c->add_option("--max-seconds", cmd->options.max_parse_seconds, "Parse time limit per sentence")->capture_default_str();
    c->add_flag("--json", cmd->json, "Machine-readable output");
    c->add_flag_callback("--no-pii-masking", [] { set_privacy_defaults(PrivacySettings{false}); },
                         "Show personal data (ID numbers, phones, cards, e-mail, IPs) in token texts unmasked");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
