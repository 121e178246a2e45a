#include "engine/text_segments.h"

#include <igraph.h>
#include <unicode/brkiter.h>
#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "engine/atomic_file.h"
#include "engine/attention_metrics.h"
#include "engine/error.h"
#include "engine/parallel.h"

namespace attn {

// ---- names ------------------------------------------------------------------------------------

const char* granularity_name(Granularity granularity) {
    switch (granularity) {
        case Granularity::Token: return "token";
        case Granularity::Word: return "word";
        case Granularity::Phrase: return "phrase";
        case Granularity::Sentence: return "sentence";
        case Granularity::Paragraph: return "paragraph";
    }
    return "?";
}

Granularity parse_granularity(std::string_view name) {
    for (Granularity g : {Granularity::Token, Granularity::Word, Granularity::Phrase, Granularity::Sentence,
                          Granularity::Paragraph})
        if (name == granularity_name(g)) return g;
    fail("unknown granularity '", name, "' (choose token, word, phrase, sentence or paragraph)");
}

const char* segment_kind_name(SegmentKind kind) {
    switch (kind) {
        case SegmentKind::Token: return "token";
        case SegmentKind::Word: return "word";
        case SegmentKind::Number: return "number";
        case SegmentKind::Kana: return "kana";
        case SegmentKind::Ideographic: return "ideographic";
        case SegmentKind::Symbol: return "symbol";
        case SegmentKind::Space: return "space";
        case SegmentKind::Special: return "special";
        case SegmentKind::Phrase: return "phrase";
        case SegmentKind::Sentence: return "sentence";
        case SegmentKind::Paragraph: return "paragraph";
    }
    return "?";
}

namespace {

// ---- UTF-8 → UTF-16 with exact byte offsets ---------------------------------------------------

// ICU works on UTF-16; the segments must be byte offsets into the original (possibly ill-formed)
// UTF-8. Each well-formed sequence becomes its code point and each byte of an ill-formed one a
// U+FFFD of its own, and every UTF-16 unit remembers the byte its sequence starts at. ICU never
// puts a boundary inside a surrogate pair, so every boundary maps to the first byte of a sequence
// (or to the run's end).
struct Utf16Run {
    icu::UnicodeString text;
    std::vector<uint32_t> byte_at;  // [unit] → absolute byte offset; byte_at[length] = run end
};

// Length of the well-formed UTF-8 sequence at bytes[pos] (Unicode table 3-7, as
// first_invalid_utf8 checks it), with its code point; 0 if the sequence is ill-formed.
size_t decode_utf8_sequence(const unsigned char* bytes, size_t size, size_t pos, char32_t& code_point) {
    const unsigned char lead = bytes[pos];
    if (lead < 0x80) {
        code_point = lead;
        return 1;
    }
    size_t length = 0;
    unsigned char second_min = 0x80, second_max = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
        code_point = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        code_point = lead & 0x0F;
        if (lead == 0xE0) second_min = 0xA0;
        if (lead == 0xED) second_max = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        code_point = lead & 0x07;
        if (lead == 0xF0) second_min = 0x90;
        if (lead == 0xF4) second_max = 0x8F;
    } else {
        return 0;
    }
    if (pos + length > size) return 0;
    if (bytes[pos + 1] < second_min || bytes[pos + 1] > second_max) return 0;
    for (size_t k = 1; k < length; ++k) {
        if ((bytes[pos + k] & 0xC0) != 0x80) return 0;
        code_point = (code_point << 6) | (bytes[pos + k] & 0x3F);
    }
    return length;
}

Utf16Run to_utf16(std::string_view text, uint32_t begin, uint32_t end) {
    Utf16Run run;
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    run.byte_at.reserve(end - begin + 1);
    for (size_t pos = begin; pos < end;) {
        char32_t code_point = 0;
        size_t length = decode_utf8_sequence(bytes, end, pos, code_point);
        if (length == 0) {
            code_point = 0xFFFD;
            length = 1;
        }
        const int32_t units_before = run.text.length();
        run.text.append(static_cast<UChar32>(code_point));
        for (int32_t u = units_before; u < run.text.length(); ++u) run.byte_at.push_back(static_cast<uint32_t>(pos));
        pos += length;
    }
    run.byte_at.push_back(end);
    return run;
}

bool is_white_space(const Utf16Run& run, int32_t unit_begin, int32_t unit_end) {
    for (int32_t u = unit_begin; u < unit_end;) {
        UChar32 c;
        U16_NEXT(run.text.getBuffer(), u, unit_end, c);
        if (!u_isUWhiteSpace(c)) return false;
    }
    return true;
}

// ---- units within one run of plain text ----------------------------------------------------------

// A unit before whitespace is attached: [begin, end) bytes, its kind, and whether it is
// whitespace only (then it joins the following unit).
struct Piece {
    uint32_t begin = 0, end = 0;
    SegmentKind kind = SegmentKind::Word;
    bool space = false;
};

std::unique_ptr<icu::BreakIterator> make_break_iterator(Granularity granularity, const std::string& locale) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Locale where = locale.empty() ? icu::Locale::getRoot() : icu::Locale(locale.c_str());
    std::unique_ptr<icu::BreakIterator> iterator(granularity == Granularity::Sentence
                                                     ? icu::BreakIterator::createSentenceInstance(where, status)
                                                     : icu::BreakIterator::createWordInstance(where, status));
    if (U_FAILURE(status) || !iterator)
        fail("ICU ", granularity == Granularity::Sentence ? "sentence" : "word", " break iterator for locale '",
             locale, "' is unavailable (", u_errorName(status), ")");
    return iterator;
}

SegmentKind word_kind(int32_t rule_status) {
    if (rule_status >= UBRK_WORD_KANA_LIMIT) return SegmentKind::Ideographic;
    if (rule_status >= UBRK_WORD_LETTER_LIMIT) return SegmentKind::Kana;
    if (rule_status >= UBRK_WORD_NUMBER_LIMIT) return SegmentKind::Word;
    if (rule_status >= UBRK_WORD_NONE_LIMIT) return SegmentKind::Number;
    return SegmentKind::Symbol;
}

std::vector<Piece> word_pieces(icu::BreakIterator& words, const Utf16Run& run) {
    std::vector<Piece> pieces;
    words.setText(run.text);
    int32_t start = words.first();
    for (int32_t end = words.next(); end != icu::BreakIterator::DONE; start = end, end = words.next()) {
        Piece piece{run.byte_at[start], run.byte_at[end], word_kind(words.getRuleStatus()), false};
        if (piece.kind == SegmentKind::Symbol && is_white_space(run, start, end)) {
            piece.kind = SegmentKind::Space;
            piece.space = true;
        }
        pieces.push_back(piece);
    }
    return pieces;
}

