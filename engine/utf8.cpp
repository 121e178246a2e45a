// UTF-8 validation and small helpers for the tokenizers.
#include <cstdio>
#include <string>
#include <string_view>

#include "engine/error.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_internal.h"

namespace attn {

// Well-formed UTF-8 per Unicode 15, table 3-7: the second byte's range depends on the lead
// byte, which is what rules out overlong forms (C0, C1, E0 80..9F, F0 80..8F), surrogates
// (ED A0..BF) and code points above U+10FFFF (F4 90.., F5..FF).
size_t first_invalid_utf8(std::string_view text) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    const size_t size = text.size();
    size_t pos = 0;
    while (pos < size) {
        const unsigned char lead = bytes[pos];
        if (lead < 0x80) {
            ++pos;
            continue;
        }
        size_t length = 0;
        unsigned char second_min = 0x80, second_max = 0xBF;
        if (lead >= 0xC2 && lead <= 0xDF) {
            length = 2;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            length = 3;
            if (lead == 0xE0) second_min = 0xA0;
            if (lead == 0xED) second_max = 0x9F;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            length = 4;
            if (lead == 0xF0) second_min = 0x90;
            if (lead == 0xF4) second_max = 0x8F;
        } else {
            return pos;  // stray continuation byte, C0/C1, or F5..FF
        }
        if (pos + length > size) return pos;  // truncated at the end of the text
        if (bytes[pos + 1] < second_min || bytes[pos + 1] > second_max) return pos;
        for (size_t k = 2; k < length; ++k)
            if ((bytes[pos + k] & 0xC0) != 0x80) return pos;
        pos += length;
    }
    return std::string_view::npos;
}

namespace detail {

size_t utf8_sequence_length(unsigned char lead) {
    if (lead >= 0xF0) return 4;
    if (lead >= 0xE0) return 3;
    if (lead >= 0xC0) return 2;
    return 1;
}

std::string utf8_encode(char32_t cp) {
    std::string out;
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return out;
}

void require_valid_utf8(std::string_view text) {
    const size_t bad = first_invalid_utf8(text);
    if (bad == std::string_view::npos) return;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
    fail("invalid UTF-8 at byte offset ", bad, " (", hex, ") of ", text.size(), "-byte input");
}

}  // namespace detail
}  // namespace attn
