// Tokenizers: ids against the reference fixture (tests/reference/make_tokenizer_fixtures.py),
// byte spans, partial flags, round trips, invalid UTF-8, special tokens, chat templates,
// SentencePiece on a hand-made vocabulary, and tokenizer.json loading.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

namespace {

using attn::ChatMessage;
using attn::Token;
using attn::Tokenizer;
using attn::TokenType;
using nlohmann::json;

const json& fixture() {
    static const json data = [] {
        std::ifstream in(std::string(ATTNSCOPE_FIXTURES_DIR) + "/tokenizer_reference.json");
        REQUIRE(in.good());
        return json::parse(in);
    }();
    return data;
}

std::string default_model_path() {
    const char* env = std::getenv("ATTNSCOPE_MODELS");
    const char* home = std::getenv("HOME");
    const std::string dir = env && *env ? env : std::string(home ? home : ".") + "/.cache/attnscope/models";
    return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// The default model's tokenizer, loaded once; nullptr (and a visible WARN) if absent.
const Tokenizer* smollm_tokenizer() {
    static const std::unique_ptr<Tokenizer> tokenizer = []() -> std::unique_ptr<Tokenizer> {
        const std::string path = default_model_path();
        if (!std::filesystem::exists(path)) return nullptr;
        const auto gguf = attn::GgufFile::open(path);
        return Tokenizer::from_gguf(*gguf);
    }();
    if (!tokenizer) WARN("SKIPPED: default model not found at " << default_model_path() << " (set ATTNSCOPE_MODELS)");
    return tokenizer.get();
}

std::vector<int32_t> ids_of(const std::vector<Token>& tokens) {
    std::vector<int32_t> ids;
    for (const auto& token : tokens) ids.push_back(token.id);
    return ids;
}

bool on_boundary(const std::string& text, size_t pos) {
    return pos >= text.size() || (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80;
}

// Spans are ordered, contiguous, cover the text exactly, and hold the token's own bytes;
// partial flags agree with the character boundaries.
void check_spans(const Tokenizer& tok, const std::string& text, const std::vector<Token>& tokens) {
    uint32_t expected_begin = 0;
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const Token& t = tokens[i];
        INFO("token " << i << " id " << t.id << " span [" << t.begin << ", " << t.end << ")");
        REQUIRE(t.begin == expected_begin);
        REQUIRE(t.end >= t.begin);
        REQUIRE(t.end <= text.size());
        expected_begin = t.end;
        const std::string covered = text.substr(t.begin, t.end - t.begin);
        if (tok.kind() == attn::TokenizerKind::ByteLevelBpe || t.special) CHECK(covered == tok.token_bytes(t.id));
        const bool partial = t.begin < t.end && (!on_boundary(text, t.begin) || !on_boundary(text, t.end));
        CHECK(t.partial == partial);
        joined += covered;
    }
    CHECK(expected_begin == text.size());
    CHECK(joined == text);
}

// GPT-2's byte → printable character table, to spell byte-level vocab entries in tests.
std::string byte_level(const std::string& raw) {
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    std::string out;
    for (unsigned char byte : raw) {
        char32_t cp = byte;
        if (!printable(byte)) {
            cp = 0x100;
            for (int b = 0; b < byte; ++b)
                if (!printable(b)) ++cp;
        }
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }
    return out;
}

// A small byte-level vocabulary: all 256 bytes, a few merges, and special tokens.
attn::ByteLevelBpeVocab small_byte_level_vocab() {
    attn::ByteLevelBpeVocab vocab;
    for (int b = 0; b < 256; ++b) vocab.tokens.push_back(byte_level(std::string(1, static_cast<char>(b))));
    vocab.types.assign(256, TokenType::Normal);
    auto add = [&](const std::string& text, TokenType type) {
        vocab.tokens.push_back(text);
        vocab.types.push_back(type);
        return static_cast<int32_t>(vocab.tokens.size() - 1);
    };
    for (const char* merged : {"aa", "he", "ll", "hell", "hello", " w", " wo"}) add(byte_level(merged), TokenType::Normal);
    vocab.merges = {{"a", "a"}, {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"Ġw", "o"}};
    vocab.bos_id = add("<|start|>", TokenType::Control);
    vocab.eos_id = add("<|end|>", TokenType::Control);
    add("<|end|>!", TokenType::Control);    // longer match at the same position wins
    add("<tool>", TokenType::UserDefined);  // matched even without parse_special
    vocab.pre_split_regexes = attn::byte_level_pre_tokenizer_regexes("smollm");
    return vocab;
}

}  // namespace

// ---- the default model against the reference fixture -----------------------------------------

TEST_CASE("tokenizer: SmolLM2 ids match the reference tokenizer", "[tokenizer][model]") {
    const Tokenizer* tok = smollm_tokenizer();
    if (!tok) return;
    CHECK(tok->kind() == attn::TokenizerKind::ByteLevelBpe);
    CHECK(tok->vocab_size() == 49152);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
    CHECK_FALSE(tok->add_bos_token());

    size_t matched = 0;
    const auto& cases = fixture().at("cases");
    for (const auto& c : cases) {
        const std::string name = c.at("name");
        const std::string text = c.at("text");
        INFO("case " << name);
        const auto tokens = tok->encode(text, /*parse_special=*/true, /*add_bos=*/false);
        const auto ids = ids_of(tokens);
        CHECK(ids == c.at("ids").get<std::vector<int32_t>>());
        if (ids == c.at("ids").get<std::vector<int32_t>>()) ++matched;
        check_spans(*tok, text, tokens);
        CHECK(tok->decode(ids) == text);
        CHECK(tok->decode(ids) == c.at("decoded").get<std::string>());
    }
    CHECK(matched == cases.size());
}

TEST_CASE("tokenizer: SmolLM2 pre-tokenizer splits digits one by one (smollm)", "[tokenizer][model]") {
    const Tokenizer* tok = smollm_tokenizer();
    if (!tok) return;
    // Whitespace before a numeral stays its own pre-token: "a", "ĠĠ", "1" (HF's GGUF
    // conversion, lacking the Digits step, gives "a", "Ġ", "Ġ", "1").
    const auto& probe = fixture().at("digit_splitting").at("whitespace_before_digit_probe");
    const auto tokens = tok->encode(probe.at("text").get<std::string>(), false, false);
    std::vector<std::string> texts;
    for (const auto& t : tokens) texts.push_back(tok->token_text(t.id));
    CHECK(texts == probe.at("original_tokens").get<std::vector<std::string>>());

    const auto year = tok->encode("in 2024", false, false);
    REQUIRE(year.size() == 6);  // "in", "Ġ", "2", "0", "2", "4"
    CHECK(tok->token_text(year[1].id) == "Ġ");
    CHECK(year[2].begin == 3);
    CHECK(year[2].end == 4);
}

TEST_CASE("tokenizer: SmolLM2 token text, bytes and partial UTF-8 tokens", "[tokenizer][model]") {
    const Tokenizer* tok = smollm_tokenizer();
    if (!tok) return;
    const int32_t the = tok->find_token("Ġthe");
    REQUIRE(the >= 0);
    CHECK(tok->token_text(the) == "Ġthe");
    CHECK(tok->token_bytes(the) == " the");
    CHECK(tok->find_token("<|im_start|>") == 1);
    CHECK(tok->is_special(1));
    CHECK_FALSE(tok->is_special(the));
    CHECK(tok->token_bytes(1) == "<|im_start|>");
    CHECK(tok->find_token("no such token here") == -1);
    CHECK_THROWS_AS(tok->token_text(49152), attn::Error);

    // A ZWJ family emoji is split inside its 4-byte characters by byte-level BPE.
    const std::string family = "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7";
    const auto tokens = tok->encode(family, false, false);
    check_spans(*tok, family, tokens);
    size_t partial = 0;
    for (const auto& t : tokens) partial += t.partial ? 1 : 0;
    CHECK(partial > 0);
}

TEST_CASE("tokenizer: SmolLM2 chat template matches HF apply_chat_template", "[tokenizer][model]") {
    const Tokenizer* tok = smollm_tokenizer();
    if (!tok) return;
    REQUIRE(tok->has_chat_template());
    for (const auto& chat : fixture().at("chats")) {
        INFO("chat " << chat.at("name").get<std::string>());
        std::vector<ChatMessage> messages;
        for (const auto& m : chat.at("messages")) messages.push_back({m.at("role"), m.at("content")});
        const std::string rendered = tok->apply_chat_template(messages, chat.at("add_generation_prompt"));
        CHECK(rendered == chat.at("rendered").get<std::string>());
        const auto tokens = tok->encode_chat(messages, chat.at("add_generation_prompt"));
        CHECK(ids_of(tokens) == chat.at("ids").get<std::vector<int32_t>>());
        check_spans(*tok, rendered, tokens);
        CHECK(tokens.front().special);
    }
}

TEST_CASE("tokenizer: 200 KB of mixed text encodes (speed sanity, not timed)", "[tokenizer][model]") {
    const Tokenizer* tok = smollm_tokenizer();
    if (!tok) return;
    std::string text;
    while (text.size() < 200 * 1024)
        for (const auto& c : fixture().at("cases")) text += c.at("text").get<std::string>() + "\n";
    const auto start = std::chrono::steady_clock::now();
    const auto tokens = tok->encode(text, true, false);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(tokens.size() << " tokens in " << seconds << " s");
    CHECK(tokens.size() > 50000);
    CHECK(tok->decode(ids_of(tokens)) == text);
    check_spans(*tok, text, tokens);
}

// ---- model-independent behaviour ----------------------------------------------------------------

TEST_CASE("tokenizer: invalid UTF-8 is rejected with the byte offset", "[tokenizer]") {
    struct Bad {
        const char* what;
        std::string text;
        size_t offset;
    };
    const std::vector<Bad> cases = {
        {"overlong 2-byte", std::string("ab\xC0\xAF", 4), 2},
        {"overlong 3-byte", std::string("x\xE0\x80\xAF", 4), 1},
        {"overlong 4-byte", std::string("\xF0\x80\x80\xAF", 4), 0},
        {"surrogate", std::string("ok \xED\xA0\x80", 6), 3},
        {"above U+10FFFF", std::string("\xF4\x90\x80\x80", 4), 0},
        {"truncated at end", std::string("abc\xE4\xB8", 5), 3},
        {"truncated before ASCII", std::string("\xE4\xB8" "A", 3), 0},
        {"stray continuation", std::string("hi\x80there", 8), 2},
        {"invalid byte FF", std::string("\xC3\xA9\xFF", 3), 2},
    };
    const auto tok = Tokenizer::from_vocab(small_byte_level_vocab());
    for (const auto& bad : cases) {
        INFO(bad.what);
        CHECK(attn::first_invalid_utf8(bad.text) == bad.offset);
        try {
            (void)tok->encode(bad.text);
            FAIL("encode accepted invalid UTF-8");
        } catch (const attn::Error& e) {
            CHECK_THAT(e.what(), Catch::Contains("byte offset " + std::to_string(bad.offset)));
        }
    }
    CHECK(attn::first_invalid_utf8("plain, \xC3\xA9, \xE4\xB8\xAD, \xF0\x9F\x98\x80, \xF4\x8F\xBF\xBF") ==
          std::string_view::npos);
}

TEST_CASE("tokenizer: byte-level BPE merges by rank, leftmost first", "[tokenizer]") {
    const auto tok = Tokenizer::from_vocab(small_byte_level_vocab());
    auto texts = [&](const std::string& text) {
        std::vector<std::string> out;
        for (const auto& t : tok->encode(text, true, false)) out.push_back(tok->token_text(t.id));
        return out;
    };
    CHECK(texts("aaa") == std::vector<std::string>{"aa", "a"});
    CHECK(texts("hello world") == std::vector<std::string>{"hello", "Ġwo", "r", "l", "d"});
    CHECK(texts("x12") == std::vector<std::string>{"x", "1", "2"});  // smollm: digits alone
    const std::string text = "hello \xC3\xA9";
    const auto tokens = tok->encode(text, true, false);
    check_spans(*tok, text, tokens);
    REQUIRE(tokens.size() == 4);  // "hello", "Ġ", 0xC3, 0xA9
    CHECK(tokens[2].partial);
    CHECK(tokens[3].partial);
    CHECK(tok->decode(ids_of(tokens)) == text);
}

TEST_CASE("tokenizer: special tokens are matched whole, longest first", "[tokenizer]") {
    const auto tok = Tokenizer::from_vocab(small_byte_level_vocab());
    const int32_t start = tok->find_token("<|start|>");
    const int32_t end = tok->find_token("<|end|>");
    const int32_t end_bang = tok->find_token("<|end|>!");
    const int32_t tool = tok->find_token("<tool>");
    REQUIRE(start >= 0);
    REQUIRE(end_bang >= 0);

    const std::string text = "<|start|>hello<|end|>!<|end|><tool>";
    const auto tokens = tok->encode(text, /*parse_special=*/true, /*add_bos=*/false);
    check_spans(*tok, text, tokens);
    CHECK(ids_of(tokens) == std::vector<int32_t>{start, tok->find_token("hello"), end_bang, end, tool});
    CHECK(tokens[0].special);
    CHECK_FALSE(tokens[1].special);
    CHECK(tok->decode(ids_of(tokens)) == text);

    // Without parse_special, control tokens are plain text; user-defined ones still match.
    const auto plain = tok->encode(text, /*parse_special=*/false, false);
    check_spans(*tok, text, plain);
    for (const auto& t : plain) CHECK((t.id != start && t.id != end && t.id != end_bang));
    CHECK(plain.back().id == tool);
    CHECK(tok->decode(ids_of(plain)) == text);

    // add_bos: an empty span in front (this vocab does not ask for BOS by default).
    auto with_bos_vocab = small_byte_level_vocab();
    with_bos_vocab.add_bos = true;
    const auto with_bos = Tokenizer::from_vocab(with_bos_vocab)->encode("hello", true, true);
    REQUIRE(with_bos.size() == 2);
    CHECK(with_bos[0].id == start);
    CHECK(with_bos[0].begin == 0);
    CHECK(with_bos[0].end == 0);
    CHECK(tok->encode("hello", true, true).size() == 1);
}

TEST_CASE("tokenizer: pre-tokenizer names", "[tokenizer]") {
    CHECK(attn::byte_level_pre_tokenizer_regexes("smollm").size() == 2);
    CHECK(attn::byte_level_pre_tokenizer_regexes("default").size() == 1);
    CHECK(attn::byte_level_pre_tokenizer_regexes("llama-bpe").size() == 1);
    CHECK(attn::byte_level_pre_tokenizer_regexes("qwen2").size() == 1);
    CHECK_THROWS_WITH(attn::byte_level_pre_tokenizer_regexes("klingon"), Catch::Contains("smollm"));

    // Llama 3: up to three digits per pre-token; Qwen2: one.
    auto vocab = small_byte_level_vocab();
    vocab.pre_split_regexes = attn::byte_level_pre_tokenizer_regexes("llama3");
    auto llama3 = Tokenizer::from_vocab(vocab);
    CHECK(llama3->encode("12345", false, false).size() == 5);  // no digit merges: bytes either way
    vocab.tokens.push_back("123");
    vocab.types.push_back(TokenType::Normal);
    vocab.tokens.push_back("12");
    vocab.types.push_back(TokenType::Normal);
    vocab.merges.push_back({"1", "2"});
    vocab.merges.push_back({"12", "3"});
    llama3 = Tokenizer::from_vocab(vocab);
    const auto tokens = llama3->encode("12345", false, false);
    REQUIRE(tokens.size() == 3);  // "123" | "45" → "123", "4", "5"
    CHECK(llama3->token_text(tokens[0].id) == "123");
    vocab.pre_split_regexes = attn::byte_level_pre_tokenizer_regexes("qwen2");
    CHECK(Tokenizer::from_vocab(vocab)->encode("12345", false, false).size() == 5);
}

TEST_CASE("tokenizer: White_Space in the pre-tokenizer includes VT and NEL", "[tokenizer]") {
    // GPT-2 regex: "\s+(?!\S)" keeps the last whitespace for the next word; with U+0085
    // counted as whitespace, "a\u0085\u0085b" pre-tokenizes as "a", "\u0085", "\u0085b".
    // Merges NEL+NEL and VT+VT would fire only if a pair landed in one pre-token.
    auto vocab = small_byte_level_vocab();
    vocab.pre_split_regexes = attn::byte_level_pre_tokenizer_regexes("gpt2");
    const std::string nel = byte_level("\xC2\x85"), vt = byte_level("\x0B");
    for (const std::string& merged : {nel, nel + nel, vt + vt}) {
        vocab.tokens.push_back(merged);
        vocab.types.push_back(TokenType::Normal);
    }
    vocab.merges.push_back({byte_level("\xC2"), byte_level("\x85")});
    vocab.merges.push_back({nel, nel});
    vocab.merges.push_back({vt, vt});
    const auto tok = Tokenizer::from_vocab(vocab);
    const std::string text = "a\xC2\x85\xC2\x85" "b\x0B\x0B" "c";
    const auto tokens = tok->encode(text, false, false);
    check_spans(*tok, text, tokens);
    std::vector<std::string> pieces;
    for (const auto& t : tokens) pieces.push_back(tok->token_text(t.id));
    CHECK(pieces == std::vector<std::string>{"a", nel, nel, "b", vt, vt, "c"});
    CHECK(tok->decode(ids_of(tokens)) == text);
}

TEST_CASE("tokenizer: chat template families render like transformers' Jinja", "[tokenizer]") {
    for (const auto& family : fixture().at("template_families")) {
        const std::string name = family.at("name");
        INFO("family " << name);
        attn::ByteLevelBpeVocab vocab = small_byte_level_vocab();
        vocab.tokens.push_back(family.at("bos_token"));
        vocab.types.push_back(TokenType::Control);
        vocab.bos_id = static_cast<int32_t>(vocab.tokens.size() - 1);
        vocab.tokens.push_back(family.at("eos_token"));
        vocab.types.push_back(TokenType::Control);
        vocab.eos_id = static_cast<int32_t>(vocab.tokens.size() - 1);
        vocab.chat_template = family.at("template");
        const auto tok = Tokenizer::from_vocab(vocab);
        REQUIRE(tok->has_chat_template());
        for (const auto& render : family.at("renders")) {
            std::vector<ChatMessage> messages;
            for (const auto& m : render.at("messages")) messages.push_back({m.at("role"), m.at("content")});
            if (render.contains("error")) {
                CHECK_THROWS_AS(tok->apply_chat_template(messages, render.at("add_generation_prompt")), attn::Error);
            } else {
                CHECK(tok->apply_chat_template(messages, render.at("add_generation_prompt")) ==
                      render.at("rendered").get<std::string>());
            }
        }
    }
}

TEST_CASE("tokenizer: unrecognised or missing chat templates are errors", "[tokenizer]") {
    auto vocab = small_byte_level_vocab();
    const std::vector<ChatMessage> messages = {{"user", "hi"}};
    CHECK_FALSE(Tokenizer::from_vocab(vocab)->has_chat_template());
    CHECK_THROWS_WITH(Tokenizer::from_vocab(vocab)->apply_chat_template(messages, true),
                      Catch::Contains("no chat template"));
    vocab.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    const auto tok = Tokenizer::from_vocab(vocab);  // loading still works
    CHECK(tok->has_chat_template());
    CHECK_THROWS_WITH(tok->apply_chat_template(messages, true),
                      Catch::Contains("ChatML") && Catch::Contains("Llama 2") && Catch::Contains("Llama 3") &&
                          Catch::Contains("Mistral"));
}

// ---- SentencePiece BPE on a hand-made vocabulary -------------------------------------------------

namespace {

const std::string kMark = "\xE2\x96\x81";  // "▁"

attn::SentencePieceVocab small_sentencepiece_vocab() {
    attn::SentencePieceVocab vocab;
    auto add = [&](const std::string& piece, float score, TokenType type) {
        vocab.pieces.push_back(piece);
        vocab.scores.push_back(score);
        vocab.types.push_back(type);
        return static_cast<int32_t>(vocab.pieces.size() - 1);
    };
    vocab.unk_id = add("<unk>", 0, TokenType::Unknown);
    vocab.bos_id = add("<s>", 0, TokenType::Control);
    vocab.eos_id = add("</s>", 0, TokenType::Control);
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        add(name, 0, TokenType::Byte);
    }
    // Merged pieces: higher score merges first.
    add("ll", 0.0f, TokenType::Normal);
    add("or", -0.5f, TokenType::Normal);
    add("he", -1.0f, TokenType::Normal);
    add(kMark + "w", -1.5f, TokenType::Normal);
    add("hell", -2.0f, TokenType::Normal);
    add(kMark + "wor", -2.5f, TokenType::Normal);
    add("hello", -3.0f, TokenType::Normal);
    add(kMark + "hello", -4.0f, TokenType::Normal);
    add("ld", -6.0f, TokenType::Normal);
    // Single characters.
    for (const std::string& c : {kMark, std::string("h"), std::string("e"), std::string("l"), std::string("o"),
                                std::string("w"), std::string("r"), std::string("d")})
        add(c, -100.0f, TokenType::Normal);
    vocab.add_bos = true;
    vocab.add_space_prefix = true;
    return vocab;
}

std::vector<std::string> pieces_of(const Tokenizer& tok, const std::vector<Token>& tokens) {
    std::vector<std::string> out;
    for (const auto& t : tokens) out.push_back(tok.token_text(t.id));
    return out;
}

}  // namespace