// ICU ends a sentence after its trailing whitespace ("Hello. " | "How"); that whitespace is split
// off here so that it can join the next sentence like everywhere else.
std::vector<Piece> sentence_pieces(icu::BreakIterator& sentences, const Utf16Run& run) {
    std::vector<Piece> pieces;
    sentences.setText(run.text);
    int32_t start = sentences.first();
    for (int32_t end = sentences.next(); end != icu::BreakIterator::DONE; start = end, end = sentences.next()) {
        int32_t content_end = end;
        // Whitespace is all in the BMP, so stepping back by units never splits a surrogate pair
        // that counts (a low surrogate is not whitespace and stops the walk).
        while (content_end > start && u_isUWhiteSpace(run.text.charAt(content_end - 1))) --content_end;
        if (content_end > start)
            pieces.push_back({run.byte_at[start], run.byte_at[content_end], SegmentKind::Sentence, false});
        if (content_end < end) pieces.push_back({run.byte_at[content_end], run.byte_at[end], SegmentKind::Space, true});
    }
    return pieces;
}

bool is_ascii_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Paragraph gaps are stretches of ASCII whitespace with at least two line feeds (a blank line).
std::vector<Piece> paragraph_pieces(std::string_view text, uint32_t begin, uint32_t end) {
    std::vector<Piece> pieces;
    uint32_t content_begin = begin;
    for (uint32_t pos = begin; pos < end;) {
        if (!is_ascii_space(static_cast<unsigned char>(text[pos]))) {
            ++pos;
            continue;
        }
        uint32_t stretch_end = pos;
        int line_feeds = 0;
        while (stretch_end < end && is_ascii_space(static_cast<unsigned char>(text[stretch_end])))
            line_feeds += text[stretch_end++] == '\n';
        if (line_feeds >= 2) {
            if (pos > content_begin) pieces.push_back({content_begin, pos, SegmentKind::Paragraph, false});
            pieces.push_back({pos, stretch_end, SegmentKind::Space, true});
            content_begin = stretch_end;
        }
        pos = stretch_end;
    }
    if (end > content_begin) {
        const bool all_space = std::all_of(text.begin() + content_begin, text.begin() + end,
                                           [](char c) { return is_ascii_space(static_cast<unsigned char>(c)); });
        pieces.push_back({content_begin, end, all_space ? SegmentKind::Space : SegmentKind::Paragraph, all_space});
    }
    return pieces;
}

// Whitespace joins the following unit; trailing whitespace the last one; whitespace alone stays.
std::vector<Piece> attach_whitespace_forward(const std::vector<Piece>& pieces) {
    std::vector<Piece> units;
    bool pending = false;
    uint32_t pending_begin = 0;
    for (const Piece& piece : pieces) {
        if (piece.space) {
            if (!pending) pending_begin = piece.begin;
            pending = true;
            continue;
        }
        Piece unit = piece;
        if (pending) unit.begin = pending_begin;
        pending = false;
        units.push_back(unit);
    }
    if (pending) {
        const uint32_t end = pieces.back().end;
        if (units.empty()) units.push_back({pending_begin, end, SegmentKind::Space, true});
        else units.back().end = end;
    }
    return units;
}

// ---- runs: special tokens cut the text -----------------------------------------------------------

struct Run {
    uint32_t begin = 0, end = 0;
    int64_t special_token = -1;  // ≥ 0: this run is that token's own segment
};

void check_tokens(std::string_view text, std::span<const Token> tokens) {
    uint32_t previous_end = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const Token& t = tokens[i];
        if (t.begin > t.end || t.end > text.size())
            fail("token ", i, " has byte span [", t.begin, ", ", t.end, ") outside the ", text.size(), "-byte text");
        if (t.begin < previous_end)
            fail("token ", i, " starts at byte ", t.begin, ", inside the span of the token before it (which ends at ",
                 previous_end, "): token spans must be ordered and must not overlap");
        previous_end = t.end;
    }
}

bool own_segment(const Token& token) { return token.special || token.begin == token.end; }

std::vector<Run> runs_of(std::string_view text, std::span<const Token> tokens) {
    std::vector<Run> runs;
    uint32_t cursor = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const Token& t = tokens[i];
        if (!own_segment(t)) continue;
        if (t.begin > cursor) runs.push_back({cursor, t.begin, -1});
        runs.push_back({t.begin, t.end, static_cast<int64_t>(i)});
        cursor = std::max(cursor, t.end);
    }
    if (cursor < text.size()) runs.push_back({cursor, static_cast<uint32_t>(text.size()), -1});
    return runs;
}

// A segment being built, with the run it came from (units never merge across runs).
struct Draft {
    Segment segment;
    size_t run = 0;
};

SegmentKind merged_kind(SegmentKind kept, SegmentKind absorbed) {
    return kept == SegmentKind::Space ? absorbed : kept;
}

struct Segmenter {
    std::string_view text;
    Granularity granularity;
    const SegmentOptions& options;
    std::unique_ptr<icu::BreakIterator> iterator;

    std::vector<Piece> units_of_run(uint32_t begin, uint32_t end) {
        if (granularity == Granularity::Paragraph) return attach_whitespace_forward(paragraph_pieces(text, begin, end));
        if (!iterator) iterator = make_break_iterator(granularity == Granularity::Sentence ? Granularity::Sentence
                                                                                          : Granularity::Word,
                                                      options.locale);
        const Utf16Run run = to_utf16(text, begin, end);
        return attach_whitespace_forward(granularity == Granularity::Sentence ? sentence_pieces(*iterator, run)
                                                                              : word_pieces(*iterator, run));
    }

    std::vector<Draft> drafts(const std::vector<Run>& runs) {
        std::vector<Draft> out;
        for (size_t r = 0; r < runs.size(); ++r) {
            const Run& run = runs[r];
            if (run.special_token >= 0) {
                out.push_back({{run.begin, run.end, run.special_token, run.special_token + 1, SegmentKind::Special}, r});
                continue;
            }
            for (const Piece& unit : units_of_run(run.begin, run.end))
                out.push_back({{unit.begin, unit.end, 0, 0, unit.kind}, r});
        }
        return out;
    }
};

