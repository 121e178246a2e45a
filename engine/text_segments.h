#pragma once
// Text units of a session (issue 6): its tokens grouped into words, phrases, sentences and
// paragraphs; the exact attention mass between those units; the sentence graph and its
// communities; exports of segment tables and matrices.
//
// ---- Segmentation rules ------------------------------------------------------------------
//
// A segmentation is a list of segments in text order. Their byte ranges partition the text
// (concatenated they reproduce it exactly) and, with tokens, their token ranges partition the
// positions [0, tokens.size()): every token in exactly one segment. A range may be empty.
//
// Runs. Special tokens (token.special with bytes, e.g. "<|im_start|>") and tokens that stand for
// no bytes (an added BOS, SentencePiece's dummy-prefix "▁") are segments of their own (kind
// Special) at every granularity, and they cut the text into runs that are segmented
// independently: a sentence never spans a chat turn, and the attention sink (BOS) is never
// lumped into the first word, sentence or paragraph. A no-byte token's segment is the empty
// byte range at the offset where it was inserted.
//
// Units (within a run):
//   Token      one segment per token; bytes [token.begin, next token's begin) so bytes that no
//              token covers (none, for tokenizer output) join the token before them.
//   Word       ICU's word break iterator (UBRK_WORD; its dictionary splits Chinese and Japanese
//              into words, e.g. 北京|学习|中文). Punctuation, symbols and emoji are segments of
//              their own (kind Symbol); ICU keeps an emoji sequence (ZWJ, skin tone) together.
//   Sentence   ICU's sentence break iterator.
//   Paragraph  blocks separated by blank lines (a stretch of ASCII whitespace holding at least
//              two line feeds, so "\r\n\r\n" and "\n  \n" count).
//   Phrase     consecutive groups of SegmentOptions::phrase_words word segments (a partition,
//              usable wherever segments are). Overlapping, weighted windows: phrase_windows().
// Whitespace between two units belongs to the FOLLOWING unit (" world", " How are you?",
// "\n\nSecond paragraph"), because byte-level BPE and SentencePiece tokens carry their leading
// space ("Ġworld", "▁world"): attached this way, a token's first byte lies in the unit it reads
// as. Whitespace at the end of a run joins the run's last unit; a run of whitespace only is one
// segment of kind Space.
//
// Tokens (segment_tokens / segment_session): a token belongs to the segment that contains its
// first byte. So a token that straddles a boundary (a Chinese BPE token "在北" across 在|北京)
// belongs to the unit it starts in; a partial UTF-8 token (one byte of a multi-byte character)
// belongs to the unit of that character, as its first byte lies inside it. A unit that no token
// starts in (its bytes were all taken by a straddling token that started earlier) is merged into
// the unit before it in the same run (or after it, for the first unit of the run), so every
// segment of a run that has tokens carries at least one — attention is never attributed to an
// empty unit. segment_text (no tokens) does not merge.
//
// Invalid UTF-8 never fails: for ICU each ill-formed byte is read as one U+FFFD, and ICU's
// boundaries (UTF-16 indices) are mapped back to exact byte offsets, so the segments still
// partition the original bytes.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/pii.h"
#include "engine/session.h"
#include "engine/tile_source.h"
#include "engine/tokenizer.h"

namespace attn {

enum class Granularity { Token, Word, Phrase, Sentence, Paragraph };
const char* granularity_name(Granularity granularity);  // "token", "word", ...
Granularity parse_granularity(std::string_view name);   // attn::Error listing the names

enum class SegmentKind {
    Token,        // one token (Granularity::Token)
    Word,         // letters (ICU UBRK_WORD_LETTER)
    Number,       // digits (UBRK_WORD_NUMBER)
    Kana,         // Japanese kana (UBRK_WORD_KANA)
    Ideographic,  // Han ideographs (UBRK_WORD_IDEO), e.g. 北京
    Symbol,       // punctuation, symbols, emoji, U+FFFD for invalid bytes
    Space,        // a run of whitespace only
    Special,      // a special token, or a token that stands for no bytes (an added BOS)
    Phrase,
    Sentence,
    Paragraph,
};
const char* segment_kind_name(SegmentKind kind);  // "word", "ideographic", ...

struct Segment {
    uint32_t begin = 0, end = 0;  // bytes [begin, end) of the text
    int64_t first = 0, last = 0;  // tokens [first, last)
    SegmentKind kind = SegmentKind::Word;

