// Text segmentation (engine/text_segments.h): ICU words and sentences in English and Chinese,
// paragraphs, whitespace and token assignment rules, round trips (invalid UTF-8 included), exact
// span masses against sums of exact rows, the sentence graph's communities, and the exports.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/cpu_backend.h"
#include "engine/error.h"
#include "engine/generation.h"
#include "engine/text_segments.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

namespace {

using namespace attn;
using attn::testing::CraftedSpec;
using attn::testing::make_crafted_session;

std::vector<std::string> texts_of(std::string_view text, const std::vector<Segment>& segments) {
    std::vector<std::string> out;
    for (const Segment& s : segments) out.emplace_back(text.substr(s.begin, s.end - s.begin));
    return out;
}

std::string joined(std::string_view text, const std::vector<Segment>& segments) {
    std::string out;
    for (const std::string& piece : texts_of(text, segments)) out += piece;
    return out;
}

bool contains(const std::vector<std::string>& pieces, const std::string& piece) {
    return std::find(pieces.begin(), pieces.end(), piece) != pieces.end();
}

// Tokens over `text` cut at the given byte offsets (a hand-made tokenizer).
std::vector<Token> tokens_at(std::string_view text, std::vector<uint32_t> cuts) {
    cuts.push_back(static_cast<uint32_t>(text.size()));
    std::vector<Token> tokens;
    uint32_t begin = 0;
    for (uint32_t end : cuts) {
        Token t;
        t.id = static_cast<int32_t>(tokens.size());
        t.begin = begin;
        t.end = end;
        tokens.push_back(t);
        begin = end;
    }
    return tokens;
}

constexpr Granularity kAllGranularities[] = {Granularity::Token, Granularity::Word, Granularity::Phrase,
                                             Granularity::Sentence, Granularity::Paragraph};

}  // namespace

TEST_CASE("English words and sentences follow ICU and whitespace joins the next unit", "[text]") {
    const std::string text = "Hello, world. How are you?";
    const auto words = segment_text(text, Granularity::Word);
    CHECK(texts_of(text, words) == std::vector<std::string>{"Hello", ",", " world", ".", " How", " are", " you", "?"});
    CHECK(words[0].kind == SegmentKind::Word);
    CHECK(words[1].kind == SegmentKind::Symbol);
    CHECK(words[2].kind == SegmentKind::Word);

    const auto sentences = segment_text(text, Granularity::Sentence);
    REQUIRE(sentences.size() == 2);
    CHECK(texts_of(text, sentences) == std::vector<std::string>{"Hello, world.", " How are you?"});
    CHECK(sentences[0].kind == SegmentKind::Sentence);
    check_segmentation(sentences, text.size(), 0);

    const auto numbers = segment_text("Pay 42 now", Granularity::Word);
    REQUIRE(numbers.size() == 3);
    CHECK(numbers[1].kind == SegmentKind::Number);
    // Whitespace at the end joins the last unit; whitespace alone is one Space segment.
    CHECK(texts_of("end.  ", segment_text("end.  ", Granularity::Sentence)) == std::vector<std::string>{"end.  "});
    const auto blank = segment_text(" \n ", Granularity::Word);
    REQUIRE(blank.size() == 1);
    CHECK(blank[0].kind == SegmentKind::Space);
    CHECK(segment_text("", Granularity::Sentence).empty());
    CHECK_THROWS_AS(segment_text(text, Granularity::Token), Error);
}

TEST_CASE("Chinese sentences and dictionary words", "[text]") {
    const std::string text = "我们在北京学习中文。今天天气很好。";
    const auto sentences = segment_text(text, Granularity::Sentence);
    CHECK(texts_of(text, sentences) == std::vector<std::string>{"我们在北京学习中文。", "今天天气很好。"});

    const auto words = segment_text(text, Granularity::Word);
    const auto pieces = texts_of(text, words);
    CHECK(contains(pieces, "北京"));
    CHECK(contains(pieces, "学习"));
    CHECK(contains(pieces, "中文"));
    CHECK(contains(pieces, "今天"));
    CHECK(joined(text, words) == text);
    for (size_t k = 0; k < words.size(); ++k)
        CHECK(words[k].kind == (pieces[k] == "。" ? SegmentKind::Symbol : SegmentKind::Ideographic));

    // Japanese: kana and kanji words, and the locale option is accepted.
    SegmentOptions japanese;
    japanese.locale = "ja";
    const std::string ja = "東京へ行きます。";
    const auto ja_words = segment_text(ja, Granularity::Word, japanese);
    CHECK(joined(ja, ja_words) == ja);
    CHECK(contains(texts_of(ja, ja_words), "東京"));
}