// Token ranges: each token goes to the draft containing its first byte (own-segment tokens to
// theirs). Both lists are in text order, so one forward walk assigns them all.
void assign_tokens(std::vector<Draft>& drafts, std::span<const Token> tokens) {
    std::vector<size_t> owner(tokens.size());
    size_t d = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const Token& t = tokens[i];
        auto found = [&] {
            const Segment& s = drafts[d].segment;
            return own_segment(t) ? s.kind == SegmentKind::Special && s.first == static_cast<int64_t>(i)
                                  : s.kind != SegmentKind::Special && s.begin <= t.begin && t.begin < s.end;
        };
        while (d < drafts.size() && !found()) ++d;
        // Cannot happen for checked tokens (runs are cut from them); a loud failure beats a lost token.
        if (d == drafts.size()) fail("token ", i, " at byte ", t.begin, " lies in no segment");
        owner[i] = d;
    }
    for (Draft& draft : drafts) draft.segment.first = draft.segment.last = 0;
    // Owners are non-decreasing, so the token ranges come out contiguous and in order.
    int64_t next_token = 0;
    size_t i = 0;
    for (size_t k = 0; k < drafts.size(); ++k) {
        drafts[k].segment.first = next_token;
        while (i < tokens.size() && owner[i] == k) ++i, ++next_token;
        drafts[k].segment.last = next_token;
    }
}

// Units that no token starts in join the unit before them in the same run (or the next one, for
// the run's first units); runs without any token are left as they are.
std::vector<Draft> merge_tokenless(const std::vector<Draft>& drafts) {
    std::vector<Draft> out;
    for (size_t k = 0; k < drafts.size();) {
        size_t run_end = k;
        int64_t run_tokens = 0;
        while (run_end < drafts.size() && drafts[run_end].run == drafts[k].run)
            run_tokens += drafts[run_end++].segment.token_count();
        if (run_tokens == 0 || drafts[k].segment.kind == SegmentKind::Special) {
            out.insert(out.end(), drafts.begin() + k, drafts.begin() + run_end);
            k = run_end;
            continue;
        }
        const size_t run_first_out = out.size();
        bool pending = false;
        Segment pending_segment;
        for (; k < run_end; ++k) {
            Segment segment = drafts[k].segment;
            if (segment.token_count() == 0) {
                if (out.size() > run_first_out) {
                    Segment& previous = out.back().segment;
                    previous.end = segment.end;
                    previous.kind = merged_kind(previous.kind, segment.kind);
                } else if (pending) {
                    pending_segment.end = segment.end;
                } else {
                    pending_segment = segment;
                    pending = true;
                }
                continue;
            }
            if (pending) {
                segment.begin = pending_segment.begin;
                segment.kind = merged_kind(pending_segment.kind, segment.kind);
                pending = false;
            }
            out.push_back({segment, drafts[k].run});
        }
    }
    return out;
}

// Groups of `words` consecutive units within each run.
std::vector<Draft> group_phrases(const std::vector<Draft>& words, int words_per_phrase) {
    if (words_per_phrase < 1) fail("a phrase needs at least one word (phrase_words is ", words_per_phrase, ")");
    std::vector<Draft> out;
    for (size_t k = 0; k < words.size();) {
        if (words[k].segment.kind == SegmentKind::Special) {
            out.push_back(words[k++]);
            continue;
        }
        Draft phrase = words[k];
        bool all_space = phrase.segment.kind == SegmentKind::Space;
        size_t taken = 1;
        for (++k; k < words.size() && taken < static_cast<size_t>(words_per_phrase) && words[k].run == phrase.run;
             ++k, ++taken) {
            phrase.segment.end = words[k].segment.end;
            phrase.segment.last = words[k].segment.last;
            all_space = all_space && words[k].segment.kind == SegmentKind::Space;
        }
        phrase.segment.kind = all_space ? SegmentKind::Space : SegmentKind::Phrase;
        out.push_back(phrase);
    }
    return out;
}

std::vector<Segment> token_segments(std::string_view text, std::span<const Token> tokens) {
    std::vector<Segment> segments;
    if (tokens.empty()) {
        if (!text.empty()) segments.push_back({0, static_cast<uint32_t>(text.size()), 0, 0, SegmentKind::Token});
        return segments;
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
        const uint32_t begin = i == 0 ? 0 : tokens[i].begin;
        const uint32_t end = i + 1 < tokens.size() ? tokens[i + 1].begin : static_cast<uint32_t>(text.size());
        const int64_t index = static_cast<int64_t>(i);
        segments.push_back({begin, end, index, index + 1, own_segment(tokens[i]) ? SegmentKind::Special : SegmentKind::Token});
    }
    return segments;
}

std::vector<Segment> segment_impl(std::string_view text, std::span<const Token> tokens, bool with_tokens,
                                  Granularity granularity, const SegmentOptions& options) {
    if (text.size() > std::numeric_limits<uint32_t>::max()) fail("text of ", text.size(), " bytes is too long to segment");
    if (granularity == Granularity::Token) {
        if (!with_tokens) fail("token granularity needs the text's tokens (use segment_tokens or segment_session)");
        check_tokens(text, tokens);
        return token_segments(text, tokens);
    }
    check_tokens(text, tokens);
    const std::vector<Run> runs = runs_of(text, tokens);
    Segmenter segmenter{text, granularity == Granularity::Phrase ? Granularity::Word : granularity, options, nullptr};
    std::vector<Draft> drafts = segmenter.drafts(runs);
    if (with_tokens) {
        assign_tokens(drafts, tokens);
        drafts = merge_tokenless(drafts);
    }
    if (granularity == Granularity::Phrase) drafts = group_phrases(drafts, options.phrase_words);
    std::vector<Segment> segments;
    segments.reserve(drafts.size());
    for (const Draft& draft : drafts) segments.push_back(draft.segment);
    return segments;
}

}  // namespace

std::vector<Segment> segment_text(std::string_view text, Granularity granularity, const SegmentOptions& options) {
    return segment_impl(text, {}, false, granularity, options);
}

std::vector<Segment> segment_tokens(std::string_view text, std::span<const Token> tokens, Granularity granularity,
                                    const SegmentOptions& options) {
    return segment_impl(text, tokens, true, granularity, options);
}

std::vector<Segment> segment_session(const Session& session, Granularity granularity, const SegmentOptions& options) {
    return segment_tokens(session.text, session.tokens, granularity, options);
}

void check_segmentation(std::span<const Segment> segments, size_t text_bytes, int64_t positions) {
    size_t next_byte = 0;
    int64_t next_token = 0;
    for (size_t k = 0; k < segments.size(); ++k) {
        const Segment& s = segments[k];
        if (s.begin != next_byte || s.end < s.begin)
            fail("segment ", k, " covers bytes [", s.begin, ", ", s.end, ") but the previous one ends at byte ", next_byte);
        if (s.first != next_token || s.last < s.first)
            fail("segment ", k, " covers tokens [", s.first, ", ", s.last, ") but the previous one ends at token ",
                 next_token);
        next_byte = s.end;
        next_token = s.last;
    }
    if (next_byte != text_bytes) fail("the segments cover ", next_byte, " of the text's ", text_bytes, " bytes");
    if (next_token != positions) fail("the segments cover ", next_token, " of the ", positions, " token positions");
}