TEST_CASE("tokenizer: SentencePiece merges by score with spans on the input", "[tokenizer][spm]") {
    const auto tok = Tokenizer::from_vocab(small_sentencepiece_vocab());
    CHECK(tok->kind() == attn::TokenizerKind::SentencePieceBpe);

    // "▁hello▁world": ll, or, he, ▁w, hell, ▁wor, hello, ▁hello, ld (by score).
    const std::string text = "hello world";
    const auto tokens = tok->encode(text, true, /*add_bos=*/false);
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{kMark + "hello", kMark + "wor", "ld"});
    REQUIRE(tokens.size() == 3);
    CHECK(tokens[0].begin == 0);  // the dummy prefix covers nothing
    CHECK(tokens[0].end == 5);
    CHECK(tokens[1].begin == 5);  // "▁" from the space covers the space byte
    CHECK(tokens[1].end == 9);
    CHECK(tokens[2].begin == 9);
    CHECK(tokens[2].end == 11);
    check_spans(*tok, text, tokens);
    CHECK(tok->token_bytes(tokens[0].id) == " hello");
    CHECK(tok->decode(ids_of(tokens)) == text);  // one leading space removed

    // BOS: empty span in front; it renders as its text, and that text encodes back the same.
    const auto with_bos = tok->encode(text);
    REQUIRE(with_bos.size() == 4);
    CHECK(with_bos[0].id == tok->bos_id());
    CHECK(with_bos[0].begin == 0);
    CHECK(with_bos[0].end == 0);
    CHECK(tok->decode(ids_of(with_bos)) == "<s>hello world");
    CHECK(ids_of(tok->encode("<s>hello world", true, false)) == ids_of(with_bos));
}