TEST_CASE("paragraphs are blocks separated by blank lines", "[text]") {
    const std::string text = "First line.\nStill first.\n\nSecond one.\r\n  \r\nThird.\n";
    const auto paragraphs = segment_text(text, Granularity::Paragraph);
    CHECK(texts_of(text, paragraphs) ==
          std::vector<std::string>{"First line.\nStill first.", "\n\nSecond one.", "\r\n  \r\nThird.\n"});
    for (const Segment& p : paragraphs) CHECK(p.kind == SegmentKind::Paragraph);
    CHECK(segment_text("one paragraph only", Granularity::Paragraph).size() == 1);
}

TEST_CASE("segments round-trip the text at every granularity with invalid UTF-8 too", "[text]") {
    const std::vector<std::string> texts = {
        "Hello, world. How are you?\n\nFine, thanks!",
        "我们在北京学习中文。今天天气很好。\n\n第二段。",
        "emoji 👍🏽 and 👨‍👩‍👧 family. Done",
        "bad \xC0\xAF bytes \xE4\xB8 cut \xFF\xFE end. \xF0\x9F\x98 tail\xE4",
        std::string("\x80\x80\x80", 3),
        std::string("nul\0inside. ok", 14),
    };
    for (const std::string& text : texts) {
        INFO("text: " << text);
        for (Granularity g : kAllGranularities) {
            if (g == Granularity::Token) continue;
            const auto segments = segment_text(text, g);
            CHECK(joined(text, segments) == text);
            CHECK_NOTHROW(check_segmentation(segments, text.size(), 0));
            for (const Segment& s : segments) CHECK(s.end > s.begin);
        }
    }
    // The invalid bytes are symbols of their own; the words around them survive.
    const std::string bad("ab\xC0\xAF" "cd", 6);
    const auto pieces = texts_of(bad, segment_text(bad, Granularity::Word));
    CHECK(pieces == std::vector<std::string>{"ab", "\xC0", "\xAF", "cd"});
    // An emoji sequence with a skin tone or ZWJ stays one symbol.
    const std::string emoji = "a 👍🏽 b";
    CHECK(texts_of(emoji, segment_text(emoji, Granularity::Word)) == std::vector<std::string>{"a", " 👍🏽", " b"});
}

