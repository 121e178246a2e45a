#include "ui/panels/fingerprints_panel.h"

#include <imgui.h>
#include <imgui_internal.h>  // TableSetColumnSortDirection: a script's sort shows in the header

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>

#include "engine/error.h"
#include "ui/render/colormap.h"

namespace attn::panels {

namespace {

struct ColumnInfo {
    FingerprintColumn column;
    const char* name;    // script name
    const char* header;  // table header
    const char* help;
};

const std::vector<ColumnInfo>& columns() {
    static const std::vector<ColumnInfo> list = {
        {FingerprintColumn::Head, "head", "head", "layer, head"},
        {FingerprintColumn::Entropy, "entropy", "entropy", "Shannon entropy of a row, bits (mean over rows)"},
        {FingerprintColumn::NormalizedEntropy, "normalized_entropy", "norm. H", "entropy / log2(visible keys): 1 uniform, 0 one-hot"},
        {FingerprintColumn::Sink, "sink", "sink", "mass on the first token"},
        {FingerprintColumn::PreviousToken, "previous_token", "prev", "mass on the previous token"},
        {FingerprintColumn::Induction, "induction", "induction", "mass on the token after an earlier occurrence of the current token"},
        {FingerprintColumn::Local, "local", "local", "mass on the last 9 keys (the query and 8 before it)"},
        {FingerprintColumn::Distance, "distance", "distance", "mean attention distance, tokens"},
        {FingerprintColumn::Keys90, "keys90", "keys 90%", "fraction of the visible keys holding 90% of the mass (sparsity)"},
        {FingerprintColumn::Positional, "positional", "offset", "the fixed relative offset with the most mass, and that mass"},
        {FingerprintColumn::Syntax, "syntax", "syntax",
         "share of the attention of words with an earlier syntactic partner that lands on their partners (link-grammar, English)"},
        {FingerprintColumn::Labels, "labels", "labels", "automatic labels, then user labels (yellow)"},
    };
    return list;
}

double metric(const FingerprintsState& state, const HeadFingerprint& f, FingerprintColumn c) {
    switch (c) {
        case FingerprintColumn::Syntax: {
            const double v = syntax_share(state, f.layer, f.head);
            return std::isnan(v) ? -1.0 : v;  // not computed (or nothing parsed): sorted below every share
        }
        case FingerprintColumn::Head: return f.layer * 100000.0 + f.head;
        case FingerprintColumn::Entropy: return f.entropy_bits;
        case FingerprintColumn::NormalizedEntropy: return f.normalized_entropy;
        case FingerprintColumn::Sink: return f.sink_mass;
        case FingerprintColumn::PreviousToken: return f.previous_token;
        case FingerprintColumn::Induction: return f.induction;
        case FingerprintColumn::Local: return f.local_mass;
        case FingerprintColumn::Distance: return f.mean_distance;
        case FingerprintColumn::Keys90: return f.keys_for_90_fraction;
        case FingerprintColumn::Positional: return f.positional_mass;
        case FingerprintColumn::Labels: return 0;
    }
    return 0;
}

std::string labels_text(const HeadFingerprint& f, const std::vector<HeadLabel>& user) {
    std::string text;
    for (const std::string& l : f.labels) text += (text.empty() ? "" : ", ") + l;
    for (const HeadLabel& l : user)
        if (l.layer == f.layer && l.head == f.head) text += (text.empty() ? "" : ", ") + l.text;
    return text;
}

bool equal_ci(const std::string& a, const std::string& b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return std::tolower((unsigned char)x) == std::tolower((unsigned char)y); });
}

bool has_label(const HeadFingerprint& f, const std::vector<HeadLabel>& user, const std::string& label) {
    for (const std::string& l : f.labels)
        if (equal_ci(l, label)) return true;
    for (const HeadLabel& l : user)
        if (l.layer == f.layer && l.head == f.head && equal_ci(l.text, label)) return true;
    return false;
}

void take(FingerprintsState& state) {
    try {
        state.result = state.pending.get();
        state.last_ms = state.result->ms;
        state.store = state.pending_store;
        state.covered = state.pending_positions;
        state.note.clear();
        ++state.version;
    } catch (const std::exception& e) {
        state.note = e.what();
        state.store = state.pending_store;  // don't retry the same failure every frame
        state.covered = state.pending_positions;
    }
}

}  // namespace