TEST_CASE("tokenizer: SentencePiece spaces, dummy prefix and byte fallback", "[tokenizer][spm]") {
    const auto tok = Tokenizer::from_vocab(small_sentencepiece_vocab());
    auto encode = [&](const std::string& text) { return tok->encode(text, true, false); };

    // The dummy prefix alone: an empty span; two spaces stay two "▁".
    auto tokens = encode("he  ll");
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{kMark, "he", kMark, kMark, "ll"});
    check_spans(*tok, "he  ll", tokens);
    CHECK(tokens[0].begin == 0);
    CHECK(tokens[0].end == 0);
    CHECK(tokens[2].begin == 2);
    CHECK(tokens[2].end == 3);
    CHECK(tok->decode(ids_of(tokens)) == "he  ll");

    // A leading space: dummy "▁" + "▁hello"; decode drops only the dummy's space.
    tokens = encode(" hello");
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{kMark, kMark + "hello"});
    check_spans(*tok, " hello", tokens);
    CHECK(tok->decode(ids_of(tokens)) == " hello");

    // Characters without a piece fall back to bytes; é's two bytes are partial.
    const std::string accented = "h\xC3\xA9!";
    tokens = encode(accented);
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{kMark, "h", "<0xC3>", "<0xA9>", "<0x21>"});
    check_spans(*tok, accented, tokens);
    REQUIRE(tokens.size() == 5);
    CHECK(tokens[2].partial);
    CHECK(tokens[3].partial);
    CHECK_FALSE(tokens[4].partial);
    CHECK(tok->token_bytes(tokens[2].id) == "\xC3");
    CHECK(tok->decode(ids_of(tokens)) == accented);

    CHECK(encode("").empty());
    CHECK(tok->encode("", true, true).size() == 1);  // just BOS
    CHECK_THROWS_WITH(encode("he\xC3"), Catch::Contains("byte offset 2"));
}

