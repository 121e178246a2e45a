// Tokenizer loading (GGUF, HF tokenizer.json) and the parts every tokenizer shares:
// input validation, special-token matching, spans, decode, chat template dispatch.
#include "engine/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/tokenizer_internal.h"

namespace attn {
namespace detail {

// ---- SpecialTokenMatcher ----------------------------------------------------------------

void SpecialTokenMatcher::add(std::string text, int32_t id, bool only_when_parsing_special) {
    if (text.empty()) return;
    auto& bucket = by_first_byte_[static_cast<unsigned char>(text[0])];
    bucket.push_back({std::move(text), id, only_when_parsing_special});
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const Candidate& a, const Candidate& b) { return a.text.size() > b.text.size(); });
}

std::vector<SpecialTokenMatcher::Piece> SpecialTokenMatcher::split(std::string_view text,
                                                                   bool parse_special) const {
    std::vector<Piece> pieces;
    size_t plain_begin = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        const Candidate* found = nullptr;
        for (const auto& candidate : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
            if (candidate.only_when_parsing_special && !parse_special) continue;
            if (text.compare(pos, candidate.text.size(), candidate.text) == 0) {
                found = &candidate;  // buckets are sorted longest first
                break;
            }
        }
        if (!found) {
            ++pos;
            continue;
        }
        if (plain_begin < pos) pieces.push_back({plain_begin, pos, -1});
        pieces.push_back({pos, pos + found->text.size(), found->id});
        pos += found->text.size();
        plain_begin = pos;
    }
    if (plain_begin < text.size()) pieces.push_back({plain_begin, text.size(), -1});
    return pieces;
}

// ---- TokenizerBase ----------------------------------------------------------------------

void TokenizerBase::init_common(CommonSpec spec) {
    const size_t n = spec.texts.size();
    if (n == 0) fail("tokenizer vocabulary is empty");
    if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) fail("tokenizer vocabulary too large: ", n);
    if (spec.bytes.size() != n || spec.types.size() != n) fail("tokenizer vocabulary arrays differ in length");
    auto check_optional_id = [n](int32_t id, const char* what) {
        if (id < -1 || id >= static_cast<int32_t>(n))
            fail("tokenizer ", what, " id ", id, " is outside the vocabulary (", n, " tokens)");
    };
    check_optional_id(spec.bos_id, "BOS");
    check_optional_id(spec.eos_id, "EOS");
    check_optional_id(spec.unk_id, "unknown-token");

    texts_ = std::move(spec.texts);
    bytes_ = std::move(spec.bytes);
    types_ = std::move(spec.types);
    bos_id_ = spec.bos_id;
    eos_id_ = spec.eos_id;
    unk_id_ = spec.unk_id;
    add_bos_ = spec.add_bos && bos_id_ >= 0;

    id_by_text_.reserve(n);
    id_by_bytes_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const auto id = static_cast<int32_t>(i);
        id_by_text_.emplace(texts_[i], id);  // first id wins on duplicates
        id_by_bytes_.emplace(bytes_[i], id);
        if (types_[i] == TokenType::Control) specials_.add(texts_[i], id, /*only_when_parsing_special=*/true);
        if (types_[i] == TokenType::UserDefined) specials_.add(texts_[i], id, false);
    }

    chat_template_source_ = std::move(spec.chat_template);
    if (!chat_template_source_.empty()) {
        auto text_of = [this](int32_t id) { return id >= 0 ? bytes_[static_cast<size_t>(id)] : std::string(); };
        try {
            chat_template_ = ChatTemplate::recognise(chat_template_source_, text_of(bos_id_), text_of(eos_id_));
        } catch (const Error& e) {
            chat_template_error_ = e.what();  // loading still works; rendering reports it
        }
    }
}

