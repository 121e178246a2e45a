// Byte-level BPE (GPT-2 family: SmolLM, Llama 3, Qwen2, GPT-2).
//
// Pipeline per plain-text run: ICU regex pre-tokenizer splits (each regex splits every piece
// from the previous one into matches and gaps) → each piece's bytes become one symbol per
// byte → merges applied lowest rank first (ties: leftmost) → tokens. Each symbol keeps the
// byte range it came from, so spans are exact.
#include <algorithm>
#include <array>
#include <memory>
#include <queue>
#include <unordered_map>

#include <unicode/regex.h>
#include <unicode/utext.h>

#include "engine/error.h"
#include "engine/tokenizer_internal.h"

namespace attn {

namespace {

// The GPT-2 regex, with \s spelled out below (see icu_pattern).
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// HF tokenizers (onig) and llama.cpp treat \s as Unicode White_Space, which includes
// U+000B and U+0085; say so explicitly rather than rely on ICU's own definition of \s.
std::string icu_pattern(std::string_view regex) {
    std::string out;
    for (size_t i = 0; i < regex.size(); ++i) {
        if (regex[i] == '\\' && i + 1 < regex.size()) {
            const char next = regex[i + 1];
            if (next == 's') {
                out += "\\p{White_Space}";
            } else if (next == 'S') {
                out += "\\P{White_Space}";
            } else {
                out += regex.substr(i, 2);  // keeps escaped backslashes intact
            }
            ++i;
        } else {
            out += regex[i];
        }
    }
    return out;
}

// GPT-2's reversible byte ↔ printable character table: printable Latin-1 bytes map to
// themselves, the rest to U+0100 onwards in byte order (space → "Ġ", newline → "Ċ").
std::array<char32_t, 256> byte_to_code_point() {
    std::array<char32_t, 256> table{};
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    char32_t next_extra = 0x100;
    for (int b = 0; b < 256; ++b) table[b] = printable(b) ? static_cast<char32_t>(b) : next_extra++;
    return table;
}

struct MergeResult {
    int32_t rank;
    int32_t merged_id;
};

class ByteLevelBpe final : public detail::TokenizerBase {
public:
    explicit ByteLevelBpe(ByteLevelBpeVocab vocab);

    TokenizerKind kind() const override { return TokenizerKind::ByteLevelBpe; }

protected:
    void encode_text(std::string_view text, size_t begin, size_t end, std::vector<Token>& out) const override;

private:
    struct Symbol {
        int32_t id;
        uint32_t begin, end;  // absolute byte span
        int32_t prev, next;   // neighbours in the piece; -1 at the ends
    };
    struct Candidate {
        int32_t rank;
        int32_t left;  // symbol index (= byte position in the piece, so ties go leftmost)
        int32_t left_id, right_id;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    // Scratch reused across the pieces of one encode_text call.
    struct Scratch {
        std::vector<Symbol> symbols;
        std::vector<Candidate> heap;
    };

    void split_and_encode(size_t level, std::vector<std::unique_ptr<icu::RegexMatcher>>& matchers,
                          std::string_view text, size_t begin, size_t end, Scratch& scratch,
                          std::vector<Token>& out) const;
    void bpe_piece(std::string_view text, size_t begin, size_t end, Scratch& scratch, std::vector<Token>& out) const;
    const MergeResult* find_merge(int32_t left, int32_t right) const {
        auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right));
        return it == merges_.end() ? nullptr : &it->second;
    }