TEST_CASE("tokens go to the unit of their first byte and partition the positions", "[text]") {
    SECTION("subword tokens merge back into words; an added BOS is its own segment") {
        const std::string text = "Hello world";
        std::vector<Token> tokens = tokens_at(text, {3, 5, 9});  // "Hel" "lo" " wor" "ld"
        Token bos;
        bos.id = 99;
        tokens.insert(tokens.begin(), bos);  // empty span at 0
        const auto words = segment_tokens(text, tokens, Granularity::Word);
        REQUIRE(words.size() == 3);
        CHECK(words[0].kind == SegmentKind::Special);
        CHECK(words[0].byte_count() == 0);
        CHECK((words[0].first == 0 && words[0].last == 1));
        CHECK((words[1].first == 1 && words[1].last == 3));
        CHECK((words[2].first == 3 && words[2].last == 5));
        CHECK(texts_of(text, words) == std::vector<std::string>{"", "Hello", " world"});
        check_segmentation(words, text.size(), 5);
        CHECK(segment_of_tokens(words, 5) == std::vector<int64_t>{0, 1, 1, 2, 2});

        const auto token_segments = segment_tokens(text, tokens, Granularity::Token);
        REQUIRE(token_segments.size() == 5);
        CHECK(texts_of(text, token_segments) == std::vector<std::string>{"", "Hel", "lo", " wor", "ld"});
        CHECK(token_segments[0].kind == SegmentKind::Special);
        CHECK(token_segments[1].kind == SegmentKind::Token);
    }
    SECTION("a token straddling a boundary belongs to the unit it starts in") {
        const std::string text = "ab cd ef";
        // "ab c" | "d" | " ef": " cd" still owns "d".
        auto words = segment_tokens(text, tokens_at(text, {4, 5}), Granularity::Word);
        CHECK(texts_of(text, words) == std::vector<std::string>{"ab", " cd", " ef"});
        CHECK((words[0].token_count() == 1 && words[1].token_count() == 1 && words[2].token_count() == 1));
        // "ab cd" | " ef": no token starts in " cd", so it joins "ab".
        words = segment_tokens(text, tokens_at(text, {5}), Granularity::Word);
        CHECK(texts_of(text, words) == std::vector<std::string>{"ab cd", " ef"});
        check_segmentation(words, text.size(), 2);
        // A unit at a run's start with no token of its own joins the next one.
        std::vector<Token> late = tokens_at(text, {3});
        late[0].begin = 1;  // bytes 0..1 belong to no token
        words = segment_tokens(text, late, Granularity::Word);
        check_segmentation(words, text.size(), 2);
        CHECK(words[0].token_count() == 1);
    }
    SECTION("partial UTF-8 tokens stay with their character's unit") {
        const std::string text = "café ok";  // é = C3 A9 at bytes 3..5
        const auto words = segment_tokens(text, tokens_at(text, {3, 4, 5}), Granularity::Word);
        CHECK(texts_of(text, words) == std::vector<std::string>{"café", " ok"});
        CHECK(words[0].token_count() == 3);
    }
    SECTION("special tokens are segments of their own and cut sentences") {
        const std::string text = "<|im_start|>user\nHi there. Bye.<|im_end|>\n";
        std::vector<Token> tokens = tokens_at(text, {12, 16, 17, 19, 25, 26, 30, 31, 41});
        tokens[0].special = true;
        tokens[8].special = true;
        const auto sentences = segment_tokens(text, tokens, Granularity::Sentence);
        check_segmentation(sentences, text.size(), static_cast<int64_t>(tokens.size()));
        CHECK(joined(text, sentences) == text);
        CHECK(sentences.front().kind == SegmentKind::Special);
        CHECK(texts_of(text, sentences).front() == "<|im_start|>");
        const auto pieces = texts_of(text, sentences);
        CHECK(contains(pieces, "<|im_end|>"));
        CHECK(contains(pieces, " Bye."));
        CHECK(pieces.back() == "\n");
        CHECK(sentences.back().kind == SegmentKind::Space);
        for (const Segment& s : sentences)
            if (s.kind != SegmentKind::Special) CHECK(std::string(text.substr(s.begin, s.end - s.begin)).find("<|") == std::string::npos);
    }
    SECTION("phrases group words; tokens without text still partition") {
        const std::string text = "one two three four five six seven";
        const auto tokens = tokens_at(text, {3, 7, 13, 18, 23, 27});
        SegmentOptions options;
        options.phrase_words = 3;
        const auto phrases = segment_tokens(text, tokens, Granularity::Phrase, options);
        CHECK(texts_of(text, phrases) == std::vector<std::string>{"one two three", " four five six", " seven"});
        CHECK(phrases[0].kind == SegmentKind::Phrase);
        check_segmentation(phrases, text.size(), 7);
        CHECK_THROWS_AS(segment_tokens(text, tokens, Granularity::Phrase, SegmentOptions{"", 0}), Error);
    }
    SECTION("bad token spans are refused") {
        const std::string text = "abc";
        auto tokens = tokens_at(text, {1});
        tokens[1].begin = 0;  // overlaps token 0
        CHECK_THROWS_AS(segment_tokens(text, tokens, Granularity::Word), Error);
        tokens = tokens_at(text, {1});
        tokens[1].end = 9;
        CHECK_THROWS_AS(segment_tokens(text, tokens, Granularity::Word), Error);
    }
    SECTION("invalid UTF-8 with tokens") {
        const std::string text = "ok \xC0\xAF\xFF fine. \xE4\xB8";
        REQUIRE(text.size() == 15);
        const auto tokens = tokens_at(text, {2, 3, 4, 5, 6, 11, 12, 14});
        for (Granularity g : kAllGranularities) {
            const auto segments = segment_tokens(text, tokens, g);
            CHECK(joined(text, segments) == text);
            CHECK_NOTHROW(check_segmentation(segments, text.size(), static_cast<int64_t>(tokens.size())));
            CHECK_NOTHROW(segments_json(text, segments, g));
        }
    }
}