std::vector<Token> TokenizerBase::encode(std::string_view text, bool parse_special, bool add_bos) const {
    if (text.size() > std::numeric_limits<uint32_t>::max())
        fail("text to tokenize is too large: ", text.size(), " bytes (4 GiB at most)");
    require_valid_utf8(text);

    std::vector<Token> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && add_bos_) out.push_back({bos_id_, 0, 0, false, true});
    for (const auto& piece : specials_.split(text, parse_special)) {
        if (piece.id >= 0) {
            out.push_back({piece.id, static_cast<uint32_t>(piece.begin), static_cast<uint32_t>(piece.end), false, true});
        } else {
            encode_text(text, piece.begin, piece.end, out);
        }
    }
    for (auto& token : out)
        token.partial = token.begin < token.end &&
                         (!is_utf8_boundary(text, token.begin) || !is_utf8_boundary(text, token.end));
    return out;
}

void TokenizerBase::check_id(int32_t id) const {
    if (id < 0 || id >= vocab_size()) fail("token id ", id, " is outside the vocabulary (", vocab_size(), " tokens)");
}

std::string TokenizerBase::decode(std::span<const int32_t> ids) const {
    std::string out;
    for (int32_t id : ids) {
        check_id(id);
        out += bytes_[static_cast<size_t>(id)];
    }
    return out;
}

std::string TokenizerBase::token_bytes(int32_t id) const {
    check_id(id);
    return bytes_[static_cast<size_t>(id)];
}

std::string TokenizerBase::token_text(int32_t id) const {
    check_id(id);
    return texts_[static_cast<size_t>(id)];
}

bool TokenizerBase::is_special(int32_t id) const {
    if (id < 0 || id >= vocab_size()) return false;
    const TokenType type = type_of(id);
    return type == TokenType::Control || type == TokenType::UserDefined;
}

int32_t TokenizerBase::find_token(std::string_view text) const {
    if (auto it = id_by_text_.find(text); it != id_by_text_.end()) return it->second;
    if (auto it = id_by_bytes_.find(text); it != id_by_bytes_.end()) return it->second;
    return -1;
}

std::string TokenizerBase::apply_chat_template(std::span<const ChatMessage> messages,
                                               bool add_generation_prompt) const {
    if (chat_template_source_.empty()) fail("this model has no chat template (tokenizer.chat_template)");
    if (!chat_template_) fail(chat_template_error_);
    return chat_template_->render(messages, add_generation_prompt);
}

}  // namespace detail

// ---- Tokenizer entry points -------------------------------------------------------------

std::vector<Token> Tokenizer::encode_chat(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
    return encode(apply_chat_template(messages, add_generation_prompt), /*parse_special=*/true, /*add_bos=*/false);
}

std::unique_ptr<Tokenizer> Tokenizer::from_vocab(ByteLevelBpeVocab vocab) {
    return detail::make_byte_level_bpe(std::move(vocab));
}

std::unique_ptr<Tokenizer> Tokenizer::from_vocab(SentencePieceVocab vocab) {
    return detail::make_sentencepiece(std::move(vocab));
}