TEST_CASE("tokenizer: SentencePiece special tokens and the leading-space rule", "[tokenizer][spm]") {
    const auto tok = Tokenizer::from_vocab(small_sentencepiece_vocab());
    // Every text run gets a dummy prefix, also after special tokens (as llama.cpp and HF);
    // decode drops one space at the start of each run.
    const std::string text = "<s>hello</s> world";
    auto tokens = tok->encode(text, /*parse_special=*/true, false);
    CHECK(pieces_of(*tok, tokens) ==
          std::vector<std::string>{"<s>", kMark + "hello", "</s>", kMark, kMark + "wor", "ld"});
    check_spans(*tok, text, tokens);
    REQUIRE(tokens.size() == 6);
    CHECK(tokens[0].special);
    CHECK(tokens[1].begin == 3);  // "▁hello": just "hello"
    CHECK(tokens[1].end == 8);
    CHECK(tokens[3].begin == 12);  // the dummy after "</s>": empty
    CHECK(tokens[3].end == 12);
    CHECK(tok->decode(ids_of(tokens)) == text);

    // Not parsed: the markup is text, '<' etc. fall back to bytes.
    tokens = tok->encode(text, /*parse_special=*/false, false);
    for (const auto& t : tokens) CHECK_FALSE(t.special);
    check_spans(*tok, text, tokens);
    CHECK(tok->decode(ids_of(tokens)) == text);

    // Round trip on assorted text (add_bos=false).
    for (const char* sample : {"hello", "  hello  world ", "w\xE4\xB8\xAD\xF0\x9F\x98\x80 d", "\n\t x",
                               "hello<s> world</s>"}) {
        INFO(sample);
        const auto t = tok->encode(sample, true, false);
        check_spans(*tok, sample, t);
        CHECK(tok->decode(ids_of(t)) == sample);
    }
}

