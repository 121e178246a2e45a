#pragma once
// Tokenizers of the supported model families, with byte spans.
//
// Every token carries [begin, end): the bytes of the original UTF-8 input it came from.
// Byte-level BPE tokens map 1:1 onto input bytes; a token whose span does not start and
// end on UTF-8 character boundaries of the input is flagged `partial`. Tokens that stand
// for no input bytes (an added BOS, SentencePiece's added dummy-prefix space) have an
// empty span at the position where they were inserted.
//
// Spans of one encode() are ordered, non-overlapping and contiguous: together they cover
// the input exactly once. For SentencePiece, the "▁" that stands for a space covers that
// one space byte, and a token that merges the dummy prefix with text ("▁Hello" at the
// start) covers just the text.
//
// Input validation: encode() rejects ill-formed UTF-8 (overlong forms, surrogates, code
// points above U+10FFFF, truncated sequences, stray continuation bytes) with an
// attn::Error whose message names the byte offset of the first byte of the first
// ill-formed sequence, e.g. "invalid UTF-8 at byte offset 7 (0xC0)".
//
// Round trip: decode(ids of encode(x, p, /*add_bos=*/false)) == x for every valid UTF-8 x;
// with add_bos the BOS renders as its text in front ("<s>" + x), which encodes back to the
// same ids. The one-leading-space rule for SentencePiece models with add_space_prefix:
// encode() puts one dummy "▁" in front of every plain-text run, i.e. at the start of the
// input and right after every matched special token (as llama.cpp and HF's Llama
// tokenizer.json do, so "<s>[INST]" gives "<s>", "▁[", ...), and decode() removes one
// leading space from the first id and from every id that follows a special id, when that
// id is not special itself and its bytes start with a space. A "▁" (U+2581) typed in the
// input is encoded as its three byte pieces, never as the space mark, so it decodes back
// to "▁" (sentencepiece itself would turn it into a space).
//
// Special tokens: Control tokens (GGUF token_type 3; HF added_tokens with special=true) are
// matched as whole tokens only when parse_special is true. User-defined tokens (type 4; HF
// added_tokens with special=false) are always matched whole, as llama.cpp and HF do.
// Matching is leftmost-longest and happens before any pre-tokenization or BPE.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attn {

class GgufFile;

struct Token {
    int32_t id = 0;
    uint32_t begin = 0;  // byte span in the encoded text
    uint32_t end = 0;
    bool partial = false;  // span splits a multi-byte UTF-8 character
    bool special = false;  // control / added token matched as a whole
};

struct ChatMessage {
    std::string role;  // "system", "user", "assistant"
    std::string content;
};

enum class TokenizerKind { ByteLevelBpe, SentencePieceBpe };

// Token kinds as GGUF stores them in tokenizer.ggml.token_type (llama.cpp numbering).
enum class TokenType : int32_t {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,  // SentencePiece byte fallback "<0xNN>"
};

// Everything a byte-level (GPT-2 style) BPE tokenizer is built from; from_gguf and
// from_hf_json fill one of these, tests can fill one by hand.
struct ByteLevelBpeVocab {
    std::vector<std::string> tokens;  // byte-level form ("Ġthe"); Control/UserDefined tokens are literal text
    std::vector<TokenType> types;     // empty: all Normal
    std::vector<std::pair<std::string, std::string>> merges;  // best (lowest rank) first
    // ICU regexes applied in order; each splits every piece into its matches and the gaps
    // between them (HF "Isolated"). \s and \S mean Unicode White_Space as in HF/onig.
    std::vector<std::string> pre_split_regexes;
    bool ignore_merges = false;  // a pre-token that is itself a vocab token stays whole (Llama 3)
    int32_t bos_id = -1;
    int32_t eos_id = -1;
    int32_t unk_id = -1;
    bool add_bos = false;
    std::string chat_template;  // Jinja source as shipped with the model; empty if none
};

// The pre-tokenizer regexes of a llama.cpp pre-tokenizer name (GGUF tokenizer.ggml.pre):
// "default"/"gpt2"/"gpt-2"/"olmo"/"mpt", "smollm"/"starcoder"/"refact"/"codeshell"/
// "command-r" (every \p{N} alone, then the GPT-2 regex), "llama3"/"llama-bpe"/"llama-v3",
// "qwen2"/"stablelm2"/"deepseek-r1-qwen". Unknown name → attn::Error listing these.
std::vector<std::string> byte_level_pre_tokenizer_regexes(std::string_view pre_name);

