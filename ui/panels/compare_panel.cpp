#include "ui/panels/compare_panel.h"

#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "engine/error.h"
#include "engine/session_file.h"
#include "ui/render/colormap.h"

namespace attn::panels {

namespace {

constexpr int kMaxSlots = 8;
const char* const kWidgetIds[kMaxSlots] = {"##cmp0", "##cmp1", "##cmp2", "##cmp3", "##cmp4", "##cmp5", "##cmp6", "##cmp7"};
constexpr int kMaxDiffCells = 128;  // per axis on screen

bool same_transform(const render::ViewTransform& a, const render::ViewTransform& b) {
    return a.origin_key == b.origin_key && a.origin_row == b.origin_row && a.keys_per_pixel == b.keys_per_pixel &&
           a.rows_per_pixel == b.rows_per_pixel;
}

void copy_transform(render::ViewTransform& to, const render::ViewTransform& from) {
    to.origin_key = from.origin_key;
    to.origin_row = from.origin_row;
    to.keys_per_pixel = from.keys_per_pixel;
    to.rows_per_pixel = from.rows_per_pixel;
}

void take_loaded(CompareState& state, app::DebuggerModel& model) {
    if (!state.loading.valid() || state.loading.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
    try {
        std::shared_ptr<Session> other = state.loading.get();
        if (!other->capture || other->capture->positions() == 0) fail("the session holds no capture");
        const CaptureShape &a = model.session().capture->shape(), &b = other->capture->shape();
        if (a.n_layer != b.n_layer || a.n_head != b.n_head)
            fail("its capture has ", b.n_layer, " layers × ", b.n_head, " heads; this one ", a.n_layer, " × ", a.n_head,
                 ": the same head needs the same architecture");
        // Views over the old one go first (their caches read its source).
        std::erase_if(state.views, [&](const std::unique_ptr<CompareView>& v) { return &v->model() == state.other_model.get(); });
        state.other_model.reset();
        state.other_source.reset();
        state.other = std::move(other);
        state.other_source = std::make_unique<CpuTileSource>(*state.other->capture);
        state.other_model = std::make_unique<app::DebuggerModel>(*state.other, *state.other_source);
        state.other_note = cat("opened: ", state.other->capture->positions(), " tokens");
    } catch (const std::exception& e) {
        state.other_note = e.what();
    }
}

CompareState::DiffKey diff_key(app::DebuggerModel& model, CompareState& state, const std::vector<CompareSlot>& slots) {
    CompareState::DiffKey key;
    if (slots.size() < 2 || !state.have_shared) return key;
    const int a = std::clamp(state.diff_a, 0, static_cast<int>(slots.size()) - 1);
    const int b = std::clamp(state.diff_b, 0, static_cast<int>(slots.size()) - 1);
    if (a == b) return key;
    const CompareSlot &sa = slots[size_t(a)], &sb = slots[size_t(b)];
    key.a = sa.model->session().capture.get();
    key.la = sa.head.layer, key.ha = sa.head.head;
    key.b = sb.model->session().capture.get();
    key.lb = sb.head.layer, key.hb = sb.head.head;
    key.positions = std::min(sa.model->shown_positions(), sb.model->shown_positions());
    const render::ViewTransform& v = state.shared;
    const int64_t n = key.positions;
    if (n <= 0) return key;
    const int64_t k0 = std::clamp<int64_t>(static_cast<int64_t>(std::floor(v.key_at(0))), 0, n - 1);
    const int64_t k1 = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(v.key_at(v.width))), 1, n);
    const int64_t r0 = std::clamp<int64_t>(static_cast<int64_t>(std::floor(v.row_at(0))), 0, n - 1);
    const int64_t r1 = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(v.row_at(v.height))), 1, n);
    const int64_t span = std::max<int64_t>(std::max(k1 - k0, r1 - r0), 1);
    const int64_t max_cells = std::clamp<int64_t>(std::min(v.width, v.height) / 2, 8, kMaxDiffCells);
    int level = 0;
    while ((span >> level) > max_cells) ++level;
    key.level = level;
    const int shift = level + 8;  // 256 cells per tile
    key.tx0 = k0 >> shift, key.tx1 = (k1 - 1) >> shift;
    key.ty0 = r0 >> shift, key.ty1 = (r1 - 1) >> shift;
    return key;
}