TEST_CASE("tokenizer: SentencePiece keeps a typed U+2581 apart from spaces", "[tokenizer][spm]") {
    const auto tok = Tokenizer::from_vocab(small_sentencepiece_vocab());
    const std::string text = "h" + kMark + "e";
    const auto tokens = tok->encode(text, true, false);
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{kMark, "h", "<0xE2>", "<0x96>", "<0x81>", "e"});
    check_spans(*tok, text, tokens);
    CHECK(tok->decode(ids_of(tokens)) == text);
}

TEST_CASE("tokenizer: SentencePiece matches the sentencepiece library", "[tokenizer][spm]") {
    // A BPE model trained by tests/reference/make_tokenizer_fixtures.py with sentencepiece.
    std::ifstream in(std::string(ATTNSCOPE_FIXTURES_DIR) + "/tokenizer_spm_reference.json");
    REQUIRE(in.good());
    const json reference = json::parse(in);
    attn::SentencePieceVocab vocab;
    vocab.pieces = reference.at("pieces").get<std::vector<std::string>>();
    vocab.scores = reference.at("scores").get<std::vector<float>>();
    for (int type : reference.at("types")) vocab.types.push_back(static_cast<TokenType>(type));
    vocab.bos_id = reference.at("bos_id");
    vocab.eos_id = reference.at("eos_id");
    vocab.unk_id = reference.at("unk_id");
    const auto tok = Tokenizer::from_vocab(vocab);
    for (const auto& c : reference.at("cases")) {
        const std::string text = c.at("text");
        INFO(text);
        const auto tokens = tok->encode(text, /*parse_special=*/false, /*add_bos=*/false);
        CHECK(ids_of(tokens) == c.at("ids").get<std::vector<int32_t>>());
        check_spans(*tok, text, tokens);
        CHECK(tok->decode(ids_of(tokens)) == text);
    }
}