std::vector<int64_t> segment_of_tokens(std::span<const Segment> segments, int64_t positions) {
    std::vector<int64_t> owner(static_cast<size_t>(positions), -1);
    int64_t next_token = 0;
    for (size_t k = 0; k < segments.size(); ++k) {
        if (segments[k].first != next_token || segments[k].last < segments[k].first || segments[k].last > positions)
            fail("segment ", k, " covers tokens [", segments[k].first, ", ", segments[k].last,
                 ") which do not continue the partition of ", positions, " positions at token ", next_token);
        for (int64_t t = segments[k].first; t < segments[k].last; ++t) owner[static_cast<size_t>(t)] = static_cast<int64_t>(k);
        next_token = segments[k].last;
    }
    if (next_token != positions) fail("the segments cover ", next_token, " of the ", positions, " token positions");
    return owner;
}

// ---- phrase windows ----------------------------------------------------------------------------

std::vector<PhraseWindow> phrase_windows(int64_t word_count, const PhraseWindowOptions& options) {
    if (options.size < 1) fail("a phrase window needs at least one word (size ", options.size, ")");
    if (options.stride < 1) fail("the phrase window stride must be at least 1 (stride ", options.stride, ")");
    std::vector<PhraseWindow> windows;
    if (word_count <= 0) return windows;
    auto window = [&](int64_t first, int64_t last) {
        PhraseWindow w{first, last, {}};
        const int64_t length = last - first;
        for (int64_t k = 0; k < length; ++k) {
            if (options.weighting == WindowWeighting::Uniform) {
                w.weights.push_back(1.0);
            } else {
                // Distance from the nearer end, 1-based, over the centre's: 1 at the centre.
                const double rise = static_cast<double>(std::min(k + 1, length - k));
                const double peak = static_cast<double>((length + 1) / 2);
                w.weights.push_back(rise / peak);
            }
        }
        windows.push_back(std::move(w));
    };
    const int64_t size = std::min<int64_t>(options.size, word_count);
    int64_t first = 0;
    for (; first + size <= word_count; first += options.stride) window(first, first + size);
    if (windows.back().last_word < word_count) window(word_count - size, word_count);
    return windows;
}

// ---- span masses -------------------------------------------------------------------------------

std::vector<HeadRef> heads_of_layer(const CaptureShape& shape, int layer) {
    if (layer < 0 || layer >= shape.n_layer) fail("layer ", layer, " is out of range (0..", shape.n_layer - 1, ")");
    std::vector<HeadRef> heads;
    for (int head = 0; head < shape.n_head; ++head) heads.push_back({layer, head});
    return heads;
}

std::vector<HeadRef> all_heads(const CaptureShape& shape) {
    std::vector<HeadRef> heads;
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head) heads.push_back({layer, head});
    return heads;
}

double SpanMatrix::normalised(int64_t row, int64_t col) const {
    const double tokens = query_tokens[static_cast<size_t>(row)];
    return tokens > 0 ? at(row, col) / tokens : 0.0;
}

std::vector<double> SpanMatrix::normalised_values() const {
    std::vector<double> values(mass.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) values[static_cast<size_t>(r * cols + c)] = normalised(r, c);
    return values;
}

std::vector<double> SpanMatrix::row(int64_t r) const {
    if (r < 0 || r >= rows) fail("row ", r, " is out of range (0..", rows - 1, ")");
    return std::vector<double>(mass.begin() + r * cols, mass.begin() + (r + 1) * cols);
}

std::vector<double> SpanMatrix::column(int64_t c) const {
    if (c < 0 || c >= cols) fail("column ", c, " is out of range (0..", cols - 1, ")");
    std::vector<double> values(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) values[static_cast<size_t>(r)] = at(r, c);
    return values;
}

namespace {

struct TokenRange {
    int64_t first = 0, last = 0;
    bool empty() const { return last <= first; }
};

const CaptureStore& capture_of(const Session& session) {
    if (!session.capture) fail("the session has no captured attention");
    return *session.capture;
}

void check_heads(const CaptureShape& shape, std::span<const HeadRef> heads) {
    if (heads.empty())
        fail("no heads given: pass the heads to aggregate explicitly (one head, a label group, heads_of_layer, all_heads)");
    for (const HeadRef& h : heads)
        if (h.layer < 0 || h.layer >= shape.n_layer || h.head < 0 || h.head >= shape.n_head)
            fail("head L", h.layer, "H", h.head, " is outside the model (", shape.n_layer, " layers × ", shape.n_head,
                 " heads)");
}

// The segments' token ranges clamped to the captured positions (what the source can answer).
std::vector<TokenRange> captured_ranges(const Session& session, std::span<const Segment> segments) {
    segment_of_tokens(segments, session.positions());  // validates the partition
    const int64_t captured = capture_of(session).positions();
    std::vector<TokenRange> ranges;
    ranges.reserve(segments.size());
    for (const Segment& s : segments)
        ranges.push_back({std::min(s.first, captured), std::min(s.last, captured)});
    return ranges;
}

int pool_threads(int threads) { return threads > 0 ? threads : ThreadPool::shared().size(); }

// The key segments a query range [q0, q1) can see are those that start before q1.
size_t visible_key_segments(const std::vector<TokenRange>& ranges, int64_t q1) {
    return static_cast<size_t>(std::partition_point(ranges.begin(), ranges.end(),
                                                    [&](const TokenRange& r) { return r.first < q1; }) -
                               ranges.begin());
}

// One row of the matrix for one head: out[b] += scale · Σ_{i∈[q0,q1), j∈b} P[i][j].
// Rectangles: one mass() per visible key segment. Rows: one row() per query, summed per segment.
// Both evaluate the same probabilities once; what differs is the number of calls (each a GEMM
// call, an allocation, a dispatch), so Auto takes the method with fewer calls (see the header).
void add_query_range(const CpuTileSource& source, const HeadRef& head, const std::vector<TokenRange>& ranges,
                     int64_t q0, int64_t q1, MassMethod method, double scale, double* out) {
    if (q1 <= q0) return;
    const size_t visible = visible_key_segments(ranges, q1);
    if (method == MassMethod::Auto) {
        const size_t calls = static_cast<size_t>(
            std::count_if(ranges.begin(), ranges.begin() + static_cast<std::ptrdiff_t>(visible),
                          [](const TokenRange& r) { return !r.empty(); }));
        method = calls <= 2 * static_cast<size_t>(q1 - q0) ? MassMethod::Rectangles : MassMethod::Rows;
    }
    if (method == MassMethod::Rectangles) {
        for (size_t b = 0; b < visible; ++b) {
            const TokenRange& keys = ranges[b];
            if (keys.empty()) continue;
            out[b] += scale * source.mass(head.layer, head.head, q0, q1, keys.first, std::min(keys.last, q1));
        }
        return;
    }
    for (int64_t query = q0; query < q1; ++query) {
        const std::vector<float> probs = source.row(head.layer, head.head, query);
        for (size_t b = 0; b < visible; ++b) {
            const TokenRange& keys = ranges[b];
            if (keys.empty() || keys.first > query) continue;
            double sum = 0;
            const int64_t key_end = std::min(keys.last, query + 1);
            for (int64_t key = keys.first; key < key_end; ++key) sum += probs[static_cast<size_t>(key)];
            out[b] += scale * sum;
        }
    }
}

// Runs add(item, head_index, out) for every (item, head) with one partial result per pair, then
// sums the partials in head order: the same numbers whatever the threads.
void parallel_over_items_and_heads(int64_t items, size_t heads, size_t width, int threads,
                                   const std::function<void(int64_t item, size_t head, double* out)>& add,
                                   std::vector<double>& result) {
    const size_t pairs = static_cast<size_t>(items) * heads;
    std::vector<double> partial(pairs * width, 0.0);
    for_each_parallel(static_cast<int64_t>(pairs), threads, [&](int64_t pair) {
        // Latest items first: their query ranges see the most keys, so the long ones start early.
        const int64_t item = items - 1 - pair / static_cast<int64_t>(heads);
        const size_t head = static_cast<size_t>(pair) % heads;
        add(item, head, &partial[(static_cast<size_t>(item) * heads + head) * width]);
    });
    result.assign(static_cast<size_t>(items) * width, 0.0);
    for (int64_t item = 0; item < items; ++item)
        for (size_t head = 0; head < heads; ++head)
            for (size_t k = 0; k < width; ++k)
                result[static_cast<size_t>(item) * width + k] +=
                    partial[(static_cast<size_t>(item) * heads + head) * width + k];
}

}  // namespace

