// SentencePiece-style BPE with scores (Llama 2, Mistral v0.1; GGUF tokenizer.ggml.model "llama").
//
// Per plain-text run: spaces become "▁" (and one dummy "▁" goes in front of the run when
// add_space_prefix is set; runs start the input or follow a special token) → one symbol
// per character → the
// adjacent pair whose concatenation is the highest-scored vocab piece merges first (ties:
// leftmost), as in llama.cpp → a character no piece covers falls back to its <0xNN> byte
// pieces (or the unknown token). Each symbol keeps the input bytes it stands for: a "▁"
// from a space covers that one space byte, the dummy "▁" covers nothing.
#include <algorithm>
#include <array>
#include <charconv>

#include "engine/error.h"
#include "engine/tokenizer_internal.h"

namespace attn {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 "▁"

// "<0x41>" → 0x41; -1 if the piece is not a byte piece.
int parse_byte_piece(std::string_view piece) {
    if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
    int value = 0;
    const auto [ptr, ec] = std::from_chars(piece.data() + 3, piece.data() + 5, value, 16);
    return ec == std::errc() && ptr == piece.data() + 5 ? value : -1;
}

std::string replace_space_marks(std::string_view piece) {
    std::string out;
    for (size_t pos = 0; pos < piece.size();) {
        if (piece.substr(pos, kSpaceMark.size()) == kSpaceMark) {
            out += ' ';
            pos += kSpaceMark.size();
        } else {
            out += piece[pos++];
        }
    }
    return out;
}

class SentencePieceBpe final : public detail::TokenizerBase {
public:
    explicit SentencePieceBpe(SentencePieceVocab vocab);

    TokenizerKind kind() const override { return TokenizerKind::SentencePieceBpe; }
    std::string decode(std::span<const int32_t> ids) const override;

protected:
    void encode_text(std::string_view text, size_t begin, size_t end, std::vector<Token>& out) const override;

private:
    struct Symbol {
        uint32_t norm_begin, norm_size;  // bytes in the normalized ("▁") text; size 0 = merged away
        uint32_t begin, end;             // input bytes it stands for
        int32_t prev, next;
        bool literal_mark;  // a "▁" typed in the input: kept apart so it decodes back to "▁"
    };
    struct Bigram {
        float score;
        int32_t left;
        uint32_t size;  // norm bytes of the pair when queued; a mismatch later means stale
        bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
    };
    void emit_symbol(std::string_view norm, const Symbol& symbol, std::vector<Token>& out) const;

