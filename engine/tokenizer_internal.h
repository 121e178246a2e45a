#pragma once
// Private parts shared by the tokenizer implementations (not for use outside engine/tokenizer*.cpp,
// engine/chat_template.cpp and engine/utf8.cpp).
#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer.h"

namespace attn::detail {

// ---- UTF-8 helpers (utf8.cpp) -----------------------------------------------------------

// True at the start of a character or at the end of the text (the input is valid UTF-8).
inline bool is_utf8_boundary(std::string_view text, size_t pos) {
    return pos >= text.size() || (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80;
}
// Byte length of the character starting with `lead` (1 for anything that is not a lead byte).
size_t utf8_sequence_length(unsigned char lead);
std::string utf8_encode(char32_t code_point);
// Throws attn::Error naming the offset of the first ill-formed sequence.
void require_valid_utf8(std::string_view text);

// ---- vocabulary lookups -----------------------------------------------------------------

// unordered_map<string, V> that accepts string_view keys without allocating.
struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

// Control and user-defined tokens, matched whole in the raw text before pre-tokenization:
// leftmost first, and at one position the longest.
class SpecialTokenMatcher {
public:
    void add(std::string text, int32_t id, bool only_when_parsing_special);

    struct Piece {
        size_t begin = 0;
        size_t end = 0;
        int32_t id = -1;  // -1: plain text to tokenize
    };
    std::vector<Piece> split(std::string_view text, bool parse_special) const;

private:
    struct Candidate {
        std::string text;
        int32_t id;
        bool only_when_parsing_special;
    };
    std::array<std::vector<Candidate>, 256> by_first_byte_;  // each longest first
};

// ---- chat templates (chat_template.cpp) -------------------------------------------------

enum class ChatFamily { ChatML, Llama2, Llama3, Mistral };

// A recognised chat template, rendered natively (see Tokenizer::apply_chat_template).
class ChatTemplate {
public:
    // Throws attn::Error naming the supported families if `source` is not recognised.
    static ChatTemplate recognise(const std::string& source, std::string bos_text, std::string eos_text);

    ChatFamily family() const { return family_; }
    const std::optional<std::string>& default_system() const { return default_system_; }
    std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

private:
    ChatFamily family_ = ChatFamily::ChatML;
    std::optional<std::string> default_system_;
    std::string bos_text_;
    std::string eos_text_;
    bool mistral_space_before_inst_ = false;     // " [INST] " (Mistral v0.1 after its 2024 update)
    bool mistral_space_before_answer_ = false;   // "[/INST] answer"
    bool mistral_accepts_system_ = false;        // folded into the first user message
};

// ---- common tokenizer skeleton (tokenizer.cpp) ------------------------------------------

// Holds the vocabulary, special tokens and chat template; encode() validates the input,
// splits off special tokens and hands each plain-text run to encode_text().
class TokenizerBase : public Tokenizer {
public:
    std::vector<Token> encode(std::string_view text, bool parse_special, bool add_bos) const final;
    std::string decode(std::span<const int32_t> ids) const override;
    std::string token_bytes(int32_t id) const final;
    std::string token_text(int32_t id) const final;

    int32_t vocab_size() const final { return static_cast<int32_t>(texts_.size()); }
    int32_t bos_id() const final { return bos_id_; }
    int32_t eos_id() const final { return eos_id_; }
    bool add_bos_token() const final { return add_bos_; }
    bool is_special(int32_t id) const final;
    int32_t find_token(std::string_view text) const final;

    std::string apply_chat_template(std::span<const ChatMessage> messages,
                                    bool add_generation_prompt) const final;
    bool has_chat_template() const final { return !chat_template_source_.empty(); }

protected:
    struct CommonSpec {
        std::vector<std::string> texts;  // vocab (display) form
        std::vector<std::string> bytes;  // raw bytes in decoded text
        std::vector<TokenType> types;
        int32_t bos_id = -1;
        int32_t eos_id = -1;
        int32_t unk_id = -1;
        bool add_bos = false;
        std::string chat_template;
    };
    void init_common(CommonSpec spec);

    // Appends the tokens of text[begin, end) with absolute spans. The run holds no special
    // tokens and starts at offset 0 or right after a special token.
    virtual void encode_text(std::string_view text, size_t begin, size_t end, std::vector<Token>& out) const = 0;

    TokenType type_of(int32_t id) const { return types_[static_cast<size_t>(id)]; }
    void check_id(int32_t id) const;

    std::vector<std::string> texts_;
    std::vector<std::string> bytes_;
    std::vector<TokenType> types_;
    StringMap<int32_t> id_by_text_;
    StringMap<int32_t> id_by_bytes_;
    int32_t bos_id_ = -1;
    int32_t eos_id_ = -1;
    int32_t unk_id_ = -1;
    bool add_bos_ = false;

private:
    SpecialTokenMatcher specials_;
    std::string chat_template_source_;
    std::optional<ChatTemplate> chat_template_;  // set when the source was recognised
    std::string chat_template_error_;            // why it was not
};

std::unique_ptr<Tokenizer> make_byte_level_bpe(ByteLevelBpeVocab vocab);
std::unique_ptr<Tokenizer> make_sentencepiece(SentencePieceVocab vocab);

}  // namespace attn::detail