SpanMatrix span_masses(const CpuTileSource& source, const Session& session, std::span<const Segment> segments,
                       std::span<const HeadRef> heads, const SpanMassOptions& options) {
    check_heads(capture_of(session).shape(), heads);
    const std::vector<TokenRange> ranges = captured_ranges(session, segments);
    const int64_t n = static_cast<int64_t>(segments.size());
    SpanMatrix matrix;
    matrix.rows = matrix.cols = n;
    for (const TokenRange& r : ranges) matrix.query_tokens.push_back(static_cast<double>(std::max<int64_t>(0, r.last - r.first)));
    const double scale = 1.0 / static_cast<double>(heads.size());
    const size_t width = static_cast<size_t>(n);
    // Many segments: one task per query segment, its heads summed in order inside it. Few
    // segments (paragraphs): one task per (segment, head) so every thread has work; the partials
    // are then summed in the same order, so both give the same numbers.
    if (n >= 4 * pool_threads(options.threads) || heads.size() == 1) {
        matrix.mass.assign(width * width, 0.0);
        for_each_parallel(n, options.threads, [&](int64_t item) {
            const int64_t a = n - 1 - item;  // latest (longest rows) first
            double* row = &matrix.mass[static_cast<size_t>(a) * width];
            for (const HeadRef& head : heads)
                add_query_range(source, head, ranges, ranges[a].first, ranges[a].last, options.method, scale, row);
        });
    } else {
        parallel_over_items_and_heads(n, heads.size(), width, options.threads,
                                      [&](int64_t a, size_t h, double* out) {
                                          add_query_range(source, heads[h], ranges, ranges[a].first, ranges[a].last,
                                                          options.method, scale, out);
                                      },
                                      matrix.mass);
    }
    return matrix;
}

std::vector<double> segment_attends_to(const CpuTileSource& source, const Session& session,
                                       std::span<const Segment> segments, std::span<const HeadRef> heads,
                                       int64_t segment, const SpanMassOptions& options) {
    check_heads(capture_of(session).shape(), heads);
    const std::vector<TokenRange> ranges = captured_ranges(session, segments);
    if (segment < 0 || segment >= static_cast<int64_t>(ranges.size()))
        fail("segment ", segment, " is out of range (", ranges.size(), " segments)");
    const double scale = 1.0 / static_cast<double>(heads.size());
    const TokenRange queries = ranges[static_cast<size_t>(segment)];
    std::vector<double> result;
    parallel_over_items_and_heads(1, heads.size(), ranges.size(), options.threads,
                                  [&](int64_t, size_t h, double* out) {
                                      add_query_range(source, heads[h], ranges, queries.first, queries.last,
                                                      options.method, scale, out);
                                  },
                                  result);
    return result;
}

std::vector<double> segment_attended_by(const CpuTileSource& source, const Session& session,
                                        std::span<const Segment> segments, std::span<const HeadRef> heads,
                                        int64_t segment, const SpanMassOptions& options) {
    check_heads(capture_of(session).shape(), heads);
    const std::vector<TokenRange> ranges = captured_ranges(session, segments);
    if (segment < 0 || segment >= static_cast<int64_t>(ranges.size()))
        fail("segment ", segment, " is out of range (", ranges.size(), " segments)");
    const double scale = 1.0 / static_cast<double>(heads.size());
    const TokenRange keys = ranges[static_cast<size_t>(segment)];
    const int64_t n = static_cast<int64_t>(ranges.size());
    std::vector<double> column(static_cast<size_t>(n), 0.0);
    if (keys.empty()) return column;
    // A column is one rectangle per later query segment: (its queries) × (s's keys up to them).
    for_each_parallel(n - segment, options.threads, [&](int64_t item) {
        const int64_t a = n - 1 - item;
        const TokenRange queries = ranges[static_cast<size_t>(a)];
        if (queries.empty() || queries.last <= keys.first) return;
        double sum = 0;
        for (const HeadRef& head : heads)
            sum += scale * source.mass(head.layer, head.head, queries.first, queries.last, keys.first,
                                       std::min(keys.last, queries.last));
        column[static_cast<size_t>(a)] = sum;
    });
    return column;
}

