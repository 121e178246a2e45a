#include "ui/app/matrix_view.h"

#include <GLFW/glfw3.h>
#include <imgui.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "ui/view/hover.h"

namespace attn::app {

namespace {

// A "nice" tick step (1, 2, 5 × 10^k tokens) so that ticks are at least min_px apart.
int64_t tick_step(double tokens_per_unit, double min_px) {
    const double want = tokens_per_unit * min_px;
    int64_t step = 1;
    for (;;) {
        for (int m : {1, 2, 5})
            if (double(step) * m >= want) return step * m;
        step *= 10;
        if (step > (int64_t(1) << 40)) return step;
    }
}

}  // namespace

MatrixView::MatrixView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache,
                       const Behaviour& behaviour)
    : model_(model), context_(context), behaviour_(behaviour), cache_options_(cache) {
    cache_ = std::make_unique<render::TileCache>(context, model.source(), cache);
}

MatrixView::~MatrixView() {
    renderer_.reset();
    cache_.reset();
}

void MatrixView::reset_source() {
    const render::TileCacheOptions options = cache_options_;
    renderer_.reset();
    cache_.reset();
    cache_ = std::make_unique<render::TileCache>(context_, model_.source(), options);
    fitted_ = false;
    have_frame_ = false;
}

void MatrixView::ensure_renderer(uint32_t width, uint32_t height) {
    if (renderer_ && renderer_->width() == width && renderer_->height() == height) return;
    // Keep the token at the view's centre where it is across the resize.
    const double ck = view_.key_at(view_.width / 2.0), cr = view_.row_at(view_.height / 2.0);
    renderer_.reset();
    renderer_ = std::make_unique<render::AttentionMapRenderer>(context_, *cache_, extent_, width, height);
    renderer_->set_asynchronous(true);  // the window's frame waits for it on the queue, not here
    view_.width = static_cast<int>(width);
    view_.height = static_cast<int>(height);
    if (!fitted_) {
        fit();
        fitted_ = true;
    } else {
        view_.origin_key = ck - view_.keys_per_pixel * width / 2.0;
        view_.origin_row = cr - view_.rows_per_pixel * height / 2.0;
    }
}

void MatrixView::draw(float fb_x, float fb_y) {
    extent_ = extent();
    const float font = ImGui::GetFontSize();
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    // Margins for the axis labels: rows on the left, keys on top.
    const float left = std::round(font * 7.5f), top = std::round(font * 1.6f);
    x0_ = origin.x + left;
    y0_ = origin.y + top;
    w_ = std::max(8.f, avail.x - left);
    h_ = std::max(8.f, avail.y - top);
    fb_x0_ = static_cast<int32_t>(std::lround(x0_ * fb_x));
    fb_y0_ = static_cast<int32_t>(std::lround(y0_ * fb_y));
    const uint32_t pw = static_cast<uint32_t>(std::max(8L, std::lround(w_ * fb_x)));
    const uint32_t ph = static_cast<uint32_t>(std::max(8L, std::lround(h_ * fb_y)));
    ensure_renderer(pw, ph);

    ImGui::SetCursorScreenPos(ImVec2(x0_, y0_));
    ImGui::InvisibleButton(behaviour_.widget_id, ImVec2(w_, h_), ImGuiButtonFlags_MouseButtonLeft);
    handle_input(fb_x, fb_y);

    if (renderer_->extent() != extent_) renderer_->set_extent(extent_);
    // While the GPU still draws the last image (lavapipe shares the CPU with the model), the view
    // keeps showing it and renders on a later frame: the UI thread does not wait for the rasteriser.
    render_deferred_ = have_frame_ && renderer_->asynchronous() && renderer_->gpu_busy();
    if (!render_deferred_) {
        stats_ = renderer_->render(view_, model_.settings);
        if (stats_.rendered || !have_frame_) ++content_version_;
        have_frame_ = true;
    }
    draw_overlays(fb_x, fb_y);
}