CompareState::DiffGrid compute_diff(std::shared_ptr<CaptureStore> store_a, std::shared_ptr<CaptureStore> store_b,
                                    const CompareState::DiffKey& key) {
    const CpuTileSource a(*store_a, 0), b(*store_b, 0);
    CompareState::DiffGrid grid;
    grid.level = key.level;
    const int64_t edge = Tile::kEdge;
    grid.cols = (key.tx1 - key.tx0 + 1) * edge;
    grid.rows = (key.ty1 - key.ty0 + 1) * edge;
    grid.key0 = (key.tx0 * edge) << key.level;
    grid.row0 = (key.ty0 * edge) << key.level;
    grid.values.assign(static_cast<size_t>(grid.cols * grid.rows), std::numeric_limits<float>::quiet_NaN());
    const double per_row = 1.0 / static_cast<double>(int64_t(1) << key.level);
    const int64_t cells_n = (key.positions + (int64_t(1) << key.level) - 1) >> key.level;
    for (int64_t ty = key.ty0; ty <= key.ty1; ++ty)
        for (int64_t tx = key.tx0; tx <= std::min(key.tx1, ty); ++tx) {  // tiles right of the diagonal see nothing
            const Tile ta = a.tile(TileRequest{key.la, key.ha, key.level, tx, ty, 0, 0});
            const Tile tb = b.tile(TileRequest{key.lb, key.hb, key.level, tx, ty, 0, 0});
            for (int r = 0; r < edge; ++r) {
                const int64_t gr = ty * edge + r;
                if (gr >= cells_n) break;
                for (int c = 0; c < edge; ++c) {
                    const int64_t gc = tx * edge + c;
                    if (gc >= cells_n || gc > gr) break;
                    const size_t i = static_cast<size_t>(r) * edge + static_cast<size_t>(c);
                    const double va = (r < ta.valid_rows && c < ta.valid_cols) ? ta.sum[i] * per_row : 0.0;
                    const double vb = (r < tb.valid_rows && c < tb.valid_cols) ? tb.sum[i] * per_row : 0.0;
                    const float d = static_cast<float>(va - vb);
                    grid.values[static_cast<size_t>((gr - key.ty0 * edge) * grid.cols + (gc - key.tx0 * edge))] = d;
                    grid.max_abs = std::max(grid.max_abs, std::fabs(d));
                    grid.max_a = std::max(grid.max_a, va);
                    grid.max_b = std::max(grid.max_b, vb);
                }
            }
        }
    return grid;
}

void want_diff(app::DebuggerModel& model, CompareState& state, const std::vector<CompareSlot>& slots, bool wait) {
    const CompareState::DiffKey key = diff_key(model, state, slots);
    if (!key.a || !key.b) return;
    const int a = std::clamp(state.diff_a, 0, static_cast<int>(slots.size()) - 1);
    const int b = std::clamp(state.diff_b, 0, static_cast<int>(slots.size()) - 1);
    auto job = [sa = slots[size_t(a)].model->session().capture, sb = slots[size_t(b)].model->session().capture, key] {
        return compute_diff(sa, sb, key);
    };
    if (wait) state.diff.finish(key, job);
    else state.diff.want(key, job);
}