const char* fingerprint_column_name(FingerprintColumn column) {
    for (const ColumnInfo& c : columns())
        if (c.column == column) return c.name;
    return "?";
}

std::optional<FingerprintColumn> parse_fingerprint_column(const std::string& name) {
    for (const ColumnInfo& c : columns())
        if (name == c.name) return c.column;
    return std::nullopt;
}

const std::vector<HeadFingerprint>* fingerprints_of(const FingerprintsState& state) {
    return state.result ? &state.result->table : nullptr;
}

bool fingerprints_current(const app::DebuggerModel& model, const FingerprintsState& state) {
    return state.result && state.store == model.session().capture.get() && state.covered == model.positions() &&
           !state.pending.valid();
}

void update_syntax_shares(const app::DebuggerModel& model, FingerprintsState& state, bool wait) {
    const Session& session = model.session();
    const FingerprintsState::SyntaxKey key{session.capture.get(), model.positions(), session.text.size()};
    state.syntax.poll();
    if (!(wait || state.syntax.needs(key)) || model.positions() <= 0) return;
    auto snapshot = std::make_shared<Session>();
    snapshot->tokens.assign(session.tokens.begin(), session.tokens.begin() + model.positions());
    snapshot->text = session.text.substr(0, snapshot->tokens.empty() ? 0 : std::min<size_t>(session.text.size(), snapshot->tokens.back().end));
    snapshot->prompt_tokens = session.prompt_tokens;
    snapshot->capture = session.capture;
    snapshot->config = session.config;
    const int layers = model.n_layer(), heads = model.n_head();
    auto job = [snapshot, layers, heads] {
        auto out = std::make_shared<FingerprintsState::SyntaxShares>();
        out->n_head = heads;
        const SyntaxAnalysis analysis = parse_session_syntax(*snapshot);
        out->note = analysis.note;
        out->links = static_cast<int64_t>(analysis.links.size());
        std::vector<HeadRef> all;
        for (int l = 0; l < layers; ++l)
            for (int h = 0; h < heads; ++h) all.push_back({l, h});
        const CpuTileSource source(*snapshot->capture, 0);
        out->heads = syntactic_shares(source, *snapshot, analysis, all);
        return std::shared_ptr<const FingerprintsState::SyntaxShares>(std::move(out));
    };
    if (wait) state.syntax.finish(key, job);
    else state.syntax.want(key, job);
}

bool syntax_shares_settled(const app::DebuggerModel& model, const FingerprintsState& state) {
    if (!state.syntax_wanted) return true;
    const Session& session = model.session();
    return state.syntax.done_for({session.capture.get(), model.positions(), session.text.size()});
}

double syntax_share(const FingerprintsState& state, int layer, int head) {
    if (!state.syntax.has_value() || !state.syntax.value()) return std::nan("");
    const FingerprintsState::SyntaxShares& s = *state.syntax.value();
    const size_t i = static_cast<size_t>(layer) * static_cast<size_t>(s.n_head) + static_cast<size_t>(head);
    if (i >= s.heads.size() || s.heads[i].query_tokens == 0) return std::nan("");
    return s.heads[i].share;
}

void update_fingerprints(const app::DebuggerModel& model, FingerprintsState& state, bool wait) {
    for (int round = 0; round < 3; ++round) {
        if (state.pending.valid() &&
            (wait || state.pending.wait_for(std::chrono::seconds(0)) == std::future_status::ready))
            take(state);
        if (state.pending.valid()) return;
        const std::shared_ptr<CaptureStore> store = model.session().capture;
        const int64_t positions = model.positions();
        if (!store || positions <= 0) return;
        if (store.get() == state.store && positions == state.covered) return;  // current (or failed for it)
        const auto started = std::chrono::steady_clock::now();
        std::vector<Token> tokens(model.session().tokens.begin(), model.session().tokens.begin() + positions);
        state.pending_store = store.get();
        state.pending_positions = positions;
        if (state.result && state.store == store.get() && positions > state.covered && state.covered > 1) {
            // New rows (live decode steps): fold them into a copy of the running sums.
            auto accumulator = std::make_shared<HeadFingerprints>(*state.result->accumulator);
            const int64_t from = state.covered;
            state.last_was_fold = true;
            state.pending = std::async(std::launch::async, [store, accumulator, tokens = std::move(tokens), from, positions, started] {
                std::vector<int64_t> queries;
                for (int64_t q = from; q < positions; ++q) queries.push_back(q);
                accumulator->fold_in(*store, tokens, queries);
                return FingerprintsState::Result{accumulator, accumulator->all(),
                              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count()};
            });
        } else {
            Session snapshot;
            snapshot.tokens = std::move(tokens);
            snapshot.text = model.session().text;
            snapshot.prompt_tokens = model.session().prompt_tokens;
            snapshot.capture = store;
            state.last_was_fold = false;
            state.pending = std::async(std::launch::async, [snapshot = std::move(snapshot), started] {
                FingerprintOptions options;
                options.threads = 0;
                auto accumulator = std::make_shared<HeadFingerprints>(HeadFingerprints::compute(snapshot, options));
                return FingerprintsState::Result{accumulator, accumulator->all(),
                              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count()};
            });
        }
        if (!wait) return;
    }
}

