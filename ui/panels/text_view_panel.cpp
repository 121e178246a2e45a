#include "ui/panels/text_view_panel.h"

#include "ui/app/export_record.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "engine/error.h"
#include "engine/pii.h"

namespace attn::panels {

namespace {

// ---- UTF-8 ----------------------------------------------------------------------------------------

struct Char {
    uint32_t offset = 0;
    uint8_t length = 1;
    int32_t cp = -1;  // -1: an invalid byte
};

std::vector<Char> decode_utf8(const std::string& text) {
    std::vector<Char> out;
    out.reserve(text.size());
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    for (size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        int len = 0;
        int32_t cp = -1;
        if (c < 0x80) len = 1, cp = c;
        else if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
        bool ok = len > 0 && i + size_t(len) <= n;
        for (int k = 1; ok && k < len; ++k) {
            if ((s[i + size_t(k)] & 0xC0) != 0x80) ok = false;
            else cp = (cp << 6) | (s[i + size_t(k)] & 0x3F);
        }
        if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
            ok = false;
        if (!ok) {
            out.push_back({static_cast<uint32_t>(i), 1, -1});
            ++i;
        } else {
            out.push_back({static_cast<uint32_t>(i), static_cast<uint8_t>(len), cp});
            i += size_t(len);
        }
    }
    return out;
}

void append_utf8(std::string& out, int32_t cp) {
    if (cp < 0x80) out += static_cast<char>(cp);
    else if (cp < 0x800) out += static_cast<char>(0xC0 | (cp >> 6)), out += static_cast<char>(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        out += static_cast<char>(0xE0 | (cp >> 12)), out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
            out += static_cast<char>(0x80 | (cp & 0x3F));
    else
        out += static_cast<char>(0xF0 | (cp >> 18)), out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), out += static_cast<char>(0x80 | (cp & 0x3F));
}

ImU32 entity_colour(int type) {
    static const ImU32 colours[] = {IM_COL32(90, 220, 120, 255), IM_COL32(230, 120, 255, 255), IM_COL32(255, 200, 60, 255),
                                    IM_COL32(90, 200, 255, 255), IM_COL32(255, 120, 150, 255), IM_COL32(180, 255, 90, 255)};
    return colours[static_cast<size_t>(std::max(type, 0)) % (sizeof colours / sizeof colours[0])];
}

std::string head_list(const std::vector<HeadRef>& heads, size_t max_shown = 8) {
    std::string out;
    for (size_t i = 0; i < heads.size() && i < max_shown; ++i) out += cat(i ? " " : "", "L", heads[i].layer, "H", heads[i].head);
    if (heads.size() > max_shown) out += cat(" … (", heads.size() - max_shown, " more)");
    return out;
}

int64_t captured_positions(const Session& session) {
    return std::min<int64_t>(session.capture ? session.capture->positions() : 0, session.positions());
}

double captured_tokens(const Segment& s, int64_t captured) {
    return static_cast<double>(std::max<int64_t>(0, std::min(s.last, captured) - std::min(s.first, captured)));
}

// For each word: the phrase window whose centre is nearest (the window that word stands for).
std::vector<int64_t> centre_windows(int64_t words, const std::vector<PhraseWindow>& windows) {
    std::vector<int64_t> out(static_cast<size_t>(words), 0);
    size_t x = 0;
    for (int64_t b = 0; b < words; ++b) {
        auto centre = [&](size_t i) { return (windows[i].first_word + windows[i].last_word - 1) / 2.0; };
        while (x + 1 < windows.size() && std::fabs(centre(x + 1) - double(b)) <= std::fabs(centre(x) - double(b))) ++x;
        out[static_cast<size_t>(b)] = static_cast<int64_t>(x);
    }
    return out;
}

double window_weight(const PhraseWindow& w, int64_t word) {
    if (word < w.first_word || word >= w.last_word) return 0;
    return w.weights[static_cast<size_t>(word - w.first_word)];
}

TextViewState::HoverResult hover_from_matrix(const MatrixResult& m, const std::vector<Segment>& segments, Granularity level,
                                             int64_t segment) {
    TextViewState::HoverResult r;
    const size_t n = segments.size();
    r.to.assign(n, 0.0);
    r.by.assign(n, 0.0);
    r.from_matrix = true;
    if (level == Granularity::Phrase) {
        const std::vector<int64_t> cw = centre_windows(static_cast<int64_t>(n), m.windows);
        const int64_t x = cw[static_cast<size_t>(segment)];
        for (size_t b = 0; b < n; ++b) {
            const int64_t y = cw[b];
            r.to[b] = m.matrix.normalised(x, y);
            r.by[b] = m.matrix.normalised(y, x);
        }
    } else {
        for (size_t b = 0; b < n; ++b) {
            r.to[b] = m.matrix.normalised(segment, static_cast<int64_t>(b));
            r.by[b] = m.matrix.normalised(static_cast<int64_t>(b), segment);
        }
    }
    return r;
}

TextViewState::HoverResult compute_hover(const std::shared_ptr<const Session>& snapshot,
                                         const std::shared_ptr<const std::vector<Segment>>& segs, const MatrixKey& key,
                                         Granularity level, int64_t segment) {
    const auto start = std::chrono::steady_clock::now();
    const Session& session = *snapshot;
    const std::vector<Segment>& segments = *segs;
    const CpuTileSource source(*session.capture, 0);
    const int64_t captured = captured_positions(session);
    const size_t n = segments.size();
    TextViewState::HoverResult r;
    r.to.assign(n, 0.0);
    r.by.assign(n, 0.0);
    if (level == Granularity::Token) {
        // One segment per token: the mean of the exact row and column.
        if (segment < captured) {
            const std::vector<double> row = token_attends_to(source, session, key.heads, segment);
            for (size_t i = 0; i < row.size() && i < n; ++i) r.to[i] = row[i];
            const std::vector<double> col = token_attended_by(source, session, key.heads, segment);
            for (size_t i = 0; i < col.size() && i < n; ++i) r.by[i] = col[i];
        }
    } else if (level == Granularity::Phrase) {
        PhraseWindowOptions options;
        options.size = key.phrase_size;
        options.weighting = key.weighting;
        const std::vector<PhraseWindow> windows = phrase_windows(static_cast<int64_t>(n), options);
        const std::vector<int64_t> cw = centre_windows(static_cast<int64_t>(n), windows);
        const PhraseWindow& x = windows[static_cast<size_t>(cw[static_cast<size_t>(segment)])];
        std::vector<double> row_mix(n, 0.0), col_mix(n, 0.0);
        for (int64_t a = x.first_word; a < x.last_word; ++a) {
            const double w = window_weight(x, a);
            const std::vector<double> row = segment_attends_to(source, session, segments, key.heads, a);
            const std::vector<double> col = segment_attended_by(source, session, segments, key.heads, a);
            for (size_t b = 0; b < n; ++b) row_mix[b] += w * row[b], col_mix[b] += w * col[b];
        }
        std::vector<double> qt(n);
        for (size_t a = 0; a < n; ++a) qt[a] = captured_tokens(segments[a], captured);
        auto window_tokens = [&](const PhraseWindow& y) {
            double t = 0;
            for (int64_t a = y.first_word; a < y.last_word; ++a) t += window_weight(y, a) * qt[static_cast<size_t>(a)];
            return t;
        };
        const double qx = window_tokens(x);
        // Per window: M[x][y] and M[y][x]; each word shows the window centred on it.
        std::vector<double> to_window(windows.size()), by_window(windows.size());
        for (size_t yi = 0; yi < windows.size(); ++yi) {
            const PhraseWindow& y = windows[yi];
            double to = 0, by = 0;
            for (int64_t b = y.first_word; b < y.last_word; ++b) {
                to += window_weight(y, b) * row_mix[static_cast<size_t>(b)];
                by += window_weight(y, b) * col_mix[static_cast<size_t>(b)];
            }
            const double qy = window_tokens(y);
            to_window[yi] = qx > 0 ? to / qx : 0.0;
            by_window[yi] = qy > 0 ? by / qy : 0.0;
        }
        for (size_t b = 0; b < n; ++b) r.to[b] = to_window[static_cast<size_t>(cw[b])], r.by[b] = by_window[static_cast<size_t>(cw[b])];
    } else {
        const std::vector<double> row = segment_attends_to(source, session, segments, key.heads, segment);
        const std::vector<double> col = segment_attended_by(source, session, segments, key.heads, segment);
        const double qs = captured_tokens(segments[static_cast<size_t>(segment)], captured);
        for (size_t b = 0; b < n; ++b) {
            r.to[b] = qs > 0 ? row[b] / qs : 0.0;
            const double qb = captured_tokens(segments[b], captured);
            r.by[b] = qb > 0 ? col[b] / qb : 0.0;
        }
    }
    r.compute_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return r;
}

MatrixResult compute_matrix(const std::shared_ptr<const Session>& snapshot, const std::shared_ptr<const std::vector<Segment>>& segs,
                            const MatrixKey& key, Granularity level) {
    const CpuTileSource source(*snapshot->capture, 1);
    SpanMassOptions options;
    options.threads = 1;  // in the background: the hover's jobs take the shared pool
    MatrixResult result;
    result.matrix = span_masses(source, *snapshot, *segs, key.heads, options);
    if (level == Granularity::Phrase) {
        PhraseWindowOptions windows;
        windows.size = key.phrase_size;
        windows.weighting = key.weighting;
        result.windows = phrase_windows(static_cast<int64_t>(segs->size()), windows);
        result.matrix = window_matrix(result.matrix, result.windows);
    }
    return result;
}

MatrixKey matrix_key(const app::DebuggerModel& model, const TextViewState& state, const std::vector<HeadRef>& heads) {
    MatrixKey key;
    key.segments = segments_key(model, state.level);
    key.captured = model.positions();
    key.heads = heads;
    if (state.level == Granularity::Phrase) {
        key.phrase_size = state.phrase_size;
        key.weighting = state.weighting;
    }
    return key;
}

int64_t active_segment(const TextViewState& state) { return state.mouse_segment >= 0 ? state.mouse_segment : state.pinned; }

// Top entries of `values` other than `skip`, largest first.
std::vector<std::pair<int64_t, double>> top_of(const std::vector<double>& values, int64_t skip, size_t count) {
    std::vector<std::pair<int64_t, double>> all;
    for (size_t i = 0; i < values.size(); ++i)
        if (static_cast<int64_t>(i) != skip && values[i] > 0) all.emplace_back(static_cast<int64_t>(i), values[i]);
    const size_t k = std::min(count, all.size());
    std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end(),
                      [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); });
    all.resize(k);
    return all;
}

}  // namespace