std::vector<double> token_attends_to(const CpuTileSource& source, const Session& session,
                                     std::span<const HeadRef> heads, int64_t query, int threads) {
    const CaptureStore& store = capture_of(session);
    check_heads(store.shape(), heads);
    if (query < 0 || query >= store.positions())
        fail("query ", query, " is out of range (0..", store.positions() - 1, " captured)");
    const double scale = 1.0 / static_cast<double>(heads.size());
    std::vector<double> result;
    parallel_over_items_and_heads(1, heads.size(), static_cast<size_t>(query + 1), threads,
                                  [&](int64_t, size_t h, double* out) {
                                      const std::vector<float> probs = source.row(heads[h].layer, heads[h].head, query);
                                      for (size_t k = 0; k < probs.size(); ++k) out[k] += scale * probs[k];
                                  },
                                  result);
    return result;
}

std::vector<double> token_attended_by(const CpuTileSource& source, const Session& session,
                                      std::span<const HeadRef> heads, int64_t key, int threads) {
    const CaptureStore& store = capture_of(session);
    check_heads(store.shape(), heads);
    const int64_t n = store.positions();
    if (key < 0 || key >= n) fail("key ", key, " is out of range (0..", n - 1, " captured)");
    const double scale = 1.0 / static_cast<double>(heads.size());
    std::vector<double> column(static_cast<size_t>(n), 0.0);
    // One cell per (query, head): a 1×1 rectangle is a head_dim dot product, cheaper than a row.
    constexpr int64_t kQueriesPerTask = 64;
    const int64_t tasks = (n - key + kQueriesPerTask - 1) / kQueriesPerTask;
    for_each_parallel(tasks, threads, [&](int64_t task) {
        const int64_t end = std::min(n, key + (task + 1) * kQueriesPerTask);
        for (int64_t query = key + task * kQueriesPerTask; query < end; ++query) {
            double sum = 0;
            for (const HeadRef& head : heads) sum += scale * source.mass(head.layer, head.head, query, query + 1, key, key + 1);
            column[static_cast<size_t>(query)] = sum;
        }
    });
    return column;
}

SpanMatrix window_matrix(const SpanMatrix& words, std::span<const PhraseWindow> windows) {
    const int64_t n = static_cast<int64_t>(windows.size());
    for (const PhraseWindow& w : windows)
        if (w.first_word < 0 || w.last_word > words.rows || w.last_word < w.first_word ||
            static_cast<int64_t>(w.weights.size()) != w.last_word - w.first_word)
            fail("phrase window [", w.first_word, ", ", w.last_word, ") with ", w.weights.size(),
                 " weights does not fit a matrix of ", words.rows, " words");
    SpanMatrix out;
    out.rows = out.cols = n;
    out.mass.assign(static_cast<size_t>(n * n), 0.0);
    out.query_tokens.assign(static_cast<size_t>(n), 0.0);
    // (W · M) first: window rows over word columns; then · Wᵀ.
    std::vector<double> rows_by_word(static_cast<size_t>(n * words.cols), 0.0);
    for (int64_t x = 0; x < n; ++x) {
        const PhraseWindow& w = windows[static_cast<size_t>(x)];
        for (int64_t a = w.first_word; a < w.last_word; ++a) {
            const double weight = w.weights[static_cast<size_t>(a - w.first_word)];
            out.query_tokens[static_cast<size_t>(x)] += weight * words.query_tokens[static_cast<size_t>(a)];
            for (int64_t b = 0; b < words.cols; ++b) rows_by_word[static_cast<size_t>(x * words.cols + b)] += weight * words.at(a, b);
        }
    }
    for (int64_t x = 0; x < n; ++x)
        for (int64_t y = 0; y < n; ++y) {
            const PhraseWindow& w = windows[static_cast<size_t>(y)];
            double sum = 0;
            for (int64_t b = w.first_word; b < w.last_word; ++b)
                sum += w.weights[static_cast<size_t>(b - w.first_word)] * rows_by_word[static_cast<size_t>(x * words.cols + b)];
            out.mass[static_cast<size_t>(x * n + y)] = sum;
        }
    return out;
}

// ---- sentence graph ------------------------------------------------------------------------------

namespace {

// igraph 0.10 as Debian builds it is not thread-safe (IGRAPH_THREAD_SAFE 0): its RNG and error
// handlers are globals. Every use holds this lock, seeds the RNG, and swaps igraph's default
// error handler (which aborts the process) for one that returns the error code to us.
std::mutex& igraph_lock() {
    static std::mutex lock;
    return lock;
}

class IgraphSession {
public:
    explicit IgraphSession(uint64_t seed) : hold_(igraph_lock()) {
        previous_error_ = igraph_set_error_handler(igraph_error_handler_ignore);
        previous_warning_ = igraph_set_warning_handler(igraph_warning_handler_ignore);
        igraph_rng_seed(igraph_rng_default(), static_cast<igraph_uint_t>(seed));
    }
    ~IgraphSession() {
        igraph_set_error_handler(previous_error_);
        igraph_set_warning_handler(previous_warning_);
    }
    IgraphSession(const IgraphSession&) = delete;
    IgraphSession& operator=(const IgraphSession&) = delete;

private:
    std::lock_guard<std::mutex> hold_;
    igraph_error_handler_t* previous_error_ = nullptr;
    igraph_warning_handler_t* previous_warning_ = nullptr;
};

void check_igraph(igraph_error_t code, const char* what) {
    if (code != IGRAPH_SUCCESS) fail("igraph ", what, " failed: ", igraph_strerror(code));
}

// Owners of igraph objects, destroyed on every path.
struct IgraphVector {
    igraph_vector_t v;
    explicit IgraphVector(igraph_integer_t size = 0) { check_igraph(igraph_vector_init(&v, size), "vector"); }
    ~IgraphVector() { igraph_vector_destroy(&v); }
};
struct IgraphIntVector {
    igraph_vector_int_t v;
    explicit IgraphIntVector(igraph_integer_t size = 0) { check_igraph(igraph_vector_int_init(&v, size), "vector"); }
    ~IgraphIntVector() { igraph_vector_int_destroy(&v); }
};
struct IgraphMatrix {
    igraph_matrix_t m;
    IgraphMatrix() { check_igraph(igraph_matrix_init(&m, 0, 0), "matrix"); }
    ~IgraphMatrix() { igraph_matrix_destroy(&m); }
};
struct IgraphGraph {
    igraph_t g;
    IgraphGraph(const igraph_vector_int_t& edges, igraph_integer_t vertices) {
        check_igraph(igraph_create(&g, &edges, vertices, IGRAPH_UNDIRECTED), "graph creation");
    }
    ~IgraphGraph() { igraph_destroy(&g); }
};

void scale_layout_into_unit_square(std::vector<double>& x, std::vector<double>& y) {
    if (x.empty()) return;
    const auto [min_x, max_x] = std::minmax_element(x.begin(), x.end());
    const auto [min_y, max_y] = std::minmax_element(y.begin(), y.end());
    const double low_x = *min_x, low_y = *min_y;
    const double extent = std::max(*max_x - low_x, *max_y - low_y);
    // One scale for both axes keeps the drawing's proportions; a single point goes to the centre.
    const double pad_x = extent > 0 ? (extent - (*max_x - low_x)) / 2 : 0;
    const double pad_y = extent > 0 ? (extent - (*max_y - low_y)) / 2 : 0;
    for (size_t i = 0; i < x.size(); ++i) {
        x[i] = extent > 0 ? (x[i] - low_x + pad_x) / extent : 0.5;
        y[i] = extent > 0 ? (y[i] - low_y + pad_y) / extent : 0.5;
    }
}

}  // namespace