void draw_diff(app::DebuggerModel& model, CompareState& state, const std::vector<CompareSlot>& slots, float fb_x, float fb_y) {
    const float font = ImGui::GetFontSize();
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float left = std::round(font * 7.5f), top = std::round(font * 1.6f);
    const float x0 = origin.x + left, y0 = origin.y + top, w = std::max(8.f, avail.x - left), h = std::max(8.f, avail.y - top);
    ImGui::SetCursorScreenPos(ImVec2(x0, y0));
    ImGui::InvisibleButton("##diffcanvas", ImVec2(w, h));
    const bool hovered = ImGui::IsItemHovered();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    dl->AddRectFilled(ImVec2(x0, y0), ImVec2(x0 + w, y0 + h), IM_COL32(26, 26, 28, 255));
    state.diff_rect = {x0 * fb_x, y0 * fb_y, (x0 + w) * fb_x, (y0 + h) * fb_y};
    want_diff(model, state, slots, false);
    if (!state.diff.has_value()) {
        dl->AddText(ImVec2(x0 + 6, y0 + 6), ImGui::GetColorU32(ImGuiCol_TextDisabled),
                    state.diff.busy() ? "computing the difference…" : "choose two different maps");
        return;
    }
    const CompareState::DiffGrid& g = state.diff.value();
    const render::ViewTransform& v = state.shared;
    const double cell_tokens = static_cast<double>(int64_t(1) << g.level);
    auto sx = [&](double key) { return x0 + static_cast<float>(v.pixel_x(key) / fb_x); };
    auto sy = [&](double row) { return y0 + static_cast<float>(v.pixel_y(row) / fb_y); };
    const render::ColormapTable& colours = render::colormap_table(render::Colormap::Diverging);
    dl->PushClipRect(ImVec2(x0, y0), ImVec2(x0 + w, y0 + h), true);
    // Only the cells on screen.
    const int64_t c0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor((v.key_at(0) - g.key0) / cell_tokens)));
    const int64_t c1 = std::min<int64_t>(g.cols, static_cast<int64_t>(std::ceil((v.key_at(v.width) - g.key0) / cell_tokens)) + 1);
    const int64_t r0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor((v.row_at(0) - g.row0) / cell_tokens)));
    const int64_t r1 = std::min<int64_t>(g.rows, static_cast<int64_t>(std::ceil((v.row_at(v.height) - g.row0) / cell_tokens)) + 1);
    const float peak = g.max_abs > 0 ? g.max_abs : 1.f;
    for (int64_t r = r0; r < r1; ++r) {
        const float ya = sy(g.row0 + r * cell_tokens), yb = sy(g.row0 + (r + 1) * cell_tokens);
        for (int64_t c = c0; c < c1; ++c) {
            const float d = g.values[static_cast<size_t>(r * g.cols + c)];
            if (std::isnan(d)) continue;
            // Signed square root: small differences stay visible; 0 is the neutral grey.
            const float t = 0.5f + 0.5f * std::copysign(std::sqrt(std::min(1.f, std::fabs(d) / peak)), d);
            const uint32_t rgba = colours[static_cast<size_t>(std::clamp(t, 0.f, 1.f) * 255.f + 0.5f)] | 0xFF000000u;
            dl->AddRectFilled(ImVec2(sx(g.key0 + c * cell_tokens), ya), ImVec2(sx(g.key0 + (c + 1) * cell_tokens), yb), rgba);
        }
    }
    dl->PopClipRect();
    char status[160];
    std::snprintf(status, sizeof status, "A − B  ±%.3g per row  level %d%s", static_cast<double>(g.max_abs), g.level,
                  state.diff.busy() ? "  (updating…)" : "");
    const ImVec2 ss = ImGui::CalcTextSize(status);
    dl->AddRectFilled(ImVec2(x0 + 3, y0 + h - ss.y - 8), ImVec2(x0 + ss.x + 9, y0 + h - 2), IM_COL32(0, 0, 0, 160), 3);
    dl->AddText(ImVec2(x0 + 6, y0 + h - ss.y - 5), IM_COL32(230, 230, 230, 255), status);
    if (hovered) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        const double key = v.key_at((m.x - x0) * fb_x), row = v.row_at((m.y - y0) * fb_y);
        const int64_t c = static_cast<int64_t>(std::floor((key - g.key0) / cell_tokens));
        const int64_t r = static_cast<int64_t>(std::floor((row - g.row0) / cell_tokens));
        if (c >= 0 && r >= 0 && c < g.cols && r < g.rows) {
            const float d = g.values[static_cast<size_t>(r * g.cols + c)];
            if (!std::isnan(d))
                ImGui::SetTooltip("keys [%lld, %lld) × queries [%lld, %lld)\nA − B = %+.4g (attention mass per query row)",
                                  static_cast<long long>(g.key0 + c * cell_tokens), static_cast<long long>(g.key0 + (c + 1) * cell_tokens),
                                  static_cast<long long>(g.row0 + r * cell_tokens), static_cast<long long>(g.row0 + (r + 1) * cell_tokens),
                                  static_cast<double>(d));
        }
    }
}

}  // namespace

CompareView::CompareView(render::VulkanContext& context, app::DebuggerModel& model, const render::TileCacheOptions& cache, int slot)
    : MatrixView(context, model, cache, {kWidgetIds[std::clamp(slot, 0, kMaxSlots - 1)], /*square_cells=*/true, /*keys_need_hover=*/true}) {}

std::string CompareView::describe_row(const view::HoverInfo& hover) const {
    return cat("query ", hover.query, "  ", model_.token_display(hover.query));
}

std::vector<CompareSlot> compare_slots(app::DebuggerModel& model, CompareState& state) {
    std::vector<CompareSlot> slots;
    const char* letters = "ABCDEFGH";
    for (size_t i = 0; i < state.heads.size() && slots.size() + 1 < kMaxSlots; ++i)
        slots.push_back({&model, state.heads[i], cat(letters[slots.size()], ": L", state.heads[i].layer, "H", state.heads[i].head)});
    if (state.other_model && !state.heads.empty())
        slots.push_back({state.other_model.get(), state.heads[0],
                         cat(letters[slots.size()], ": L", state.heads[0].layer, "H", state.heads[0].head, " in ", state.other_path)});
    return slots;
}

