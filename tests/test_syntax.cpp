// Syntactic relations (engine/syntax.h): link-grammar's links on English sentences as readable relations
// with parts of speech, words tied to tokens, the hover relation, "no parser" for other languages, and
// per head the exact share of attention on linked word pairs (crafted attention).
#include <catch2/catch.hpp>

#include <algorithm>
#include <clocale>
#include <thread>

#include "engine/syntax.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/test_support.h"

using namespace attn;

namespace {

// The links between two words given by their text (the first occurrence of each).
std::vector<const SyntaxLink*> links_of(const SyntaxAnalysis& a, const std::string& left, const std::string& right) {
    std::vector<const SyntaxLink*> found;
    for (const SyntaxLink& link : a.links)
        if (a.words[link.left].text == left && a.words[link.right].text == right) found.push_back(&link);
    return found;
}

bool has_relation(const SyntaxAnalysis& a, const std::string& left, const std::string& right, const std::string& relation) {
    for (const SyntaxLink* link : links_of(a, left, right))
        if (link->relation == relation) return true;
    return false;
}

const SyntaxWord& word(const SyntaxAnalysis& a, const std::string& text) {
    for (const SyntaxWord& w : a.words)
        if (w.text == text) return w;
    FAIL("no word " << text);
    return a.words.front();
}

#define REQUIRE_PARSER()                                                      \
    do {                                                                      \
        std::string why;                                                      \
        if (!syntax_parser_available(&why)) {                                 \
            WARN("SKIPPED: " << why);                                         \
            return;                                                           \
        }                                                                     \
    } while (0)

}  // namespace

TEST_CASE("link-grammar relations on English sentences", "[syntax]") {
    REQUIRE_PARSER();
    SECTION("The cat chased a mouse.") {
        const SyntaxAnalysis a = parse_syntax("The cat chased a mouse.");
        CHECK(a.note.empty());
        REQUIRE(a.sentences.size() == 1);
        CHECK(a.sentences[0].parsed);
        CHECK(a.sentences[0].null_count == 0);
        CHECK(has_relation(a, "The", "cat", "determiner–noun"));
        CHECK(has_relation(a, "cat", "chased", "subject–verb"));
        CHECK(has_relation(a, "chased", "mouse", "verb–object"));
        CHECK(has_relation(a, "a", "mouse", "determiner–noun"));
        CHECK(links_of(a, "The", "cat").front()->type == "D");
        CHECK(links_of(a, "cat", "chased").front()->label.rfind("S", 0) == 0);
        CHECK(links_of(a, "cat", "chased").front()->left_role == "subject");
        CHECK(word(a, "cat").pos == "noun");
        CHECK(word(a, "cat").subscript == "n");
        CHECK(word(a, "chased").pos == "verb (past)");
        CHECK(word(a, "chased").parser_word == "chased.v-d");
        CHECK(word(a, "mouse").pos == "noun");
        CHECK(word(a, "The").pos == "determiner");
        CHECK(word(a, ".").pos == "punctuation");
        // Byte spans index the text; no wall is a word.
        CHECK(word(a, "chased").begin == 8);
        CHECK(word(a, "chased").end == 14);
        for (const SyntaxWord& w : a.words) CHECK(w.text.find("WALL") == std::string::npos);
        // Hover: words in either order.
        const WordRelation r = relation_between_words(a, 2, 1);  // chased (query) → cat (key)
        CHECK(r.status == WordRelation::Status::Linked);
        CHECK_THAT(r.text, Catch::Contains("subject–verb"));
        CHECK_THAT(r.text, Catch::Contains("cat [noun]"));
        CHECK(relation_between_words(a, 4, 0).status == WordRelation::Status::NotLinked);  // mouse, The
    }
    SECTION("adjectives, prepositions, modifiers") {
        const SyntaxAnalysis a = parse_syntax("The big dog in the house barked loudly at the mailman.");
        CHECK(has_relation(a, "big", "dog", "adjective–noun"));
        CHECK(has_relation(a, "dog", "barked", "subject–verb"));
        CHECK(has_relation(a, "dog", "in", "noun–modifier"));
        CHECK(has_relation(a, "in", "house", "preposition–object"));
        CHECK(has_relation(a, "barked", "loudly", "verb–modifier"));
        CHECK(has_relation(a, "at", "mailman", "preposition–object"));
        CHECK(word(a, "big").pos == "adjective");
        CHECK(word(a, "in").pos == "preposition");
        CHECK(word(a, "at").pos == "preposition");
        CHECK(word(a, "loudly").pos == "adverb");
    }
    SECTION("two sentences, with a line break") {
        const SyntaxAnalysis a = parse_syntax("Dogs bark.\nBirds sing songs.");
        REQUIRE(a.sentences.size() == 2);
        CHECK(has_relation(a, "Dogs", "bark", "subject–verb"));
        CHECK(has_relation(a, "Birds", "sing", "subject–verb"));
        CHECK(has_relation(a, "sing", "songs", "verb–object"));
        CHECK(word(a, "Birds").sentence == 1);
        CHECK(a.sentence_at_byte(word(a, "songs").begin) == 1);
    }
}

