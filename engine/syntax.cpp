#include "engine/syntax.h"

#include <clocale>
#include <link-grammar/link-includes.h>
#include <locale.h>
#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "engine/attention_metrics.h"
#include "engine/error.h"

namespace attn {

// ---- the parser (one per process, behind a lock) ----------------------------------------------------

namespace {

thread_local std::string lg_messages;  // what link-grammar said on this thread (for errors)

void collect_message(lg_errinfo* info, void*) {
    if (info && info->text && info->severity <= lg_Error) lg_messages += info->text;
}

class LinkGrammar {
public:
    static LinkGrammar& instance() {
        static LinkGrammar parser;
        return parser;
    }

    std::mutex mutex;

    // With `mutex` held. Opens the dictionary the first time; fails with the reason.
    Dictionary dictionary() {
        if (dictionary_) return dictionary_;
        if (!failure_.empty()) fail(failure_);
        lg_error_set_handler(collect_message, nullptr);
        lg_messages.clear();
        if (const char* dir = std::getenv("ATTNSCOPE_LINK_GRAMMAR_DATA")) dictionary_set_data_dir(dir);
        // link-grammar sets the process LC_CTYPE to a UTF-8 locale when it is not one: give it one
        // while it opens the dictionary, then put back what the program had.
        const std::string saved = std::setlocale(LC_CTYPE, nullptr);
        if (!std::setlocale(LC_CTYPE, "C.UTF-8")) std::setlocale(LC_CTYPE, "en_US.UTF-8");
        dictionary_ = dictionary_create_lang("en");
        std::setlocale(LC_CTYPE, saved.c_str());
        if (!dictionary_) {
            failure_ = cat("link-grammar: cannot open the English dictionary",
                           lg_messages.empty() ? std::string() : cat(" (", lg_messages, ")"),
                           "; Debian: apt-get install link-grammar-dictionaries-en");
            while (!failure_.empty() && (failure_.back() == '\n' || failure_.back() == ' ')) failure_.pop_back();
            fail(failure_);
        }
        utf8_ = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
        if (!utf8_) utf8_ = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", static_cast<locale_t>(nullptr));
        return dictionary_;
    }
    locale_t utf8_locale() const { return utf8_; }

private:
    LinkGrammar() = default;
    ~LinkGrammar() {
        if (dictionary_) dictionary_delete(dictionary_);
        if (utf8_) freelocale(utf8_);
    }
    Dictionary dictionary_ = nullptr;
    locale_t utf8_ = static_cast<locale_t>(nullptr);
    std::string failure_;
};

// The calling thread reads UTF-8 while link-grammar runs on it.
class ThreadLocale {
public:
    explicit ThreadLocale(locale_t locale) : previous_(locale ? uselocale(locale) : static_cast<locale_t>(nullptr)) {}
    ~ThreadLocale() {
        if (previous_) uselocale(previous_);
    }

private:
    locale_t previous_;
};

struct ParsedWord {
    uint32_t begin = 0, end = 0;  // in the sentence
    std::string word;
};
struct ParsedLink {
    size_t left = 0, right = 0;
    std::string label;
};
struct ParseOutcome {
    bool parsed = false;
    int null_count = 0;
    std::vector<ParsedWord> words;  // walls included (index = link-grammar's word index)
    std::vector<ParsedLink> links;
};

ParseOutcome run_parser(const std::string& sentence, const SyntaxOptions& options) {
    LinkGrammar& lg = LinkGrammar::instance();
    std::lock_guard lock(lg.mutex);
    Dictionary dictionary = lg.dictionary();
    lg_error_set_handler(collect_message, nullptr);
    ThreadLocale utf8(lg.utf8_locale());
    ParseOutcome outcome;
    Parse_Options opts = parse_options_create();
    parse_options_set_verbosity(opts, 0);
    parse_options_set_linkage_limit(opts, options.linkage_limit);
    parse_options_set_max_parse_time(opts, options.max_parse_seconds);
    parse_options_set_spell_guess(opts, 0);
    parse_options_set_repeatable_rand(opts, true);
    parse_options_set_min_null_count(opts, 0);
    parse_options_set_max_null_count(opts, 0);
    Sentence sent = sentence_create(sentence.c_str(), dictionary);
    if (sent) {
        int found = sentence_parse(sent, opts);
        if (found <= 0 && sentence_length(sent) > 0) {
            // No complete linkage: allow unlinked words, as link-parser does.
            parse_options_set_min_null_count(opts, 1);
            parse_options_set_max_null_count(opts, sentence_length(sent));
            parse_options_reset_resources(opts);
            found = sentence_parse(sent, opts);
        }
        if (found > 0) {
            if (Linkage linkage = linkage_create(0, sent, opts)) {
                outcome.parsed = true;
                outcome.null_count = sentence_null_count(sent);
                const size_t words = linkage_get_num_words(linkage);
                for (size_t w = 0; w < words; ++w) {
                    ParsedWord word;
                    word.begin = static_cast<uint32_t>(linkage_get_word_byte_start(linkage, w));
                    word.end = static_cast<uint32_t>(linkage_get_word_byte_end(linkage, w));
                    const char* text = linkage_get_word(linkage, w);
                    word.word = text ? text : "";
                    outcome.words.push_back(std::move(word));
                }
                const size_t links = linkage_get_num_links(linkage);
                for (size_t l = 0; l < links; ++l) {
                    const char* label = linkage_get_link_label(linkage, l);
                    outcome.links.push_back({linkage_get_link_lword(linkage, l), linkage_get_link_rword(linkage, l),
                                             label ? label : ""});
                }
                linkage_delete(linkage);
            }
        }
        sentence_delete(sent);
    }
    parse_options_delete(opts);
    return outcome;
}

// ---- relations and parts of speech -------------------------------------------------------------------

struct RelationInfo {
    const char* type;
    const char* name;
    const char* left_role;
    const char* right_role;
};

// Link types of the English dictionary (link-grammar's "summary of link types"); a type not listed
// reads "link <type>".
const RelationInfo kRelations[] = {
    {"S", "subject–verb", "subject", "verb"},
    {"SI", "subject–verb (inverted)", "verb", "subject"},
    {"SF", "subject–verb (filler it/there)", "subject", "verb"},
    {"SFI", "subject–verb (filler, inverted)", "verb", "subject"},
    {"SX", "subject–verb (I)", "subject", "verb"},
    {"SXI", "subject–verb (I, inverted)", "verb", "subject"},
    {"D", "determiner–noun", "determiner", "noun"},
    {"DD", "determiner–determiner", "determiner", "determiner"},
    {"DG", "determiner–proper noun", "determiner", "noun"},
    {"DT", "determiner–time noun", "determiner", "noun"},
    {"DP", "possessive determiner–noun", "determiner", "noun"},
    {"O", "verb–object", "verb", "object"},
    {"OD", "verb–object (distance)", "verb", "object"},
    {"OT", "verb–object (time)", "verb", "object"},
    {"ON", "preposition–object (on + date)", "preposition", "object"},
    {"OF", "word–of", "head", "of"},
    {"A", "adjective–noun", "adjective", "noun"},
    {"AN", "noun modifier–noun", "modifier", "noun"},
    {"AA", "adjective–adjective", "adjective", "adjective"},
    {"AF", "adjective–fronted verb", "adjective", "verb"},
    {"AL", "determiner–adjective", "determiner", "adjective"},
    {"AM", "as/more–adjective", "word", "adjective"},
    {"AZ", "verb–as-adjective", "verb", "adjective"},
    {"J", "preposition–object", "preposition", "object"},
    {"JG", "preposition–proper noun", "preposition", "object"},
    {"JQ", "preposition–question word", "preposition", "object"},
    {"JT", "preposition–time", "preposition", "object"},
    {"M", "noun–modifier", "noun", "modifier"},
    {"MV", "verb–modifier", "verb", "modifier"},
    {"MX", "noun–apposition", "noun", "apposition"},
    {"MG", "noun–of-proper noun", "noun", "modifier"},
    {"E", "adverb–verb", "adverb", "verb"},
    {"EA", "adverb–adjective", "adverb", "adjective"},
    {"EE", "adverb–adverb", "adverb", "adverb"},
    {"EB", "verb–adverb (after be)", "verb", "adverb"},
    {"EN", "adverb–number", "adverb", "number"},
    {"G", "name–name", "name", "name"},
    {"GN", "name–noun", "name", "noun"},
    {"I", "auxiliary–verb", "auxiliary", "verb"},
    {"IV", "auxiliary–verb", "auxiliary", "verb"},
    {"P", "verb–complement", "verb", "complement"},
    {"PP", "have–participle", "have", "participle"},
    {"PF", "complement–verb (fronted)", "complement", "verb"},
    {"TO", "verb–to", "verb", "to"},
    {"TH", "verb–that", "verb", "that"},
    {"K", "verb–particle", "verb", "particle"},
    {"N", "verb–not", "verb", "not"},
    {"NM", "noun–number", "noun", "number"},
    {"ND", "number–noun", "number", "noun"},
    {"NN", "number–number", "number", "number"},
    {"NI", "number–noun", "number", "noun"},
    {"NT", "not–to", "not", "to"},
    {"EC", "adverb–comparative", "adverb", "comparative"},
    {"EF", "word–enough", "word", "enough"},
    {"EI", "adverb–after/before", "adverb", "preposition"},
    {"EZ", "adverb–as", "adverb", "as"},
    {"WV", "sentence–head verb", "", ""},
    {"RW", "sentence–end", "", ""},
    {"C", "conjunction–clause", "conjunction", "clause"},
    {"CO", "opener–clause", "opener", "subject"},
    {"CV", "clause–verb", "clause", "verb"},
    {"CC", "clause–clause", "clause", "clause"},
    {"CP", "paraphrase–verb", "clause", "verb"},
    {"R", "noun–relative clause", "noun", "relative"},
    {"RS", "relative pronoun–verb", "relative", "verb"},
    {"B", "noun–relative verb", "noun", "verb"},
    {"Q", "question word–verb", "question", "verb"},
    {"QI", "verb–question word", "verb", "question"},
    {"W", "sentence–head", "", ""},
    {"X", "punctuation", "", ""},
    {"PH", "a/an–next word (phonetic)", "", ""},
    {"Y", "possessive", "noun", "possessive"},
    {"YS", "noun–possessive 's", "noun", "possessive"},
    {"YP", "plural noun–possessive '", "noun", "possessive"},
    {"L", "determiner–superlative", "determiner", "superlative"},
    {"LE", "comparative–than", "comparative", "than"},
    {"U", "noun–unit", "noun", "unit"},
    {"Z", "preposition–as", "preposition", "as"},
    {"ID", "idiom", "", ""},
    {"FL", "for–long", "for", "long"},
    {"H", "how–adjective", "how", "adjective"},
    {"V", "verb–idiom", "verb", "idiom"},
    {"WR", "wall–relative", "", ""},
    {"TA", "time/date", "", ""},
    {"TD", "time/date", "", ""},
    {"TM", "time/date", "", ""},
    {"TY", "time/date", "", ""},
    {"TS", "verb–that-subjunctive", "verb", "that"},
    {"TT", "verb–to (than/to)", "verb", "to"},
    {"BW", "what–verb", "question", "verb"},
    {"IN", "in–time", "in", "time"},
};

const RelationInfo* relation_info(std::string_view type) {
    for (const RelationInfo& info : kRelations)
        if (type == info.type) return &info;
    return nullptr;
}

bool has_letter(std::string_view text) {
    int32_t i = 0;
    const int32_t n = static_cast<int32_t>(text.size());
    while (i < n) {
        UChar32 c;
        U8_NEXT(text.data(), i, n, c);
        if (c >= 0 && u_isalpha(c)) return true;
    }
    return false;
}

// "chased.v-d" → "v-d"; "xyzzy[?].n" → "n"; "." → ""; "[。]" → "".
std::string subscript_of(std::string_view word) {
    const size_t dot = word.rfind('.');
    if (dot == std::string_view::npos || dot == 0 || dot + 1 >= word.size()) return {};
    const std::string_view tail = word.substr(dot + 1);
    for (char c : tail)
        if (!((c >= 'a' && c <= 'z') || c == '-' || c == '#' || c == '_')) return {};
    return std::string(tail);
}

std::string pos_of_subscript(std::string_view sub) {
    if (sub.empty()) return {};
    const std::string_view head = sub.substr(0, sub.find('-'));
    const std::string_view rest = sub.find('-') == std::string_view::npos ? std::string_view() : sub.substr(sub.find('-') + 1);
    if (head == "n" || head == "s" || head == "p" || head == "l" || head == "t" || head == "u" || head == "i") return "noun";
    if (head == "b" || head == "f" || head == "m" || head == "o") return "proper noun";
    if (head == "v" || head == "w" || head == "q") return rest == "d" ? "verb (past)" : rest == "g" ? "verb (gerund)" : "verb";
    if (head == "g") return "verb (gerund)";
    if (head == "a") return rest == "c" ? "adjective (comparative)" : rest == "s" ? "adjective (superlative)" : "adjective";
    if (head == "e") return "adverb";
    if (head == "r") return "adverb or particle";
    if (head == "j" || head == "c") return "conjunction";
    if (head == "d" || head == "x") return "determiner";
    if (head == "h" || head == "ij") return "interjection";
    if (head == "ti" || head == "ord") return "ordinal";
    if (head == "#") return "number";
    if (head == "y") return "abbreviation";
    if (head == "id" || head == "eq") return "symbol";
    return "";
}

bool is_pronoun(std::string_view word) {
    static const char* kPronouns[] = {"i", "you", "he", "she", "it", "we", "they", "me", "him", "her", "us", "them",
                                      "myself", "yourself", "himself", "herself", "itself", "ourselves", "themselves",
                                      "this", "that", "these", "those", "who", "what", "someone", "something",
                                      "everyone", "everything", "nobody", "nothing"};
    std::string lower;
    for (char c : word) lower += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    return std::find(std::begin(kPronouns), std::end(kPronouns), lower) != std::end(kPronouns);
}

// The parts of speech of words without a subscript, from their links.
void infer_parts_of_speech(SyntaxAnalysis& analysis, int64_t first_word, int64_t last_word, size_t first_link) {
    for (int64_t w = first_word; w < last_word; ++w) {
        SyntaxWord& word = analysis.words[static_cast<size_t>(w)];
        if (!word.pos.empty()) continue;
        if (!has_letter(word.text)) {
            word.pos = std::any_of(word.text.begin(), word.text.end(), [](char c) { return c >= '0' && c <= '9'; })
                           ? "number"
                           : "punctuation";
            continue;
        }
        std::string guess;
        for (size_t l = first_link; l < analysis.links.size(); ++l) {
            const SyntaxLink& link = analysis.links[l];
            const bool left = link.left == w, right = link.right == w;
            if (!left && !right) continue;
            const std::string& t = link.type;
            if (left && t[0] == 'D' && t != "DD") guess = "determiner";
            else if (left && t[0] == 'J') guess = "preposition";
            else if (!guess.empty()) continue;
            else if ((left && (t == "E" || t == "EA" || t == "EE")) || (right && link.label.rfind("MVa", 0) == 0))
                guess = "adverb";
            else if (left && (t == "I" || t == "IV")) guess = "auxiliary verb";
            else if (right && t == "TO") guess = "particle";
            else if (left && t == "C") guess = "conjunction";
            if (guess == "determiner" || guess == "preposition") break;
        }
        if (guess.empty() && is_pronoun(word.text)) guess = "pronoun";
        word.pos = guess;
    }
    // ".r" words ("in.r") that head a J link are prepositions.
    for (size_t l = first_link; l < analysis.links.size(); ++l) {
        const SyntaxLink& link = analysis.links[l];
        SyntaxWord& left = analysis.words[static_cast<size_t>(link.left)];
        if (link.type[0] == 'J' && left.pos == "adverb or particle") left.pos = "preposition";
    }
}

// Letters by script; English needs at least half of them Latin.
bool looks_english_script(std::string_view text, std::string& script_name) {
    std::map<UScriptCode, int64_t> counts;
    int64_t letters = 0;
    int32_t i = 0;
    const int32_t n = static_cast<int32_t>(text.size());
    while (i < n) {
        UChar32 c;
        U8_NEXT(text.data(), i, n, c);
        if (c < 0 || !u_isalpha(c)) continue;
        UErrorCode status = U_ZERO_ERROR;
        const UScriptCode script = uscript_getScript(c, &status);
        if (U_FAILURE(status)) continue;
        ++counts[script];
        ++letters;
    }
    if (letters == 0) return false;
    if (counts[USCRIPT_LATIN] * 2 >= letters) return true;
    UScriptCode top = USCRIPT_COMMON;
    int64_t best = -1;
    for (const auto& [script, count] : counts)
        if (count > best) best = count, top = script;
    script_name = uscript_getName(top);
    return false;
}

// Latin-script text in another language: more function words of French, German, Spanish, Italian,
// Portuguese or Dutch than of English (at least two). Words both languages use ("a", "in", "as") are
// in neither list.
bool looks_other_latin_language(std::string_view text) {
    static const std::vector<std::string_view> english{
        "the", "an", "of", "to", "is", "are", "was", "were", "and", "or", "it", "that", "this", "for", "with", "be",
        "by", "at", "not", "he", "she", "they", "we", "you", "i", "his", "from", "have", "has", "had", "does", "will",
        "would", "can", "which", "who", "what", "there", "their", "been", "but", "if", "my", "your", "our", "its"};
    static const std::vector<std::string_view> other{
        // French
        "le", "la", "les", "des", "du", "une", "est", "et", "dans", "pour", "pas", "que", "qui", "sur", "avec", "au",
        "aux", "ce", "cette", "sont", "il", "elle", "nous", "vous", "ils", "je", "mais", "ou", "où",
        // German
        "der", "die", "das", "und", "ist", "nicht", "ein", "eine", "einen", "im", "mit", "von", "zu", "den", "dem",
        "sich", "auch", "auf", "für", "ich", "sie", "wir", "es", "sind", "oder", "aber",
        // Spanish, Portuguese, Italian
        "el", "los", "las", "y", "del", "por", "para", "con", "una", "lo", "gli", "di", "che", "è", "per", "non",
        "os", "um", "uma", "não", "da", "em", "e", "su", "al", "muy", "pero", "más", "está", "são", "nel", "della",
        // Dutch
        "het", "een", "van", "niet", "ik", "zijn", "met", "voor", "op", "maar", "ook", "wij"};
    int64_t english_count = 0, other_count = 0;
    std::string word;
    auto flush = [&] {
        if (word.empty()) return;
        if (std::find(english.begin(), english.end(), word) != english.end()) ++english_count;
        else if (std::find(other.begin(), other.end(), word) != other.end()) ++other_count;
        word.clear();
    };
    for (char c : text) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (u >= 0x80 || (c >= 'a' && c <= 'z')) word += c;
        else if (c >= 'A' && c <= 'Z') word += static_cast<char>(c - 'A' + 'a');
        else if (c == '\'') word.clear();  // "l'homme", "don't": not a function word
        else flush();
    }
    flush();
    return other_count >= 2 && other_count > english_count;
}

// The sentence as link-grammar gets it: same bytes, line breaks as spaces, invalid UTF-8 as '?'.
std::string sanitised(std::string_view text) {
    std::string out(text);
    int32_t i = 0;
    const int32_t n = static_cast<int32_t>(out.size());
    while (i < n) {
        const int32_t start = i;
        UChar32 c;
        U8_NEXT(out.data(), i, n, c);
        if (c < 0) {
            for (int32_t k = start; k < i; ++k) out[static_cast<size_t>(k)] = '?';
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == '\v') {
            out[static_cast<size_t>(start)] = ' ';
        }
    }
    return out;
}

int64_t count_words(std::string_view text) {
    int64_t words = 0;
    bool in_word = false;
    for (char c : text) {
        const bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        if (!space && !in_word) ++words;
        in_word = !space;
    }
    return words;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

void assign_tokens(SyntaxAnalysis& analysis, std::string_view text, std::span<const Token> tokens,
                   std::span<const Segment> word_segments) {
    std::vector<int64_t> first(analysis.words.size(), -1), last(analysis.words.size(), -1);
    for (size_t t = 0; t < tokens.size(); ++t) {
        const Token& token = tokens[t];
        uint32_t b = token.begin;
        while (b < token.end && b < text.size() && is_blank(text[b])) ++b;
        if (b >= token.end) continue;
        const int64_t w = analysis.word_at_byte(b);
        if (w < 0) continue;
        if (first[static_cast<size_t>(w)] < 0) first[static_cast<size_t>(w)] = static_cast<int64_t>(t);
        last[static_cast<size_t>(w)] = static_cast<int64_t>(t) + 1;
    }
    for (size_t w = 0; w < analysis.words.size(); ++w) {
        SyntaxWord& word = analysis.words[w];
        if (first[w] >= 0) {
            word.first = first[w];
            word.last = last[w];
        } else {
            auto it = std::partition_point(tokens.begin(), tokens.end(), [&](const Token& t) { return t.end <= word.begin; });
            int64_t f = -1, l = -1;
            for (; it != tokens.end() && it->begin < word.end; ++it) {
                if (it->end <= it->begin) continue;
                const int64_t p = it - tokens.begin();
                if (f < 0) f = p;
                l = p + 1;
            }
            if (f >= 0) {
                word.first = f;
                word.last = l;
                word.shares_token = true;
            }
        }
        if (!word_segments.empty()) {
            auto seg = std::partition_point(word_segments.begin(), word_segments.end(),
                                            [&](const Segment& s) { return s.end <= word.begin; });
            if (seg != word_segments.end() && seg->begin <= word.begin) word.segment = seg - word_segments.begin();
        }
    }
    for (SyntaxSentence& sentence : analysis.sentences) {
        const auto range = [&] {
            auto it = std::partition_point(tokens.begin(), tokens.end(), [&](const Token& t) { return t.end <= sentence.begin; });
            int64_t f = -1, l = -1;
            for (; it != tokens.end() && it->begin < sentence.end; ++it) {
                if (it->end <= it->begin) continue;
                const int64_t p = it - tokens.begin();
                if (f < 0) f = p;
                l = p + 1;
            }
            return f < 0 ? std::pair<int64_t, int64_t>{0, 0} : std::pair{f, l};
        }();
        sentence.first = range.first;
        sentence.last = range.second;
    }
}

SyntaxAnalysis analyse(std::string_view text, std::span<const Token> tokens, std::span<const Segment> sentences,
                       std::span<const Segment> word_segments, const SyntaxOptions& options) {
    const auto started = std::chrono::steady_clock::now();
    SyntaxAnalysis analysis;
    std::string other_script;
    int64_t candidates = 0;
    for (const Segment& segment : sentences) {
        if (segment.kind == SegmentKind::Special || segment.kind == SegmentKind::Space) continue;
        uint32_t begin = segment.begin, end = segment.end;
        while (begin < end && is_blank(text[begin])) ++begin;
        while (end > begin && is_blank(text[end - 1])) --end;
        const std::string_view bytes = text.substr(begin, end - begin);
        if (bytes.empty() || !has_letter(bytes)) continue;
        ++candidates;
        SyntaxSentence sentence;
        sentence.begin = begin;
        sentence.end = end;
        sentence.first_word = sentence.last_word = static_cast<int64_t>(analysis.words.size());
        std::string script;
        const int64_t words = count_words(bytes);
        if (!looks_english_script(bytes, script)) {
            sentence.note = cat("no parser for this language (", script, " text; link-grammar parses English only)");
            if (other_script.empty()) other_script = script;
        } else if (looks_other_latin_language(bytes)) {
            sentence.note = "no parser for this language (Latin-script text that is not English; link-grammar parses "
                            "English only)";
            if (other_script.empty()) other_script = "Latin";
        } else if (words > options.max_words) {
            sentence.note = cat("not parsed: ", words, " words, more than the parser's limit of ", options.max_words);
        } else {
            const auto t0 = std::chrono::steady_clock::now();
            const ParseOutcome outcome = run_parser(sanitised(bytes), options);
            sentence.parse_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (!outcome.parsed) {
                sentence.note = "the parser found no linkage";
            } else {
                // Words, walls left out; their index in the analysis per link-grammar index.
                std::vector<int64_t> index(outcome.words.size(), -1);
                int64_t unknown = 0, real = 0;
                for (size_t w = 0; w < outcome.words.size(); ++w) {
                    const ParsedWord& pw = outcome.words[w];
                    if (pw.word == "LEFT-WALL" || pw.word == "RIGHT-WALL" || pw.end <= pw.begin) continue;
                    SyntaxWord word;
                    word.begin = begin + pw.begin;
                    word.end = std::min(end, begin + pw.end);
                    word.sentence = static_cast<int64_t>(analysis.sentences.size());
                    word.text = std::string(text.substr(word.begin, word.end - word.begin));
                    word.parser_word = pw.word;
                    word.subscript = subscript_of(pw.word);
                    word.pos = pos_of_subscript(word.subscript);
                    word.unknown = pw.word.find("[?]") != std::string::npos;
                    // A null word (left unlinked) comes back in brackets: "[la]".
                    const bool null_word = pw.word.size() > 2 && pw.word.front() == '[' && pw.word.back() == ']';
                    if (has_letter(word.text)) {
                        ++real;
                        unknown += word.unknown || null_word ? 1 : 0;
                    }
                    index[w] = static_cast<int64_t>(analysis.words.size());
                    analysis.words.push_back(std::move(word));
                }
                if (real >= 2 && unknown * 2 > real) {
                    analysis.words.resize(static_cast<size_t>(sentence.first_word));
                    sentence.note = cat("no parser for this language (", unknown, " of ", real,
                                        " words are unknown to the English dictionary or left unlinked; link-grammar "
                                        "parses English only)");
                    if (other_script.empty()) other_script = "Latin";
                } else {
                    sentence.parsed = true;
                    sentence.null_count = outcome.null_count;
                    sentence.last_word = static_cast<int64_t>(analysis.words.size());
                    const size_t first_link = analysis.links.size();
                    for (const ParsedLink& pl : outcome.links) {
                        if (pl.left >= index.size() || pl.right >= index.size()) continue;
                        const int64_t a = index[pl.left], b = index[pl.right];
                        if (a < 0 || b < 0 || a == b) continue;  // a wall
                        SyntaxLink link;
                        link.left = std::min(a, b);
                        link.right = std::max(a, b);
                        link.label = pl.label;
                        link.type = syntax_link_type(pl.label);
                        link.relation = syntax_relation_name(link.type);
                        std::tie(link.left_role, link.right_role) = syntax_relation_roles(link.type);
                        analysis.links.push_back(std::move(link));
                    }
                    infer_parts_of_speech(analysis, sentence.first_word, sentence.last_word, first_link);
                }
            }
        }
        analysis.sentences.push_back(std::move(sentence));
    }
    // Link-grammar keeps words in order; keep the analysis sorted by byte even if a split overlaps.
    assign_tokens(analysis, text, tokens, word_segments);
    const bool any_parsed = std::any_of(analysis.sentences.begin(), analysis.sentences.end(),
                                        [](const SyntaxSentence& s) { return s.parsed; });
    if (!any_parsed) {
        if (candidates == 0) analysis.note = "no sentence with words to parse";
        else if (!other_script.empty())
            analysis.note = other_script == "Latin"
                                ? "no parser for this language (the words are not English; link-grammar parses English only)"
                                : cat("no parser for this language (", other_script, " text; link-grammar parses English only)");
        else analysis.note = analysis.sentences.front().note;
    }
    analysis.parse_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    return analysis;
}

}  // namespace

bool syntax_parser_available(std::string* why) {
    try {
        LinkGrammar& lg = LinkGrammar::instance();
        std::lock_guard lock(lg.mutex);
        lg.dictionary();
        return true;
    } catch (const Error& e) {
        if (why) *why = e.what();
        return false;
    }
}

std::string syntax_link_type(std::string_view label) {
    std::string type;
    for (char c : label) {
        if (c >= 'A' && c <= 'Z') type += c;
        else break;
    }
    return type;
}

std::string syntax_relation_name(std::string_view type) {
    if (const RelationInfo* info = relation_info(type)) return info->name;
    return cat("link ", type);
}

std::pair<std::string, std::string> syntax_relation_roles(std::string_view type) {
    if (const RelationInfo* info = relation_info(type)) return {info->left_role, info->right_role};
    return {};
}

SyntaxAnalysis parse_syntax(std::string_view text, std::span<const Token> tokens, const SyntaxOptions& options) {
    if (tokens.empty()) {
        const std::vector<Segment> sentences = segment_text(text, Granularity::Sentence);
        return analyse(text, {}, sentences, {}, options);
    }
    const std::vector<Segment> sentences = segment_tokens(text, tokens, Granularity::Sentence);
    const std::vector<Segment> words = segment_tokens(text, tokens, Granularity::Word);
    return analyse(text, tokens, sentences, words, options);
}

SyntaxAnalysis parse_session_syntax(const Session& session, const SyntaxOptions& options) {
    return parse_syntax(session.text, session.tokens, options);
}

int64_t SyntaxAnalysis::word_at_byte(uint32_t byte) const {
    auto it = std::partition_point(words.begin(), words.end(), [&](const SyntaxWord& w) { return w.end <= byte; });
    if (it != words.end() && it->begin <= byte && byte < it->end) return it - words.begin();
    return -1;
}

int64_t SyntaxAnalysis::word_at_token(int64_t token) const {
    for (size_t w = 0; w < words.size(); ++w)
        if (words[w].first <= token && token < words[w].last) return static_cast<int64_t>(w);
    return -1;
}

int64_t SyntaxAnalysis::sentence_at_byte(uint32_t byte) const {
    for (size_t s = 0; s < sentences.size(); ++s)
        if (sentences[s].begin <= byte && byte < sentences[s].end) return static_cast<int64_t>(s);
    return -1;
}

std::vector<size_t> SyntaxAnalysis::links_between(int64_t a, int64_t b) const {
    std::vector<size_t> found;
    const int64_t left = std::min(a, b), right = std::max(a, b);
    for (size_t l = 0; l < links.size(); ++l)
        if (links[l].left == left && links[l].right == right) found.push_back(l);
    return found;
}

// ---- hover ---------------------------------------------------------------------------------------

WordRelation relation_between_words(const SyntaxAnalysis& analysis, int64_t query_word, int64_t key_word) {
    WordRelation r;
    r.query_word = query_word;
    r.key_word = key_word;
    const int64_t n = static_cast<int64_t>(analysis.words.size());
    if (query_word < 0 || key_word < 0 || query_word >= n || key_word >= n) {
        r.status = WordRelation::Status::NoWord;
        r.text = analysis.note.empty() ? "not in a parsed word" : analysis.note;
        if (!analysis.note.empty()) r.status = WordRelation::Status::NoParser;
        return r;
    }
    r.links = analysis.links_between(query_word, key_word);
    const SyntaxWord &q = analysis.words[static_cast<size_t>(query_word)], &k = analysis.words[static_cast<size_t>(key_word)];
    auto word_text = [](const SyntaxWord& w) { return w.pos.empty() ? w.text : cat(w.text, " [", w.pos, "]"); };
    if (r.links.empty()) {
        r.status = WordRelation::Status::NotLinked;
        r.text = query_word == key_word ? "the same word" : "not linked";
        return r;
    }
    r.status = WordRelation::Status::Linked;
    for (size_t i = 0; i < r.links.size(); ++i) {
        const SyntaxLink& link = analysis.links[r.links[i]];
        const SyntaxWord &left = analysis.words[static_cast<size_t>(link.left)], &right = analysis.words[static_cast<size_t>(link.right)];
        r.text += cat(i ? "; " : "", link.relation, " (", link.label, "): ", word_text(left), " – ", word_text(right));
    }
    (void)q;
    (void)k;
    return r;
}

WordRelation relation_between_tokens(const SyntaxAnalysis& analysis, int64_t query_token, int64_t key_token) {
    const int64_t q = analysis.word_at_token(query_token), k = analysis.word_at_token(key_token);
    if (q < 0 || k < 0) {
        WordRelation r;
        r.query_word = q;
        r.key_word = k;
        // A token of a sentence that was not parsed: say why.
        for (const SyntaxSentence& s : analysis.sentences)
            if (!s.parsed && ((s.first <= query_token && query_token < s.last) || (s.first <= key_token && key_token < s.last))) {
                r.status = s.note.rfind("no parser", 0) == 0 ? WordRelation::Status::NoParser : WordRelation::Status::NoWord;
                r.text = s.note;
                return r;
            }
        r.status = analysis.note.empty() ? WordRelation::Status::NoWord : WordRelation::Status::NoParser;
        r.text = analysis.note.empty() ? "not in a parsed word" : analysis.note;
        return r;
    }
    return relation_between_words(analysis, q, k);
}

// ---- per head ------------------------------------------------------------------------------------

std::vector<SyntaxHeadShare> syntactic_shares(const CpuTileSource& source, const Session& session,
                                              const SyntaxAnalysis& analysis, std::span<const HeadRef> heads,
                                              int threads) {
    if (!session.capture) fail("syntactic shares: the session holds no capture");
    const CaptureShape& shape = session.capture->shape();
    for (const HeadRef& h : heads)
        if (h.layer < 0 || h.layer >= shape.n_layer || h.head < 0 || h.head >= shape.n_head)
            fail("syntactic shares: layer ", h.layer, " head ", h.head, " is not in the capture");
    const int64_t captured = session.capture->positions();

    // Word pairs (earlier a, later b) with disjoint token ranges, each once, with their relations.
    struct Pair {
        int64_t a, b;
        std::vector<std::string> relations;
    };
    std::vector<Pair> pairs;
    for (const SyntaxLink& link : analysis.links) {
        const SyntaxWord &a = analysis.words[static_cast<size_t>(link.left)], &b = analysis.words[static_cast<size_t>(link.right)];
        if (a.last <= a.first || b.last <= b.first || a.last > b.first) continue;
        if (b.first >= captured) continue;
        auto it = std::find_if(pairs.begin(), pairs.end(), [&](const Pair& p) { return p.a == link.left && p.b == link.right; });
        if (it == pairs.end()) {
            pairs.push_back({link.left, link.right, {}});
            it = pairs.end() - 1;
        }
        if (std::find(it->relations.begin(), it->relations.end(), link.relation) == it->relations.end())
            it->relations.push_back(link.relation);
    }
    // Query tokens: words with an earlier partner (overall, and per relation); the uniform baseline.
    auto tokens_of = [&](int64_t word) {
        const SyntaxWord& w = analysis.words[static_cast<size_t>(word)];
        return std::pair{w.first, std::min(w.last, captured)};
    };
    std::vector<int64_t> later_words;
    std::map<std::string, std::vector<int64_t>> later_by_relation;
    for (const Pair& p : pairs) {
        later_words.push_back(p.b);
        for (const std::string& r : p.relations) later_by_relation[r].push_back(p.b);
    }
    auto count_tokens = [&](std::vector<int64_t>& words) {
        std::sort(words.begin(), words.end());
        words.erase(std::unique(words.begin(), words.end()), words.end());
        int64_t total = 0;
        for (int64_t w : words) {
            const auto [f, l] = tokens_of(w);
            total += std::max<int64_t>(0, l - f);
        }
        return total;
    };
    const int64_t query_tokens = count_tokens(later_words);
    std::map<std::string, int64_t> relation_tokens;
    for (auto& [r, words] : later_by_relation) relation_tokens[r] = count_tokens(words);
    auto uniform_mass = [&](const Pair& p) {
        const auto [q0, q1] = tokens_of(p.b);
        const auto [k0, k1] = tokens_of(p.a);
        double mass = 0;
        for (int64_t q = q0; q < q1; ++q) mass += static_cast<double>(k1 - k0) / static_cast<double>(q + 1);
        return mass;
    };
    double uniform_total = 0;
    std::map<std::string, double> uniform_by_relation;
    for (const Pair& p : pairs) {
        const double u = uniform_mass(p);
        uniform_total += u;
        for (const std::string& r : p.relations) uniform_by_relation[r] += u;
    }

    std::vector<SyntaxHeadShare> out(heads.size());
    for_each_parallel(static_cast<int64_t>(heads.size()), threads, [&](int64_t index) {
        const HeadRef& h = heads[static_cast<size_t>(index)];
        SyntaxHeadShare& share = out[static_cast<size_t>(index)];
        share.layer = h.layer;
        share.head = h.head;
        std::map<std::string, double> by_relation;
        for (const Pair& p : pairs) {
            const auto [q0, q1] = tokens_of(p.b);
            const auto [k0, k1] = tokens_of(p.a);
            const double mass = source.mass(h.layer, h.head, q0, q1, k0, k1);
            share.linked_mass += mass;
            for (const std::string& r : p.relations) by_relation[r] += mass;
        }
        share.query_tokens = query_tokens;
        share.share = query_tokens ? share.linked_mass / static_cast<double>(query_tokens) : 0;
        share.share_if_uniform = query_tokens ? uniform_total / static_cast<double>(query_tokens) : 0;
        for (const auto& [relation, tokens] : relation_tokens) {
            RelationShare r;
            r.relation = relation;
            r.mass = by_relation[relation];
            r.query_tokens = tokens;
            r.share = tokens ? r.mass / static_cast<double>(tokens) : 0;
            r.share_if_uniform = tokens ? uniform_by_relation[relation] / static_cast<double>(tokens) : 0;
            share.by_relation.push_back(std::move(r));
        }
        std::stable_sort(share.by_relation.begin(), share.by_relation.end(), [](const RelationShare& a, const RelationShare& b) {
            return a.share != b.share ? a.share > b.share : a.query_tokens > b.query_tokens;
        });
    });
    return out;
}

// ---- JSON ----------------------------------------------------------------------------------------

nlohmann::json syntax_json(const SyntaxAnalysis& analysis) {
    nlohmann::json out;
    out["note"] = analysis.note;
    out["parse_ms"] = analysis.parse_ms;
    nlohmann::json sentences = nlohmann::json::array();
    for (const SyntaxSentence& s : analysis.sentences)
        sentences.push_back({{"begin", s.begin}, {"end", s.end}, {"first_token", s.first}, {"last_token", s.last},
                             {"parsed", s.parsed}, {"note", s.note}, {"null_count", s.null_count},
                             {"first_word", s.first_word}, {"last_word", s.last_word}, {"parse_ms", s.parse_ms}});
    out["sentences"] = std::move(sentences);
    nlohmann::json words = nlohmann::json::array();
    for (const SyntaxWord& w : analysis.words)
        words.push_back({{"begin", w.begin}, {"end", w.end}, {"first_token", w.first}, {"last_token", w.last},
                         {"shares_token", w.shares_token}, {"segment", w.segment}, {"sentence", w.sentence},
                         {"text", w.text}, {"parser_word", w.parser_word}, {"subscript", w.subscript}, {"pos", w.pos},
                         {"unknown", w.unknown}});
    out["words"] = std::move(words);
    nlohmann::json links = nlohmann::json::array();
    for (const SyntaxLink& l : analysis.links)
        links.push_back({{"left", l.left}, {"right", l.right}, {"label", l.label}, {"type", l.type},
                         {"relation", l.relation}, {"left_role", l.left_role}, {"right_role", l.right_role}});
    out["links"] = std::move(links);
    return out;
}

nlohmann::json syntax_share_json(const SyntaxHeadShare& share) {
    nlohmann::json by = nlohmann::json::array();
    for (const RelationShare& r : share.by_relation)
        by.push_back({{"relation", r.relation}, {"mass", r.mass}, {"query_tokens", r.query_tokens}, {"share", r.share},
                      {"share_if_uniform", r.share_if_uniform}});
    return {{"layer", share.layer},
            {"head", share.head},
            {"linked_mass", share.linked_mass},
            {"query_tokens", share.query_tokens},
            {"share", share.share},
            {"share_if_uniform", share.share_if_uniform},
            {"by_relation", std::move(by)}};
}

}  // namespace attn