TEST_CASE("tokenizer: SentencePiece without add_space_prefix", "[tokenizer][spm]") {
    auto vocab = small_sentencepiece_vocab();
    vocab.add_space_prefix = false;
    const auto tok = Tokenizer::from_vocab(vocab);
    const auto tokens = tok->encode("hello world", true, false);
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{"hello", kMark + "wor", "ld"});
    CHECK(tok->decode(ids_of(tokens)) == "hello world");
    CHECK(tok->decode(ids_of(tok->encode(" hello", true, false))) == " hello");
}

// ---- GGUF metadata -------------------------------------------------------------------------------

namespace {

// Writes just enough GGUF v3 (metadata, no tensors) to exercise Tokenizer::from_gguf.
class TokenizerGgufWriter {
public:
    void string(const std::string& key, const std::string& value) {
        entry(key, kString);
        str(value);
    }
    void u32(const std::string& key, uint32_t value) {
        entry(key, kU32);
        pod(value);
    }
    void boolean(const std::string& key, bool value) {
        entry(key, kBool);
        pod(static_cast<uint8_t>(value));
    }
    void strings(const std::string& key, const std::vector<std::string>& values) {
        array_header(key, kString, values.size());
        for (const auto& v : values) str(v);
    }
    void f32s(const std::string& key, const std::vector<float>& values) {
        array_header(key, kF32, values.size());
        for (float v : values) pod(v);
    }
    void i32s(const std::string& key, const std::vector<int32_t>& values) {
        array_header(key, kI32, values.size());
        for (int32_t v : values) pod(v);
    }
    std::vector<std::byte> finish() const {
        std::vector<std::byte> out;
        auto put = [&](const void* p, size_t n) {
            const auto* b = static_cast<const std::byte*>(p);
            out.insert(out.end(), b, b + n);
        };
        const uint32_t version = 3;
        const uint64_t tensors = 0;
        put("GGUF", 4);
        put(&version, 4);
        put(&tensors, 8);
        put(&count_, 8);
        out.insert(out.end(), body_.begin(), body_.end());
        while (out.size() % 32) out.push_back(std::byte{0});
        return out;
    }

private:
    static constexpr uint32_t kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9;
    template <typename T>
    void pod(T v) {
        const auto* b = reinterpret_cast<const std::byte*>(&v);
        body_.insert(body_.end(), b, b + sizeof v);
    }
    void str(const std::string& s) {
        pod(static_cast<uint64_t>(s.size()));
        const auto* b = reinterpret_cast<const std::byte*>(s.data());
        body_.insert(body_.end(), b, b + s.size());
    }
    void entry(const std::string& key, uint32_t type) {
        ++count_;
        str(key);
        pod(type);
    }
    void array_header(const std::string& key, uint32_t element_type, size_t n) {
        entry(key, kArray);
        pod(element_type);
        pod(static_cast<uint64_t>(n));
    }
    std::vector<std::byte> body_;
    uint64_t count_ = 0;
};

}  // namespace