std::optional<WordPair> word_pair(const app::DebuggerModel& model, const TextViewState& state, const std::vector<HeadRef>& heads,
                                  int64_t a, int64_t b);

namespace {

// The (query word, key word) box: raw mass, relation, parts of speech.
void draw_pair_tooltip(const app::DebuggerModel& model, const TextViewState& state, const std::vector<HeadRef>& heads, int64_t a,
                       int64_t b, const ImVec2* at) {
    const auto pair = word_pair(model, state, heads, a, b);
    if (!pair) return;
    if (at) ImGui::SetNextWindowPos(*at);
    ImGui::BeginTooltip();
    ImGui::Text("query \"%s\"%s  →  key \"%s\"%s", pair->query_text.c_str(),
                pair->query_pos.empty() ? "" : cat(" [", pair->query_pos, "]").c_str(), pair->key_text.c_str(),
                pair->key_pos.empty() ? "" : cat(" [", pair->key_pos, "]").c_str());
    ImGui::Text("raw probability mass %.4f  (%s)", pair->mass,
                pair->heads == 1 ? "the shown head" : cat("mean over ", pair->heads, " heads").c_str());
    const ImVec4 colour = pair->status == "linked" ? ImVec4(0.45f, 0.95f, 0.55f, 1) : ImVec4(0.75f, 0.75f, 0.75f, 1);
    ImGui::PushTextWrapPos(ImGui::GetFontSize() * 32);
    ImGui::TextColored(colour, "%s", pair->relation.c_str());
    ImGui::PopTextWrapPos();
    ImGui::EndTooltip();
}

void layout(const app::DebuggerModel& model, TextViewState& state, const std::vector<Segment>& segments, float width) {
    const auto start = std::chrono::steady_clock::now();
    state.pieces.clear();
    state.lines.clear();
    state.segment_line.assign(segments.size(), -1);
    const std::string& text = model.session().text;
    const std::vector<Char> chars = decode_utf8(text);
    ImFont* font = ImGui::GetFont();
    const float scale = ImGui::GetFontSize() / font->FontSize;
    const float pad = 6.f;
    float x = 0;
    TextViewState::Line line;
    auto new_line = [&] {
        line.count = state.pieces.size() - line.first;
        state.lines.push_back(line);
        line = {};
        line.first = state.pieces.size();
        x = 0;
    };
    auto place = [&](TextViewState::Piece p) {
        if (x > 0 && x + p.width > width) new_line();
        p.x = x;
        x += p.width;
        int32_t& first_line = state.segment_line[static_cast<size_t>(p.segment)];
        if (first_line < 0) first_line = static_cast<int32_t>(state.lines.size());
        state.pieces.push_back(std::move(p));
    };
    std::string cur;
    float cur_w = 0;
    int64_t cur_seg = 0;
    uint32_t cur_begin = 0, cur_end = 0;
    auto flush = [&] {
        if (cur.empty()) return;
        place({cur_seg, 0, cur_w, std::move(cur), cur_begin, cur_end, 0});
        cur.clear();
        cur_w = 0;
    };
    // Personal data: one "●●●● [TYPE]" piece where a span starts; its characters are not drawn.
    static const std::vector<PiiSpan> no_spans;
    const std::vector<PiiSpan>& masked = model.mask_pii ? model.pii_spans() : no_spans;
    state.laid_masked = model.mask_pii;
    size_t mi = 0;
    size_t ci = 0;
    for (size_t si = 0; si < segments.size(); ++si) {
        const Segment& s = segments[si];
        const int64_t seg = static_cast<int64_t>(si);
        if (s.kind == SegmentKind::Special || s.byte_count() == 0) {
            flush();
            std::string label = s.token_count() > 0 ? model.token_display(s.first, 24) : std::string("\xE2\x88\x85");
            place({seg, 0, ImGui::CalcTextSize(label.c_str()).x + pad, std::move(label), s.begin, s.end, 1});
            while (ci < chars.size() && chars[ci].offset < s.end) ++ci;
            continue;
        }
        bool any = false;
        cur_seg = seg;
        while (ci < chars.size() && chars[ci].offset < s.end) {
            const Char c = chars[ci++];
            any = true;
            while (mi < masked.size() && masked[mi].end <= c.offset) ++mi;
            if (mi < masked.size() && masked[mi].begin <= c.offset) {
                if (c.offset == masked[mi].begin || (ci >= 2 && chars[ci - 2].offset < masked[mi].begin)) {
                    flush();
                    std::string label = cat(kPiiMaskGlyph, " [", pii_type_label(masked[mi].type), "]");
                    place({seg, 0, ImGui::CalcTextSize(label.c_str()).x + pad, std::move(label), static_cast<uint32_t>(masked[mi].begin),
                           static_cast<uint32_t>(masked[mi].end), 3});
                }
                continue;
            }
            if (c.cp == '\n') {
                flush();
                if (state.segment_line[si] < 0) state.segment_line[si] = static_cast<int32_t>(state.lines.size());
                new_line();
                continue;
            }
            if (c.cp == '\r') continue;
            const bool box = c.cp < 0 || c.cp > 0xFFFF || (c.cp >= 0x80 && !font->FindGlyphNoFallback(static_cast<ImWchar>(c.cp)));
            if (box) {
                flush();
                char label[16];
                if (c.cp < 0) std::snprintf(label, sizeof label, "\\x%02X", static_cast<unsigned char>(text[c.offset]));
                else std::snprintf(label, sizeof label, "U+%X", static_cast<unsigned>(c.cp));
                place({seg, 0, ImGui::CalcTextSize(label).x + pad, label, c.offset, c.offset + c.length, 2});
                continue;
            }
            const int32_t cp = c.cp == '\t' ? ' ' : c.cp;
            const float w = font->GetCharAdvance(static_cast<ImWchar>(cp)) * scale * (c.cp == '\t' ? 4.f : 1.f);
            if (!cur.empty() && cur_w + w > width) flush();  // a run longer than the line: break it
            if (cur.empty()) cur_begin = c.offset;
            cur_end = c.offset + c.length;
            if (c.cp == '\t') cur += "    ";
            else append_utf8(cur, cp);
            cur_w += w;
            if (cp == ' ' || cp >= 0x2E80) flush();  // break opportunities: after a space, between CJK characters
        }
        flush();
        if (!any) {
            // Only continuation bytes of a character that started in an earlier token.
            place({seg, 0, ImGui::CalcTextSize("+").x + pad, "+", s.begin, s.end, 1});
        }
    }
    flush();
    new_line();
    state.boxes = static_cast<int>(std::count_if(state.pieces.begin(), state.pieces.end(), [](const auto& p) { return p.kind == 2; }));
    state.markers = static_cast<int>(std::count_if(state.pieces.begin(), state.pieces.end(), [](const auto& p) { return p.kind == 1; }));
    state.layout_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    state.laid_width = width;
    state.laid_font = ImGui::GetFontSize();
    state.laid_version = state.segments.version();
}

const char* level_names[] = {"token", "word", "phrase", "sentence", "paragraph"};

}  // namespace