std::vector<std::string> labels_in_use(const FingerprintsState& state, const std::vector<HeadLabel>& user_labels) {
    std::vector<std::string> out;
    if (const auto* table = fingerprints_of(state))
        for (const std::string& name : automatic_label_names())
            if (std::any_of(table->begin(), table->end(), [&](const HeadFingerprint& f) {
                    return std::find(f.labels.begin(), f.labels.end(), name) != f.labels.end();
                }))
                out.push_back(name);
    for (const HeadLabel& l : user_labels)
        if (std::none_of(out.begin(), out.end(), [&](const std::string& s) { return equal_ci(s, l.text); })) out.push_back(l.text);
    return out;
}

std::vector<int> table_order(const FingerprintsState& state, const std::vector<HeadLabel>& user_labels) {
    std::vector<int> order;
    const auto* table = fingerprints_of(state);
    if (!table) return order;
    for (int i = 0; i < static_cast<int>(table->size()); ++i)
        if (state.filter.empty() || has_label((*table)[size_t(i)], user_labels, state.filter)) order.push_back(i);
    const FingerprintColumn c = state.sort;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        const HeadFingerprint &fa = (*table)[size_t(a)], &fb = (*table)[size_t(b)];
        if (c == FingerprintColumn::Labels) {
            const std::string la = labels_text(fa, user_labels), lb = labels_text(fb, user_labels);
            return state.ascending ? la < lb : la > lb;
        }
        const double va = metric(state, fa, c), vb = metric(state, fb, c);
        return state.ascending ? va < vb : va > vb;
    });
    return order;
}

std::vector<uint8_t> filter_mask(const FingerprintsState& state, const std::vector<HeadLabel>& user_labels, int heads_total) {
    if (state.filter.empty()) return std::vector<uint8_t>(size_t(heads_total), 1);
    const auto* table = fingerprints_of(state);
    if (!table || static_cast<int>(table->size()) != heads_total) return {};
    std::vector<uint8_t> mask(size_t(heads_total), 0);
    for (size_t i = 0; i < table->size(); ++i) mask[i] = has_label((*table)[i], user_labels, state.filter) ? 1 : 0;
    return mask;
}

void add_user_label(std::vector<HeadLabel>& labels, const CaptureShape& shape, int layer, int head, const std::string& text) {
    if (layer < 0 || layer >= shape.n_layer || head < 0 || head >= shape.n_head)
        fail("head L", layer, "H", head, " is out of range (", shape.n_layer, " layers × ", shape.n_head, " heads)");
    if (text.empty()) fail("a head label needs some text");
    for (const HeadLabel& l : labels)
        if (l.layer == layer && l.head == head && l.text == text) return;
    labels.push_back({layer, head, text});
}

size_t remove_user_labels(std::vector<HeadLabel>& labels, int layer, int head, const std::string& text) {
    const size_t before = labels.size();
    std::erase_if(labels, [&](const HeadLabel& l) { return l.layer == layer && l.head == head && (text.empty() || l.text == text); });
    return before - labels.size();
}

