#include "ui/cli/session_text.h"

#include <mutex>
#include <vector>

#include "engine/pii.h"

#include <cstdio>

namespace attn::cli {

namespace {

// The session text's personal data, found once per text (a command shows one session).
const std::vector<PiiSpan>& pii_of(const std::string& text) {
    static std::mutex mutex;
    static const char* data = nullptr;
    static size_t size = 0;
    static std::vector<PiiSpan> spans;
    std::lock_guard lock(mutex);
    if (data != text.data() || size != text.size()) {
        spans = find_pii(text);
        data = text.data();
        size = text.size();
    }
    return spans;
}

}  // namespace

std::string token_bytes_of(const Session& session, int64_t position) {
    const Token& t = session.tokens.at(static_cast<size_t>(position));
    if (t.end <= t.begin || t.end > session.text.size()) return {};
    // Personal data shows as "●●●● [TYPE]" (engine/pii.h), as in every other display, unless the
    // command was told --no-pii-masking.
    if (privacy_defaults().mask_pii) {
        const std::vector<PiiSpan>& pii = pii_of(session.text);
        if (!pii.empty()) return mask_pii_range(session.text, t.begin, t.end, pii);
    }
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
