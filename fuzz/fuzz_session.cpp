// libFuzzer target for session files: arbitrary bytes written to a file and loaded. Only
// attn::Error may escape; a loaded session must be internally consistent.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "engine/error.h"
#include "engine/session_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // load_session reads from a path (it maps and checks the file size), so give it one.
    static const std::string path = "/tmp/attnscope_fuzz_session_" + std::to_string(getpid()) + ".attn";
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (!file) return 0;
    std::fwrite(data, 1, size, file);
    std::fclose(file);
    try {
        const attn::Session session = attn::load_session(path);
        if (session.capture && session.capture->positions() > session.positions()) __builtin_trap();
        if (session.steps.size() > session.tokens.size()) __builtin_trap();
        for (const attn::Token& token : session.tokens)
            if (token.begin > token.end || token.end > session.text.size()) __builtin_trap();
    } catch (const attn::Error&) {
    }
    return 0;
}