    std::array<int32_t, 256> byte_token_{};  // id of each single byte's token, -1 if absent
    std::unordered_map<uint64_t, MergeResult> merges_;
    std::vector<std::unique_ptr<icu::RegexPattern>> patterns_;
    bool ignore_merges_ = false;
};

ByteLevelBpe::ByteLevelBpe(ByteLevelBpeVocab vocab) {
    const size_t n = vocab.tokens.size();
    if (vocab.types.empty()) vocab.types.assign(n, TokenType::Normal);
    if (vocab.types.size() != n) fail("byte-level BPE vocabulary: ", vocab.types.size(), " token types for ", n, " tokens");

    // Raw bytes of each token: normal tokens are written in the byte-level alphabet,
    // control and user-defined tokens are their literal text.
    const auto to_code_point = byte_to_code_point();
    std::unordered_map<char32_t, unsigned char> to_byte;
    for (int b = 0; b < 256; ++b) to_byte[to_code_point[b]] = static_cast<unsigned char>(b);
    std::vector<std::string> bytes(n);
    for (size_t i = 0; i < n; ++i) {
        const std::string& text = vocab.tokens[i];
        const bool literal = vocab.types[i] == TokenType::Control || vocab.types[i] == TokenType::UserDefined;
        if (literal || first_invalid_utf8(text) != std::string_view::npos) {
            bytes[i] = text;
            continue;
        }
        std::string raw;
        bool in_alphabet = true;
        for (size_t pos = 0; pos < text.size() && in_alphabet;) {
            // Decode one code point (the text is valid UTF-8).
            const auto lead = static_cast<unsigned char>(text[pos]);
            const size_t length = detail::utf8_sequence_length(lead);
            char32_t cp = length == 1 ? lead : lead & (0xFF >> (length + 1));
            for (size_t k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
            pos += length;
            auto it = to_byte.find(cp);
            if (it == to_byte.end()) in_alphabet = false;
            else raw += static_cast<char>(it->second);
        }
        bytes[i] = in_alphabet ? raw : text;  // outside the alphabet: keep it as written
    }

    detail::TokenizerBase::CommonSpec common;
    common.texts = vocab.tokens;
    common.bytes = std::move(bytes);
    common.types = vocab.types;
    common.bos_id = vocab.bos_id;
    common.eos_id = vocab.eos_id;
    common.unk_id = vocab.unk_id;
    common.add_bos = vocab.add_bos;
    common.chat_template = std::move(vocab.chat_template);
    init_common(std::move(common));

    for (int b = 0; b < 256; ++b) {
        auto it = id_by_text_.find(detail::utf8_encode(to_code_point[b]));
        byte_token_[b] = it == id_by_text_.end() ? -1 : it->second;
    }

    merges_.reserve(vocab.merges.size());
    for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
        const auto& [left, right] = vocab.merges[rank];
        auto l = id_by_text_.find(left), r = id_by_text_.find(right), m = id_by_text_.find(left + right);
        // A merge naming tokens the vocab lacks can never fire; skip it as llama.cpp does.
        if (l == id_by_text_.end() || r == id_by_text_.end() || m == id_by_text_.end()) continue;
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l->second)) << 32) | static_cast<uint32_t>(r->second);
        merges_.try_emplace(key, MergeResult{static_cast<int32_t>(rank), m->second});  // first (best) rank wins
    }
    ignore_merges_ = vocab.ignore_merges;

    for (const auto& regex : vocab.pre_split_regexes) {
        UParseError parse_error{};
        UErrorCode status = U_ZERO_ERROR;
        const std::string pattern = icu_pattern(regex);
        std::unique_ptr<icu::RegexPattern> compiled(
            icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), parse_error, status));
        if (U_FAILURE(status))
            fail("pre-tokenizer regex does not compile with ICU (", u_errorName(status), " at offset ",
                 parse_error.offset, "): ", regex);
        patterns_.push_back(std::move(compiled));
    }
}

void ByteLevelBpe::encode_text(std::string_view text, size_t begin, size_t end, std::vector<Token>& out) const {
    Scratch scratch;
    if (patterns_.empty()) {
        bpe_piece(text, begin, end, scratch, out);
        return;
    }
    UErrorCode status = U_ZERO_ERROR;
    // Native indexes of a UTF-8 UText are byte offsets, so matches come back as spans.
    struct CloseUText {
        void operator()(UText* t) const { utext_close(t); }
    };
    const std::unique_ptr<UText, CloseUText> utext(
        utext_openUTF8(nullptr, text.data(), static_cast<int64_t>(text.size()), &status));
    std::vector<std::unique_ptr<icu::RegexMatcher>> matchers;  // destroyed before the UText
    for (const auto& pattern : patterns_) {
        matchers.emplace_back(pattern->matcher(status));
        if (U_SUCCESS(status)) matchers.back()->reset(utext.get());
    }
    if (U_FAILURE(status)) fail("ICU regex matcher failed: ", u_errorName(status));
    split_and_encode(0, matchers, text, begin, end, scratch, out);
}

void ByteLevelBpe::split_and_encode(size_t level, std::vector<std::unique_ptr<icu::RegexMatcher>>& matchers,
                                    std::string_view text, size_t begin, size_t end, Scratch& scratch,
                                    std::vector<Token>& out) const {
    if (begin >= end) return;
    if (level == matchers.size()) {
        bpe_piece(text, begin, end, scratch, out);
        return;
    }
    icu::RegexMatcher& matcher = *matchers[level];
    UErrorCode status = U_ZERO_ERROR;
    // Opaque region bounds: lookahead like (?!\S) sees the piece's end as the text's end,
    // exactly as HF applies each pre-tokenizer to each piece on its own.
    matcher.region(static_cast<int64_t>(begin), static_cast<int64_t>(end), status);
    size_t gap_begin = begin;
    while (U_SUCCESS(status) && matcher.find()) {
        const auto match_begin = static_cast<size_t>(matcher.start64(status));
        const auto match_end = static_cast<size_t>(matcher.end64(status));
        if (U_FAILURE(status) || match_begin == match_end) continue;
        split_and_encode(level + 1, matchers, text, gap_begin, match_begin, scratch, out);
        split_and_encode(level + 1, matchers, text, match_begin, match_end, scratch, out);
        gap_begin = match_end;
    }
    if (U_FAILURE(status)) fail("ICU regex matching failed: ", u_errorName(status));
    split_and_encode(level + 1, matchers, text, gap_begin, end, scratch, out);
}

