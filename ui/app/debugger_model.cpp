#include "ui/app/debugger_model.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "ui/view/hover.h"

namespace attn::app {

DebuggerModel::DebuggerModel(const Session& session, const CpuTileSource& source) : session_(&session), source_(&source) {}

void DebuggerModel::rebind(const Session& session, const CpuTileSource& source) {
    session_ = &session;
    source_ = &source;
    row_query_ = -1;
    row_cache_.clear();
    key_delta.clear();
    delta_query = -1;
    if (selected_query >= positions()) selected_query = -1;
    if (current_step >= steps()) current_step = -1;
}

int64_t DebuggerModel::steps() const {
    return std::clamp<int64_t>(positions() - session_->prompt_tokens, 0, static_cast<int64_t>(session_->steps.size()));
}

int64_t DebuggerModel::shown_step() const {
    const int64_t n = steps();
    if (n == 0) return -1;
    return current_step < 0 ? n - 1 : std::min(current_step, n - 1);
}

int64_t DebuggerModel::shown_positions() const {
    // Without a pinned step the whole matrix is shown (prompt rows included, live growth followed).
    if (current_step < 0) return positions();
    return std::min(positions(), query_of(shown_step()) + 1);
}

void DebuggerModel::show_step(int64_t step) {
    current_step = step < 0 ? -1 : std::min(step, steps() - 1);
    const int64_t shown = shown_step();
    if (shown >= 0) select_query(query_of(shown));
}

std::string DebuggerModel::token(int64_t position) const { return view::token_text(*session_, position); }

const std::vector<PiiSpan>& DebuggerModel::pii_spans() const {
    // Live, the text only grows (a branch replaces the session, hence the pointer in the key).
    if (pii_session_ != session_ || pii_bytes_ != session_->text.size() || pii_tokens_ != session_->tokens.size()) {
        pii_ = find_pii(session_->text);
        token_pii_ = token_pii_spans(session_->tokens, pii_);
        pii_session_ = session_;
        pii_bytes_ = session_->text.size();
        pii_tokens_ = session_->tokens.size();
    }
    return pii_;
}

int DebuggerModel::masked_span(int64_t position) const {
    if (!mask_pii || position < 0) return -1;
    pii_spans();
    return position < static_cast<int64_t>(token_pii_.size()) ? token_pii_[static_cast<size_t>(position)] : -1;
}

std::string DebuggerModel::display_range(size_t begin, size_t end) const {
    const std::string& text = session_->text;
    end = std::min(end, text.size());
    begin = std::min(begin, end);
    if (!mask_pii) return text.substr(begin, end - begin);
    return mask_pii_range(text, begin, end, pii_spans());
}

std::string DebuggerModel::display_token(int64_t position) const {
    if (position < 0 || position >= static_cast<int64_t>(session_->tokens.size())) return {};
    const Token& t = session_->tokens[static_cast<size_t>(position)];
    if (t.end <= t.begin || !token_masked(position)) return token(position);
    return display_range(t.begin, t.end);
}

namespace {
size_t utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead & 0xE0) == 0xC0) return 2;
    if ((lead & 0xF0) == 0xE0) return 3;
    if ((lead & 0xF8) == 0xF0) return 4;
    return 1;
}
bool continuation(unsigned char c) { return (c & 0xC0) == 0x80; }
}  // namespace

std::string DebuggerModel::token_chars(int64_t position, bool mark_continuation) const {
    if (position < 0 || position >= positions()) return {};
    const Token& t = session_->tokens[static_cast<size_t>(position)];
    const std::string& text = session_->text;
    if (t.end > text.size() || t.begin > t.end) return {};
    if (const int span = masked_span(position); span >= 0) {
        // The token that starts the span names its type; the rest of the span's tokens are dots.
        const PiiSpan& s = pii_[static_cast<size_t>(span)];
        const bool first = position == 0 || masked_span(position - 1) != span;
        return first ? cat(kPiiMaskGlyph, " [", pii_type_label(s.type), "]") : std::string(kPiiMaskGlyph);
    }
    if (!t.partial) return text.substr(t.begin, t.end - t.begin);
    // A token that splits a multi-byte character: show every character whose first byte it
    // holds, whole; a token holding only the tail of a character shows "+" (and the character).
    std::string out;
    for (size_t i = t.begin; i < t.end;) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (continuation(c)) {
            ++i;
            continue;
        }
        const size_t len = std::min(utf8_length(c), text.size() - i);
        out.append(text, i, len);
        i += len;
    }
    if (out.empty()) {
        size_t j = t.begin;
        while (j > 0 && continuation(static_cast<unsigned char>(text[j]))) --j;
        out.push_back('+');
        if (mark_continuation) out.append(text, j, std::min(utf8_length(static_cast<unsigned char>(text[j])), text.size() - j));
    }
    return out;
}