void MatrixView::zoom_with_wheel(double px, double py, float wheel) {
    const double factor = std::pow(1.25, wheel);
    if (behaviour_.square_cells) {
        view_.zoom_at(px, py, factor);
        return;
    }
    // Shift zooms the keys only, Ctrl the rows only.
    const ImGuiIO& io = ImGui::GetIO();
    view_.zoom_at(px, py, io.KeyCtrl && !io.KeyShift ? 1.0 : factor, io.KeyShift && !io.KeyCtrl ? 1.0 : factor);
}

void MatrixView::handle_input(float fb_x, float fb_y) {
    ImGuiIO& io = ImGui::GetIO();
    const bool hovered = ImGui::IsItemHovered();
    const ImVec2 mouse = io.MousePos;
    const double mpx = (mouse.x - x0_) * fb_x, mpy = (mouse.y - y0_) * fb_y;
    const double cx = view_.width / 2.0, cy = view_.height / 2.0;

    take_requests();

    if (hovered && io.MouseWheel != 0) zoom_with_wheel(mpx, mpy, io.MouseWheel);
    if (ImGui::IsItemActive()) {
        if (ImGui::IsMouseDragging(ImGuiMouseButton_Left, 2.0f) || drag_distance_ > 3) {
            view_.pan_pixels(io.MouseDelta.x * fb_x, io.MouseDelta.y * fb_y);
        }
        drag_distance_ += std::hypot(io.MouseDelta.x, io.MouseDelta.y);
    }
    if (ImGui::IsItemDeactivated()) {
        if (drag_distance_ <= 3 && hovered) {
            const double row = std::floor(view_.row_at(mpy + 0.5));
            if (row >= 0 && row < static_cast<double>(extent_.rows)) row_clicked(static_cast<int64_t>(row));
        }
        drag_distance_ = 0;
    }

    // Keyboard (when no text field has focus).
    if (!io.WantTextInput && (hovered || !behaviour_.keys_need_hover)) {
        const double zx = hovered ? mpx : cx, zy = hovered ? mpy : cy;
        if (ImGui::IsKeyPressed(GLFW_KEY_EQUAL) || ImGui::IsKeyPressed(GLFW_KEY_KP_ADD)) view_.zoom_at(zx, zy, 1.5);
        if (ImGui::IsKeyPressed(GLFW_KEY_MINUS) || ImGui::IsKeyPressed(GLFW_KEY_KP_SUBTRACT)) view_.zoom_at(zx, zy, 1 / 1.5);
        const double step = 0.1 * std::min(view_.width, view_.height);
        if (ImGui::IsKeyPressed(GLFW_KEY_LEFT)) view_.pan_pixels(step, 0);
        if (ImGui::IsKeyPressed(GLFW_KEY_RIGHT)) view_.pan_pixels(-step, 0);
        if (ImGui::IsKeyPressed(GLFW_KEY_UP)) view_.pan_pixels(0, step);
        if (ImGui::IsKeyPressed(GLFW_KEY_DOWN)) view_.pan_pixels(0, -step);
        if (ImGui::IsKeyPressed(GLFW_KEY_F, false) || ImGui::IsKeyPressed(GLFW_KEY_HOME, false)) fit();
    }

    const bool hovering = scripted_hover_ || (hovered && !ImGui::IsItemActive());
    if (scripted_hover_) update_hover(scripted_hover_->first, scripted_hover_->second);
    else if (hovering) update_hover(mpx, mpy);
    else {
        hover_ = {};
        hover_key_ = {};
    }
    publish_hover(hovering);
}

void MatrixView::publish_hover(bool hovering) {
    // Only the view under the mouse speaks for the model; one that stopped being hovered clears
    // what it said, and leaves another view's hover alone.
    if (hovering) {
        model_.hover = hover_;
        hover_published_ = true;
    } else if (hover_published_) {
        model_.hover = {};
        hover_published_ = false;
    }
}