void ByteLevelBpe::bpe_piece(std::string_view text, size_t begin, size_t end, Scratch& scratch,
                             std::vector<Token>& out) const {
    if (ignore_merges_) {
        // Llama 3: a pre-token that is a whole vocab token is taken as is.
        static const auto to_code_point = byte_to_code_point();
        std::string encoded;
        for (size_t i = begin; i < end; ++i) encoded += detail::utf8_encode(to_code_point[static_cast<unsigned char>(text[i])]);
        if (auto it = id_by_text_.find(encoded); it != id_by_text_.end() && type_of(it->second) == TokenType::Normal) {
            out.push_back({it->second, static_cast<uint32_t>(begin), static_cast<uint32_t>(end), false, false});
            return;
        }
    }

    auto& symbols = scratch.symbols;
    symbols.clear();
    const auto length = static_cast<int32_t>(end - begin);
    for (int32_t i = 0; i < length; ++i) {
        const auto byte = static_cast<unsigned char>(text[begin + static_cast<size_t>(i)]);
        int32_t id = byte_token_[byte];
        if (id < 0) {
            if (unk_id_ < 0)
                fail("byte-level BPE vocabulary has no token for byte 0x", "0123456789ABCDEF"[byte >> 4],
                     "0123456789ABCDEF"[byte & 15], " (at byte offset ", begin + static_cast<size_t>(i), ") and no unknown token");
            id = unk_id_;
        }
        const auto at = static_cast<uint32_t>(begin) + static_cast<uint32_t>(i);
        symbols.push_back({id, at, at + 1, i - 1, i + 1 < length ? i + 1 : -1});
    }

    auto& heap = scratch.heap;
    heap.clear();
    auto push_pair = [&](int32_t left) {
        if (left < 0) return;
        const int32_t right = symbols[static_cast<size_t>(left)].next;
        if (right < 0) return;
        const int32_t left_id = symbols[static_cast<size_t>(left)].id;
        const int32_t right_id = symbols[static_cast<size_t>(right)].id;
        if (const MergeResult* merge = find_merge(left_id, right_id)) {
            heap.push_back({merge->rank, left, left_id, right_id});
            std::push_heap(heap.begin(), heap.end(), std::greater<>{});
        }
    };
    for (int32_t i = 0; i + 1 < length; ++i) push_pair(i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
        const Candidate candidate = heap.back();
        heap.pop_back();
        Symbol& left = symbols[static_cast<size_t>(candidate.left)];
        // Stale entries (a side was merged since) no longer describe adjacent symbols.
        if (left.id != candidate.left_id || left.next < 0) continue;
        Symbol& right = symbols[static_cast<size_t>(left.next)];
        if (right.id != candidate.right_id) continue;

        left.id = find_merge(candidate.left_id, candidate.right_id)->merged_id;
        left.end = right.end;
        left.next = right.next;
        if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = candidate.left;
        right.id = -1;  // dead
        push_pair(left.prev);
        push_pair(candidate.left);
    }

    for (int32_t i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
        const Symbol& symbol = symbols[static_cast<size_t>(i)];
        out.push_back({symbol.id, symbol.begin, symbol.end, false, false});
    }
}

}  // namespace

std::vector<std::string> byte_level_pre_tokenizer_regexes(std::string_view name) {
    if (name == "default" || name == "gpt2" || name == "gpt-2" || name == "olmo" || name == "mpt")
        return {kGpt2Regex};
    if (name == "smollm" || name == "starcoder" || name == "refact" || name == "codeshell" || name == "command-r")
        return {R"(\p{N})", kGpt2Regex};
    if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return {kLlama3Regex};
    if (name == "qwen2" || name == "stablelm2" || name == "deepseek-r1-qwen") return {kQwen2Regex};
    fail("pre-tokenizer \"", name,
         "\" is not supported (supported: default, gpt2, gpt-2, olmo, mpt, smollm, starcoder, refact, codeshell, "
         "command-r, llama3, llama-bpe, llama-v3, qwen2, stablelm2, deepseek-r1-qwen)");
}

namespace detail {
std::unique_ptr<Tokenizer> make_byte_level_bpe(ByteLevelBpeVocab vocab) {
    return std::make_unique<ByteLevelBpe>(std::move(vocab));
}
}  // namespace detail

}  // namespace attn