// ---- head sets ----------------------------------------------------------------------------------

ResolvedHeads resolve_heads(const HeadSetChoice& choice, const app::DebuggerModel& model, const FingerprintsState& fingerprints,
                            const std::vector<HeadLabel>& labels) {
    ResolvedHeads out;
    switch (choice.mode) {
        case HeadSetChoice::Mode::Selected:
            out.heads = {{model.settings.layer, model.settings.head}};
            out.description = cat("the shown head L", model.settings.layer, "H", model.settings.head);
            break;
        case HeadSetChoice::Mode::Label: {
            if (choice.label.empty()) {
                out.waiting = "choose a label";
                break;
            }
            const auto* table = fingerprints_of(fingerprints);
            const bool automatic = std::any_of(automatic_label_names().begin(), automatic_label_names().end(),
                                               [&](const std::string& n) { return n == choice.label; });
            if (!table) {
                if (automatic) {
                    out.waiting = "computing the fingerprints for the automatic labels…";
                    break;
                }
                for (const HeadLabel& l : labels)
                    if (l.text == choice.label) out.heads.push_back({l.layer, l.head});
            } else {
                for (const auto& [l, h] : heads_with_label(*table, labels, choice.label)) out.heads.push_back({l, h});
            }
            if (out.heads.empty()) out.waiting = cat("no head has the label '", choice.label, "'");
            out.description = cat("mean over the ", out.heads.size(), " heads labelled '", choice.label, "': ", head_list(out.heads));
            break;
        }
        case HeadSetChoice::Mode::Set:
            out.heads = choice.set;
            if (out.heads.empty()) out.waiting = "the chosen set is empty: add heads to it";
            out.description = out.heads.size() == 1 ? cat("the chosen head ", head_list(out.heads))
                                                    : cat("mean over ", out.heads.size(), " chosen heads: ", head_list(out.heads));
            break;
    }
    return out;
}

void parse_head_set(const std::vector<std::string>& words, const CaptureShape& shape, HeadSetChoice& choice) {
    if (words.empty()) fail("a head set: selected | label NAME | set L:H … | layer L");
    const std::string& mode = words[0];
    if (mode == "selected") {
        choice.mode = HeadSetChoice::Mode::Selected;
    } else if (mode == "label") {
        if (words.size() < 2) fail("label NAME");
        std::string name = words[1];
        for (size_t i = 2; i < words.size(); ++i) name += " " + words[i];
        choice.mode = HeadSetChoice::Mode::Label;
        choice.label = name;
    } else if (mode == "set" || mode == "layer") {
        std::vector<HeadRef> set;
        if (mode == "layer") {
            if (words.size() != 2) fail("layer L");
            const int layer = std::stoi(words[1]);
            if (layer < 0 || layer >= shape.n_layer) fail("layer ", layer, " is out of range (0..", shape.n_layer - 1, ")");
            set = heads_of_layer(shape, layer);
        } else {
            for (size_t i = 1; i < words.size(); ++i) {
                int l = -1, h = -1;
                char extra = 0;
                if (std::sscanf(words[i].c_str(), "%d:%d%c", &l, &h, &extra) != 2 || l < 0 || h < 0 || l >= shape.n_layer ||
                    h >= shape.n_head)
                    fail("'", words[i], "' is not a head L:H of this capture (", shape.n_layer, " layers × ", shape.n_head, " heads)");
                set.push_back({l, h});
            }
        }
        choice.mode = HeadSetChoice::Mode::Set;
        choice.set = std::move(set);
    } else {
        fail("unknown head set '", mode, "' (selected | label NAME | set L:H … | layer L)");
    }
}