void MatrixView::update_hover(double px, double py) {
    HoverKey key;
    key.key = static_cast<int64_t>(std::floor(view_.key_at(px + 0.5)));
    key.row = static_cast<int64_t>(std::floor(view_.row_at(py + 0.5)));
    key.layer = model_.settings.layer;
    key.head = model_.settings.head;
    key.levels = render::lod_levels(view_, extent_);
    key.extent = extent_;
    if (key == hover_key_) return;
    hover_key_ = key;
    hover_ = view::hover_at(model_.session(), model_.source(), view_, extent_, key.layer, key.head, px, py);
}

void MatrixView::draw_axis_labels(float fb_x, float fb_y) {
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const float font = ImGui::GetFontSize();
    const double keys_per_unit = view_.keys_per_pixel * fb_x, rows_per_unit = view_.rows_per_pixel * fb_y;
    const float key_cell = static_cast<float>(1.0 / keys_per_unit), row_cell = static_cast<float>(1.0 / rows_per_unit);
    auto sx = [&](double key) { return x0_ + static_cast<float>(view_.pixel_x(key) / fb_x); };
    auto sy = [&](double row) { return y0_ + static_cast<float>(view_.pixel_y(row) / fb_y); };
    const ImU32 text_col = ImGui::GetColorU32(ImGuiCol_Text), dim = ImGui::GetColorU32(ImGuiCol_TextDisabled);
    const float left_margin = x0_ - ImGui::GetWindowPos().x - ImGui::GetStyle().WindowPadding.x;

    // Token text when cells are tall/wide enough, else position ticks.
    const int64_t k_first = std::max<int64_t>(0, static_cast<int64_t>(std::floor(view_.key_at(0))));
    const int64_t k_last = std::min<int64_t>(extent_.keys - 1, static_cast<int64_t>(std::floor(view_.key_at(view_.width))));
    const int64_t r_first = std::max<int64_t>(0, static_cast<int64_t>(std::floor(view_.row_at(0))));
    const int64_t r_last = std::min<int64_t>(extent_.rows - 1, static_cast<int64_t>(std::floor(view_.row_at(view_.height))));
    const int64_t highlighted = highlighted_row();
    dl->PushClipRect(ImVec2(x0_ - left_margin, y0_), ImVec2(x0_, y0_ + h_), true);
    if (row_cell >= font * 1.05f) {
        for (int64_t r = r_first; r <= r_last; ++r) {
            const std::string label = row_label(r);
            const ImVec2 size = ImGui::CalcTextSize(label.c_str());
            const float y = (sy(r) + sy(r + 1)) / 2 - size.y / 2;
            dl->AddText(ImVec2(x0_ - 4 - size.x, y), r == highlighted ? IM_COL32(255, 210, 80, 255) : text_col, label.c_str());
        }
    } else if (r_last >= r_first) {
        const int64_t step = tick_step(rows_per_unit, font * 2.5);
        for (int64_t r = (r_first + step - 1) / step * step; r <= r_last; r += step) {
            char text[32];
            std::snprintf(text, sizeof text, "%" PRId64, r);
            const ImVec2 size = ImGui::CalcTextSize(text);
            dl->AddText(ImVec2(x0_ - 6 - size.x, sy(r + 0.5) - size.y / 2), dim, text);
            dl->AddLine(ImVec2(x0_ - 4, sy(r + 0.5)), ImVec2(x0_, sy(r + 0.5)), dim);
        }
    }
    dl->PopClipRect();
    dl->PushClipRect(ImVec2(x0_ - left_margin, y0_ - font * 1.6f), ImVec2(x0_ + w_, y0_), true);
    if (key_cell >= font * 1.6f) {
        for (int64_t k = k_first; k <= k_last; ++k) {
            const std::string label = model_.token_display(k, 16);
            const float a = sx(k), b = sx(k + 1);
            dl->PushClipRect(ImVec2(a + 1, y0_ - font * 1.6f), ImVec2(b - 1, y0_), true);
            const ImVec2 size = ImGui::CalcTextSize(label.c_str());
            dl->AddText(ImVec2(std::max(a + 2, (a + b) / 2 - size.x / 2), y0_ - size.y - 3), text_col, label.c_str());
            dl->PopClipRect();
        }
    } else if (k_last >= k_first) {
        const int64_t step = tick_step(keys_per_unit, font * 4.5);
        for (int64_t k = (k_first + step - 1) / step * step; k <= k_last; k += step) {
            char text[32];
            std::snprintf(text, sizeof text, "%" PRId64, k);
            const ImVec2 size = ImGui::CalcTextSize(text);
            dl->AddText(ImVec2(sx(k + 0.5) - size.x / 2, y0_ - size.y - 5), dim, text);
            dl->AddLine(ImVec2(sx(k + 0.5), y0_ - 4), ImVec2(sx(k + 0.5), y0_), dim);
        }
    }
    dl->PopClipRect();
}