void compare_open_session(CompareState& state, const std::string& path, bool wait) {
    std::snprintf(state.other_path, sizeof state.other_path, "%s", path.c_str());
    state.other_note = "loading…";
    state.loading = std::async(std::launch::async, [path] { return std::make_shared<Session>(load_session(path)); });
    if (wait) state.loading.wait();
}

void compare_reset_source(CompareState& state) {
    for (auto& v : state.views)
        if (&v->model() != state.other_model.get()) v->reset_source();
}

void release_compare(CompareState& state) {
    state.views.clear();
    state.diff.wait();
}

void finish_compare(app::DebuggerModel& model, CompareState& state) {
    const std::vector<CompareSlot> slots = compare_slots(model, state);
    want_diff(model, state, slots, true);
}

bool compare_settled(app::DebuggerModel& model, CompareState& state) {
    if (state.loading.valid()) return false;
    const std::vector<CompareSlot> slots = compare_slots(model, state);
    if (state.views.size() != slots.size()) return false;
    for (auto& v : state.views)
        if (v->busy()) return false;
    const CompareState::DiffKey key = diff_key(model, state, slots);
    return !key.a || state.diff.done_for(key);
}

nlohmann::json compare_json(app::DebuggerModel& model, CompareState& state) {
    nlohmann::json j;
    const std::vector<CompareSlot> slots = compare_slots(model, state);
    nlohmann::json maps = nlohmann::json::array();
    for (size_t i = 0; i < slots.size(); ++i) {
        nlohmann::json m = {{"name", slots[i].name}, {"layer", slots[i].head.layer}, {"head", slots[i].head.head},
                            {"other_session", slots[i].model != &model}};
        if (i < state.views.size()) {
            m["exact_tiles"] = state.views[i]->stats().exact_tiles;
            m["visible_tiles"] = state.views[i]->stats().visible_tiles;
            const render::ViewTransform& t = state.views[i]->view();
            m["view"] = {t.origin_key, t.origin_row, t.keys_per_pixel};
        }
        maps.push_back(m);
    }
    j["maps"] = maps;
    j["diff_pair"] = {state.diff_a, state.diff_b};
    if (!state.other_note.empty()) j["other_note"] = state.other_note;
    if (state.diff.has_value()) {
        const CompareState::DiffGrid& g = state.diff.value();
        j["diff"] = {{"level", g.level},   {"max_abs", g.max_abs}, {"max_a", g.max_a},
                     {"max_b", g.max_b},   {"ready", state.diff.done_for(diff_key(model, state, slots))},
                     {"rect", {state.diff_rect[0], state.diff_rect[1], state.diff_rect[2], state.diff_rect[3]}}};
    }
    return j;
}