TEST_CASE("tokenizer: SentencePiece from GGUF metadata", "[tokenizer][spm]") {
    const auto vocab = small_sentencepiece_vocab();
    std::vector<int32_t> types;
    for (auto t : vocab.types) types.push_back(static_cast<int32_t>(t));
    const std::string llama2_template = fixture().at("template_families").at(2).at("template");
    REQUIRE(fixture().at("template_families").at(2).at("name") == "llama2");

    TokenizerGgufWriter w;
    w.string("general.architecture", "llama");
    w.string("tokenizer.ggml.model", "llama");
    w.strings("tokenizer.ggml.tokens", vocab.pieces);
    w.f32s("tokenizer.ggml.scores", vocab.scores);
    w.i32s("tokenizer.ggml.token_type", types);
    w.u32("tokenizer.ggml.bos_token_id", 1);
    w.u32("tokenizer.ggml.eos_token_id", 2);
    w.u32("tokenizer.ggml.unknown_token_id", 0);
    w.boolean("tokenizer.ggml.add_bos_token", true);
    w.string("tokenizer.chat_template", llama2_template);
    const auto bytes = w.finish();
    const auto gguf = attn::GgufFile::parse(bytes, "spm.gguf");
    const auto tok = Tokenizer::from_gguf(*gguf);

    CHECK(tok->kind() == attn::TokenizerKind::SentencePieceBpe);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
    CHECK(tok->add_bos_token());
    const auto tokens = tok->encode("hello world");  // add_space_prefix defaults to true
    CHECK(pieces_of(*tok, tokens) == std::vector<std::string>{"<s>", kMark + "hello", kMark + "wor", "ld"});
    const std::vector<ChatMessage> messages = {{"system", "S"}, {"user", "hello"}};
    CHECK(tok->apply_chat_template(messages, true) == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nhello [/INST]");
    const auto chat = tok->encode_chat(messages, true);
    CHECK(chat.front().id == 1);  // the template's "<s>", not an added second BOS
    CHECK(std::count_if(chat.begin(), chat.end(), [](const Token& t) { return t.id == 1; }) == 1);
}

TEST_CASE("tokenizer: GGUF tokenizer errors name the file and the problem", "[tokenizer]") {
    {
        TokenizerGgufWriter w;
        w.string("tokenizer.ggml.model", "bert");
        w.strings("tokenizer.ggml.tokens", {"a"});
        const auto bytes = w.finish();
        CHECK_THROWS_WITH(Tokenizer::from_gguf(*attn::GgufFile::parse(bytes, "bert.gguf")),
                          Catch::Contains("bert.gguf") && Catch::Contains("\"bert\"") && Catch::Contains("gpt2"));
    }
    {
        TokenizerGgufWriter w;
        w.string("tokenizer.ggml.model", "gpt2");
        w.strings("tokenizer.ggml.tokens", {"a", "b"});
        w.strings("tokenizer.ggml.merges", {"a b"});
        w.string("tokenizer.ggml.pre", "klingon");
        const auto bytes = w.finish();
        CHECK_THROWS_WITH(Tokenizer::from_gguf(*attn::GgufFile::parse(bytes, "pre.gguf")),
                          Catch::Contains("pre.gguf") && Catch::Contains("klingon") && Catch::Contains("smollm"));
    }
}

// ---- Hugging Face tokenizer.json ----------------------------------------------------------------

TEST_CASE("tokenizer: loads a byte-level BPE tokenizer.json with its config", "[tokenizer]") {
    const auto dir = std::filesystem::temp_directory_path() / "attnscope_test_tokenizer_json";
    std::filesystem::create_directories(dir);
    const auto source = small_byte_level_vocab();
    json vocab_json = json::object();
    for (size_t i = 0; i < 256 + 7; ++i) vocab_json[source.tokens[i]] = i;
    json merges = json::array();
    for (const auto& [left, right] : source.merges) merges.push_back(left + " " + right);
    json tokenizer = {
        {"version", "1.0"},
        {"added_tokens",
         json::array({{{"id", 263}, {"content", "<|im_start|>"}, {"special", true}},
                      {{"id", 264}, {"content", "<|im_end|>"}, {"special", true}},
                      {{"id", 265}, {"content", "<tool>"}, {"special", false}}})},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}})}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab_json}, {"merges", merges}}},
    };
    json config = {{"bos_token", "<|im_start|>"},
                   {"eos_token", {{"content", "<|im_end|>"}, {"special", true}}},
                   {"add_bos_token", false},
                   {"chat_template",
                    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
                    "}}{% endif %}"}};
    std::ofstream(dir / "tokenizer.json") << tokenizer.dump();
    std::ofstream(dir / "tokenizer_config.json") << config.dump();

    const auto tok = Tokenizer::from_hf_json((dir / "tokenizer.json").string());
    CHECK(tok->vocab_size() == 266);
    CHECK(tok->bos_id() == 263);
    CHECK(tok->eos_id() == 264);
    CHECK_FALSE(tok->add_bos_token());
    const std::string text = "<|im_start|>hello world 42<tool><|im_end|>";
    const auto tokens = tok->encode(text, true, true);
    check_spans(*tok, text, tokens);
    std::vector<std::string> pieces;
    for (const auto& t : tokens) pieces.push_back(tok->token_text(t.id));
    CHECK(pieces == std::vector<std::string>{"<|im_start|>", "hello", "Ġwo", "r", "l", "d", "Ġ", "4", "2", "<tool>",
                                             "<|im_end|>"});
    const std::vector<ChatMessage> messages = {{"user", "hi"}};
    CHECK(tok->apply_chat_template(messages, true) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");

    std::filesystem::remove_all(dir);
    CHECK_THROWS_WITH(Tokenizer::from_hf_json((dir / "tokenizer.json").string()), Catch::Contains("cannot open"));
}