void MatrixView::draw_diff_band(float fb_x, float fb_y) {
    // Under the later query's row: keys that gained (red) and lost (blue) attention, one bar per
    // screen column (the column's largest change wins).
    const int64_t row = extent_.row_of_query(model_.delta_query);
    if (model_.key_delta.empty() || model_.delta_query < 0 || row < 0 || row >= extent_.rows) return;
    ImDrawList* dl = ImGui::GetWindowDrawList();
    auto sx = [&](double key) { return x0_ + static_cast<float>(view_.pixel_x(key) / fb_x); };
    const float band_top = y0_ + static_cast<float>(view_.pixel_y(static_cast<double>(row + 1)) / fb_y) + 2;
    const float band_h = std::max(6.f, ImGui::GetFontSize() * 0.5f);
    float peak = 0;
    for (float d : model_.key_delta) peak = std::max(peak, std::fabs(d));
    const int64_t keys = static_cast<int64_t>(model_.key_delta.size());
    const float x_first = std::max(x0_, sx(0)), x_last = std::min(x0_ + w_, sx(static_cast<double>(keys)));
    dl->AddRectFilled(ImVec2(x_first, band_top), ImVec2(x_last, band_top + band_h), IM_COL32(20, 20, 24, 200));
    for (float x = x_first; peak > 0 && x < x_last; x += 1) {
        const int64_t k0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(view_.key_at((x - x0_) * fb_x))));
        const int64_t k1 = std::min<int64_t>(
            keys, std::max<int64_t>(k0 + 1, static_cast<int64_t>(std::ceil(view_.key_at((x + 1 - x0_) * fb_x)))));
        float d = 0;
        for (int64_t k = k0; k < k1; ++k)
            if (std::fabs(model_.key_delta[static_cast<size_t>(k)]) > std::fabs(d)) d = model_.key_delta[static_cast<size_t>(k)];
        const float t = std::sqrt(std::fabs(d) / peak);
        if (t < 0.02f) continue;
        const ImU32 color = d > 0 ? IM_COL32(220, 60, 50, static_cast<int>(60 + 195 * t))
                                  : IM_COL32(60, 120, 230, static_cast<int>(60 + 195 * t));
        dl->AddRectFilled(ImVec2(x, band_top), ImVec2(x + 1, band_top + band_h), color);
    }
}