void draw_compare_panel(render::VulkanContext& context, app::DebuggerModel& model, CompareState& state,
                        const render::TileCacheOptions& cache, float fb_x, float fb_y) {
    take_loaded(state, model);
    if (state.heads.empty()) {
        // Start with the shown head and the next one.
        state.heads.push_back({model.settings.layer, model.settings.head});
        const int next = (model.settings.head + 1) % model.n_head();
        state.heads.push_back({next == 0 ? (model.settings.layer + 1) % model.n_layer() : model.settings.layer, next});
    }
    // ---- controls ----
    const char* letters = "ABCDEFGH";
    int remove = -1;
    for (size_t i = 0; i < state.heads.size(); ++i) {
        ImGui::PushID(static_cast<int>(i));
        if (i) ImGui::SameLine();
        ImGui::Text("%c", letters[i]);
        ImGui::SameLine();
        int lh[2] = {state.heads[i].layer, state.heads[i].head};
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5.5f);
        if (ImGui::InputInt2("##lh", lh)) {
            state.heads[i].layer = std::clamp(lh[0], 0, model.n_layer() - 1);
            state.heads[i].head = std::clamp(lh[1], 0, model.n_head() - 1);
        }
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("layer, head");
        if (state.heads.size() > 2) {
            ImGui::SameLine();
            if (ImGui::SmallButton("x")) remove = static_cast<int>(i);
        }
        ImGui::PopID();
    }
    if (remove >= 0) state.heads.erase(state.heads.begin() + remove);
    ImGui::SameLine();
    if (state.heads.size() + 1 < kMaxSlots && ImGui::SmallButton("+ shown head"))
        state.heads.push_back({model.settings.layer, model.settings.head});
    std::vector<CompareSlot> slots = compare_slots(model, state);
    ImGui::SameLine();
    ImGui::TextDisabled("  difference:");
    for (int* which : {&state.diff_a, &state.diff_b}) {
        ImGui::SameLine();
        ImGui::PushID(which == &state.diff_a ? "da" : "db");
        ImGui::SetNextItemWidth(ImGui::GetFontSize() * 3.5f);
        *which = std::clamp(*which, 0, static_cast<int>(slots.size()) - 1);
        const char label[2] = {letters[*which], 0};
        if (ImGui::BeginCombo("##pick", label)) {
            for (int s = 0; s < static_cast<int>(slots.size()); ++s)
                if (ImGui::Selectable(slots[size_t(s)].name.c_str(), s == *which)) *which = s;
            ImGui::EndCombo();
        }
        ImGui::PopID();
        if (which == &state.diff_a) {
            ImGui::SameLine();
            ImGui::TextUnformatted("−");
        }
    }
    // The same head in another session.
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 16);
    ImGui::InputTextWithHint("##otherpath", "another session (.attn) for the same head", state.other_path, sizeof state.other_path);
    ImGui::SameLine();
    if (ImGui::SmallButton("open") && state.other_path[0] && !state.loading.valid()) compare_open_session(state, state.other_path, false);
    if (state.other_model) {
        ImGui::SameLine();
        if (ImGui::SmallButton("close")) {
            std::erase_if(state.views, [&](const std::unique_ptr<CompareView>& v) { return &v->model() == state.other_model.get(); });
            state.other_model.reset();
            state.other_source.reset();
            state.other.reset();
            state.other_note.clear();
        }
    }
    if (!state.other_note.empty()) {
        ImGui::SameLine();
        ImGui::TextDisabled("%s", state.other_note.c_str());
    }
    slots = compare_slots(model, state);

    // ---- the maps (views follow the slots: created, rebound or dropped as they change) ----
    for (size_t i = 0; i < slots.size(); ++i) {
        if (i < state.views.size() && &state.views[i]->model() == slots[i].model) continue;
        auto view = std::make_unique<CompareView>(context, *slots[i].model, cache, static_cast<int>(i));
        if (i < state.views.size()) state.views[i] = std::move(view);
        else state.views.push_back(std::move(view));
    }
    state.views.resize(slots.size());
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float gap = ImGui::GetStyle().ItemSpacing.x;
    const int panes = static_cast<int>(slots.size()) + 1;
    const float pane_w = std::floor((avail.x - gap * (panes - 1)) / panes);
    std::optional<render::ViewTransform> moved;
    for (size_t i = 0; i < slots.size(); ++i) {
        if (i) ImGui::SameLine();
        ImGui::BeginChild(kWidgetIds[i], ImVec2(pane_w, avail.y), false, ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse);
        ImGui::TextColored(slots[i].model == &model ? ImVec4(1, 1, 1, 1) : ImVec4(0.6f, 0.9f, 1.f, 1), "%s", slots[i].name.c_str());
        app::DebuggerModel& m = *slots[i].model;
        const render::RenderSettings saved = m.settings;
        if (&m != &model) m.settings = model.settings;  // the other session: the same look
        m.settings.layer = slots[i].head.layer;
        m.settings.head = slots[i].head.head;
        CompareView& view = *state.views[i];
        if (state.have_shared) copy_transform(view.view(), state.shared);
        const render::ViewTransform before = view.view();
        view.draw(fb_x, fb_y);
        if (!state.have_shared) {
            state.shared = view.view();
            state.have_shared = true;
        } else if (!same_transform(before, view.view()) && !moved) {
            moved = view.view();  // this map was zoomed or panned: every map follows
        }
        state.shared.width = view.view().width;
        state.shared.height = view.view().height;
        m.settings.layer = saved.layer;
        m.settings.head = saved.head;
        ImGui::EndChild();
    }
    if (moved) copy_transform(state.shared, *moved);
    ImGui::SameLine();
    ImGui::BeginChild("##cmpdiff", ImVec2(pane_w, avail.y), false, ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse);
    if (slots.size() >= 2) {
        const int a = std::clamp(state.diff_a, 0, static_cast<int>(slots.size()) - 1), b = std::clamp(state.diff_b, 0, static_cast<int>(slots.size()) - 1);
        ImGui::Text("%c − %c", letters[a], letters[b]);
        ImGui::SameLine();
        ImGui::TextColored(ImVec4(0.85f, 0.3f, 0.3f, 1), "red: %c more", letters[a]);
        ImGui::SameLine();
        ImGui::TextColored(ImVec4(0.4f, 0.5f, 0.95f, 1), "blue: %c more", letters[b]);
        draw_diff(model, state, slots, fb_x, fb_y);
    }
    ImGui::EndChild();
}

}  // namespace attn::panels