SentenceGraph sentence_graph(const SpanMatrix& matrix, std::span<const Segment> segments,
                             const SentenceGraphOptions& options) {
    if (matrix.rows != static_cast<int64_t>(segments.size()) || matrix.cols != matrix.rows)
        fail("the matrix is ", matrix.rows, "×", matrix.cols, " but there are ", segments.size(), " segments");
    SentenceGraph graph;
    std::vector<int64_t> node_of(segments.size(), -1);
    for (size_t s = 0; s < segments.size(); ++s) {
        const SegmentKind kind = segments[s].kind;
        if ((options.skip_special && kind == SegmentKind::Special) || (options.skip_space && kind == SegmentKind::Space))
            continue;
        if (matrix.query_tokens[s] <= 0) continue;  // no captured token: nothing to say about it
        node_of[s] = static_cast<int64_t>(graph.nodes.size());
        graph.nodes.push_back(static_cast<int64_t>(s));
    }
    const int64_t n = static_cast<int64_t>(graph.nodes.size());
    auto weight_of = [&](int64_t from, int64_t to) {
        const int64_t a = graph.nodes[static_cast<size_t>(from)], b = graph.nodes[static_cast<size_t>(to)];
        return options.normalised ? matrix.normalised(a, b) : matrix.at(a, b);
    };
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
            if (i == j) continue;
            const double w = weight_of(i, j);
            if (w > options.min_weight) graph.edges.push_back({i, j, w});
        }
    graph.community.assign(static_cast<size_t>(n), 0);
    graph.x.assign(static_cast<size_t>(n), 0.5);
    graph.y.assign(static_cast<size_t>(n), 0.5);
    if (n == 0) return graph;

    // Symmetrised, undirected: one edge per unordered pair with w(a, b) + w(b, a).
    std::vector<std::pair<int64_t, int64_t>> pairs;
    std::vector<double> pair_weights;
    {
        std::vector<double> symmetric(static_cast<size_t>(n * n), 0.0);
        for (const GraphEdge& e : graph.edges) {
            const int64_t low = std::min(e.from, e.to), high = std::max(e.from, e.to);
            symmetric[static_cast<size_t>(low * n + high)] += e.weight;
        }
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i + 1; j < n; ++j)
                if (symmetric[static_cast<size_t>(i * n + j)] > 0) {
                    pairs.emplace_back(i, j);
                    pair_weights.push_back(symmetric[static_cast<size_t>(i * n + j)]);
                }
    }

    IgraphSession session(options.seed);
    IgraphIntVector edge_list(static_cast<igraph_integer_t>(2 * pairs.size()));
    IgraphVector weights(static_cast<igraph_integer_t>(pairs.size()));
    for (size_t e = 0; e < pairs.size(); ++e) {
        VECTOR(edge_list.v)[2 * e] = pairs[e].first;
        VECTOR(edge_list.v)[2 * e + 1] = pairs[e].second;
        VECTOR(weights.v)[e] = pair_weights[e];
    }
    IgraphGraph g(edge_list.v, static_cast<igraph_integer_t>(n));
    IgraphIntVector membership;
    if (pairs.empty()) {
        // No attention between the nodes at all: every node is its own community.
        check_igraph(igraph_vector_int_resize(&membership.v, n), "membership");
        for (int64_t i = 0; i < n; ++i) VECTOR(membership.v)[i] = i;
    } else if (options.method == CommunityMethod::Louvain) {
        check_igraph(igraph_community_multilevel(&g.g, &weights.v, options.resolution, &membership.v, nullptr, nullptr),
                     "Louvain community detection (igraph_community_multilevel)");
    } else {
        // Leiden optimises modularity when node weights are the strengths and the resolution is
        // divided by twice the total edge weight (igraph's documented mapping).
        IgraphVector strength;
        check_igraph(igraph_strength(&g.g, &strength.v, igraph_vss_all(), IGRAPH_ALL, false, &weights.v), "strength");
        double total = 0;
        for (double w : pair_weights) total += w;
        igraph_integer_t clusters = 0;
        igraph_real_t quality = 0;
        check_igraph(igraph_community_leiden(&g.g, &weights.v, &strength.v, options.resolution / (2 * total), 0.01,
                                             false, -1, &membership.v, &clusters, &quality),
                     "Leiden community detection (igraph_community_leiden)");
    }
    if (!pairs.empty()) {
        igraph_real_t modularity = 0;
        check_igraph(igraph_modularity(&g.g, &membership.v, &weights.v, options.resolution, false, &modularity),
                     "modularity");
        graph.modularity = std::isfinite(modularity) ? modularity : 0.0;
    }
    // Renumber in order of first appearance, so the numbering does not depend on igraph's.
    std::vector<int64_t> renumbered;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t raw = VECTOR(membership.v)[i];
        if (raw >= static_cast<int64_t>(renumbered.size())) renumbered.resize(static_cast<size_t>(raw + 1), -1);
        if (renumbered[static_cast<size_t>(raw)] < 0) renumbered[static_cast<size_t>(raw)] = graph.communities++;
        graph.community[static_cast<size_t>(i)] = renumbered[static_cast<size_t>(raw)];
    }

    IgraphMatrix coordinates;
    if (options.layout == GraphLayout::Circle || pairs.empty()) {
        check_igraph(igraph_layout_circle(&g.g, &coordinates.m, igraph_vss_all()), "circle layout");
    } else {
        check_igraph(igraph_layout_fruchterman_reingold(&g.g, &coordinates.m, false, options.layout_iterations,
                                                        std::sqrt(static_cast<double>(n)), IGRAPH_LAYOUT_AUTOGRID,
                                                        &weights.v, nullptr, nullptr, nullptr, nullptr),
                     "Fruchterman-Reingold layout");
    }
    for (int64_t i = 0; i < n; ++i) {
        graph.x[static_cast<size_t>(i)] = MATRIX(coordinates.m, i, 0);
        graph.y[static_cast<size_t>(i)] = MATRIX(coordinates.m, i, 1);
    }
    scale_layout_into_unit_square(graph.x, graph.y);
    return graph;
}