void MatrixView::draw_overlays(float fb_x, float fb_y) {
    ImDrawList* dl = ImGui::GetWindowDrawList();
    auto sx = [&](double key) { return x0_ + static_cast<float>(view_.pixel_x(key) / fb_x); };
    auto sy = [&](double row) { return y0_ + static_cast<float>(view_.pixel_y(row) / fb_y); };
    draw_axis_labels(fb_x, fb_y);

    // Selection and hover outlines, clipped to the view.
    dl->PushClipRect(ImVec2(x0_, y0_), ImVec2(x0_ + w_, y0_ + h_), true);
    if (const int64_t row = highlighted_row(); row >= 0 && row < extent_.rows) {
        const double r = static_cast<double>(row);
        float a = sy(r), b = sy(r + 1);
        if (b - a < 3) a = (a + b) / 2 - 1.5f, b = a + 3;
        dl->AddRect(ImVec2(sx(0) - 1, a - 1), ImVec2(sx(static_cast<double>(extent_.query_of_row(row) + 1)) + 1, b + 1),
                    IM_COL32(255, 210, 80, 230), 0, 0, 1.5f);
    }
    draw_diff_band(fb_x, fb_y);
    const view::HoverInfo& h = hover_;
    if (h.query >= 0 && h.key >= 0) {
        const double key_cell = static_cast<double>(int64_t(1) << h.level);
        const double row_cell = static_cast<double>(int64_t(1) << h.row_level);
        const double k0 = std::floor(static_cast<double>(h.key) / key_cell) * key_cell;
        const double r0 = std::floor(static_cast<double>(extent_.row_of_query(h.query)) / row_cell) * row_cell;
        const float x_a = sx(k0), x_b = std::max(sx(k0 + key_cell), x_a + 2);
        const float y_a = sy(r0), y_b = std::max(sy(r0 + row_cell), y_a + 2);
        dl->AddRect(ImVec2(x_a - 1, y_a - 1), ImVec2(x_b + 1, y_b + 1), IM_COL32(255, 255, 255, 220));
    }
    dl->PopClipRect();

    // Status line in the bottom-left corner.
    char status[256];
    const char* refining = stats_.all_exact() ? "" : "  (refining…)";
    if (behaviour_.square_cells)
        std::snprintf(status, sizeof status, "level %d  %.3g tok/px  tiles %d/%d exact%s", stats_.level,
                      view_.keys_per_pixel, stats_.exact_tiles, stats_.visible_tiles, refining);
    else
        std::snprintf(status, sizeof status, "levels %d/%d  %.3g keys/px  %.3g rows/px  tiles %d/%d exact%s", stats_.level,
                      stats_.row_level, view_.keys_per_pixel, view_.rows_per_pixel, stats_.exact_tiles,
                      stats_.visible_tiles, refining);
    const ImVec2 ssize = ImGui::CalcTextSize(status);
    const ImVec2 spos(x0_ + 6, y0_ + h_ - ssize.y - 6);
    dl->AddRectFilled(ImVec2(spos.x - 3, spos.y - 2), ImVec2(spos.x + ssize.x + 3, spos.y + ssize.y + 2), IM_COL32(0, 0, 0, 150), 3);
    dl->AddText(spos, IM_COL32(220, 220, 220, 255), status);

    if (h.query >= 0 && (ImGui::IsItemHovered() || scripted_hover_)) {
        if (scripted_hover_) {
            // Place the tooltip as if the mouse were there.
            ImGui::SetNextWindowPos(ImVec2(x0_ + static_cast<float>(scripted_hover_->first / fb_x) + 16,
                                           y0_ + static_cast<float>(scripted_hover_->second / fb_y) + 16));
        }
        draw_tooltip();
    }
}

void MatrixView::draw_tooltip() {
    const view::HoverInfo& h = hover_;
    ImGui::BeginTooltip();
    ImGui::TextUnformatted(describe_row(h).c_str());
    ImGui::Text("key   %" PRId64 "  %s", h.key, model_.token_display(h.key).c_str());
    ImGui::Separator();
    if (!h.inside) {
        ImGui::TextDisabled("above the diagonal: masked (causal)");
    } else {
        ImGui::Text("p = %.6g   (rank %" PRId64 " of %" PRId64 ")", h.probability, h.rank, h.query + 1);
        ImGui::TextDisabled("layer %d  head %d", model_.settings.layer, model_.settings.head);
        if (h.level > 0 || h.row_level > 0) {
            const int64_t rows = int64_t(1) << h.row_level, keys = int64_t(1) << h.level;
            if (h.level == h.row_level)
                ImGui::Text("cell %" PRId64 "\xC3\x97%" PRId64 " (level %d): sum %.4g  max %.4g", rows, keys, h.level,
                            h.cell_sum, h.cell_max);
            else
                ImGui::Text("cell %" PRId64 " rows \xC3\x97 %" PRId64 " keys: sum %.4g  max %.4g", rows, keys, h.cell_sum,
                            h.cell_max);
        }
    }
    ImGui::EndTooltip();
}

