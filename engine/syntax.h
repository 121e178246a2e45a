#pragma once
// Syntactic relations (issue 7, "Meaning"): English sentences parsed with link-grammar (CMU; Debian's
// liblink-grammar-dev and link-grammar-dictionaries-en), their links between words mapped to readable
// relations (subject–verb, determiner–noun, verb–object, ...) and parts of speech, the words tied to
// the session's tokens and word segments; the relation between a hovered (query word, key word) pair;
// and per head, the share of its attention that falls on syntactically linked word pairs.
//
// ---- Sentences and languages ---------------------------------------------------------------------
//
// The text is cut into sentences by text_segments (ICU; special tokens such as chat markers are never
// inside a sentence). Each sentence is parsed alone, with surrounding whitespace trimmed (line breaks
// and tabs inside it read as spaces, invalid UTF-8 bytes as '?', byte offsets unchanged). A sentence
// is English when at least half its letters are Latin script; any other sentence gets the note "no
// parser for this language (<script> text; link-grammar parses English only)", and so does one where
// most words are unknown to the English dictionary (French, say). Sentences longer than
// SyntaxOptions::max_words whitespace-separated words are skipped with a note (the parser's time grows
// fast with length); each parse also stops after max_parse_seconds.
//
// Parsing: link-grammar's best linkage (lowest cost) without null links when one exists, else allowing
// as many null (unlinked) words as needed. The walls (LEFT-WALL, RIGHT-WALL) and their links are left
// out.
//
// ---- Words and tokens ----------------------------------------------------------------------------
//
// A word is link-grammar's word: its byte span in the text (link-grammar may split "He's" into "he"
// and "'s"), the word with its dictionary subscript ("chased.v-d"), the subscript's part of speech
// (.n noun, .v verb, .a adjective, .e adverb, ...; words without a subscript get one from their links:
// the left end of a D link is a determiner, of a J link a preposition, ...), and whether the
// dictionary knew it. A token belongs to the word that holds its first non-space byte, so "Ġcat"
// belongs to "cat"; a word no token starts in (its bytes lie inside a token that started earlier)
// takes the tokens overlapping it and is marked shares_token. segment is the session's Word segment
// (segment_session(Word)) holding the word's first byte.
//
// ---- Links ---------------------------------------------------------------------------------------
//
// A link joins a left and a right word; its label is link-grammar's ("Ss*s"), its type the label's
// leading capitals ("S"), and the relation a readable name of the type (syntax_relation_name):
//   S subject–verb, SI subject–verb (inverted), D determiner–noun, O verb–object, A adjective–noun,
//   AN noun–noun modifier, J preposition–object, M noun–modifier, MV verb–modifier, E/EA/EE adverb–…,
//   I auxiliary–verb, P verb–complement, PP have–participle, TO verb–to, K verb–particle, N not,
//   G name–name, YS possessive, X punctuation, C/CO/CV clause links, R/RS/B relative clauses, ...
//   (anything else: "link <type>").
//
// ---- Attention on links (per head) -----------------------------------------------------------------
//
// Attention is causal: a link between an earlier word a and a later word b can only be followed by b's
// tokens attending to a's. For a head,
//     linked_mass = Σ_{linked pairs (a, b)} Σ_{q ∈ tokens(b)} Σ_{k ∈ tokens(a)} P[q, k]      (exact)
//     query_tokens = Σ_{words b with at least one earlier linked word} |tokens(b)|
//     share = linked_mass / query_tokens
// the fraction of those tokens' attention that lands on their syntactic partners ("this head follows
// subject–verb links" when the share by_relation for subject–verb is high). Pairs whose token ranges
// overlap are left out. share_if_uniform is the same quantity for uniform rows (each query q spreading
// 1/(q+1) over its keys): the baseline a head gets by attending everywhere. by_relation gives
// the same numbers per relation, each over the words with an earlier link of that relation.
//
// Threads: link-grammar's dictionary is not safe to share between threads; every parse here takes
// one process-wide lock, so the functions may be called from any thread. The process locale is left
// as it was (link-grammar wants a UTF-8 LC_CTYPE: it gets one per thread, with uselocale, while it
// parses).
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/session.h"
#include "engine/text_segments.h"
#include "engine/tile_source.h"
#include "engine/tokenizer.h"