void draw_head_set_picker(const char* id, HeadSetChoice& choice, const app::DebuggerModel& model,
                          const FingerprintsState& fingerprints, const std::vector<HeadLabel>& labels) {
    ImGui::PushID(id);
    static const char* modes[] = {"the shown head", "a label group", "a chosen set (mean)"};
    int mode = static_cast<int>(choice.mode);
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 12);
    if (ImGui::Combo("heads", &mode, modes, 3)) choice.mode = static_cast<HeadSetChoice::Mode>(mode);
    if (choice.mode == HeadSetChoice::Mode::Label) {
        ImGui::SameLine();
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 9);
        if (ImGui::BeginCombo("##label", choice.label.empty() ? "(label)" : choice.label.c_str())) {
            for (const std::string& l : labels_in_use(fingerprints, labels))
                if (ImGui::Selectable(l.c_str(), l == choice.label)) choice.label = l;
            ImGui::EndCombo();
        }
    } else if (choice.mode == HeadSetChoice::Mode::Set) {
        ImGui::SameLine();
        const HeadRef shown{model.settings.layer, model.settings.head};
        const bool has = std::find(choice.set.begin(), choice.set.end(), shown) != choice.set.end();
        if (ImGui::SmallButton(has ? "- shown head" : "+ shown head")) {
            if (has) std::erase(choice.set, shown);
            else choice.set.push_back(shown);
        }
        ImGui::SameLine();
        if (ImGui::SmallButton("its layer")) choice.set = heads_of_layer(model.session().capture->shape(), shown.layer);
        ImGui::SameLine();
        if (ImGui::SmallButton("edit")) ImGui::OpenPopup("##headset");
        ImGui::SameLine();
        if (ImGui::SmallButton("clear")) choice.set.clear();
        if (ImGui::BeginPopup("##headset")) {
            ImGui::TextDisabled("heads averaged (layer rows × head columns)");
            for (int l = 0; l < model.n_layer(); ++l) {
                ImGui::Text("L%-2d", l);
                for (int h = 0; h < model.n_head(); ++h) {
                    ImGui::SameLine();
                    const HeadRef ref{l, h};
                    bool on = std::find(choice.set.begin(), choice.set.end(), ref) != choice.set.end();
                    ImGui::PushID(l * 4096 + h);
                    if (ImGui::Checkbox("##h", &on)) {
                        if (on) choice.set.push_back(ref);
                        else std::erase(choice.set, ref);
                    }
                    if (ImGui::IsItemHovered()) ImGui::SetTooltip("L%dH%d", l, h);
                    ImGui::PopID();
                }
            }
            ImGui::EndPopup();
        }
    }
    const ResolvedHeads resolved = resolve_heads(choice, model, fingerprints, labels);
    if (!resolved.waiting.empty()) ImGui::TextColored(ImVec4(1, 0.6f, 0.4f, 1), "%s", resolved.waiting.c_str());
    else ImGui::TextColored(ImVec4(0.75f, 0.85f, 1.f, 1), "heads: %s", resolved.description.c_str());
    ImGui::PopID();
}

std::shared_ptr<const Session> session_snapshot(const Session& session) {
    auto copy = std::make_shared<Session>();
    copy->text = session.text;
    copy->tokens = session.tokens;
    copy->prompt_tokens = session.prompt_tokens;
    copy->capture = session.capture;
    copy->config = session.config;
    return copy;
}

SegmentsKey segments_key(const app::DebuggerModel& model, Granularity level) {
    SegmentsKey key;
    key.store = model.session().capture.get();
    key.tokens = model.session().positions();
    key.text_bytes = model.session().text.size();
    key.level = level == Granularity::Phrase ? Granularity::Word : level;
    return key;
}

SegmentsResult compute_segments(std::shared_ptr<const Session> snapshot, Granularity level) {
    SegmentsResult result;
    result.segments = std::make_shared<const std::vector<Segment>>(
        segment_session(*snapshot, level == Granularity::Phrase ? Granularity::Word : level));
    result.snapshot = std::move(snapshot);
    return result;
}

std::string segment_text(const app::DebuggerModel& model, const Segment& segment, size_t max_bytes) {
    std::string text = model.display_range(segment.begin, segment.end);
    if (text.size() > max_bytes) {
        size_t cut = max_bytes;
        while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
        text = text.substr(0, cut) + "…";
    }
    return text;
}

std::string one_line(const std::string& text) {
    std::string out;
    for (const Char& c : decode_utf8(text)) {
        if (c.cp == '\n' || c.cp == '\r' || c.cp == '\t' || c.cp == ' ') {
            if (!out.empty() && out.back() != ' ') out += ' ';
        } else if (c.cp < 0) {
            out += "\xEF\xBF\xBD";
        } else if (c.cp > 0xFFFF) {
            char hex[16];
            std::snprintf(hex, sizeof hex, "U+%X", static_cast<unsigned>(c.cp));
            out += hex;
        } else {
            append_utf8(out, c.cp);
        }
    }
    return out;
}

// ---- the text view --------------------------------------------------------------------------------

void update_text_view(const app::DebuggerModel& model, TextViewState& state, const FingerprintsState& fingerprints,
                      const std::vector<HeadLabel>& labels, bool wait) {
    const SegmentsKey skey = segments_key(model, state.level);
    const Granularity level = state.level;
    state.segments.poll();
    if (wait || state.segments.needs(skey)) {
        auto segment_job = [snapshot = session_snapshot(model.session()), level] { return compute_segments(snapshot, level); };
        if (wait) state.segments.finish(skey, segment_job);
        else state.segments.want(skey, segment_job);
    }
    if (level == Granularity::Word && (state.pinned >= 0 || state.mouse_segment >= 0 || state.pair_key >= 0)) {
        // Word pairs' relations: the text parsed once per text (link-grammar serialises its parses),
        // from the first time a word is hovered or kept.
        const TextViewState::SyntaxKey syntax_key{model.session().capture.get(), model.session().positions(), model.session().text.size()};
        state.syntax.poll();
        if ((wait && state.pair_key >= 0) || state.syntax.needs(syntax_key)) {
            auto parse_job = [snapshot = session_snapshot(model.session())] {
                return std::make_shared<const SyntaxAnalysis>(parse_session_syntax(*snapshot));
            };
            if (wait && state.pair_key >= 0) state.syntax.finish(syntax_key, parse_job);
            else state.syntax.want(syntax_key, parse_job);
        }
    }
    if (!state.segments.ready_for(skey)) return;
    const SegmentsResult seg = state.segments.value();
    const int64_t n = static_cast<int64_t>(seg.segments->size());
    if (state.pinned >= n) state.pinned = -1;
    if (state.mouse_segment >= n) state.mouse_segment = -1;

    const ResolvedHeads heads = resolve_heads(state.heads, model, fingerprints, labels);
    if (heads.heads.empty()) return;
    const MatrixKey mkey = matrix_key(model, state, heads.heads);
    // The whole matrix: for exports, and anyway where it is cheap (a few thousand tokens).
    const bool small = model.positions() <= 2048 && n <= 2048;
    state.matrix.poll();
    if ((state.matrix_wanted || small || !state.pending_exports.empty()) && (wait || state.matrix.needs(mkey))) {
        auto matrix_job = [snapshot = seg.snapshot, segs = seg.segments, mkey, level] {
            return compute_matrix(snapshot, segs, mkey, level);
        };
        if (wait && (!state.pending_exports.empty() || state.matrix_wanted)) state.matrix.finish(mkey, matrix_job);
        else state.matrix.want(mkey, matrix_job);
    }

    const int64_t active = active_segment(state);
    if (active < 0 || active >= n) return;
    TextViewState::HoverKey hkey{mkey, active};
    state.hover.poll();
    if (state.hover.done_for(hkey)) {
        if (state.timing && state.timing_key == hkey) {
            state.hover_latency_ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - state.timing_start).count();
            state.timing = false;
        }
        return;
    }
    if (!state.timing || !(state.timing_key == hkey)) {
        state.timing = true;
        state.timing_key = hkey;
        state.timing_start = std::chrono::steady_clock::now();
    }
    if (!wait && state.hover.busy()) return;  // one hover job at a time: this one starts when it ends
    if (state.matrix.ready_for(mkey)) {
        // The matrix is there: the hover is a lookup, done on this thread.
        const auto start = std::chrono::steady_clock::now();
        TextViewState::HoverResult r = hover_from_matrix(state.matrix.value(), *seg.segments, level, active);
        r.compute_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        state.hover.finish(hkey, [r] { return r; });
    } else {
        auto hover_job = [snapshot = seg.snapshot, segs = seg.segments, mkey, level, active] {
            return compute_hover(snapshot, segs, mkey, level, active);
        };
        if (wait) state.hover.finish(hkey, hover_job);
        else state.hover.want(hkey, hover_job);
    }
    if (state.hover.done_for(hkey) && state.timing) {
        state.hover_latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - state.timing_start).count();
        state.timing = false;
    }
}