    uint32_t byte_count() const { return end - begin; }
    int64_t token_count() const { return last - first; }
};

struct SegmentOptions {
    // ICU locale of the break rules ("" = root). Chinese and Japanese dictionary segmentation
    // works under any locale: ICU picks the dictionary by script.
    std::string locale;
    int phrase_words = 4;  // Granularity::Phrase: word segments per phrase
};

// Text only: every token range is [0, 0). Granularity::Token fails (there are no tokens).
std::vector<Segment> segment_text(std::string_view text, Granularity granularity, const SegmentOptions& options = {});
// With the tokens of `text` (ordered, non-overlapping spans inside the text, as Tokenizer::encode
// and Session give them; anything else → attn::Error naming the token).
std::vector<Segment> segment_tokens(std::string_view text, std::span<const Token> tokens, Granularity granularity,
                                    const SegmentOptions& options = {});
std::vector<Segment> segment_session(const Session& session, Granularity granularity,
                                     const SegmentOptions& options = {});

// Fails (attn::Error naming the first offending segment) unless the byte ranges partition
// [0, text_bytes) and the token ranges partition [0, positions), both in order.
void check_segmentation(std::span<const Segment> segments, size_t text_bytes, int64_t positions);
// segment index of every position 0..positions-1 (the segments must partition them).
std::vector<int64_t> segment_of_tokens(std::span<const Segment> segments, int64_t positions);

// ---- Phrase windows -------------------------------------------------------------------------
//
// Sliding windows over word segments: window x covers words [first_word, last_word) with one
// weight per word. Weights peak at 1: Uniform gives every word 1 (the window's masses are then the
// exact masses of the phrase's token rectangle); Triangular rises linearly to 1 at the centre and
// falls off towards both ends (words near the centre count more), e.g. size 5 → 1/3 2/3 1 2/3 1/3.
// Windows start every `stride` words; a last window ending at the last word is added when the
// stride skips it, so every word is covered. Fewer words than `size`: one window of all of them.
enum class WindowWeighting { Uniform, Triangular };
struct PhraseWindowOptions {
    int size = 5;
    int stride = 1;
    WindowWeighting weighting = WindowWeighting::Uniform;
};
struct PhraseWindow {
    int64_t first_word = 0, last_word = 0;
    std::vector<double> weights;  // [last_word - first_word]
};
std::vector<PhraseWindow> phrase_windows(int64_t word_count, const PhraseWindowOptions& options = {});

// ---- Exact span masses ----------------------------------------------------------------------

struct HeadRef {
    int layer = 0, head = 0;
    bool operator==(const HeadRef&) const = default;
};
// Explicit head sets for callers (nothing here ever defaults to all heads).
std::vector<HeadRef> heads_of_layer(const CaptureShape& shape, int layer);
std::vector<HeadRef> all_heads(const CaptureShape& shape);

// A segment × segment (or window × window) attention matrix.
//   mass[a][b]       = mean over the heads of Σ_{queries in a, keys in b} P   (exact)
//   normalised(a, b) = mass[a][b] / query_tokens[a]: the share of a's attention that goes to b.
// Each query row of P sums to 1 over its visible keys, so over all b a normalised row sums to 1
// (0 for a segment with no captured query token). Rows are queries (attending), columns keys.
struct SpanMatrix {
    int64_t rows = 0, cols = 0;
    std::vector<double> mass;          // [row * cols + col]
    std::vector<double> query_tokens;  // per row: captured query tokens (window: Σ weight × tokens)