namespace {

std::vector<TokenType> gguf_token_types(const GgufFile& gguf, size_t count) {
    std::vector<TokenType> types(count, TokenType::Normal);
    if (!gguf.has("tokenizer.ggml.token_type")) return types;
    const auto raw = gguf.get_int_array("tokenizer.ggml.token_type");
    if (raw.size() != count)
        fail(gguf.name(), ": tokenizer.ggml.token_type has ", raw.size(), " entries but there are ", count, " tokens");
    for (size_t i = 0; i < count; ++i) {
        if (raw[i] < 0 || raw[i] > 6) fail(gguf.name(), ": token ", i, " has unknown token_type ", raw[i]);
        types[i] = static_cast<TokenType>(raw[i]);
    }
    return types;
}

int32_t gguf_token_id(const GgufFile& gguf, const std::string& key, size_t count) {
    const auto id = gguf.int_or(key);
    if (!id) return -1;
    if (*id < 0 || static_cast<uint64_t>(*id) >= count) {
        // Some converters write an out-of-range id to mean "none" (e.g. -1 as uint32).
        return -1;
    }
    return static_cast<int32_t>(*id);
}

bool gguf_bool_or(const GgufFile& gguf, const std::string& key, bool fallback) {
    return gguf.has(key) ? gguf.get_bool(key) : fallback;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& gguf) {
    const std::string model = gguf.get_string("tokenizer.ggml.model");
    const auto& tokens = gguf.get_string_array("tokenizer.ggml.tokens");
    const size_t count = tokens.size();
    const std::string chat_template = gguf.string_or("tokenizer.chat_template").value_or("");

    if (model == "gpt2") {
        ByteLevelBpeVocab vocab;
        vocab.tokens = tokens;
        vocab.types = gguf_token_types(gguf, count);
        if (gguf.has("tokenizer.ggml.merges")) {
            const auto& merges = gguf.get_string_array("tokenizer.ggml.merges");
            vocab.merges.reserve(merges.size());
            for (size_t i = 0; i < merges.size(); ++i) {
                const size_t space = merges[i].find(' ', 1);  // tokens never hold a raw space
                if (space == std::string::npos)
                    fail(gguf.name(), ": tokenizer.ggml.merges[", i, "] \"", merges[i], "\" is not \"left right\"");
                vocab.merges.emplace_back(merges[i].substr(0, space), merges[i].substr(space + 1));
            }
        }
        const std::string pre = gguf.string_or("tokenizer.ggml.pre").value_or("default");
        try {
            vocab.pre_split_regexes = byte_level_pre_tokenizer_regexes(pre);
        } catch (const Error& e) {
            fail(gguf.name(), ": ", e.what());
        }
        // llama.cpp treats Llama 3's vocab this way; HF's tokenizer.json says ignore_merges.
        vocab.ignore_merges = pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3";
        vocab.bos_id = gguf_token_id(gguf, "tokenizer.ggml.bos_token_id", count);
        vocab.eos_id = gguf_token_id(gguf, "tokenizer.ggml.eos_token_id", count);
        vocab.unk_id = gguf_token_id(gguf, "tokenizer.ggml.unknown_token_id", count);
        vocab.add_bos = gguf_bool_or(gguf, "tokenizer.ggml.add_bos_token", false);
        vocab.chat_template = chat_template;
        return detail::make_byte_level_bpe(std::move(vocab));
    }
    if (model == "llama") {
        SentencePieceVocab vocab;
        vocab.pieces = tokens;
        vocab.types = gguf_token_types(gguf, count);
        if (gguf.has("tokenizer.ggml.scores")) {
            const auto scores = gguf.get_float_array("tokenizer.ggml.scores");
            if (scores.size() != count)
                fail(gguf.name(), ": tokenizer.ggml.scores has ", scores.size(), " entries but there are ", count,
                     " tokens");
            vocab.scores.assign(scores.begin(), scores.end());
        } else {
            vocab.scores.assign(count, 0.0f);
        }
        vocab.bos_id = gguf_token_id(gguf, "tokenizer.ggml.bos_token_id", count);
        vocab.eos_id = gguf_token_id(gguf, "tokenizer.ggml.eos_token_id", count);
        vocab.unk_id = gguf_token_id(gguf, "tokenizer.ggml.unknown_token_id", count);
        vocab.add_bos = gguf_bool_or(gguf, "tokenizer.ggml.add_bos_token", true);
        vocab.add_space_prefix = gguf_bool_or(gguf, "tokenizer.ggml.add_space_prefix", true);
        vocab.chat_template = chat_template;
        return detail::make_sentencepiece(std::move(vocab));
    }
    fail(gguf.name(), ": tokenizer.ggml.model \"", model,
         "\" is not supported (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece BPE)");
}

// ---- Hugging Face tokenizer.json --------------------------------------------------------

namespace {

using nlohmann::json;

json read_json_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path.string(), ": cannot open");
    try {
        return json::parse(in);
    } catch (const json::exception& e) {
        fail(path.string(), ": not valid JSON: ", e.what());
    }
}