// ---- exports -------------------------------------------------------------------------------------

namespace {

std::string csv_field(std::string_view value) {
    if (value.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(value);
    std::string quoted = "\"";
    for (char c : value) {
        if (c == '"') quoted += '"';
        quoted += c;
    }
    return quoted + '"';
}

std::string_view segment_bytes(std::string_view text, const Segment& s) {
    if (s.end < s.begin || s.end > text.size())
        fail("segment bytes [", s.begin, ", ", s.end, ") lie outside the ", text.size(), "-byte text");
    return text.substr(s.begin, s.end - s.begin);
}

void append_number(std::string& out, double value) {
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
    out.append(buffer, result.ptr);
}

void check_matrix(int64_t rows, int64_t cols, std::span<const double> values) {
    if (rows < 0 || cols < 0 || static_cast<int64_t>(values.size()) != rows * cols)
        fail("a ", rows, "×", cols, " matrix needs ", rows * cols, " values, got ", values.size());
}

}  // namespace

namespace {
std::string segment_display(std::string_view text, const Segment& s, const std::vector<PiiSpan>& masked) {
    const std::string_view bytes = segment_bytes(text, s);  // checks the offsets
    if (masked.empty()) return std::string(bytes);
    return mask_pii_range(text, s.begin, s.end, masked);
}
}  // namespace

std::string segments_csv(std::string_view text, std::span<const Segment> segments, const std::vector<PiiSpan>& masked) {
    std::string out = "index,kind,begin,end,first,last,text\n";
    for (size_t k = 0; k < segments.size(); ++k) {
        const Segment& s = segments[k];
        out += cat(k, ',', segment_kind_name(s.kind), ',', s.begin, ',', s.end, ',', s.first, ',', s.last, ',');
        out += csv_field(segment_display(text, s, masked));
        out += '\n';
    }
    return out;
}

std::string segments_json(std::string_view text, std::span<const Segment> segments, Granularity granularity,
                          const std::vector<PiiSpan>& masked) {
    nlohmann::json rows = nlohmann::json::array();
    for (size_t k = 0; k < segments.size(); ++k) {
        const Segment& s = segments[k];
        rows.push_back({{"index", k},
                        {"kind", segment_kind_name(s.kind)},
                        {"begin", s.begin},
                        {"end", s.end},
                        {"first", s.first},
                        {"last", s.last},
                        {"text", segment_display(text, s, masked)}});
    }
    const nlohmann::json document = {
        {"granularity", granularity_name(granularity)}, {"text_bytes", text.size()}, {"segments", std::move(rows)}};
    // Invalid UTF-8 in a segment's text becomes U+FFFD (JSON must be UTF-8); offsets stay exact.
    return document.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void write_segments_csv(const std::string& path, std::string_view text, std::span<const Segment> segments,
                        const std::vector<PiiSpan>& masked) {
    write_file_atomically(path, segments_csv(text, segments, masked));
}

void write_segments_json(const std::string& path, std::string_view text, std::span<const Segment> segments,
                         Granularity granularity, const std::vector<PiiSpan>& masked) {
    write_file_atomically(path, segments_json(text, segments, granularity, masked));
}

std::string matrix_csv(int64_t rows, int64_t cols, std::span<const double> values) {
    check_matrix(rows, cols, values);
    std::string out;
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
            if (c) out += ',';
            append_number(out, values[static_cast<size_t>(r * cols + c)]);
        }
        out += '\n';
    }
    return out;
}

std::string matrix_json(int64_t rows, int64_t cols, std::span<const double> values) {
    check_matrix(rows, cols, values);
    std::string out = cat("{\"rows\": ", rows, ", \"cols\": ", cols, ", \"values\": [");
    for (int64_t r = 0; r < rows; ++r) {
        out += r ? ",\n  [" : "\n  [";
        for (int64_t c = 0; c < cols; ++c) {
            if (c) out += ", ";
            const double value = values[static_cast<size_t>(r * cols + c)];
            if (!std::isfinite(value)) fail("matrix value at (", r, ", ", c, ") is not finite: JSON cannot hold it");
            append_number(out, value);
        }
        out += ']';
    }
    out += rows ? "\n]}\n" : "]}\n";
    return out;
}

// NPY format 1.0 (numpy.lib.format): magic "\x93NUMPY", version 1.0, a little-endian uint16
// header length, then a Python dict literal padded with spaces and ended by '\n' so that the data
// starts at a multiple of 64 bytes, then the float32 values in C order.
std::string matrix_npy(int64_t rows, int64_t cols, std::span<const double> values) {
    static_assert(std::endian::native == std::endian::little, "NPY '<f4' is written from little-endian floats");
    check_matrix(rows, cols, values);
    std::string header = cat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows, ", ", cols, "), }");
    constexpr size_t kPreamble = 10;  // magic (6) + version (2) + header length (2)
    const size_t unpadded = kPreamble + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    if (header.size() > 0xFFFF) fail("NPY header of ", header.size(), " bytes does not fit format 1.0");
    std::string out("\x93NUMPY\x01\x00", 8);
    out += static_cast<char>(header.size() & 0xFF);
    out += static_cast<char>(header.size() >> 8);
    out += header;
    const size_t data_at = out.size();
    out.resize(data_at + values.size() * sizeof(float));
    for (size_t k = 0; k < values.size(); ++k) {
        const float value = static_cast<float>(values[k]);
        std::memcpy(out.data() + data_at + k * sizeof(float), &value, sizeof value);
    }
    return out;
}

void write_matrix_csv(const std::string& path, int64_t rows, int64_t cols, std::span<const double> values) {
    write_file_atomically(path, matrix_csv(rows, cols, values));
}

void write_matrix_json(const std::string& path, int64_t rows, int64_t cols, std::span<const double> values) {
    write_file_atomically(path, matrix_json(rows, cols, values));
}

void write_matrix_npy(const std::string& path, int64_t rows, int64_t cols, std::span<const double> values) {
    write_file_atomically(path, matrix_npy(rows, cols, values));
}

}  // namespace attn
