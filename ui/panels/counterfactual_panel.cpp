#include "ui/panels/counterfactual_panel.h"

#include "ui/app/export_record.h"

#include <imgui.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/pii.h"
#include "engine/tile_source.h"

namespace attn::panels {

namespace {

constexpr Intervention::Kind kKinds[] = {Intervention::Kind::MaskKeys, Intervention::Kind::AblateHeads,
                                         Intervention::Kind::RemoveSpan, Intervention::Kind::ReplaceSpan,
                                         Intervention::Kind::EmbeddingNoise};

const char* kind_label(Intervention::Kind kind) {
    switch (kind) {
        case Intervention::Kind::MaskKeys: return "mask keys";
        case Intervention::Kind::AblateHeads: return "ablate heads";
        case Intervention::Kind::RemoveSpan: return "remove span";
        case Intervention::Kind::ReplaceSpan: return "replace span";
        case Intervention::Kind::EmbeddingNoise: return "embedding noise";
    }
    return "?";
}

bool uses_span(Intervention::Kind kind) { return kind != Intervention::Kind::AblateHeads; }
bool uses_heads(Intervention::Kind kind) {
    return kind == Intervention::Kind::MaskKeys || kind == Intervention::Kind::AblateHeads;
}

int64_t parse_integer(std::string_view text, std::string_view what) {
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
    int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size())
        fail(what, ": '", text, "' is not an integer");
    return value;
}

KeySpan parse_span(const std::string& text) {
    const size_t colon = text.find(':');
    if (colon == std::string::npos) fail("span '", text, "' is not A:B (token positions [A, B))");
    return {parse_integer(std::string_view(text).substr(0, colon), "span start"),
            parse_integer(std::string_view(text).substr(colon + 1), "span end")};
}

// "L:H, L:H" (commas or spaces between heads).
std::vector<std::pair<int, int>> parse_heads(const std::string& text) {
    std::vector<std::pair<int, int>> heads;
    std::string item;
    auto take = [&] {
        if (item.empty()) return;
        const size_t colon = item.find(':');
        if (colon == std::string::npos) fail("head '", item, "' is not LAYER:HEAD");
        heads.emplace_back(static_cast<int>(parse_integer(std::string_view(item).substr(0, colon), "layer")),
                           static_cast<int>(parse_integer(std::string_view(item).substr(colon + 1), "head")));
        item.clear();
    };
    for (char c : text) {
        if (c == ',' || c == ' ') take();
        else item += c;
    }
    take();
    if (heads.empty()) fail("no heads given (LAYER:HEAD, …)");
    return heads;
}

// The form as an intervention (attn::Error naming what is missing or malformed).
Intervention intervention_from_form(const app::DebuggerModel& model, const CounterfactualState& s) {
    std::vector<std::pair<int, int>> heads;
    if (uses_heads(s.kind))
        heads = s.shown_head ? std::vector<std::pair<int, int>>{{model.settings.layer, model.settings.head}} : parse_heads(s.heads);
    KeySpan span;
    if (uses_span(s.kind)) {
        if (s.span.empty()) fail("choose a token span A:B (or take the selected or hovered token)");
        span = parse_span(s.span);
    }
    switch (s.kind) {
        case Intervention::Kind::MaskKeys: return Intervention::mask_keys(span.begin, span.end, heads);
        case Intervention::Kind::AblateHeads: return Intervention::ablate_heads(heads, s.ablate_mean);
        case Intervention::Kind::RemoveSpan: return Intervention::remove_span(span.begin, span.end);
        case Intervention::Kind::ReplaceSpan: return Intervention::replace_span(span.begin, span.end, s.replacement);
        case Intervention::Kind::EmbeddingNoise:
            if (!(s.noise_std >= 0)) fail("the noise's standard deviation must be >= 0");
            return Intervention::embedding_noise(span.begin, span.end, s.noise_std, static_cast<uint64_t>(std::max(0, s.seed)));
    }
    fail("unknown intervention");
}

// Why Run is not possible now ("" when it is).
std::string run_blocker(const app::DebuggerModel& model, const CounterfactualState& s) {
    if (!s.model)
        return "no model: a reopened session needs the model that captured it — load it in the Model panel";
    if (s.live_decoding) return "the live run is decoding: pause it (or let it finish) first";
    if (counterfactual_busy(s)) return "a counterfactual is running";
    if (model.steps() == 0 && model.positions() < 1) return "nothing captured yet";
    return "";
}

// JSON-safe one-line display of token bytes.
std::string shown_bytes(const std::string& bytes) {
    return nlohmann::json(bytes).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Per token of the original snapshot: whether it is personal data (and masking is on).
std::vector<bool> masked_tokens(const app::DebuggerModel& model, const Session& original) {
    if (!model.mask_pii) return std::vector<bool>(original.tokens.size(), false);
    return token_pii_mask(original.tokens, original.text);
}

// The free run's generated text as displayed: personal data masked over the whole free text (a number
// may start in the prompt).
std::string free_text_display(const app::DebuggerModel& model, const CounterfactualResult& r) {
    if (!model.mask_pii || !r.free) return r.free_run.text;
    const std::string& text = r.free->text;
    const size_t begin = text.size() >= r.free_run.text.size() ? text.size() - r.free_run.text.size() : 0;
    return mask_pii_range(text, begin, text.size(), find_pii(text));
}

std::string masked_text(const app::DebuggerModel& model, const std::string& text) {
    return model.mask_pii ? mask_pii(text) : text;
}

// The output token (and the counterfactual's top token) of step t as displayed.
std::string output_text(const std::vector<bool>& masked, const Session& original, int64_t step, const std::string& text) {
    const size_t position = static_cast<size_t>(original.prompt_tokens + step);
    return position < masked.size() && masked[position] ? std::string(kPiiMaskGlyph) : text;
}

void compute_deltas(CounterfactualState& s, const CounterfactualResult& r, const Session& original, int layer, int head,
                    const QueryComparison& c) {
    s.delta_result = &r;
    s.delta_layer = layer;
    s.delta_head = head;
    s.delta_query = c.original_query;
    s.delta.assign(static_cast<size_t>(c.original_query + 1), 0.f);
    s.inserted_mass = 0;
    const std::vector<float> before = CpuTileSource(*original.capture).row(layer, head, c.original_query);
    const std::vector<float> after = counterfactual_row(r, layer, head, c.counterfactual_query);
    for (int64_t k = 0; k <= c.original_query; ++k) {
        const std::optional<int64_t> mapped = r.alignment.to_counterfactual(k);
        const float now = mapped && *mapped < static_cast<int64_t>(after.size()) ? after[static_cast<size_t>(*mapped)] : 0.f;
        s.delta[static_cast<size_t>(k)] = now - before[static_cast<size_t>(k)];
    }
    for (int64_t k = r.alignment.edit_begin; k < r.alignment.edit_begin + r.alignment.inserted; ++k)
        if (k < static_cast<int64_t>(after.size())) s.inserted_mass += after[static_cast<size_t>(k)];
}

const ImVec4 kGained(0.86f, 0.3f, 0.25f, 1), kLost(0.3f, 0.5f, 0.9f, 1);  // as the diff panel's

std::string edit_line(const std::string& id, std::string& value, float width) {
    std::vector<char> buffer(value.begin(), value.end());
    buffer.resize(value.size() + 256, '\0');
    ImGui::SetNextItemWidth(width);
    if (ImGui::InputText(id.c_str(), buffer.data(), buffer.size())) value.assign(buffer.data());
    return value;
}

}  // namespace

bool counterfactual_busy(const CounterfactualState& state) { return state.job.busy(); }

void cancel_counterfactual(CounterfactualState& state) {
    if (state.progress) state.progress->cancel = true;
}

void wait_counterfactual(CounterfactualState& state) {
    state.job.wait();
}

void update_counterfactual(app::DebuggerModel& model, CounterfactualState& state) {
    if (model.hover.key >= 0) state.last_map_key = model.hover.key;
    state.job.poll(false);
    if (state.job.version() == state.taken_version) return;
    state.taken_version = state.job.version();
    state.run_ms = state.job.ms();
    if (!state.job.has_value()) {
        state.error = state.job.error();
        return;
    }
    const CounterfactualOutcome& outcome = state.job.value();
    state.error = outcome.cancelled ? "cancelled" : outcome.error;
    if (outcome.result) {
        state.shown = outcome.result;
        state.shown_original = outcome.original;
        state.delta_result = nullptr;
        state.reveal = true;  // scrolled into view with its full height
    }
}

Intervention intervention_from_words(const app::DebuggerModel& model, const std::vector<std::string>& w) {
    if (w.empty()) fail("counterfactual mask A B | ablate L H zero|mean | remove A B | replace A B TEXT | noise A B STD [SEED]");
    auto number = [&](size_t i, const char* what) {
        if (i >= w.size()) fail("counterfactual ", w[0], ": missing ", what);
        return parse_integer(w[i], what);
    };
    const std::string& kind = w[0];
    if (kind == "mask") {
        if (w.size() != 3) fail("counterfactual mask A B (keys [A, B) in the shown head)");
        return Intervention::mask_keys(number(1, "A"), number(2, "B"), {{model.settings.layer, model.settings.head}});
    }
    if (kind == "ablate") {
        if (w.size() != 4 || (w[3] != "zero" && w[3] != "mean")) fail("counterfactual ablate L H zero|mean");
        return Intervention::ablate_heads({{static_cast<int>(number(1, "L")), static_cast<int>(number(2, "H"))}}, w[3] == "mean");
    }
    if (kind == "remove") {
        if (w.size() != 3) fail("counterfactual remove A B");
        return Intervention::remove_span(number(1, "A"), number(2, "B"));
    }
    if (kind == "replace") {
        if (w.size() < 4) fail("counterfactual replace A B TEXT");
        std::string text;
        for (size_t i = 3; i < w.size(); ++i) text += (i > 3 ? " " : "") + w[i];
        return Intervention::replace_span(number(1, "A"), number(2, "B"), text);
    }
    if (kind == "noise") {
        if (w.size() != 4 && w.size() != 5) fail("counterfactual noise A B STD [SEED]");
        double std_dev = 0;
        try {
            size_t used = 0;
            std_dev = std::stod(w[3], &used);
            if (used != w[3].size()) throw std::invalid_argument("trailing");
        } catch (const std::exception&) {
            fail("counterfactual noise: '", w[3], "' is not a standard deviation");
        }
        if (!(std_dev >= 0)) fail("counterfactual noise: the standard deviation must be >= 0");
        return Intervention::embedding_noise(number(1, "A"), number(2, "B"), std_dev,
                                             w.size() == 5 ? static_cast<uint64_t>(number(4, "SEED")) : 0);
    }
    fail("counterfactual: unknown intervention '", kind, "' (mask, ablate, remove, replace, noise)");
}

Intervention intervention_for_violation(const Violation& violation) {
    std::vector<std::pair<int, int>> heads;
    for (const HeadRef& h : violation.offending) heads.emplace_back(h.layer, h.head);
    if (heads.empty() && violation.worst.layer >= 0) heads.emplace_back(violation.worst.layer, violation.worst.head);
    if (heads.empty()) fail("violation of rule '", violation.rule_id, "' names no head to intervene on");
    int64_t first = -1, last = -1;
    for (const TokenRun& run : violation.keys) {
        if (run.last <= run.first) continue;
        first = first < 0 ? run.first : std::min(first, run.first);
        last = std::max(last, run.last);
    }
    if (first < 0) return Intervention::ablate_heads(std::move(heads), false);
    return Intervention::mask_keys(first, last, std::move(heads));
}

void start_counterfactual(const app::DebuggerModel& model, CounterfactualState& state, const Intervention& intervention) {
    if (const std::string why = run_blocker(model, state); !why.empty()) fail("cannot run the counterfactual: ", why);
    // A snapshot of what is shown: the live view's session changes on the UI thread meanwhile.
    auto original = std::make_shared<const Session>(model.session());
    CounterfactualOptions options;
    // The compared rows are those captured now (a live capture may grow while the worker reads it).
    const int64_t rows = model.positions();
    const bool edits_prompt = intervention.kind == Intervention::Kind::RemoveSpan || intervention.kind == Intervention::Kind::ReplaceSpan;
    for (int64_t q = std::max<int64_t>(0, original->prompt_tokens - 1); q < rows; ++q)
        if (!edits_prompt || q < intervention.begin || q >= intervention.end) options.queries.push_back(q);
    options.free_run = state.free_run;
    options.rerun_original = state.rerun_original;
    state.progress = std::make_shared<CounterfactualProgress>();
    options.progress = state.progress.get();
    const Model* run_model = state.model;
    state.error.clear();
    state.reveal = true;
    // The form shows what runs (a script's run too).
    state.kind = intervention.kind;
    if (uses_span(intervention.kind)) state.span = cat(intervention.begin, ":", intervention.end);
    if (uses_heads(intervention.kind)) {
        state.shown_head = intervention.heads.size() == 1 && intervention.heads[0].first == model.settings.layer &&
                           intervention.heads[0].second == model.settings.head;
        state.heads.clear();
        for (const auto& [layer, head] : intervention.heads) state.heads += cat(state.heads.empty() ? "" : ", ", layer, ":", head);
    }
    state.ablate_mean = intervention.ablate_mean;
    if (intervention.kind == Intervention::Kind::ReplaceSpan) state.replacement = intervention.replacement;
    if (intervention.kind == Intervention::Kind::EmbeddingNoise) {
        state.noise_std = static_cast<float>(intervention.noise_std);
        state.seed = static_cast<int>(intervention.seed);
    }
    state.job.want(++state.runs, [run_model, original, intervention, options, progress = state.progress] {
        CounterfactualOutcome outcome;
        outcome.original = original;
        try {
            outcome.result = std::make_shared<const CounterfactualResult>(run_counterfactual(*run_model, *original, intervention, options));
        } catch (const CounterfactualCancelled&) {
            outcome.cancelled = true;
        } catch (const std::exception& e) {
            outcome.error = e.what();
        }
        return outcome;
    });
}

std::optional<size_t> shown_comparison(const app::DebuggerModel& model, const CounterfactualState& state) {
    if (!state.shown || state.shown->queries.empty()) return std::nullopt;
    const auto& queries = state.shown->queries;
    for (size_t i = 0; i < queries.size(); ++i)
        if (queries[i].original_query == model.selected_query) return i;
    return queries.size() - 1;
}

bool draw_counterfactual_panel(app::DebuggerModel& model, CounterfactualState& state) {
    bool opened = false;
    const float font = ImGui::GetFontSize();
    // ---- the intervention ----
    ImGui::SetNextItemWidth(font * 9);
    if (ImGui::BeginCombo("intervention", kind_label(state.kind))) {
        for (Intervention::Kind k : kKinds)
            if (ImGui::Selectable(kind_label(k), k == state.kind)) state.kind = k;
        ImGui::EndCombo();
    }
    if (uses_span(state.kind)) {
        edit_line("tokens A:B##cfspan", state.span, font * 6);
        if (model.selected_query >= 0) {
            ImGui::SameLine();
            if (ImGui::SmallButton("selected")) state.span = cat(model.selected_query, ":", model.selected_query + 1);
            if (ImGui::IsItemHovered()) ImGui::SetTooltip("the selected token (query row %lld)", static_cast<long long>(model.selected_query));
        }
        if (state.last_map_key >= 0) {
            ImGui::SameLine();
            if (ImGui::SmallButton("hovered key")) state.span = cat(state.last_map_key, ":", state.last_map_key + 1);
            if (ImGui::IsItemHovered())
                ImGui::SetTooltip("key %lld, the last hovered in the map: \"%s\"", static_cast<long long>(state.last_map_key),
                                  model.token_display(state.last_map_key, 24).c_str());
        }
    }
    if (uses_heads(state.kind)) {
        ImGui::Checkbox("shown head", &state.shown_head);
        ImGui::SameLine();
        if (state.shown_head) ImGui::TextDisabled("L%dH%d", model.settings.layer, model.settings.head);
        else edit_line("heads L:H, …##cfheads", state.heads, font * 8);
    }
    if (state.kind == Intervention::Kind::AblateHeads) {
        if (ImGui::RadioButton("zero", !state.ablate_mean)) state.ablate_mean = false;
        ImGui::SameLine();
        if (ImGui::RadioButton("mean", state.ablate_mean)) state.ablate_mean = true;
    }
    if (state.kind == Intervention::Kind::ReplaceSpan) edit_line("text##cfreplacement", state.replacement, font * 12);
    if (state.kind == Intervention::Kind::EmbeddingNoise) {
        ImGui::SetNextItemWidth(font * 5);
        ImGui::InputFloat("std", &state.noise_std, 0.1f, 1.0f, "%.2f");
        ImGui::SameLine();
        ImGui::SetNextItemWidth(font * 5);
        ImGui::InputInt("seed", &state.seed);
    }
    ImGui::Checkbox("free run", &state.free_run);
    ImGui::SameLine();
    ImGui::Checkbox("re-run original on cpu", &state.rerun_original);
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip("compare against the original tokens re-run on the cpu backend (for sessions captured on cuda)");

    // ---- run / cancel ----
    const std::string blocker = run_blocker(model, state);
    if (counterfactual_busy(state)) {
        const CounterfactualProgress& p = *state.progress;
        const int64_t total = p.total.load(), done = p.done.load();
        char label[96];
        std::snprintf(label, sizeof label, "%s %lld/%lld%s", counterfactual_phase_name(p.phase.load()),
                      static_cast<long long>(done), static_cast<long long>(total), p.cancel ? " (cancelling)" : "");
        ImGui::ProgressBar(total > 0 ? float(done) / float(total) : 0.f, ImVec2(-font * 5, 0), label);
        ImGui::SameLine();
        if (ImGui::Button("Cancel")) cancel_counterfactual(state);
    } else {
        ImGui::BeginDisabled(!blocker.empty());
        if (ImGui::Button("Run")) {
            try {
                state.form_error.clear();
                start_counterfactual(model, state, intervention_from_form(model, state));
            } catch (const std::exception& e) {
                state.form_error = e.what();
            }
        }
        ImGui::EndDisabled();
        if (!blocker.empty()) {
            ImGui::SameLine();
            ImGui::TextWrapped("%s", blocker.c_str());
        }
    }
    if (!state.form_error.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.form_error.c_str());
    if (!state.error.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.error.c_str());
    if (!state.shown) return opened;

    // ---- the result ----
    const CounterfactualResult& r = *state.shown;
    const Session& original = *state.shown_original;
    const CaptureShape& shape = original.capture->shape();
    ImGui::Separator();
    ImGui::TextWrapped("%s  (%.1f s)", masked_text(model, r.intervention.describe()).c_str(), state.run_ms / 1000);
    if (original.capture != model.session().capture) ImGui::TextDisabled("(computed on an earlier state of the session)");
    if (r.alignment.edited())
        ImGui::TextDisabled("prompt edited: [%lld, %lld) → %lld tokens", static_cast<long long>(r.alignment.edit_begin),
                           static_cast<long long>(r.alignment.edit_end), static_cast<long long>(r.alignment.inserted));
    const int layer = std::min(model.settings.layer, shape.n_layer - 1), head = std::min(model.settings.head, shape.n_head - 1);
    const size_t shown_index = static_cast<size_t>(layer) * static_cast<size_t>(shape.n_head) + static_cast<size_t>(head);
    const auto comparison = shown_comparison(model, state);
    if (!r.key_spans.empty() && shown_index < r.heads.size()) {
        const HeadChange& h = r.heads[shown_index];
        ImGui::Text("L%dH%d mass on [%lld, %lld): %.4f → %.4f (mean)", layer, head, static_cast<long long>(r.key_spans[0].begin),
                    static_cast<long long>(r.key_spans[0].end), h.original_span_mass, h.counterfactual_span_mass);
        if (comparison) {
            const QueryComparison& c = r.queries[*comparison];
            ImGui::Text("  at query %lld: %.4f → %.4f", static_cast<long long>(c.original_query), c.original_span_mass[shown_index],
                        c.counterfactual_span_mass[shown_index]);
        }
    }

    // Heads, ranked.
    ImGui::TextDisabled("heads whose rows moved most (mean over %zu queries)", r.queries.size());
    if (ImGui::BeginTable("cfheads", 5, ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp,
                          ImVec2(0, font * 9))) {
        ImGui::TableSetupColumn("head");
        ImGui::TableSetupColumn("JSD");
        ImGui::TableSetupColumn("L1");
        ImGui::TableSetupColumn("span mass");
        ImGui::TableSetupColumn("");
        ImGui::TableHeadersRow();
        for (size_t k = 0; k < std::min<size_t>(r.ranking.size(), 32); ++k) {
            const HeadChange& h = r.heads[static_cast<size_t>(r.ranking[k])];
            ImGui::TableNextRow();
            ImGui::TableNextColumn();
            char label[32];
            std::snprintf(label, sizeof label, "L%dH%d##cf", h.layer, h.head);
            if (ImGui::Selectable(label, h.layer == model.settings.layer && h.head == model.settings.head,
                                  ImGuiSelectableFlags_SpanAllColumns)) {
                model.select_layer(h.layer);
                model.select_head(h.head);
                if (h.max_jsd_query >= 0) model.select_query(h.max_jsd_query);
                opened = true;
            }
            ImGui::TableNextColumn();
            ImGui::Text("%.3f", h.mean_jsd_bits);
            ImGui::TableNextColumn();
            ImGui::Text("%.3f", h.mean_l1);
            ImGui::TableNextColumn();
            if (r.key_spans.empty()) ImGui::TextDisabled("-");
            else ImGui::Text("%.2f→%.2f", h.original_span_mass, h.counterfactual_span_mass);
            ImGui::TableNextColumn();
            ImGui::ProgressBar(static_cast<float>(h.mean_jsd_bits), ImVec2(-1, 0), "");
        }
        ImGui::EndTable();
    }

    // The shown head's key deltas at the chosen query: the keys that gained and lost most.
    if (comparison) {
        const QueryComparison& c = r.queries[*comparison];
        if (state.delta_result != &r || state.delta_layer != layer || state.delta_head != head || state.delta_query != c.original_query)
            compute_deltas(state, r, original, layer, head, c);
        ImGui::TextDisabled("L%dH%d at query %lld (select a row to choose): attention", layer, head,
                            static_cast<long long>(c.original_query));
        ImGui::SameLine();
        ImGui::TextColored(kGained, "gained");
        ImGui::SameLine();
        ImGui::TextColored(kLost, "lost");
        std::vector<int64_t> keys(state.delta.size());
        std::iota(keys.begin(), keys.end(), 0);
        std::sort(keys.begin(), keys.end(), [&](int64_t a, int64_t b) {
            return std::fabs(state.delta[static_cast<size_t>(a)]) > std::fabs(state.delta[static_cast<size_t>(b)]);
        });
        keys.resize(std::min<size_t>(keys.size(), 10));
        float peak = 0;
        for (int64_t k : keys) peak = std::max(peak, std::fabs(state.delta[static_cast<size_t>(k)]));
        ImDrawList* draw = ImGui::GetWindowDrawList();
        const float label_w = font * 7, bar_w = std::max(font * 4, ImGui::GetContentRegionAvail().x - label_w - font * 4);
        for (int64_t k : keys) {
            const float d = state.delta[static_cast<size_t>(k)];
            if (d == 0) break;
            const ImVec2 at = ImGui::GetCursorScreenPos();
            ImGui::Text("%5lld %s", static_cast<long long>(k), model.token_display(k, 10).c_str());
            const float centre = at.x + label_w + bar_w / 2, half = bar_w / 2 * (peak > 0 ? std::fabs(d) / peak : 0);
            const float y0 = at.y + 2, y1 = at.y + ImGui::GetTextLineHeight() - 2;
            draw->AddRectFilled(ImVec2(d > 0 ? centre : centre - half, y0), ImVec2(d > 0 ? centre + half : centre, y1),
                                ImGui::GetColorU32(d > 0 ? kGained : kLost));
            draw->AddLine(ImVec2(centre, y0 - 1), ImVec2(centre, y1 + 1), ImGui::GetColorU32(ImGuiCol_TextDisabled));
            ImGui::SameLine(label_w + bar_w + font);
            ImGui::Text("%+.3f", d);
        }
        if (r.alignment.inserted > 0) ImGui::TextDisabled("inserted tokens: %.3f", state.inserted_mass);
    }

    // Output tokens.
    const std::vector<bool> masked = masked_tokens(model, original);
    if (!r.outputs.empty() && ImGui::BeginTable("cfoutputs", 4, ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp,
                                                ImVec2(0, font * 8))) {
        ImGui::TableSetupColumn("step");
        ImGui::TableSetupColumn("token");
        ImGui::TableSetupColumn("p before → after");
        ImGui::TableSetupColumn("top after");
        ImGui::TableHeadersRow();
        for (const OutputChange& o : r.outputs) {
            ImGui::TableNextRow();
            ImGui::TableNextColumn();
            ImGui::Text("%lld", static_cast<long long>(o.step));
            ImGui::TableNextColumn();
            ImGui::TextUnformatted(shown_bytes(output_text(masked, original, o.step, o.text)).c_str());
            ImGui::TableNextColumn();
            const bool fell = o.counterfactual_prob < o.original_prob;
            ImGui::TextColored(fell ? kLost : kGained, "%.3f → %.3f", o.original_prob, o.counterfactual_prob);
            ImGui::TableNextColumn();
            ImGui::Text("%s %.2f", shown_bytes(output_text(masked, original, o.step, o.counterfactual_top_text)).c_str(),
                        o.counterfactual_top_prob);
        }
        ImGui::EndTable();
    }
    if (r.free_run.ran) {
        ImGui::TextWrapped("free run: %s", shown_bytes(free_text_display(model, r)).c_str());
        if (r.free_run.first_divergence < 0) ImGui::TextDisabled("same tokens as the original");
        else ImGui::Text("first divergence at step %lld", static_cast<long long>(r.free_run.first_divergence));
    }

    // Export.
    edit_line("##cfexport", state.export_path, -font * 5);
    ImGui::SameLine();
    if (ImGui::Button("Export")) {
        try {
            export_counterfactual(model, state, state.export_path);
            state.export_note = "wrote " + state.export_path;
        } catch (const std::exception& e) {
            state.export_note = e.what();
        }
    }
    if (!state.export_note.empty()) ImGui::TextDisabled("%s", state.export_note.c_str());
    return opened;
}

nlohmann::json counterfactual_export_json(const app::DebuggerModel& model, const CounterfactualState& state) {
    if (!state.shown) fail("no counterfactual result to export (run one first)");
    const CounterfactualResult& r = *state.shown;
    nlohmann::json j = r.to_json();
    if (!model.mask_pii) return j;
    // Personal data masked as the view shows it.
    const std::vector<bool> masked = masked_tokens(model, *state.shown_original);
    j["intervention"]["description"] = mask_pii(r.intervention.describe());
    if (j["intervention"].contains("replacement")) j["intervention"]["replacement"] = mask_pii(r.intervention.replacement);
    j["counterfactual_prompt"] = mask_pii(j["counterfactual_prompt"].get<std::string>());
    for (auto& o : j["outputs"]) {
        const int64_t step = o["step"].get<int64_t>();
        o["text"] = output_text(masked, *state.shown_original, step, o["text"].get<std::string>());
        o["counterfactual_top_text"] = output_text(masked, *state.shown_original, step, o["counterfactual_top_text"].get<std::string>());
    }
    j["free_run"]["text"] = free_text_display(model, r);
    j["pii_masked"] = true;
    return j;
}

void export_counterfactual(const app::DebuggerModel& model, const CounterfactualState& state, const std::string& path) {
    const nlohmann::json j = counterfactual_export_json(model, state);
    write_file_atomically(path, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    app::record_export(model, path, {"counterfactual", "counterfactual", -1, -1, -1, -1, "",
                                     j.contains("intervention") && j["intervention"].contains("description")
                                         ? (model.mask_pii ? mask_pii(j["intervention"]["description"].get<std::string>())
                                                           : j["intervention"]["description"].get<std::string>())
                                         : std::string("counterfactual result")});
}

nlohmann::json counterfactual_json(app::DebuggerModel& model, CounterfactualState& state) {
    nlohmann::json j;
    j["busy"] = counterfactual_busy(state);
    j["runs"] = state.runs;
    if (!state.error.empty()) j["error"] = state.error;
    if (!state.form_error.empty()) j["form_error"] = state.form_error;
    j["can_run"] = run_blocker(model, state).empty() ? nlohmann::json(true) : nlohmann::json(run_blocker(model, state));
    if (!state.shown) return j;
    const CounterfactualResult& r = *state.shown;
    const Session& original = *state.shown_original;
    const CaptureShape& shape = original.capture->shape();
    j["intervention"] = masked_text(model, r.intervention.describe());
    j["kind"] = intervention_kind_name(r.intervention.kind);
    j["ms"] = state.run_ms;
    j["compared_queries"] = r.queries.size();
    nlohmann::json spans = nlohmann::json::array();
    for (const KeySpan& s : r.key_spans) spans.push_back({s.begin, s.end});
    j["key_spans"] = spans;
    nlohmann::json heads = nlohmann::json::array();
    for (size_t k = 0; k < std::min<size_t>(r.ranking.size(), 5); ++k) {
        const HeadChange& h = r.heads[static_cast<size_t>(r.ranking[k])];
        heads.push_back({{"layer", h.layer}, {"head", h.head}, {"mean_jsd_bits", h.mean_jsd_bits}, {"mean_l1", h.mean_l1}});
    }
    j["top_heads"] = heads;
    j["heads"] = r.heads.size();
    const int layer = std::min(model.settings.layer, shape.n_layer - 1), head = std::min(model.settings.head, shape.n_head - 1);
    const size_t index = static_cast<size_t>(layer) * static_cast<size_t>(shape.n_head) + static_cast<size_t>(head);
    nlohmann::json shown{{"layer", layer}, {"head", head}};
    const bool has_spans = !r.key_spans.empty();  // ablation has none: no span mass to report
    if (index < r.heads.size()) {
        const HeadChange& h = r.heads[index];
        shown["mean_jsd_bits"] = h.mean_jsd_bits;
        if (has_spans) {
            shown["span_mass_before"] = h.original_span_mass;
            shown["span_mass_after"] = h.counterfactual_span_mass;
        }
    }
    if (const auto c = shown_comparison(model, state)) {
        const QueryComparison& q = r.queries[*c];
        shown["query"] = q.original_query;
        shown["query_jsd_bits"] = q.diff.heads[index].change.jsd_bits;
        if (has_spans) {
            shown["query_span_mass_before"] = q.original_span_mass[index];
            shown["query_span_mass_after"] = q.counterfactual_span_mass[index];
        }
        if (state.delta_result != &r || state.delta_layer != layer || state.delta_head != head || state.delta_query != q.original_query)
            compute_deltas(state, r, original, layer, head, q);
        double gained = 0, lost = 0;
        for (float d : state.delta) (d > 0 ? gained : lost) += d;
        shown["delta_gained"] = gained;
        shown["delta_lost"] = lost;
    }
    j["shown_head"] = shown;
    const std::vector<bool> masked = masked_tokens(model, original);
    nlohmann::json outputs = nlohmann::json::array();
    for (const OutputChange& o : r.outputs)
        outputs.push_back({{"step", o.step},
                           {"token", output_text(masked, original, o.step, o.text)},
                           {"before", o.original_prob},
                           {"after", o.counterfactual_prob}});
    j["outputs"] = outputs;
    if (r.free_run.ran)
        j["free_run"] = {{"text", free_text_display(model, r)}, {"first_divergence", r.free_run.first_divergence}};
    return j;
}

}  // namespace attn::panels