std::optional<UnderLayer> MatrixView::under_layer() const {
    if (!renderer_ || !have_frame_) return std::nullopt;
    const render::GpuImage& target = renderer_->target();
    UnderLayer layer;
    layer.rect = VkRect2D{{fb_x0_, fb_y0_}, {target.width, target.height}};
    layer.version = content_version_;
    return layer;
}

void MatrixView::record_blit(VkCommandBuffer cmd, VkImage image, VkExtent2D extent, bool blit_supported,
                             std::span<const VkRect2D> damage) {
    if (!renderer_ || !have_frame_) return;
    const render::GpuImage& src = renderer_->target();
    // The view's rectangle, clipped to the image (the view may hang off a shrinking window) and to
    // each damaged rectangle: one region per overlap, copied 1:1.
    const int32_t vx0 = std::max(0, fb_x0_), vy0 = std::max(0, fb_y0_);
    const int32_t vx1 = std::min<int32_t>(static_cast<int32_t>(extent.width), fb_x0_ + static_cast<int32_t>(src.width));
    const int32_t vy1 = std::min<int32_t>(static_cast<int32_t>(extent.height), fb_y0_ + static_cast<int32_t>(src.height));
    std::vector<VkImageBlit> blits;
    std::vector<VkImageCopy> copies;
    for (const VkRect2D& d : damage) {
        const int32_t dx0 = std::max(vx0, d.offset.x), dy0 = std::max(vy0, d.offset.y);
        const int32_t dx1 = std::min(vx1, d.offset.x + static_cast<int32_t>(d.extent.width));
        const int32_t dy1 = std::min(vy1, d.offset.y + static_cast<int32_t>(d.extent.height));
        if (dx1 <= dx0 || dy1 <= dy0) continue;
        const int32_t sx0 = dx0 - fb_x0_, sy0 = dy0 - fb_y0_;
        if (blit_supported) {
            VkImageBlit blit{};
            blit.srcSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
            blit.srcOffsets[0] = {sx0, sy0, 0};
            blit.srcOffsets[1] = {sx0 + (dx1 - dx0), sy0 + (dy1 - dy0), 1};
            blit.dstSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
            blit.dstOffsets[0] = {dx0, dy0, 0};
            blit.dstOffsets[1] = {dx1, dy1, 1};
            blits.push_back(blit);
        } else {
            VkImageCopy copy{};
            copy.srcSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
            copy.srcOffset = {sx0, sy0, 0};
            copy.dstSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
            copy.dstOffset = {dx0, dy0, 0};
            copy.extent = {static_cast<uint32_t>(dx1 - dx0), static_cast<uint32_t>(dy1 - dy0), 1};
            copies.push_back(copy);
        }
    }
    if (blits.empty() && copies.empty()) return;
    // The renderer left its target in TRANSFER_SRC_OPTIMAL, and its render pass orders its writes
    // before later transfer reads (and our reads before its next writes).
    if (!blits.empty())
        vkCmdBlitImage(cmd, src.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                       static_cast<uint32_t>(blits.size()), blits.data(), VK_FILTER_NEAREST);
    if (!copies.empty())
        vkCmdCopyImage(cmd, src.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                       static_cast<uint32_t>(copies.size()), copies.data());
    VkMemoryBarrier after{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    after.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    after.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT;
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &after, 0, nullptr, 0,
                         nullptr);
}

}  // namespace attn::app