std::optional<WordPair> word_pair(const app::DebuggerModel& model, const TextViewState& state, const std::vector<HeadRef>& heads,
                                  int64_t a, int64_t b) {
    if (state.level != Granularity::Word || heads.empty() || a < 0 || b < 0 || a == b) return std::nullopt;
    const SegmentsKey skey = segments_key(model, state.level);
    if (!state.segments.ready_for(skey)) return std::nullopt;
    const std::vector<Segment>& segments = *state.segments.value().segments;
    if (a >= static_cast<int64_t>(segments.size()) || b >= static_cast<int64_t>(segments.size())) return std::nullopt;
    // Attention is causal: the later word attends to the earlier one.
    if (segments[static_cast<size_t>(a)].first < segments[static_cast<size_t>(b)].first) std::swap(a, b);
    const Segment& q = segments[static_cast<size_t>(a)];
    const Segment& k = segments[static_cast<size_t>(b)];
    if (q.token_count() == 0 || k.token_count() == 0) return std::nullopt;
    WordPair pair;
    pair.query_segment = a;
    pair.key_segment = b;
    pair.query_text = one_line(segment_text(model, q, 40));
    pair.key_text = one_line(segment_text(model, k, 40));
    const int64_t captured = model.positions();
    for (const HeadRef& h : heads)
        pair.mass += model.source().mass(h.layer, h.head, std::min(q.first, captured), std::min(q.last, captured),
                                         std::min(k.first, captured), std::min(k.last, captured));
    pair.heads = heads.size();
    pair.mass /= static_cast<double>(heads.size());
    const TextViewState::SyntaxKey syntax_key{model.session().capture.get(), model.session().positions(), model.session().text.size()};
    if (!state.syntax.ready_for(syntax_key) || !state.syntax.value()) {
        pair.status = "parsing";
        pair.relation = state.syntax.error().empty() ? "parsing the text (link-grammar)…" : state.syntax.error();
        return pair;
    }
    const SyntaxAnalysis& analysis = *state.syntax.value();
    pair.parsed = true;
    const WordRelation r = relation_between_tokens(analysis, q.first, k.first);
    pair.relation = r.text;
    switch (r.status) {
        case WordRelation::Status::Linked: pair.status = "linked"; break;
        case WordRelation::Status::NotLinked: pair.status = "not_linked"; break;
        case WordRelation::Status::NoParser: pair.status = "no_parser"; break;
        case WordRelation::Status::NoWord: pair.status = "no_word"; break;
    }
    if (r.query_word >= 0) pair.query_pos = analysis.words[static_cast<size_t>(r.query_word)].pos;
    if (r.key_word >= 0) pair.key_pos = analysis.words[static_cast<size_t>(r.key_word)].pos;
    for (size_t l : r.links) pair.relations.push_back(analysis.links[l].relation);
    return pair;
}

nlohmann::json word_pair_json(const WordPair& pair) {
    return {{"query_segment", pair.query_segment}, {"key_segment", pair.key_segment}, {"query_text", pair.query_text},
            {"key_text", pair.key_text}, {"mass", pair.mass}, {"heads", pair.heads}, {"status", pair.status},
            {"relation", pair.relation}, {"relations", pair.relations}, {"query_pos", pair.query_pos}, {"key_pos", pair.key_pos}};
}

bool text_view_settled(const app::DebuggerModel& model, const TextViewState& state, const FingerprintsState& fingerprints,
                       const std::vector<HeadLabel>& labels) {
    if (!state.segments.done_for(segments_key(model, state.level))) return false;
    if (state.level == Granularity::Word && state.pair_key >= 0 &&
        !state.syntax.done_for({model.session().capture.get(), model.session().positions(), model.session().text.size()}))
        return false;
    if (!state.pending_exports.empty()) return false;
    const ResolvedHeads heads = resolve_heads(state.heads, model, fingerprints, labels);
    if (heads.heads.empty()) return heads.waiting.find("computing") == std::string::npos;
    const int64_t active = active_segment(state);
    if (active < 0) return true;
    return state.hover.done_for({matrix_key(model, state, heads.heads), active});
}

void export_text_matrix(const app::DebuggerModel& model, TextViewState& state, const FingerprintsState& fingerprints,
                        const std::vector<HeadLabel>& labels, const std::string& path) {
    state.matrix_wanted = true;
    update_text_view(model, state, fingerprints, labels, true);
    const ResolvedHeads heads = resolve_heads(state.heads, model, fingerprints, labels);
    if (heads.heads.empty()) fail("the text view has no heads to export: ", heads.waiting);
    const MatrixKey mkey = matrix_key(model, state, heads.heads);
    if (!state.matrix.ready_for(mkey)) fail("the text view's matrix could not be computed: ", state.matrix.error());
    const SpanMatrix& m = state.matrix.value().matrix;
    const std::vector<double> values = state.export_shares ? m.normalised_values() : m.mass;
    const std::string ext = std::filesystem::path(path).extension().string();
    if (ext == ".csv") write_matrix_csv(path, m.rows, m.cols, values);
    else if (ext == ".npy") write_matrix_npy(path, m.rows, m.cols, values);
    else if (ext == ".json") write_matrix_json(path, m.rows, m.cols, values);
    else fail(path, ": the matrix is written as .csv, .npy or .json");
    app::record_export(model, path, {"text-matrix", "text_matrix", -1, -1, model.shown_step(), -1, "",
                                     cat(granularity_name(state.level), " × ", granularity_name(state.level), " ",
                                         state.export_shares ? "shares of each row's attention" : "attention mass", " of ",
                                         heads.description)});
}