TEST_CASE("no parser for languages other than English", "[syntax]") {
    REQUIRE_PARSER();
    SECTION("Chinese") {
        const SyntaxAnalysis a = parse_syntax("猫追老鼠。我们在北京学习中文。");
        CHECK(a.links.empty());
        CHECK(a.words.empty());
        CHECK_THAT(a.note, Catch::StartsWith("no parser for this language"));
        CHECK_THAT(a.note, Catch::Contains("Han"));
        CHECK(relation_between_words(a, 0, 1).status == WordRelation::Status::NoParser);
    }
    SECTION("French and German (Latin script)") {
        for (const char* text : {"Le chat noir mange la souris grise.", "Der Hund bellt laut im Garten."}) {
            const SyntaxAnalysis a = parse_syntax(text);
            INFO(text);
            CHECK(a.links.empty());
            CHECK_THAT(a.note, Catch::StartsWith("no parser for this language"));
        }
    }
    SECTION("mixed: the English sentence is parsed, the Chinese one says why not") {
        const std::string text = "The cat chased a mouse. 猫追老鼠。";
        const SyntaxAnalysis a = parse_syntax(text);
        CHECK(a.note.empty());
        REQUIRE(a.sentences.size() == 2);
        CHECK(a.sentences[0].parsed);
        CHECK_FALSE(a.sentences[1].parsed);
        CHECK_THAT(a.sentences[1].note, Catch::StartsWith("no parser for this language"));
        CHECK(has_relation(a, "cat", "chased", "subject–verb"));
    }
}

