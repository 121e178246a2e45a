#include "ui/cli/session_text.h"

#include <cstdio>

namespace attn::cli {

std::string token_bytes_of(const Session& session, int64_t position) {
    const Token& t = session.tokens.at(static_cast<size_t>(position));
    if (t.end <= t.begin || t.end > session.text.size()) return {};
    return session.text.substr(t.begin, t.end - t.begin);
}

std::string token_display(const Session& session, int64_t position) {
    std::string out = "\"";
    for (unsigned char c : token_bytes_of(session, position)) {
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '"') out += "\\\"";
        else if (c < 0x20) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else out += static_cast<char>(c);
    }
    return out + "\"";
}

nlohmann::json token_json(const Session& session, int64_t position) {
    const Token& t = session.tokens.at(static_cast<size_t>(position));
    return {{"position", position}, {"id", t.id},           {"text", token_bytes_of(session, position)},
            {"begin", t.begin},     {"end", t.end},         {"partial", t.partial},
            {"special", t.special}, {"generated", position >= session.prompt_tokens}};
}

nlohmann::json session_json(const Session& session) {
    return {{"model", session.identity.name},
            {"model_sha256", session.identity.sha256},
            {"positions", session.positions()},
            {"prompt_tokens", session.prompt_tokens},
            {"steps", session.steps.size()},
            {"recovered_incomplete", session.recovered_incomplete}};
}

void print_summary(const Session& session) {
    std::printf("session: %s, %lld positions (%lld prompt + %zu generated)%s\n", session.identity.name.c_str(),
                static_cast<long long>(session.positions()), static_cast<long long>(session.prompt_tokens),
                session.steps.size(), session.recovered_incomplete ? " [recovered from an incomplete file]" : "");
}

}  // namespace attn::cli