    double at(int64_t row, int64_t col) const { return mass[static_cast<size_t>(row * cols + col)]; }
    double normalised(int64_t row, int64_t col) const;
    std::vector<double> normalised_values() const;  // the whole normalised matrix, row-major
    // Hover highlighting: what segment s attends to (its row) and what attends to s (its column).
    std::vector<double> row(int64_t row) const;
    std::vector<double> column(int64_t col) const;
};

// How the exact probabilities are summed (the same P either way):
//   Rectangles  CpuTileSource::mass over each (query segment × key segment) token rectangle;
//   Rows        CpuTileSource::row for each query token, summed over each key segment's keys;
//   Auto        per query segment, whichever makes fewer calls: rectangles when the key segments
//               up to it are no more than twice its tokens (paragraphs, the first sentences), rows
//               otherwise (words, where a rectangle is one or two cells and the per-call overhead
//               would dominate: 150–165 ms per head with rectangles against 26–36 ms with rows for
//               the 1,526 words of a 2,006-token prompt on 2 cores; for sentences and paragraphs
//               the two were within the machine's noise).
enum class MassMethod { Auto, Rectangles, Rows };
struct SpanMassOptions {
    int threads = 0;  // as in for_each_parallel: 0 the shared pool, 1 the calling thread
    MassMethod method = MassMethod::Auto;
};

// Segments must partition the session's positions (segment_session does). Positions not yet
// captured (a live session mid-step) count as no queries and no keys. Fails on an empty head list
// or a head out of range. Duplicate heads count once per occurrence.
SpanMatrix span_masses(const CpuTileSource& source, const Session& session, std::span<const Segment> segments,
                       std::span<const HeadRef> heads, const SpanMassOptions& options = {});
// One row / one column of span_masses, computed alone (cheap enough for every hover): mass from
// segment s's queries to each key segment, and from each query segment to s's keys.
std::vector<double> segment_attends_to(const CpuTileSource& source, const Session& session,
                                       std::span<const Segment> segments, std::span<const HeadRef> heads,
                                       int64_t segment, const SpanMassOptions& options = {});
std::vector<double> segment_attended_by(const CpuTileSource& source, const Session& session,
                                        std::span<const Segment> segments, std::span<const HeadRef> heads,
                                        int64_t segment, const SpanMassOptions& options = {});
// Token level: the mean over heads of query q's row (size q + 1), and of key k's column (size
// positions; entry i is P[i][k], 0 for i < k).
std::vector<double> token_attends_to(const CpuTileSource& source, const Session& session,
                                     std::span<const HeadRef> heads, int64_t query, int threads = 0);
std::vector<double> token_attended_by(const CpuTileSource& source, const Session& session,
                                      std::span<const HeadRef> heads, int64_t key, int threads = 0);

// The window matrix of a word matrix: mass[x][y] = Σ_{a∈x, b∈y} w_x(a) w_y(b) word.mass[a][b] and
// query_tokens[x] = Σ_{a∈x} w_x(a) word.query_tokens[a]. With Uniform weights a window's row is the
// exact mass of its phrase; windows overlap, so its normalised row sums to more than 1 in general.
SpanMatrix window_matrix(const SpanMatrix& words, std::span<const PhraseWindow> windows);

// ---- Sentence graph ---------------------------------------------------------------------------
//
// Directed graph: a node per sentence (per segment, whatever the granularity), an edge from the
// attending (query) sentence to the attended (key) one weighted by its attention. Communities come
// from igraph (Louvain: igraph_community_multilevel, or Leiden with the modularity objective) on
// the symmetrised weights w(a, b) + w(b, a) without self-loops; igraph's RNG is seeded, so the
// same input gives the same communities and layout.
enum class CommunityMethod { Louvain, Leiden };
enum class GraphLayout { ForceDirected, Circle };
struct SentenceGraphOptions {
    bool normalised = true;     // edge weight: share of the query sentence's attention (else raw mass)
    bool skip_special = true;   // leave out Special segments (BOS, chat markers: attention sinks)
    bool skip_space = true;     // leave out whitespace-only segments
    double min_weight = 0;      // edges with weight <= min_weight are dropped
    CommunityMethod method = CommunityMethod::Louvain;
    double resolution = 1.0;
    uint64_t seed = 1;
    GraphLayout layout = GraphLayout::ForceDirected;  // Fruchterman–Reingold, weighted
    int layout_iterations = 500;
};
struct GraphEdge {
    int64_t from = 0, to = 0;  // node indices: from attends to `to`
    double weight = 0;
};
struct SentenceGraph {
    std::vector<int64_t> nodes;      // segment index of each node
    std::vector<GraphEdge> edges;    // directed, no self-loops, ordered by (from, to)
    std::vector<int64_t> community;  // per node; communities numbered in order of their first node
    int64_t communities = 0;
    double modularity = 0;           // of `community` on the symmetrised graph, at `resolution`
    std::vector<double> x, y;        // layout per node, scaled into [0, 1]
};
// `matrix` must be span_masses over `segments` (rows == cols == segments.size()).
SentenceGraph sentence_graph(const SpanMatrix& matrix, std::span<const Segment> segments,
                             const SentenceGraphOptions& options = {});

// ---- Exports (written atomically: engine/atomic_file.h) ----------------------------------------
//
// Segment table columns: index, kind, begin, end (bytes), first, last (tokens), text.
// CSV (RFC 4180: fields with commas, quotes or line breaks are quoted) keeps the text's bytes
// as they are, invalid UTF-8 included. JSON {"granularity", "text_bytes", "segments": [{...}]}
// must be UTF-8: there an invalid byte becomes U+FFFD — the byte offsets stay exact.
// `masked` (find_pii of the text, engine/pii.h): each segment's text shows the personal data it
// overlaps as "●●●● [TYPE]" (mask_pii_range); the offsets stay those of the original text.
std::string segments_csv(std::string_view text, std::span<const Segment> segments, const std::vector<PiiSpan>& masked = {});
std::string segments_json(std::string_view text, std::span<const Segment> segments, Granularity granularity,
                          const std::vector<PiiSpan>& masked = {});
void write_segments_csv(const std::string& path, std::string_view text, std::span<const Segment> segments,
                        const std::vector<PiiSpan>& masked = {});
void write_segments_json(const std::string& path, std::string_view text, std::span<const Segment> segments,
                         Granularity granularity, const std::vector<PiiSpan>& masked = {});

// Matrices, row-major: CSV (one line per row, shortest round-trip decimals), JSON
// {"rows", "cols", "values": [[...], ...]}, NPY (format 1.0, '<f4', C order, header padded to 64).
std::string matrix_csv(int64_t rows, int64_t cols, std::span<const double> values);
std::string matrix_json(int64_t rows, int64_t cols, std::span<const double> values);
std::string matrix_npy(int64_t rows, int64_t cols, std::span<const double> values);
void write_matrix_csv(const std::string& path, int64_t rows, int64_t cols, std::span<const double> values);
void write_matrix_json(const std::string& path, int64_t rows, int64_t cols, std::span<const double> values);
void write_matrix_npy(const std::string& path, int64_t rows, int64_t cols, std::span<const double> values);

}  // namespace attn