namespace attn {

struct SyntaxOptions {
    int max_words = 80;             // longer sentences are not parsed (a note says so)
    int max_parse_seconds = 10;     // per sentence
    int linkage_limit = 100;        // linkages link-grammar ranks before the best is taken
};

struct SyntaxWord {
    uint32_t begin = 0, end = 0;   // bytes of the text
    int64_t first = 0, last = 0;   // tokens [first, last) (both 0 without tokens)
    bool shares_token = false;     // no token starts inside it: it took the tokens overlapping it
    int64_t segment = -1;          // the session's word segment holding `begin` (-1 without tokens)
    int64_t sentence = 0;          // index into SyntaxAnalysis::sentences
    std::string text;              // its bytes
    std::string parser_word;       // link-grammar's word, with its subscript ("chased.v-d", "xyzzy[?].n")
    std::string subscript;         // "v-d", "" when none
    std::string pos;               // "noun", "verb", "adjective", ... ("" when nothing says)
    bool unknown = false;          // not in the English dictionary (guessed by the parser)
};

struct SyntaxLink {
    int64_t left = 0, right = 0;   // word indices, left before right in the text
    std::string label;             // "Ss*s"
    std::string type;              // "S"
    std::string relation;          // "subject–verb"
    std::string left_role, right_role;  // "subject", "verb" ("" when the relation has no roles)
};

struct SyntaxSentence {
    uint32_t begin = 0, end = 0;   // bytes (trimmed of surrounding whitespace)
    int64_t first = 0, last = 0;   // tokens
    bool parsed = false;
    std::string note;              // why not parsed ("no parser for this language (...)", "too long ...")
    int null_count = 0;            // words left unlinked in the linkage taken
    int64_t first_word = 0, last_word = 0;  // words [first_word, last_word)
    double parse_ms = 0;
};

struct SyntaxAnalysis {
    std::vector<SyntaxSentence> sentences;
    std::vector<SyntaxWord> words;  // in text order
    std::vector<SyntaxLink> links;  // by sentence, in link-grammar's order
    std::string note;               // "" when some sentence was parsed, else why none was
    double parse_ms = 0;

    int64_t word_at_token(int64_t token) const;  // -1: the token is in no word
    int64_t word_at_byte(uint32_t byte) const;   // -1: the byte is in no word
    std::vector<size_t> links_between(int64_t word_a, int64_t word_b) const;  // either order
    int64_t sentence_at_byte(uint32_t byte) const;
};

// Whether the English dictionary can be opened (why not, when it cannot).
bool syntax_parser_available(std::string* why = nullptr);

// Text only (word token ranges stay [0, 0), segment −1), or with its tokens (Tokenizer::encode's).
SyntaxAnalysis parse_syntax(std::string_view text, std::span<const Token> tokens = {}, const SyntaxOptions& options = {});
SyntaxAnalysis parse_session_syntax(const Session& session, const SyntaxOptions& options = {});

// The readable relation of a link type ("S" → "subject–verb"), and its two roles.
std::string syntax_relation_name(std::string_view type);
std::pair<std::string, std::string> syntax_relation_roles(std::string_view type);
// The leading capitals of a label ("Ss*s" → "S", "MVp" → "MV").
std::string syntax_link_type(std::string_view label);

// ---- hover ---------------------------------------------------------------------------------------

struct WordRelation {
    enum class Status { Linked, NotLinked, NoParser, NoWord };
    Status status = Status::NoWord;
    int64_t query_word = -1, key_word = -1;
    std::vector<size_t> links;  // indices into SyntaxAnalysis::links
    std::string text;           // one line for a tooltip: "subject–verb (Ss*s): cat [noun] – chased [verb, past]",
                                // "not linked", "no parser for this language (Han text; ...)", "not in a word"
};
WordRelation relation_between_words(const SyntaxAnalysis& analysis, int64_t query_word, int64_t key_word);
WordRelation relation_between_tokens(const SyntaxAnalysis& analysis, int64_t query_token, int64_t key_token);

// ---- per head ------------------------------------------------------------------------------------

struct RelationShare {
    std::string relation;
    double mass = 0;
    int64_t query_tokens = 0;
    double share = 0;
    double share_if_uniform = 0;
};

struct SyntaxHeadShare {
    int layer = 0, head = 0;
    double linked_mass = 0;
    int64_t query_tokens = 0;
    double share = 0;
    double share_if_uniform = 0;
    std::vector<RelationShare> by_relation;  // highest share first (ties: more query tokens first)
};

// For the fingerprints table: one entry per head, in `heads` order. Uses the analysis' token ranges
// (parse_session_syntax of the same session). threads as in for_each_parallel.
std::vector<SyntaxHeadShare> syntactic_shares(const CpuTileSource& source, const Session& session,
                                              const SyntaxAnalysis& analysis, std::span<const HeadRef> heads,
                                              int threads = 0);

// {"note", "sentences": [...], "words": [...], "links": [...]}
nlohmann::json syntax_json(const SyntaxAnalysis& analysis);
nlohmann::json syntax_share_json(const SyntaxHeadShare& share);

}  // namespace attn