TEST_CASE("the default model's tokens merge back into words in English and Chinese and emoji", "[text]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    const std::string text =
        "Internationalization is hard. 我们在北京学习中文。Emoji: 👍🏽 and 👨‍👩‍👧!\n\nA second paragraph.";
    const std::vector<Token> tokens = model->tokenizer->encode(text, false, true);
    const int64_t positions = static_cast<int64_t>(tokens.size());
    for (Granularity g : kAllGranularities) {
        INFO(granularity_name(g));
        const auto segments = segment_tokens(text, tokens, g);
        CHECK(joined(text, segments) == text);
        CHECK_NOTHROW(check_segmentation(segments, text.size(), positions));
        // Every token lies in the segment that holds its first byte (empty spans: their own).
        const auto owner = segment_of_tokens(segments, positions);
        for (int64_t t = 0; t < positions; ++t) {
            const Segment& s = segments[static_cast<size_t>(owner[static_cast<size_t>(t)])];
            const Token& token = tokens[static_cast<size_t>(t)];
            if (token.begin == token.end) CHECK(s.kind == SegmentKind::Special);
            else CHECK((s.begin <= token.begin && token.begin < s.end));
        }
        if (g != Granularity::Token)
            for (const Segment& s : segments)
                if (s.kind != SegmentKind::Special) CHECK(s.token_count() >= 1);
    }
    const auto words = segment_tokens(text, tokens, Granularity::Word);
    const auto pieces = texts_of(text, words);
    // The word that starts with `piece` (a BPE token may carry the punctuation after an emoji along).
    auto word = [&](const std::string& piece) -> const Segment& {
        const auto it = std::find_if(pieces.begin(), pieces.end(), [&](const std::string& p) { return p.rfind(piece, 0) == 0; });
        REQUIRE(it != pieces.end());
        return words[static_cast<size_t>(it - pieces.begin())];
    };
    CHECK(word("Internationalization").token_count() > 1);  // subwords merged back
    CHECK(word(" 👍🏽").token_count() > 1);                   // byte tokens of one emoji sequence
    CHECK(word(" 👨‍👩‍👧").token_count() > 1);
    CHECK(word(" hard").token_count() >= 1);
    int chinese_words = 0;
    for (const char* w : {"北京", "学习", "中文"}) chinese_words += contains(pieces, w) || contains(pieces, std::string(" ") + w);
    // A BPE token may straddle ICU's word boundaries in Chinese, merging a word into its
    // neighbour; most of the dictionary words survive.
    CHECK(chinese_words >= 2);
    const auto sentences = segment_tokens(text, tokens, Granularity::Sentence);
    CHECK(texts_of(text, sentences).size() >= 4);
    CHECK(segment_tokens(text, tokens, Granularity::Paragraph).size() == (tokens.front().begin == tokens.front().end ? 3u : 2u));
}

TEST_CASE("phrase windows: sizes and strides and weights", "[text]") {
    const auto uniform = phrase_windows(7, {3, 2, WindowWeighting::Uniform});
    REQUIRE(uniform.size() == 3);  // [0,3) [2,5) [4,7)
    CHECK((uniform[2].first_word == 4 && uniform[2].last_word == 7));
    CHECK(uniform[0].weights == std::vector<double>{1, 1, 1});
    const auto tail = phrase_windows(6, {4, 3, WindowWeighting::Uniform});
    REQUIRE(tail.size() == 2);  // [0,4) then the last window [2,6) so word 5 is covered
    CHECK((tail[1].first_word == 2 && tail[1].last_word == 6));
    const auto triangle = phrase_windows(5, {5, 1, WindowWeighting::Triangular});
    REQUIRE(triangle.size() == 1);
    const std::vector<double> expected{1.0 / 3, 2.0 / 3, 1, 2.0 / 3, 1.0 / 3};
    for (size_t k = 0; k < 5; ++k) CHECK(triangle[0].weights[k] == Approx(expected[k]));
    CHECK(phrase_windows(2, {5, 1, WindowWeighting::Uniform}).size() == 1);
    CHECK(phrase_windows(0, {}).empty());
    CHECK_THROWS_AS(phrase_windows(3, {0, 1, WindowWeighting::Uniform}), Error);
}