void draw_fingerprints_panel(app::DebuggerModel& model, FingerprintsState& state, std::vector<HeadLabel>& labels,
                             const FingerprintsActions& actions) {
    update_fingerprints(model, state);
    const auto* table = fingerprints_of(state);
    const int heads = model.n_head();

    // ---- filter and status ----
    const std::vector<std::string> in_use = labels_in_use(state, labels);
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 11);
    if (ImGui::BeginCombo("label filter", state.filter.empty() ? "(every head)" : state.filter.c_str())) {
        if (ImGui::Selectable("(every head)", state.filter.empty())) state.filter.clear();
        for (const std::string& l : in_use)
            if (ImGui::Selectable(l.c_str(), equal_ci(l, state.filter))) state.filter = l;
        ImGui::EndCombo();
    }
    ImGui::SameLine();
    const std::vector<int> order = table_order(state, labels);
    if (table) {
        const HeadFingerprints& acc = *state.result->accumulator;
        ImGui::TextDisabled("%zu of %zu heads   %zu rows per head%s   %s in %.0f ms%s", order.size(), table->size(),
                            acc.rows().size(), acc.sampled() ? " (sampled)" : "", state.last_was_fold ? "folded in" : "computed",
                            state.last_ms, state.pending.valid() ? "   updating…" : "");
    } else {
        ImGui::TextDisabled(state.pending.valid() ? "computing the fingerprints…" : "no fingerprints");
    }
    if (!state.note.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.note.c_str());
    state.syntax_wanted = true;
    update_syntax_shares(model, state);
    if (state.syntax.busy()) ImGui::TextDisabled("syntax column: parsing the text with link-grammar…");
    else if (!state.syntax.error().empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "syntax column: %s", state.syntax.error().c_str());
    else if (state.syntax.has_value() && state.syntax.value() && !state.syntax.value()->note.empty())
        ImGui::TextDisabled("syntax column: %s", state.syntax.value()->note.c_str());
    if (!table) return;

    // ---- user labels of the selected head ----
    const int sel = state.selected >= 0 && state.selected < static_cast<int>(table->size()) ? state.selected
                                                                                            : model.settings.layer * heads + model.settings.head;
    const int sel_layer = sel / heads, sel_head = sel % heads;
    ImGui::Text("L%dH%d user labels:", sel_layer, sel_head);
    for (size_t i = 0; i < labels.size(); ++i) {
        const HeadLabel& l = labels[i];
        if (l.layer != sel_layer || l.head != sel_head) continue;
        ImGui::SameLine();
        ImGui::PushID(static_cast<int>(i));
        const std::string button = l.text + "  x";
        if (ImGui::SmallButton(button.c_str())) {
            remove_user_labels(labels, sel_layer, sel_head, std::string(l.text));
            if (actions.labels_changed) actions.labels_changed();
            ImGui::PopID();
            break;
        }
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("remove this label");
        ImGui::PopID();
    }
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 9);
    const bool entered = ImGui::InputTextWithHint("##newlabel", "new label", state.new_label, sizeof state.new_label,
                                                  ImGuiInputTextFlags_EnterReturnsTrue);
    ImGui::SameLine();
    if ((ImGui::SmallButton("add") || entered) && state.new_label[0]) {
        try {
            add_user_label(labels, model.session().capture->shape(), sel_layer, sel_head, state.new_label);
            state.new_label[0] = 0;
            state.label_note.clear();
            if (actions.labels_changed) actions.labels_changed();
        } catch (const std::exception& e) {
            state.label_note = e.what();
        }
    }
    if (!state.label_note.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.label_note.c_str());

    // ---- the table ----
    const ImGuiTableFlags flags = ImGuiTableFlags_Sortable | ImGuiTableFlags_RowBg | ImGuiTableFlags_BordersInnerV |
                                  ImGuiTableFlags_ScrollY | ImGuiTableFlags_Resizable | ImGuiTableFlags_SizingFixedFit;
    const int n_columns = static_cast<int>(columns().size());
    if (!ImGui::BeginTable("##fingerprints", n_columns, flags, ImVec2(0, -ImGui::GetFrameHeightWithSpacing()))) return;
    ImGui::TableSetupScrollFreeze(1, 1);
    for (const ColumnInfo& c : columns()) {
        ImGuiTableColumnFlags cf = ImGuiTableColumnFlags_None;
        if (c.column == FingerprintColumn::Head) cf |= ImGuiTableColumnFlags_DefaultSort;
        if (c.column == FingerprintColumn::Labels) cf |= ImGuiTableColumnFlags_WidthStretch;
        ImGui::TableSetupColumn(c.header, cf, 0, static_cast<ImGuiID>(c.column));
    }
    if (state.sort_from_script) {
        // A script chose the sort: show it in the header too.
        ImGui::TableSetColumnSortDirection(static_cast<int>(state.sort),
                                           state.ascending ? ImGuiSortDirection_Ascending : ImGuiSortDirection_Descending, false);
        state.sort_from_script = false;
    }
    ImGui::TableHeadersRow();
    if (ImGuiTableSortSpecs* specs = ImGui::TableGetSortSpecs(); specs && specs->SpecsDirty) {
        if (specs->SpecsCount > 0) {
            state.sort = static_cast<FingerprintColumn>(specs->Specs[0].ColumnUserID);
            state.ascending = specs->Specs[0].SortDirection == ImGuiSortDirection_Ascending;
        }
        specs->SpecsDirty = false;
    }
    // Header tooltips.
    for (int c = 0; c < n_columns; ++c)
        if (ImGui::TableGetColumnFlags(c) & ImGuiTableColumnFlags_IsHovered) {
            ImGui::SetTooltip("%s", columns()[size_t(c)].help);
        }

    // Per-column range for the cell colours.
    std::vector<double> lo(size_t(n_columns), 1e300), hi(size_t(n_columns), -1e300);
    for (const HeadFingerprint& f : *table)
        for (int c = 1; c < n_columns - 1; ++c) {
            const double v = metric(state, f, columns()[size_t(c)].column);
            lo[size_t(c)] = std::min(lo[size_t(c)], v);
            hi[size_t(c)] = std::max(hi[size_t(c)], v);
        }
    const render::ColormapTable& colours = render::colormap_table(render::Colormap::Viridis);
    ImGuiListClipper clipper;
    clipper.Begin(static_cast<int>(order.size()));
    while (clipper.Step()) {
        for (int r = clipper.DisplayStart; r < clipper.DisplayEnd; ++r) {
            const int index = order[size_t(r)];
            const HeadFingerprint& f = (*table)[size_t(index)];
            ImGui::TableNextRow();
            ImGui::TableSetColumnIndex(0);
            char name[32];
            std::snprintf(name, sizeof name, "L%dH%d", f.layer, f.head);
            const bool is_selected = index == sel;
            if (ImGui::Selectable(name, is_selected, ImGuiSelectableFlags_SpanAllColumns | ImGuiSelectableFlags_AllowDoubleClick)) {
                state.selected = index;
                model.select_layer(f.layer);
                model.select_head(f.head);
                if (ImGui::IsMouseDoubleClicked(ImGuiMouseButton_Left) && actions.open) actions.open(f.layer, f.head);
            }
            if (ImGui::IsItemHovered()) ImGui::SetTooltip("click: select   double-click: open in the map");
            for (int c = 1; c < n_columns; ++c) {
                ImGui::TableSetColumnIndex(c);
                const FingerprintColumn column = columns()[size_t(c)].column;
                if (column == FingerprintColumn::Labels) {
                    bool first = true;
                    for (const std::string& l : f.labels) {
                        if (!first) ImGui::SameLine(0, 4);
                        ImGui::TextUnformatted(l.c_str());
                        first = false;
                    }
                    for (const HeadLabel& l : labels)
                        if (l.layer == f.layer && l.head == f.head) {
                            if (!first) ImGui::SameLine(0, 4);
                            ImGui::TextColored(ImVec4(1.f, 0.85f, 0.35f, 1.f), "%s", l.text.c_str());
                            first = false;
                        }
                    continue;
                }
                const double v = metric(state, f, column);
                if (column == FingerprintColumn::Syntax && v < 0) {
                    ImGui::TextDisabled(state.syntax.busy() ? "…" : "–");
                    continue;
                }
                const double span = hi[size_t(c)] - lo[size_t(c)];
                const double t = span > 0 ? (v - lo[size_t(c)]) / span : 0.0;
                const uint32_t rgba = colours[static_cast<size_t>(std::clamp(t, 0.0, 1.0) * 255.0 + 0.5)];
                // Colour-coded: the column's colormap value, translucent enough for the text.
                ImGui::TableSetBgColor(ImGuiTableBgTarget_CellBg, (rgba & 0x00FFFFFFu) | (0x90u << 24));
                if (column == FingerprintColumn::Positional) {
                    if (f.positional_offset >= 0) ImGui::Text("δ%d %.2f", f.positional_offset, f.positional_mass);
                    else ImGui::TextDisabled("–");
                } else if (column == FingerprintColumn::Distance || column == FingerprintColumn::Entropy) {
                    ImGui::Text("%.2f", v);
                } else {
                    ImGui::Text("%.3f", v);
                }
            }
        }
    }
    clipper.End();
    ImGui::EndTable();
}

}  // namespace attn::panels