// Everything a SentencePiece-style BPE tokenizer (Llama 2) is built from.
struct SentencePieceVocab {
    std::vector<std::string> pieces;  // "▁the", "<0x0A>", "<s>"
    std::vector<float> scores;        // a merge forming a higher-scored piece goes first
    std::vector<TokenType> types;     // empty: all Normal
    int32_t bos_id = -1;
    int32_t eos_id = -1;
    int32_t unk_id = -1;  // used for a byte with no <0xNN> piece; error if also absent
    bool add_bos = true;
    bool add_space_prefix = true;
    std::string chat_template;
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // From GGUF metadata (tokenizer.ggml.*): "gpt2" → byte-level BPE, "llama" → SentencePiece BPE.
    static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& gguf);
    // From a Hugging Face tokenizer.json (and optional tokenizer_config.json beside it for
    // the chat template and BOS/EOS policy). Byte-level BPE only (pre_tokenizer made of
    // ByteLevel / Digits / Split-Isolated steps, or a ByteLevel decoder); anything else,
    // e.g. a SentencePiece-converted Llama 2 tokenizer.json, → attn::Error.
    static std::unique_ptr<Tokenizer> from_hf_json(const std::string& tokenizer_json_path);
    static std::unique_ptr<Tokenizer> from_vocab(ByteLevelBpeVocab vocab);
    static std::unique_ptr<Tokenizer> from_vocab(SentencePieceVocab vocab);

    // Invalid UTF-8 input → attn::Error naming the byte offset.
    // parse_special: text like "<|im_start|>" becomes the special token (true for chat prompts).
    // add_bos: prepend BOS if the model wants one (add_bos_token()).
    virtual std::vector<Token> encode(std::string_view text, bool parse_special = true,
                                      bool add_bos = true) const = 0;
    // Bytes of the concatenated tokens (special tokens render as their text).
    virtual std::string decode(std::span<const int32_t> ids) const = 0;
    // Raw bytes of one token as it would appear in decoded text (may be a partial UTF-8 sequence).
    virtual std::string token_bytes(int32_t id) const = 0;
    // Display form of a token (printable, e.g. "Ġthe" stays "Ġthe"; for UI and JSON).
    virtual std::string token_text(int32_t id) const = 0;

    virtual TokenizerKind kind() const = 0;
    virtual int32_t vocab_size() const = 0;
    virtual int32_t bos_id() const = 0;  // -1 if none
    virtual int32_t eos_id() const = 0;  // -1 if none
    virtual bool add_bos_token() const = 0;
    virtual bool is_special(int32_t id) const = 0;
    // Id of the token whose vocab text (token_text) is `text`, else of the first token whose
    // raw bytes (token_bytes) are `text`; -1 if absent.
    virtual int32_t find_token(std::string_view text) const = 0;

    // Renders the model's chat template (ChatML-style <|im_start|> for the default model;
    // other templates: a documented built-in subset). Throws attn::Error if the model has none.
    //
    // Jinja is not interpreted: the template source is recognised by signature and the
    // family is rendered natively, byte-equal to HF apply_chat_template(tokenize=False):
    //   ChatML      <|im_start|>role\ncontent<|im_end|>\n ...; a default system message the
    //               template injects when messages[0] is not "system" (SmolLM2, Qwen2) is
    //               taken from the template text; generation prompt <|im_start|>assistant\n
    //   Llama 2     <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s>...
    //   Llama 3     <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
    //               (content trimmed); generation prompt ...assistant<|end_header_id|>\n\n
    //   Mistral     <s>[INST] user [/INST]answer</s>...; a system message is put in front of
    //               the first user message followed by "\n\n"
    // Llama 2 and Mistral require user/assistant alternation (attn::Error otherwise).
    // An unrecognised template → attn::Error naming the supported families.
    // The result contains BOS text where the template puts it: encode it with
    // parse_special=true and add_bos=false (encode_chat does this).
    virtual std::string apply_chat_template(std::span<const ChatMessage> messages,
                                            bool add_generation_prompt) const = 0;
    virtual bool has_chat_template() const = 0;
    // apply_chat_template, then encode(prompt, parse_special=true, add_bos=false).
    std::vector<Token> encode_chat(std::span<const ChatMessage> messages,
                                   bool add_generation_prompt) const;
};

// UTF-8 validation: returns the offset of the first invalid byte, or npos if valid.
size_t first_invalid_utf8(std::string_view text);

}  // namespace attn