namespace {

// Sentences of three word tokens "w w w." each; within a sentence every token focuses on the
// tokens of earlier sentences of its own parity group and on its own sentence so far.
CraftedSpec two_group_spec(int sentences, int n_layer = 2, int n_head = 2) {
    CraftedSpec spec;
    for (int s = 0; s < sentences; ++s) {
        spec.words.push_back(s ? " Alpha" : "Alpha");
        spec.words.push_back(" beta");
        spec.words.push_back(" gamma.");
    }
    spec.prompt_tokens = static_cast<int64_t>(spec.words.size()) - 2;
    spec.n_layer = n_layer;
    spec.n_head = n_head;
    spec.strength = 12;
    spec.focus = [](int layer, int head, int64_t query) {
        std::vector<int64_t> keys;
        const int64_t sentence = query / 3;
        for (int64_t key = 0; key <= query; ++key) {
            const int64_t key_sentence = key / 3;
            if (key_sentence == sentence || (key_sentence % 2 == sentence % 2 && (key + layer + head) % 2 == 0))
                keys.push_back(key);
        }
        return keys;
    };
    return spec;
}

// Σ of exact rows over the rectangle, averaged over heads: the reference for span masses.
double mass_from_rows(const CpuTileSource& source, const std::vector<HeadRef>& heads, const Segment& queries,
                      const Segment& keys) {
    double total = 0;
    for (const HeadRef& h : heads)
        for (int64_t q = queries.first; q < queries.last; ++q) {
            const std::vector<float> row = source.row(h.layer, h.head, q);
            for (int64_t k = keys.first; k < std::min(keys.last, q + 1); ++k) total += row[static_cast<size_t>(k)];
        }
    return total / static_cast<double>(heads.size());
}

void check_masses_against_rows(const Session& session, const std::vector<Segment>& segments,
                               const std::vector<HeadRef>& heads) {
    const CpuTileSource source(*session.capture);
    const int64_t n = static_cast<int64_t>(segments.size());
    for (MassMethod method : {MassMethod::Auto, MassMethod::Rectangles, MassMethod::Rows}) {
        for (int threads : {0, 1}) {
            INFO("method " << static_cast<int>(method) << ", threads " << threads);
            const SpanMatrix m = span_masses(source, session, segments, heads, {threads, method});
            REQUIRE(m.rows == n);
            for (int64_t a = 0; a < n; ++a) {
                double row_sum = 0;
                for (int64_t b = 0; b < n; ++b) {
                    const double expected = mass_from_rows(source, heads, segments[a], segments[b]);
                    CHECK(std::abs(m.at(a, b) - expected) < 1e-5);
                    if (b > a) CHECK(m.at(a, b) == 0.0);  // causal
                    row_sum += m.normalised(a, b);
                }
                if (segments[a].token_count() > 0) CHECK(std::abs(row_sum - 1.0) < 1e-5);
                CHECK(m.query_tokens[a] == static_cast<double>(segments[a].token_count()));
            }
        }
    }
    // One row / one column computed alone equal the matrix's; the token-level ones equal the rows.
    const SpanMatrix m = span_masses(source, session, segments, heads);
    for (int64_t s = 0; s < n; ++s) {
        const auto row = segment_attends_to(source, session, segments, heads, s);
        const auto column = segment_attended_by(source, session, segments, heads, s);
        for (int64_t k = 0; k < n; ++k) {
            CHECK(std::abs(row[k] - m.at(s, k)) < 1e-9);
            CHECK(std::abs(column[k] - m.at(k, s)) < 1e-9);
        }
        CHECK(m.row(s) == std::vector<double>(m.mass.begin() + s * n, m.mass.begin() + (s + 1) * n));
    }
    const int64_t positions = session.positions();
    for (int64_t q : {int64_t(0), positions / 2, positions - 1}) {
        const auto attends = token_attends_to(source, session, heads, q);
        const auto attended = token_attended_by(source, session, heads, q);
        REQUIRE(static_cast<int64_t>(attends.size()) == q + 1);
        REQUIRE(static_cast<int64_t>(attended.size()) == positions);
        for (int64_t k = 0; k <= q; ++k) {
            double expected = 0;
            for (const HeadRef& h : heads) expected += source.row(h.layer, h.head, q)[static_cast<size_t>(k)];
            CHECK(std::abs(attends[k] - expected / heads.size()) < 1e-6);
        }
        for (int64_t i = 0; i < positions; ++i) {
            double expected = 0;
            if (i >= q)
                for (const HeadRef& h : heads) expected += source.row(h.layer, h.head, i)[static_cast<size_t>(q)];
            CHECK(std::abs(attended[i] - expected / heads.size()) < 1e-6);
        }
    }
}

}  // namespace

TEST_CASE("span masses equal sums of exact rows (crafted session)", "[text]") {
    const Session session = make_crafted_session(two_group_spec(6));
    const std::vector<HeadRef> group = {{0, 1}, {1, 0}, {1, 1}};
    for (Granularity g : {Granularity::Token, Granularity::Word, Granularity::Sentence}) {
        INFO(granularity_name(g));
        check_masses_against_rows(session, segment_session(session, g), group);
    }
    check_masses_against_rows(session, segment_session(session, Granularity::Sentence), {{0, 0}});

    const CpuTileSource source(*session.capture);
    const auto sentences = segment_session(session, Granularity::Sentence);
    CHECK_THROWS_AS(span_masses(source, session, sentences, {}), Error);  // never all heads silently
    const std::vector<HeadRef> outside = {{2, 0}};
    CHECK_THROWS_AS(span_masses(source, session, sentences, outside), Error);
    CHECK(heads_of_layer(session.capture->shape(), 1) == std::vector<HeadRef>{{1, 0}, {1, 1}});
    CHECK(all_heads(session.capture->shape()).size() == 4);

    // Uniform windows with stride = size are the phrase partition: their masses are exact.
    SegmentOptions three;
    three.phrase_words = 3;
    const auto words = segment_session(session, Granularity::Word);
    const auto phrases = segment_session(session, Granularity::Phrase, three);
    const std::vector<HeadRef> pair = {{0, 0}, {1, 1}};
    const SpanMatrix word_matrix = span_masses(source, session, words, pair);
    const SpanMatrix phrase_matrix = span_masses(source, session, phrases, pair);
    const auto windows = phrase_windows(static_cast<int64_t>(words.size()), {3, 3, WindowWeighting::Uniform});
    const SpanMatrix windowed = window_matrix(word_matrix, windows);
    REQUIRE(windowed.rows == phrase_matrix.rows);
    for (int64_t x = 0; x < windowed.rows; ++x) {
        CHECK(windowed.query_tokens[x] == phrase_matrix.query_tokens[x]);
        for (int64_t y = 0; y < windowed.cols; ++y) CHECK(std::abs(windowed.at(x, y) - phrase_matrix.at(x, y)) < 1e-9);
    }
    const auto triangular = window_matrix(word_matrix, phrase_windows(static_cast<int64_t>(words.size()), {5, 1, WindowWeighting::Triangular}));
    CHECK(triangular.rows == static_cast<int64_t>(words.size()) - 4);
}