void export_text_segments(const app::DebuggerModel& model, TextViewState& state, const std::string& path) {
    const SegmentsKey skey = segments_key(model, state.level);
    const Granularity level = state.level;
    state.segments.finish(skey, [snapshot = session_snapshot(model.session()), level] { return compute_segments(snapshot, level); });
    if (!state.segments.ready_for(skey)) fail("the text could not be segmented: ", state.segments.error());
    const std::vector<Segment>& segments = *state.segments.value().segments;
    const std::string ext = std::filesystem::path(path).extension().string();
    const std::string& text = state.segments.value().snapshot->text;
    // Exports mask personal data as the view does (the segment's byte offsets stay those of the text).
    const std::vector<PiiSpan> masked = model.mask_pii ? find_pii(text) : std::vector<PiiSpan>{};
    if (ext == ".csv") write_segments_csv(path, text, segments, masked);
    else if (ext == ".json")
        write_segments_json(path, text, segments, state.level == Granularity::Phrase ? Granularity::Word : state.level, masked);
    else fail(path, ": the segment table is written as .csv or .json");
    app::record_export(model, path, {"segments", "segment_table", -1, -1, -1, -1, "",
                                     cat(granularity_name(state.level), " segments with their byte spans")});
}

nlohmann::json text_view_json(const app::DebuggerModel& model, const TextViewState& state, const FingerprintsState& fingerprints,
                              const std::vector<HeadLabel>& labels) {
    nlohmann::json j;
    j["level"] = granularity_name(state.level);
    if (state.level == Granularity::Phrase) {
        j["phrase_size"] = state.phrase_size;
        j["weighting"] = state.weighting == WindowWeighting::Uniform ? "uniform" : "triangular";
    }
    const ResolvedHeads heads = resolve_heads(state.heads, model, fingerprints, labels);
    nlohmann::json hs = nlohmann::json::array();
    for (const HeadRef& h : heads.heads) hs.push_back({h.layer, h.head});
    j["heads"] = hs;
    j["head_set"] = heads.waiting.empty() ? heads.description : heads.waiting;
    const SegmentsKey skey = segments_key(model, state.level);
    if (!state.segments.ready_for(skey)) return j;
    const SegmentsResult& seg = state.segments.value();
    const std::vector<Segment>& segments = *seg.segments;
    j["segments"] = segments.size();
    j["boxes"] = state.boxes;
    j["markers"] = state.markers;
    j["lines"] = state.lines.size();
    j["layout_ms"] = state.layout_ms;
    const int64_t active = active_segment(state);
    j["hovered"] = active;
    if (state.pair_key >= 0 && state.pinned >= 0)
        if (const auto pair = word_pair(model, state, heads.heads, state.pinned, state.pair_key)) j["pair"] = word_pair_json(*pair);
    j["hover_latency_ms"] = state.hover_latency_ms;
    if (!heads.heads.empty()) j["matrix_ready"] = state.matrix.ready_for(matrix_key(model, state, heads.heads));
    auto rect_of = [&](int64_t s) -> nlohmann::json {
        const auto it = state.drawn.find(s);
        if (it == state.drawn.end()) return nullptr;
        return {it->second[0], it->second[1], it->second[2], it->second[3]};
    };
    if (active < 0 || active >= static_cast<int64_t>(segments.size())) return j;
    j["hovered_text"] = segment_text(model, segments[static_cast<size_t>(active)]);
    j["hovered_rect"] = rect_of(active);
    if (heads.heads.empty() || !state.hover.ready_for({matrix_key(model, state, heads.heads), active})) return j;
    const TextViewState::HoverResult& h = state.hover.value();
    j["hover_compute_ms"] = h.compute_ms;
    j["hover_from_matrix"] = h.from_matrix;
    auto list = [&](const std::vector<double>& values) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& [s, v] : top_of(values, active, 5))
            out.push_back({{"segment", s}, {"value", v}, {"text", segment_text(model, segments[static_cast<size_t>(s)])},
                           {"rect", rect_of(s)}});
        return out;
    };
    j["self_to"] = h.to[static_cast<size_t>(active)];
    j["top_attended"] = list(h.to);
    j["top_attended_by"] = list(h.by);
    return j;
}