TEST_CASE("syntax on a session: words tied to tokens, hover, per-head share of linked attention", "[syntax]") {
    REQUIRE_PARSER();
    // Tokens: 0 "The" 1 " cat" 2 " chased" 3 " a" 4 " mouse" 5 "." 6 " 猫" 7 "追" 8 "。"
    attn::testing::CraftedSpec spec;
    spec.words = {"The", " cat", " chased", " a", " mouse", ".", " 猫", "追", "。"};
    spec.prompt_tokens = 9;
    spec.n_layer = 1;
    spec.n_head = 3;
    // Head 0 follows the links (each later word looks at its earlier partners); head 1 looks at itself;
    // head 2 is uniform.
    spec.focus = [](int, int head, int64_t i) -> std::vector<int64_t> {
        if (head == 1) return {i};
        if (head == 2) return {};
        switch (i) {
            case 1: return {0};     // cat → The
            case 2: return {1};     // chased → cat
            case 4: return {2, 3};  // mouse → chased, a
            default: return {i};
        }
    };
    const Session session = attn::testing::make_crafted_session(spec);
    const SyntaxAnalysis a = parse_session_syntax(session);
    CHECK(a.note.empty());
    REQUIRE(a.sentences.size() == 2);
    CHECK(a.sentences[0].first == 0);
    CHECK(a.sentences[0].last == 6);
    CHECK_FALSE(a.sentences[1].parsed);
    const SyntaxWord& cat = word(a, "cat");
    CHECK(cat.first == 1);
    CHECK(cat.last == 2);
    CHECK(cat.segment >= 0);
    CHECK(a.word_at_token(2) == 2);
    CHECK(a.word_at_token(6) == -1);

    const WordRelation hover = relation_between_tokens(a, 2, 1);  // query " chased", key " cat"
    CHECK(hover.status == WordRelation::Status::Linked);
    CHECK_THAT(hover.text, Catch::Contains("subject–verb"));
    CHECK(relation_between_tokens(a, 4, 0).status == WordRelation::Status::NotLinked);
    const WordRelation chinese = relation_between_tokens(a, 7, 6);
    CHECK(chinese.status == WordRelation::Status::NoParser);
    CHECK_THAT(chinese.text, Catch::StartsWith("no parser for this language"));

    const CpuTileSource source(*session.capture, 1);
    const std::vector<HeadRef> heads{{0, 0}, {0, 1}, {0, 2}};
    const std::vector<SyntaxHeadShare> shares = syntactic_shares(source, session, a, heads, 1);
    REQUIRE(shares.size() == 3);
    // Query tokens: cat, chased, mouse (words with an earlier partner); 'a' and 'The' have none.
    for (const SyntaxHeadShare& s : shares) CHECK(s.query_tokens == 3);
    // Uniform rows: cat 1 key of 2, chased 1 of 3, mouse 2 of 5.
    const double uniform = (1.0 / 2 + 1.0 / 3 + 2.0 / 5) / 3;
    CHECK(shares[0].share == Approx(1).margin(1e-6));
    CHECK(shares[1].share == Approx(0).margin(1e-6));
    CHECK(shares[2].share == Approx(uniform).epsilon(1e-6));
    for (const SyntaxHeadShare& s : shares) CHECK(s.share_if_uniform == Approx(uniform).epsilon(1e-12));
    // Exact: the linked mass is the sum of the rows' probabilities on the partners.
    double by_rows = 0;
    for (auto [q, keys] : std::vector<std::pair<int64_t, std::vector<int64_t>>>{{1, {0}}, {2, {1}}, {4, {2, 3}}}) {
        const std::vector<float> row = source.row(0, 2, q);
        for (int64_t k : keys) by_rows += row[k];
    }
    CHECK(shares[2].linked_mass == Approx(by_rows).epsilon(1e-6));
    // Per relation: head 0 puts all of chased's attention on its subject.
    const auto subject = std::find_if(shares[0].by_relation.begin(), shares[0].by_relation.end(),
                                      [](const RelationShare& r) { return r.relation == "subject–verb"; });
    REQUIRE(subject != shares[0].by_relation.end());
    CHECK(subject->query_tokens == 1);
    CHECK(subject->share == Approx(1).margin(1e-6));
    const auto det = std::find_if(shares[0].by_relation.begin(), shares[0].by_relation.end(),
                                  [](const RelationShare& r) { return r.relation == "determiner–noun"; });
    REQUIRE(det != shares[0].by_relation.end());
    CHECK(det->query_tokens == 2);  // cat, mouse
    CHECK(det->share == Approx((1.0 + 0.5) / 2).margin(1e-6));
}

TEST_CASE("syntax: parsing from several threads gives the same links", "[syntax]") {
    REQUIRE_PARSER();
    const std::string text = "The quick brown fox jumps over the lazy dog. A man who owns a boat sails it.";
    const std::string locale_before = std::setlocale(LC_ALL, nullptr);
    const SyntaxAnalysis reference = parse_syntax(text);
    CHECK(std::setlocale(LC_ALL, nullptr) == locale_before);  // link-grammar leaves the process locale alone
    std::vector<SyntaxAnalysis> results(4);
    std::vector<std::thread> threads;
    for (auto& r : results) threads.emplace_back([&] { r = parse_syntax(text); });
    for (auto& t : threads) t.join();
    for (const SyntaxAnalysis& r : results) {
        REQUIRE(r.links.size() == reference.links.size());
        for (size_t i = 0; i < r.links.size(); ++i) CHECK(r.links[i].label == reference.links[i].label);
    }
}

TEST_CASE("attnscope syntax prints the links, or why there is no parser", "[syntax][cli]") {
    REQUIRE_PARSER();
    using attn::testing::run_cli;
    const auto r = run_cli("syntax 'The cat chased a mouse.'");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("subject–verb"));
    CHECK_THAT(r.out, Catch::Contains("cat (subject)"));
    const auto zh = run_cli("syntax '猫追老鼠。'");
    REQUIRE(zh.exit_code == 0);
    CHECK_THAT(zh.out, Catch::Contains("no parser for this language"));
    const auto bad = run_cli("syntax");
    CHECK(bad.exit_code != 0);
}