TEST_CASE("span masses equal sums of exact rows (default model session)", "[text]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    auto backend = make_cpu_backend(*model);
    GenerationRequest request;
    request.prompt = "The cat sat on the mat. It was warm.\n\n我们在北京学习中文。Then it slept 😴.";
    request.sampling.max_new_tokens = 3;
    request.sampling.stop_at_eos = false;
    const Session session = generate(*model, *backend, request);
    const auto sentences = segment_session(session, Granularity::Sentence);
    CHECK_NOTHROW(check_segmentation(sentences, session.text.size(), session.positions()));
    check_masses_against_rows(session, sentences, {{0, 0}, {3, 2}, {29, 8}});
    check_masses_against_rows(session, segment_session(session, Granularity::Paragraph), heads_of_layer(session.capture->shape(), 5));
}

TEST_CASE("the sentence graph of two separate groups has two communities", "[text]") {
    const Session session = make_crafted_session(two_group_spec(8));
    const CpuTileSource source(*session.capture);
    const auto sentences = segment_session(session, Granularity::Sentence);
    REQUIRE(sentences.size() == 8);
    const SpanMatrix m = span_masses(source, session, sentences, all_heads(session.capture->shape()));
    for (CommunityMethod method : {CommunityMethod::Louvain, CommunityMethod::Leiden}) {
        SentenceGraphOptions options;
        options.method = method;
        const SentenceGraph graph = sentence_graph(m, sentences, options);
        REQUIRE(graph.nodes.size() == 8);
        CHECK(graph.communities == 2);
        for (size_t i = 0; i < 8; ++i) CHECK(graph.community[i] == static_cast<int64_t>(i % 2));
        CHECK(graph.modularity > 0.3);
        for (const GraphEdge& e : graph.edges) {
            CHECK(e.from != e.to);
            CHECK(e.weight == Approx(m.normalised(graph.nodes[e.from], graph.nodes[e.to])));
        }
        REQUIRE(graph.x.size() == 8);
        for (size_t i = 0; i < 8; ++i) {
            CHECK((graph.x[i] >= 0 && graph.x[i] <= 1 && graph.y[i] >= 0 && graph.y[i] <= 1));
        }
        // Seeded: the same input gives the same result.
        const SentenceGraph again = sentence_graph(m, sentences, options);
        CHECK(again.community == graph.community);
        CHECK(again.x == graph.x);
        CHECK(again.modularity == graph.modularity);
    }
    SentenceGraphOptions circle;
    circle.layout = GraphLayout::Circle;
    circle.normalised = false;
    const SentenceGraph drawn = sentence_graph(m, sentences, circle);
    CHECK(drawn.communities == 2);
    // A graph without edges: every node alone.
    SentenceGraphOptions strict;
    strict.min_weight = 10;
    const SentenceGraph empty = sentence_graph(m, sentences, strict);
    CHECK(empty.edges.empty());
    CHECK(empty.communities == 8);
    CHECK_THROWS_AS(sentence_graph(m, std::vector<Segment>(sentences.begin(), sentences.end() - 1)), Error);
}

namespace {

// RFC 4180 reader for the test: rows of fields.
std::vector<std::vector<std::string>> parse_csv(const std::string& csv) {
    std::vector<std::vector<std::string>> rows(1);
    std::string field;
    bool quoted = false, row_started = false;
    for (size_t i = 0; i < csv.size(); ++i) {
        const char c = csv[i];
        if (quoted) {
            if (c == '"' && i + 1 < csv.size() && csv[i + 1] == '"') field += '"', ++i;
            else if (c == '"') quoted = false;
            else field += c;
        } else if (c == '"') {
            quoted = true;
            row_started = true;
        } else if (c == ',') {
            rows.back().push_back(field);
            field.clear();
        } else if (c == '\n') {
            rows.back().push_back(field);
            field.clear();
            rows.emplace_back();
            row_started = false;
        } else {
            field += c;
            row_started = true;
        }
    }
    if (row_started || !field.empty()) rows.back().push_back(field);
    if (rows.back().empty()) rows.pop_back();
    return rows;
}

}  // namespace