// Escapes a literal for an ICU regex.
std::string quote_regex(const std::string& literal) {
    std::string out;
    for (char c : literal) {
        if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

// Turns an HF pre_tokenizer into the regex splits ByteLevelBpe applies; throws for the
// kinds it cannot reproduce exactly.
void collect_pre_tokenizer(const json& pre, const std::string& where, std::vector<std::string>& regexes,
                           bool& saw_byte_level) {
    if (pre.is_null()) return;
    const std::string type = pre.value("type", "");
    if (type == "Sequence") {
        for (const auto& step : pre.at("pretokenizers")) collect_pre_tokenizer(step, where, regexes, saw_byte_level);
    } else if (type == "ByteLevel") {
        saw_byte_level = true;
        if (pre.value("add_prefix_space", false))
            fail(where, ": ByteLevel pre-tokenizer with add_prefix_space=true is not supported");
        if (pre.value("use_regex", true)) {
            for (auto& regex : byte_level_pre_tokenizer_regexes("gpt2")) regexes.push_back(std::move(regex));
        }
    } else if (type == "Digits") {
        regexes.push_back(pre.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+");
    } else if (type == "Split") {
        const std::string behavior = pre.value("behavior", "");
        if (behavior != "Isolated" || pre.value("invert", false))
            fail(where, ": Split pre-tokenizer with behavior \"", behavior,
                 "\" is not supported (only Isolated, not inverted)");
        const auto& pattern = pre.at("pattern");
        if (pattern.contains("Regex")) {
            regexes.push_back(pattern.at("Regex").get<std::string>());
        } else if (pattern.contains("String")) {
            regexes.push_back(quote_regex(pattern.at("String").get<std::string>()));
        } else {
            fail(where, ": Split pre-tokenizer pattern is neither Regex nor String");
        }
    } else {
        fail(where, ": pre-tokenizer \"", type,
             "\" is not supported (supported: Sequence, ByteLevel, Digits, Split/Isolated)");
    }
}

// A special-token field of tokenizer_config.json: "text" or {"content": "text", ...}.
std::string token_field(const json& config, const char* key) {
    if (!config.contains(key)) return {};
    const auto& value = config.at(key);
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("content")) return value.at("content").get<std::string>();
    return {};
}

std::string chat_template_from(const json& config, const std::filesystem::path& dir) {
    if (config.contains("chat_template")) {
        const auto& value = config.at("chat_template");
        if (value.is_string()) return value.get<std::string>();
        if (value.is_array()) {  // [{"name": "default", "template": ...}, ...]
            for (const auto& entry : value)
                if (entry.value("name", "") == "default") return entry.value("template", "");
        }
    }
    // Newer transformers save it as its own file.
    const auto jinja = dir / "chat_template.jinja";
    if (std::filesystem::exists(jinja)) {
        std::ifstream in(jinja, std::ios::binary);
        std::ostringstream text;
        text << in.rdbuf();
        return text.str();
    }
    return {};
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_json(const std::string& tokenizer_json_path) {
    const std::filesystem::path path(tokenizer_json_path);
    const json root = read_json_file(path);
    const std::string where = path.string();

    try {
        const json& model = root.at("model");
        const std::string model_type = model.value("type", "");
        if (model_type != "BPE") fail(where, ": model type \"", model_type, "\" is not supported (only BPE)");

        // NFC (Qwen2) is accepted and not applied, as llama.cpp does: text that is already NFC,
        // which is nearly all text, tokenizes the same. Other normalizers change the bytes.
        if (root.contains("normalizer") && !root.at("normalizer").is_null()) {
            const std::string normalizer = root.at("normalizer").value("type", "");
            if (normalizer != "NFC")
                fail(where, ": normalizer \"", normalizer, "\" is not supported with byte-level BPE (only none or NFC)");
        }

        ByteLevelBpeVocab vocab;
        bool byte_level = false;
        if (root.contains("pre_tokenizer"))
            collect_pre_tokenizer(root.at("pre_tokenizer"), where, vocab.pre_split_regexes, byte_level);
        if (root.contains("decoder") && root.at("decoder").is_object() &&
            root.at("decoder").value("type", "") == "ByteLevel")
            byte_level = true;
        if (!byte_level)
            fail(where, ": only byte-level BPE tokenizer.json files are supported "
                        "(SentencePiece-style models load from GGUF)");

        // Vocab: {"token": id}; added tokens may extend it.
        const json& vocab_json = model.at("vocab");
        size_t count = 0;
        for (const auto& [text, id] : vocab_json.items()) count = std::max(count, id.get<size_t>() + 1);
        if (root.contains("added_tokens"))
            for (const auto& added : root.at("added_tokens")) count = std::max(count, added.at("id").get<size_t>() + 1);
        vocab.tokens.assign(count, std::string());
        vocab.types.assign(count, TokenType::Unused);  // ids that no entry names stay unused
        for (const auto& [text, id] : vocab_json.items()) {
            vocab.tokens[id.get<size_t>()] = text;
            vocab.types[id.get<size_t>()] = TokenType::Normal;
        }
        // Added tokens match their literal content; their lstrip/rstrip/single_word flags are
        // not applied (the supported model families leave them false).
        if (root.contains("added_tokens")) {
            for (const auto& added : root.at("added_tokens")) {
                const auto id = added.at("id").get<size_t>();
                vocab.tokens[id] = added.at("content").get<std::string>();
                vocab.types[id] = added.value("special", false) ? TokenType::Control : TokenType::UserDefined;
            }
        }

        for (const auto& merge : model.at("merges")) {
            if (merge.is_string()) {  // "left right"
                const auto text = merge.get<std::string>();
                const size_t space = text.find(' ', 1);
                if (space == std::string::npos) fail(where, ": merge \"", text, "\" is not \"left right\"");
                vocab.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
            } else {  // ["left", "right"]
                vocab.merges.emplace_back(merge.at(0).get<std::string>(), merge.at(1).get<std::string>());
            }
        }
        vocab.ignore_merges = model.value("ignore_merges", false);

        auto id_of = [&](const std::string& text) -> int32_t {
            if (text.empty()) return -1;
            for (size_t i = 0; i < vocab.tokens.size(); ++i)
                if (vocab.tokens[i] == text) return static_cast<int32_t>(i);
            return -1;
        };
        if (model.contains("unk_token") && model.at("unk_token").is_string())
            vocab.unk_id = id_of(model.at("unk_token").get<std::string>());

        // BOS/EOS policy and chat template live in tokenizer_config.json beside it.
        const auto config_path = path.parent_path() / "tokenizer_config.json";
        json config = json::object();
        if (std::filesystem::exists(config_path)) config = read_json_file(config_path);
        vocab.bos_id = id_of(token_field(config, "bos_token"));
        vocab.eos_id = id_of(token_field(config, "eos_token"));
        if (config.contains("add_bos_token") && config.at("add_bos_token").is_boolean()) {
            vocab.add_bos = config.at("add_bos_token").get<bool>();
        } else if (vocab.bos_id >= 0 && root.contains("post_processor") && root.at("post_processor").is_object()) {
            // A TemplateProcessing that puts BOS in front of single sequences means add_bos.
            const auto& post = root.at("post_processor");
            const auto processors = post.value("type", "") == "Sequence" ? post.value("processors", json::array())
                                                                         : json::array({post});
            for (const auto& processor : processors) {
                if (processor.value("type", "") != "TemplateProcessing") continue;
                const auto single = processor.value("single", json::array());
                if (!single.empty() && single[0].contains("SpecialToken") &&
                    single[0]["SpecialToken"].value("id", "") == vocab.tokens[static_cast<size_t>(vocab.bos_id)])
                    vocab.add_bos = true;
            }
        }
        vocab.chat_template = chat_template_from(config, path.parent_path());
        return detail::make_byte_level_bpe(std::move(vocab));
    } catch (const json::exception& e) {
        fail(where, ": unexpected tokenizer.json structure: ", e.what());
    }
}

}  // namespace attn