void draw_text_view_panel(app::DebuggerModel& model, TextViewState& state, const FingerprintsState& fingerprints,
                          const std::vector<HeadLabel>& labels) {
    // ---- controls ----
    int level = static_cast<int>(state.level);
    for (int i = 0; i < 5; ++i) {
        if (i) ImGui::SameLine();
        if (ImGui::RadioButton(level_names[i], level == i)) level = i;
    }
    if (level != static_cast<int>(state.level)) {
        state.level = static_cast<Granularity>(level);
        state.pinned = -1;
        state.mouse_segment = -1;
    }
    if (state.level == Granularity::Phrase) {
        ImGui::SameLine();
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 6);
        ImGui::SliderInt("window (words)", &state.phrase_size, 2, 15);
        ImGui::SameLine();
        int w = static_cast<int>(state.weighting);
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 7);
        static const char* weightings[] = {"uniform", "triangular"};
        if (ImGui::Combo("weights", &w, weightings, 2)) state.weighting = static_cast<WindowWeighting>(w);
    }
    draw_head_set_picker("textheads", state.heads, model, fingerprints, labels);
    {
        int show = static_cast<int>(state.show);
        ImGui::RadioButton("both", &show, 0);
        ImGui::SameLine();
        ImGui::RadioButton("attends to", &show, 1);
        ImGui::SameLine();
        ImGui::RadioButton("attended by", &show, 2);
        state.show = static_cast<TextViewState::Show>(show);
        ImGui::SameLine();
        const ImVec2 p = ImGui::GetCursorScreenPos();
        const float u = ImGui::GetFontSize();
        ImDrawList* dl = ImGui::GetWindowDrawList();
        dl->AddRectFilled(ImVec2(p.x + 8, p.y + 2), ImVec2(p.x + 8 + u, p.y + u), IM_COL32(255, 140, 0, 230), 2);
        dl->AddText(ImVec2(p.x + 12 + u, p.y), ImGui::GetColorU32(ImGuiCol_Text), "what it attends to");
        const float x2 = p.x + 20 + u + ImGui::CalcTextSize("what it attends to").x;
        dl->AddRectFilled(ImVec2(x2, p.y + u * 0.62f), ImVec2(x2 + u, p.y + u), IM_COL32(40, 150, 255, 240), 1);
        dl->AddText(ImVec2(x2 + u + 4, p.y), ImGui::GetColorU32(ImGuiCol_Text), "what attends to it");
        ImGui::Dummy(ImVec2(u * 20, u));
    }

    update_text_view(model, state, fingerprints, labels);
    const SegmentsKey skey = segments_key(model, state.level);
    const ResolvedHeads heads = resolve_heads(state.heads, model, fingerprints, labels);
    // Status: what is computing, how long the hover took.
    if (!state.segments.ready_for(skey)) {
        ImGui::TextDisabled("segmenting the text…");
        if (!state.segments.error().empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.segments.error().c_str());
    }

    // ---- exports ----
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 12);
    ImGui::InputText("##exportbase", state.export_base, sizeof state.export_base);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("file name without extension (the current directory unless a path is given)");
    const std::string base = state.export_base;
    auto try_export = [&](const std::function<void()>& fn, const std::string& what) {
        try {
            fn();
            state.export_note = "wrote " + what;
        } catch (const std::exception& e) {
            state.export_note = e.what();
        }
    };
    for (const char* ext : {".csv", ".npy", ".json"}) {
        ImGui::SameLine();
        char label[32];
        std::snprintf(label, sizeof label, "matrix %s", ext + 1);
        if (ImGui::SmallButton(label)) {
            const std::string path = base + "-" + granularity_name(state.level) + ext;
            state.matrix_wanted = true;
            state.pending_exports.push_back(path);
        }
    }
    ImGui::SameLine();
    ImGui::Checkbox("shares", &state.export_shares);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("export each row's share of its attention (mass / query tokens) instead of the raw mass");
    ImGui::SameLine();
    if (ImGui::SmallButton("segments .csv")) {
        const std::string path = base + "-" + granularity_name(state.level) + "-segments.csv";
        try_export([&] { export_text_segments(model, state, path); }, path);
    }
    ImGui::SameLine();
    if (ImGui::SmallButton("segments .json")) {
        const std::string path = base + "-" + granularity_name(state.level) + "-segments.json";
        try_export([&] { export_text_segments(model, state, path); }, path);
    }
    ImGui::SameLine();
    if (ImGui::SmallButton("PNG")) state.png_request = base + "-" + granularity_name(state.level) + ".png";
    // Matrix exports wait for the matrix on its worker.
    if (!state.pending_exports.empty() && !heads.heads.empty()) {
        const MatrixKey mkey = matrix_key(model, state, heads.heads);
        if (state.matrix.ready_for(mkey)) {
            for (const std::string& path : state.pending_exports)
                try_export([&] { export_text_matrix(model, state, fingerprints, labels, path); }, path);
            state.pending_exports.clear();
        }
    } else if (!state.pending_exports.empty()) {
        state.export_note = "no heads to export: " + heads.waiting;
        state.pending_exports.clear();
    }
    ImGui::SameLine();
    if (!state.pending_exports.empty()) ImGui::TextDisabled("computing the matrix for the export…");
    else if (!state.export_note.empty()) ImGui::TextDisabled("%s", state.export_note.c_str());
    else ImGui::NewLine();

    if (!state.segments.ready_for(skey)) return;
    const SegmentsResult& seg = state.segments.value();
    const std::vector<Segment>& segments = *seg.segments;
    const int64_t active = active_segment(state);
    const MatrixKey mkey = heads.heads.empty() ? MatrixKey{} : matrix_key(model, state, heads.heads);
    const bool have_hover = active >= 0 && !heads.heads.empty() && state.hover.ready_for({mkey, active});
    {
        std::string status = cat(segments.size(), " ", granularity_name(state.level == Granularity::Phrase ? Granularity::Word : state.level),
                                 " segments");
        if (active >= 0)
            status += cat("   segment ", active, have_hover ? cat(": highlight in ", std::lround(state.hover_latency_ms * 10) / 10.0, " ms")
                                                         : std::string(": computing…"));
        else status += "   hover a segment (click keeps it)";
        if (state.matrix.busy()) status += "   matrix computing…";
        ImGui::TextDisabled("%s", status.c_str());
    }

    if (!model.entity_marks.empty()) {
        // Legend of the ontology types matched in the text.
        std::vector<std::pair<int, std::string>> types;
        for (const auto& m : model.entity_marks)
            if (std::none_of(types.begin(), types.end(), [&](const auto& t) { return t.first == m.type; })) types.push_back({m.type, m.label});
        ImGui::TextDisabled("ontology:");
        for (const auto& [type, name] : types) {
            ImGui::SameLine();
            ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(entity_colour(type)), "_%s_", name.c_str());
        }
    }
    if (!model.alerts.spans.empty()) {
        ImGui::SameLine();
        ImGui::TextColored(ImVec4(1, 0.3f, 0.3f, 1), "   red: a rule's offending span");
    }

    // ---- the text ----
    ImGui::BeginChild("##textview", ImVec2(0, 0), true);
    const float width = ImGui::GetContentRegionAvail().x - ImGui::GetStyle().ScrollbarSize;
    if (std::abs(width - state.laid_width) > 0.5f || state.laid_font != ImGui::GetFontSize() ||
        state.laid_version != state.segments.version() || state.laid_masked != model.mask_pii)
        layout(model, state, segments, width);
    const float line_h = ImGui::GetTextLineHeightWithSpacing();
    if (state.scroll_to_pinned && state.pinned >= 0 && static_cast<size_t>(state.pinned) < state.segment_line.size()) {
        const int32_t line = state.segment_line[static_cast<size_t>(state.pinned)];
        if (line >= 0) ImGui::SetScrollY(std::max(0.f, line * line_h - ImGui::GetWindowHeight() / 3));
        state.scroll_to_pinned = false;
    }
    const std::vector<double>* to = have_hover && state.show != TextViewState::Show::AttendedBy ? &state.hover.value().to : nullptr;
    const std::vector<double>* by = have_hover && state.show != TextViewState::Show::AttendsTo ? &state.hover.value().by : nullptr;
    double to_max = 0, by_max = 0;
    for (size_t i = 0; to && i < to->size(); ++i)
        if (static_cast<int64_t>(i) != active) to_max = std::max(to_max, (*to)[i]);
    for (size_t i = 0; by && i < by->size(); ++i)
        if (static_cast<int64_t>(i) != active) by_max = std::max(by_max, (*by)[i]);

    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImU32 text_col = ImGui::GetColorU32(ImGuiCol_Text), generated_col = IM_COL32(140, 200, 255, 255),
                dim = ImGui::GetColorU32(ImGuiCol_TextDisabled);
    const float fb_x = ImGui::GetIO().DisplayFramebufferScale.x, fb_y = ImGui::GetIO().DisplayFramebufferScale.y;
    state.drawn.clear();
    int64_t under_mouse = -1;
    const bool window_hovered = ImGui::IsWindowHovered();
    ImGuiListClipper clipper;
    clipper.Begin(static_cast<int>(state.lines.size()), line_h);
    while (clipper.Step()) {
        for (int l = clipper.DisplayStart; l < clipper.DisplayEnd; ++l) {
            const ImVec2 origin = ImGui::GetCursorScreenPos();
            const TextViewState::Line& line = state.lines[static_cast<size_t>(l)];
            for (size_t i = line.first; i < line.first + line.count; ++i) {
                const TextViewState::Piece& piece = state.pieces[i];
                const int64_t s = piece.segment;
                const ImVec2 a(origin.x + piece.x, origin.y), b(a.x + piece.width, origin.y + line_h);
                if (s != active) {
                    if (to && to_max > 0) {
                        const float t = static_cast<float>(std::sqrt((*to)[static_cast<size_t>(s)] / to_max));
                        if (t > 0.03f) dl->AddRectFilled(a, ImVec2(b.x, b.y - 1), IM_COL32(255, 140, 0, static_cast<int>(40 + 200 * t)));
                    }
                    if (by && by_max > 0) {
                        const float t = static_cast<float>(std::sqrt((*by)[static_cast<size_t>(s)] / by_max));
                        if (t > 0.03f)
                            dl->AddRectFilled(ImVec2(a.x, b.y - line_h * 0.34f), ImVec2(b.x, b.y - 1),
                                              IM_COL32(40, 150, 255, static_cast<int>(50 + 205 * t)));
                    }
                } else {
                    // The hovered segment: a light band with a white line above and below (pieces adjoin).
                    dl->AddRectFilled(a, ImVec2(b.x, b.y - 1), IM_COL32(255, 255, 255, 45));
                    dl->AddLine(ImVec2(a.x, a.y + 0.5f), ImVec2(b.x, a.y + 0.5f), IM_COL32(255, 255, 255, 230), 1.5f);
                    dl->AddLine(ImVec2(a.x, b.y - 1.5f), ImVec2(b.x, b.y - 1.5f), IM_COL32(255, 255, 255, 230), 1.5f);
                }
                // A rule's offending span: red behind the text, pulsing after a new violation, then steady.
                for (const auto& [vb, ve] : model.alerts.spans)
                    if (vb < piece.end && piece.begin < ve) {
                        dl->AddRectFilled(a, ImVec2(b.x, b.y - 1), IM_COL32(230, 25, 25, static_cast<int>(150 + 100 * model.alerts.pulse)));
                        break;
                    }
                const Segment& segment = segments[static_cast<size_t>(s)];
                const bool generated = segment.token_count() > 0 && segment.first >= model.session().prompt_tokens;
                if (piece.kind == 0) {
                    dl->AddText(a, generated ? generated_col : text_col, piece.text.c_str());
                } else if (piece.kind == 3) {
                    dl->AddRectFilled(ImVec2(a.x + 1, a.y + 1), ImVec2(b.x - 2, b.y - 2), IM_COL32(70, 70, 80, 200), 3);
                    dl->AddText(ImVec2(a.x + 3, a.y), IM_COL32(230, 230, 240, 255), piece.text.c_str());
                } else {
                    dl->AddRect(ImVec2(a.x + 1, a.y + 1), ImVec2(b.x - 2, b.y - 2), piece.kind == 1 ? dim : IM_COL32(200, 160, 255, 220), 3);
                    dl->AddText(ImVec2(a.x + 3, a.y), piece.kind == 1 ? dim : IM_COL32(200, 160, 255, 255), piece.text.c_str());
                }
                // Ontology matches: underlined in their type's colour, the type named where the match starts.
                for (const app::DebuggerModel::EntityMark& m : model.entity_marks) {
                    if (!(m.begin < piece.end && piece.begin < m.end)) continue;
                    const ImU32 col = entity_colour(m.type);
                    dl->AddLine(ImVec2(a.x, b.y - 2.5f), ImVec2(b.x, b.y - 2.5f), col, 2.5f);
                    if (piece.begin <= m.begin && m.begin < piece.end)
                        dl->AddText(ImGui::GetFont(), ImGui::GetFontSize() * 0.62f, ImVec2(a.x, a.y - ImGui::GetFontSize() * 0.3f), col,
                                    m.label.c_str());
                    // A span of an anomalous pair: an orange frame (the tooltip and the Rules panel say why).
                    if (!m.anomaly.empty()) dl->AddRect(a, ImVec2(b.x, b.y - 1), IM_COL32(255, 150, 30, 230), 2.f, 0, 1.5f);
                }
                // The segment's extent on the first line it is drawn on.
                if (auto it = state.drawn.find(s); it == state.drawn.end())
                    state.drawn[s] = {a.x * fb_x, a.y * fb_y, b.x * fb_x, (b.y - 1) * fb_y};
                else if (it->second[1] == a.y * fb_y)
                    it->second[2] = b.x * fb_x;
                if (window_hovered && ImGui::IsMouseHoveringRect(a, b)) under_mouse = s;
            }
            ImGui::Dummy(ImVec2(width, line_h));
        }
    }
    clipper.End();
    if (ImGui::GetIO().MouseDelta.x != 0 || ImGui::GetIO().MouseDelta.y != 0) state.pinned_by_script = false;
    if (state.pinned_by_script) under_mouse = -1;
    state.mouse_segment = under_mouse;
    if (under_mouse >= 0) {
        const Segment& s = segments[static_cast<size_t>(under_mouse)];
        ImGui::BeginTooltip();
        ImGui::Text("%s %lld (%s): bytes [%u, %u), tokens [%lld, %lld)", granularity_name(state.level),
                    static_cast<long long>(under_mouse), segment_kind_name(s.kind), s.begin, s.end, static_cast<long long>(s.first),
                    static_cast<long long>(s.last));
        ImGui::PushTextWrapPos(ImGui::GetFontSize() * 30);
        ImGui::TextUnformatted(one_line(segment_text(model, s, 300)).c_str());
        ImGui::PopTextWrapPos();
        for (const app::DebuggerModel::EntityMark& m : model.entity_marks)
            if (m.begin < s.end && s.begin < m.end) {
                ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(entity_colour(m.type)), "ontology: %s", m.label.c_str());
                if (!m.anomaly.empty()) ImGui::TextColored(ImVec4(1, 0.6f, 0.15f, 1), "anomaly: %s", m.anomaly.c_str());
            }
        for (const auto& [vb, ve] : model.alerts.spans)
            if (vb < s.end && s.begin < ve) {
                ImGui::TextColored(ImVec4(1, 0.3f, 0.3f, 1), "a rule is violated here (see Violations)");
                break;
            }
        if (have_hover && active == under_mouse) {
            const auto tops = top_of(state.hover.value().to, active, 3);
            for (const auto& [t, v] : tops) {
                ImGui::TextColored(ImVec4(1, 0.65f, 0.2f, 1), "→ %.1f%%  %s", v * 100,
                                   one_line(segment_text(model, segments[static_cast<size_t>(t)], 48)).c_str());
                // Word level: the syntactic relation to each word it attends to strongly.
                if (const auto pair = word_pair(model, state, heads.heads, under_mouse, t); pair && pair->parsed)
                    ImGui::TextDisabled("     %s", pair->relation.c_str());
            }
        }
        ImGui::TextDisabled("click: keep this segment (click again: release)");
        ImGui::EndTooltip();
        // Word level with a word kept: this word and the kept one as a (query, key) pair.
        if (state.pinned >= 0 && under_mouse != state.pinned) draw_pair_tooltip(model, state, heads.heads, state.pinned, under_mouse, nullptr);
        if (ImGui::IsMouseClicked(ImGuiMouseButton_Left)) state.pinned = state.pinned == under_mouse ? -1 : under_mouse;
    }
    // A script's pair: the box next to the key word (scripts park the mouse away from the text).
    if (under_mouse < 0 && state.pair_key >= 0 && state.pinned >= 0) {
        const auto it = state.drawn.find(state.pair_key);
        const ImVec2 at = it == state.drawn.end() ? ImGui::GetWindowPos()
                                                   : ImVec2(it->second[0] / fb_x, it->second[3] / fb_y + line_h * 0.3f);
        draw_pair_tooltip(model, state, heads.heads, state.pinned, state.pair_key, &at);
    }
    ImGui::EndChild();
}

}  // namespace attn::panels