TEST_CASE("exports round-trip: segment tables and matrices in CSV and JSON and NPY", "[text]") {
    attn::testing::TempDir dir("text_export");
    const std::string text = "Say \"hi\", then go.\nNew, line.\n\n第二段。bad \xFF byte.";
    const auto segments = segment_text(text, Granularity::Word);

    write_segments_csv(dir.file("segments.csv"), text, segments);
    const auto rows = parse_csv(attn::testing::read_file_string(dir.file("segments.csv")));
    REQUIRE(rows.size() == segments.size() + 1);
    CHECK(rows[0] == std::vector<std::string>{"index", "kind", "begin", "end", "first", "last", "text"});
    std::string rebuilt;
    for (size_t k = 0; k < segments.size(); ++k) {
        const auto& row = rows[k + 1];
        REQUIRE(row.size() == 7);
        CHECK(row[0] == std::to_string(k));
        CHECK(row[1] == segment_kind_name(segments[k].kind));
        CHECK(std::stoul(row[2]) == segments[k].begin);
        CHECK(std::stoul(row[3]) == segments[k].end);
        rebuilt += row[6];
    }
    CHECK(rebuilt == text);  // CSV keeps the bytes, invalid ones included

    write_segments_json(dir.file("segments.json"), text, segments, Granularity::Word);
    const auto json = nlohmann::json::parse(attn::testing::read_file_string(dir.file("segments.json")));
    CHECK(json["granularity"] == "word");
    CHECK(json["text_bytes"] == text.size());
    REQUIRE(json["segments"].size() == segments.size());
    for (size_t k = 0; k < segments.size(); ++k) {
        const auto& s = json["segments"][k];
        CHECK(s["begin"] == segments[k].begin);
        CHECK(s["end"] == segments[k].end);
        CHECK(s["kind"] == segment_kind_name(segments[k].kind));
        const std::string original = text.substr(segments[k].begin, segments[k].end - segments[k].begin);
        if (first_invalid_utf8(original) == std::string::npos) CHECK(s["text"] == original);
        else CHECK(s["text"].get<std::string>().find("\xEF\xBF\xBD") != std::string::npos);  // U+FFFD
    }

    const std::vector<double> values = {0.1, 1.0 / 3, 0, 2.5e-9, 1, -0.0};
    write_matrix_csv(dir.file("m.csv"), 2, 3, values);
    const auto cells = parse_csv(attn::testing::read_file_string(dir.file("m.csv")));
    REQUIRE(cells.size() == 2);
    for (size_t r = 0; r < 2; ++r) {
        REQUIRE(cells[r].size() == 3);
        for (size_t c = 0; c < 3; ++c) CHECK(std::stod(cells[r][c]) == values[r * 3 + c]);  // exact round trip
    }
    write_matrix_json(dir.file("m.json"), 2, 3, values);
    const auto matrix = nlohmann::json::parse(attn::testing::read_file_string(dir.file("m.json")));
    CHECK(matrix["rows"] == 2);
    CHECK(matrix["cols"] == 3);
    for (size_t r = 0; r < 2; ++r)
        for (size_t c = 0; c < 3; ++c) CHECK(matrix["values"][r][c].get<double>() == values[r * 3 + c]);
    CHECK(nlohmann::json::parse(matrix_json(0, 0, {}))["values"].empty());

    write_matrix_npy(dir.file("m.npy"), 2, 3, values);
    const std::string npy = attn::testing::read_file_string(dir.file("m.npy"));
    REQUIRE(npy.size() > 10);
    CHECK(npy.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
    const size_t header_length = static_cast<unsigned char>(npy[8]) | (static_cast<unsigned char>(npy[9]) << 8);
    const std::string header = npy.substr(10, header_length);
    CHECK((10 + header_length) % 64 == 0);
    CHECK(header.back() == '\n');
    CHECK(header.find("'descr': '<f4'") != std::string::npos);
    CHECK(header.find("'fortran_order': False") != std::string::npos);
    CHECK(header.find("'shape': (2, 3)") != std::string::npos);
    REQUIRE(npy.size() == 10 + header_length + 6 * sizeof(float));
    for (size_t k = 0; k < 6; ++k) {
        float value;
        std::memcpy(&value, npy.data() + 10 + header_length + k * sizeof(float), sizeof value);
        CHECK(value == static_cast<float>(values[k]));
    }
    CHECK_THROWS_AS(matrix_npy(2, 2, values), Error);  // wrong size
    // Written atomically: no temporary left beside the files.
    for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
        CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
}

// Not run by default: `attnscope_tests "[.text-bench]" -s`. Span masses on a real 2,000-token
// prompt of short sentences, the numbers the issue asks for.
TEST_CASE("span mass timings on a 2000-token prompt", "[.text-bench]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    std::string prompt;
    const char* subjects[] = {"The cat", "A dog", "My friend", "The river", "Our team", "This city"};
    const char* verbs[] = {"runs fast", "sleeps late", "sings well", "waits here", "looks calm", "moves on"};
    for (int s = 0; prompt.size() < 200000; ++s) {
        prompt += cat(subjects[s % 6], " ", verbs[(s / 6) % 6], " at ", s % 97, ". ");
        if (s % 12 == 11) prompt += "\n\n";
        if (model->tokenizer->encode(prompt, false, true).size() >= 2000) break;
    }
    auto backend = make_cpu_backend(*model);
    GenerationRequest request;
    request.prompt = prompt;
    request.sampling.max_new_tokens = 1;
    request.sampling.stop_at_eos = false;
    auto started = std::chrono::steady_clock::now();
    const Session session = generate(*model, *backend, request);
    auto ms = [&] {
        const auto now = std::chrono::steady_clock::now();
        const double elapsed = std::chrono::duration<double, std::milli>(now - started).count();
        started = now;
        return elapsed;
    };
    std::cout << "prefill " << session.positions() << " tokens: " << ms() << " ms\n";
    const CpuTileSource source(*session.capture);
    // Best of three: the first call also pays for page faults and the pool's start.
    auto best_ms = [&](const std::function<void()>& work) {
        double best = 1e300;
        for (int run = 0; run < 3; ++run) {
            ms();
            work();
            best = std::min(best, ms());
        }
        return best;
    };
    const auto layer = heads_of_layer(session.capture->shape(), 3);
    const std::vector<HeadRef> one = {{3, 2}};
    for (Granularity g : {Granularity::Word, Granularity::Sentence, Granularity::Paragraph}) {
        std::vector<Segment> segments;
        const double segmenting = best_ms([&] { segments = segment_session(session, g); });
        std::cout << granularity_name(g) << ": " << segments.size() << " segments, segmentation " << segmenting << " ms\n";
        for (MassMethod method : {MassMethod::Auto, MassMethod::Rectangles, MassMethod::Rows}) {
            const double single = best_ms([&] { span_masses(source, session, segments, one, {0, method}); });
            if (g == Granularity::Word && method == MassMethod::Rectangles) {  // ~1.2M calls per head
                std::cout << "  method " << static_cast<int>(method) << ": 1 head " << single << " ms\n";
                continue;
            }
            const double nine = best_ms([&] { span_masses(source, session, segments, layer, {0, method}); });
            const double serial = best_ms([&] { span_masses(source, session, segments, layer, {1, method}); });
            std::cout << "  method " << static_cast<int>(method) << ": 1 head " << single << " ms, 9 heads " << nine
                      << " ms, 9 heads on the calling thread only " << serial << " ms\n";
        }
        const int64_t middle = static_cast<int64_t>(segments.size()) / 2;
        const double row = best_ms([&] { segment_attends_to(source, session, segments, layer, middle); });
        const double column = best_ms([&] { segment_attended_by(source, session, segments, layer, middle); });
        std::cout << "  hover (9 heads, middle segment): row " << row << " ms, column " << column << " ms\n";
        if (g == Granularity::Sentence) {
            const auto every = all_heads(session.capture->shape());
            ms();
            const SpanMatrix all = span_masses(source, session, segments, every);
            std::cout << "  all " << every.size() << " heads: " << ms() << " ms\n";
            const SpanMatrix m = span_masses(source, session, segments, layer);
            SentenceGraph graph;
            const double graphing = best_ms([&] { graph = sentence_graph(m, segments); });
            std::cout << "  sentence graph: " << graph.nodes.size() << " nodes, " << graph.edges.size() << " edges, "
                      << graph.communities << " communities, modularity " << graph.modularity << ", " << graphing
                      << " ms\n";
        }
    }
    const double token_row = best_ms([&] { token_attends_to(source, session, layer, session.positions() - 1); });
    const double token_column = best_ms([&] { token_attended_by(source, session, layer, 100); });
    std::cout << "token hover (9 heads): row of the last query " << token_row << " ms, column of key 100 "
              << token_column << " ms\n";
}