    std::vector<float> scores_;
    detail::StringMap<int32_t> mergeable_;  // normal pieces by text
    std::array<int32_t, 256> byte_piece_{};
    bool add_space_prefix_ = true;
};

SentencePieceBpe::SentencePieceBpe(SentencePieceVocab vocab) {
    const size_t n = vocab.pieces.size();
    if (vocab.types.empty()) vocab.types.assign(n, TokenType::Normal);
    if (vocab.scores.empty()) vocab.scores.assign(n, 0.0f);
    if (vocab.types.size() != n || vocab.scores.size() != n)
        fail("SentencePiece vocabulary: ", n, " pieces but ", vocab.types.size(), " types and ", vocab.scores.size(),
             " scores");

    byte_piece_.fill(-1);
    std::vector<std::string> bytes(n);
    for (size_t i = 0; i < n; ++i) {
        const std::string& piece = vocab.pieces[i];
        const int byte = parse_byte_piece(piece);
        const TokenType type = vocab.types[i];
        if (byte >= 0 && (type == TokenType::Byte || type == TokenType::Normal || type == TokenType::Undefined)) {
            vocab.types[i] = TokenType::Byte;
            if (byte_piece_[static_cast<size_t>(byte)] < 0) byte_piece_[static_cast<size_t>(byte)] = static_cast<int32_t>(i);
            bytes[i] = std::string(1, static_cast<char>(byte));
        } else if (type == TokenType::Control || type == TokenType::Unknown) {
            bytes[i] = piece;  // renders as its text, e.g. "<s>"
        } else {
            bytes[i] = replace_space_marks(piece);
        }
        // User-defined pieces are matched whole in the raw text, never formed by merges:
        // a merge could hide one inside a run, where decode's space rule would misread it.
        if (vocab.types[i] == TokenType::Normal) mergeable_.emplace(piece, static_cast<int32_t>(i));
    }
    scores_ = std::move(vocab.scores);
    add_space_prefix_ = vocab.add_space_prefix;

    detail::TokenizerBase::CommonSpec common;
    common.texts = std::move(vocab.pieces);
    common.bytes = std::move(bytes);
    common.types = std::move(vocab.types);
    common.bos_id = vocab.bos_id;
    common.eos_id = vocab.eos_id;
    common.unk_id = vocab.unk_id;
    common.add_bos = vocab.add_bos;
    common.chat_template = std::move(vocab.chat_template);
    init_common(std::move(common));
}

void SentencePieceBpe::encode_text(std::string_view text, size_t begin, size_t end, std::vector<Token>& out) const {
    std::string norm;
    std::vector<Symbol> symbols;
    auto add_symbol = [&](std::string_view norm_bytes, size_t in_begin, size_t in_end, bool literal_mark = false) {
        const auto index = static_cast<int32_t>(symbols.size());
        symbols.push_back({static_cast<uint32_t>(norm.size()), static_cast<uint32_t>(norm_bytes.size()),
                           static_cast<uint32_t>(in_begin), static_cast<uint32_t>(in_end), index - 1, index + 1,
                           literal_mark});
        norm += norm_bytes;
    };
    if (add_space_prefix_) add_symbol(kSpaceMark, begin, begin);
    for (size_t pos = begin; pos < end;) {
        if (text[pos] == ' ') {
            add_symbol(kSpaceMark, pos, pos + 1);
            ++pos;
            continue;
        }
        const size_t length = detail::utf8_sequence_length(static_cast<unsigned char>(text[pos]));
        const std::string_view character = text.substr(pos, length);
        add_symbol(character, pos, pos + length, character == kSpaceMark);
        pos += length;
    }
    if (symbols.empty()) return;
    symbols.back().next = -1;

    std::vector<Bigram> heap;
    auto try_pair = [&](int32_t left) {
        if (left < 0) return;
        const Symbol& l = symbols[static_cast<size_t>(left)];
        if (l.next < 0) return;
        const Symbol& r = symbols[static_cast<size_t>(l.next)];
        if (l.literal_mark || r.literal_mark) return;
        const std::string_view pair(norm.data() + l.norm_begin, l.norm_size + r.norm_size);
        auto it = mergeable_.find(pair);
        if (it == mergeable_.end()) return;
        heap.push_back({scores_[static_cast<size_t>(it->second)], left, static_cast<uint32_t>(pair.size())});
        std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) try_pair(i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const Bigram bigram = heap.back();
        heap.pop_back();
        Symbol& left = symbols[static_cast<size_t>(bigram.left)];
        if (left.norm_size == 0 || left.next < 0) continue;
        Symbol& right = symbols[static_cast<size_t>(left.next)];
        if (left.norm_size + right.norm_size != bigram.size) continue;  // a side changed since

        left.norm_size += right.norm_size;
        left.end = right.end;
        left.next = right.next;
        if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = bigram.left;
        right.norm_size = 0;
        try_pair(left.prev);
        try_pair(bigram.left);
    }

    for (int32_t i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next)
        emit_symbol(norm, symbols[static_cast<size_t>(i)], out);
}

void SentencePieceBpe::emit_symbol(std::string_view norm, const Symbol& symbol, std::vector<Token>& out) const {
    const std::string_view piece = norm.substr(symbol.norm_begin, symbol.norm_size);
    auto it = symbol.literal_mark ? mergeable_.end() : mergeable_.find(piece);
    if (it != mergeable_.end()) {
        out.push_back({it->second, symbol.begin, symbol.end, false, false});
        return;
    }
    // No piece: a single character (merges only ever form vocab pieces), or a typed "▁". A
    // "▁" that stands for a space (or the dummy prefix) falls back to the space byte, so
    // decode stays exact.
    const bool is_space_mark = piece == kSpaceMark && !symbol.literal_mark;
    const std::string_view fallback = is_space_mark ? std::string_view(" ") : piece;
    const bool have_all_bytes = std::all_of(fallback.begin(), fallback.end(), [this](char c) {
        return byte_piece_[static_cast<unsigned char>(c)] >= 0;
    });
    if (!have_all_bytes) {
        if (unk_id_ < 0)
            fail("SentencePiece vocabulary has no piece, byte piece or unknown token for the character at byte offset ",
                 symbol.begin);
        out.push_back({unk_id_, symbol.begin, symbol.end, false, false});
        return;
    }
    const bool one_to_one = symbol.end - symbol.begin == fallback.size();
    for (size_t k = 0; k < fallback.size(); ++k) {
        const int32_t id = byte_piece_[static_cast<unsigned char>(fallback[k])];
        if (one_to_one) {
            const auto at = symbol.begin + static_cast<uint32_t>(k);
            out.push_back({id, at, at + 1, false, false});
        } else {
            // The whole (space) span goes to the first byte piece, the rest are empty.
            out.push_back({id, k == 0 ? symbol.begin : symbol.end, symbol.end, false, false});
        }
    }
}

std::string SentencePieceBpe::decode(std::span<const int32_t> ids) const {
    // The one-leading-space rule (see tokenizer.h): undo the dummy prefix of each text run.
    std::string text;
    for (size_t i = 0; i < ids.size(); ++i) {
        check_id(ids[i]);
        const std::string& bytes = bytes_[static_cast<size_t>(ids[i])];
        const bool starts_run = i == 0 || is_special(ids[i - 1]);
        if (add_space_prefix_ && starts_run && !is_special(ids[i]) && !bytes.empty() && bytes[0] == ' ')
            text.append(bytes, 1);
        else
            text += bytes;
    }
    return text;
}

}  // namespace

namespace detail {
std::unique_ptr<Tokenizer> make_sentencepiece(SentencePieceVocab vocab) {
    return std::make_unique<SentencePieceBpe>(std::move(vocab));
}
}  // namespace detail

}  // namespace attn