std::string DebuggerModel::token_display(int64_t position, size_t max_bytes) const {
    if (token_masked(position)) return token_chars(position, true);  // "●●●● [TYPE]" as it is, its space too
    const std::string raw = token_chars(position, true);
    std::string out;
    for (size_t i = 0; i < raw.size() && out.size() < max_bytes; ++i) {
        const unsigned char c = static_cast<unsigned char>(raw[i]);
        if (c == ' ') out += "\xC2\xB7";            // ·
        else if (c == '\n') out += "\xE2\x86\xB5";  // ↵
        else if (c == '\t') out += "\xE2\x86\x92";  // →
        else if (c == '\r') out += "\\r";
        else if (c < 0x20 || c == 0x7F) out += '?';
        else out += static_cast<char>(c);
    }
    if (out.size() >= max_bytes) {
        // Don't cut a UTF-8 sequence in half.
        while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
        if (!out.empty() && (static_cast<unsigned char>(out.back()) & 0x80)) out.pop_back();
        out += "\xE2\x80\xA6";  // …
    }
    if (out.empty()) out = raw.empty() ? "\xE2\x88\x85" : "?";  // ∅
    return out;
}

std::string DebuggerModel::alternative_text(int64_t position, int32_t token_id) const {
    return token_masked(position) ? std::string(kPiiMaskGlyph) : vocab_text(token_id);
}

bool DebuggerModel::is_generated(int64_t position) const { return step_of(position) != nullptr; }

const StepRecord* DebuggerModel::step_of(int64_t position) const {
    const int64_t t = position - session_->prompt_tokens;
    if (position < 0 || t < 0 || t >= static_cast<int64_t>(session_->steps.size())) return nullptr;
    return &session_->steps[static_cast<size_t>(t)];
}

std::string DebuggerModel::vocab_text(int32_t token_id) const {
    // The model's own tokenizer when it is live; a reopened session only has its own tokens to go by
    // (a scan — the step inspector asks for a handful per frame).
    if (tokenizer && token_id >= 0 && token_id < tokenizer->vocab_size()) return tokenizer->token_bytes(token_id);
    for (int64_t p = 0; p < positions(); ++p)
        if (session_->tokens[static_cast<size_t>(p)].id == token_id) return token_display(p);
    for (const StepRecord& s : session_->steps)
        if (s.token_id == token_id && !s.text.empty()) return s.text;
    return cat("#", token_id);
}

void DebuggerModel::select_layer(int layer) { settings.layer = std::clamp(layer, 0, n_layer() - 1); }
void DebuggerModel::select_head(int head) { settings.head = std::clamp(head, 0, n_head() - 1); }
void DebuggerModel::select_query(int64_t query) {
    selected_query = query < 0 ? -1 : std::min(query, positions() - 1);
}

const std::vector<float>& DebuggerModel::selected_row() {
    if (selected_query < 0) {
        row_cache_.clear();
        row_query_ = -1;
        return row_cache_;
    }
    if (row_query_ != selected_query || row_layer_ != settings.layer || row_head_ != settings.head) {
        row_cache_ = source_->row(settings.layer, settings.head, selected_query);
        row_query_ = selected_query;
        row_layer_ = settings.layer;
        row_head_ = settings.head;
    }
    return row_cache_;
}

double entropy_bits(const std::vector<float>& row) {
    double h = 0;
    for (float p : row)
        if (p > 0) h -= double(p) * std::log2(double(p));
    return h;
}

}  // namespace attn::app
