#pragma once
// What the map and the waterfall views share: an ImGui widget over one AttentionMapRenderer and
// its own TileCache. The renderer draws into its offscreen RGBA8 target (sized to the widget's
// rectangle in framebuffer pixels, recreated when that changes); the shell blits the target into
// the swapchain image before the ImGui pass (Debian's ImGui 1.86 has no
// ImGui_ImplVulkan_AddTexture, and its Vulkan backend binds only the font texture), and the
// widget's ImGui window has no background, so the blitted matrix shows through. Overlays (labels,
// selection, hover outline, tooltip) are ImGui draw-list primitives on top.
//
// Interaction: wheel zooms to the cursor; +/- zoom about the cursor (or the centre); drag or the
// arrow keys pan; F / Home fit; click selects a row; hover shows a tooltip (row and key tokens,
// exact probability from CpuTileSource::row, rank in the row, the cell's sum/max).
#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "ui/app/debugger_model.h"
#include "ui/app/frame_damage.h"
#include "ui/render/attention_map_renderer.h"
#include "ui/render/tile_cache.h"
#include "ui/render/view_transform.h"

namespace attn::app {

class MatrixView {
public:
    virtual ~MatrixView();
    MatrixView(const MatrixView&) = delete;
    MatrixView& operator=(const MatrixView&) = delete;

    // Lays out and handles the view inside the current ImGui window (taking the remaining content
    // region), renders it into the offscreen target and draws the overlays. fb_scale converts
    // ImGui (screen) units to framebuffer pixels.
    void draw(float fb_scale_x, float fb_scale_y);
    // The model's source changed (live: restart or another branch): a new cache over it.
    void reset_source();
    // Live decoding appended rows from query `first_row` on: tiles over them are recomputed.
    void rows_changed_from(int64_t first_row) { cache_->invalidate_rows_from(first_row); }
    // Blits the rendered view into `image` (TRANSFER_DST_OPTIMAL, left so), inside `damage` only.
    void record_blit(VkCommandBuffer cmd, VkImage image, VkExtent2D extent, bool blit_supported,
                     std::span<const VkRect2D> damage);
    // Where the view is blitted and a version that changes with its pixels (for the frame damage);
    // nothing before the first frame.
    std::optional<UnderLayer> under_layer() const;

    // The part of the attention matrix shown, for the model's current state.
    virtual render::MatrixExtent extent() const = 0;
    // Shows the whole extent.
    virtual void fit() = 0;

    render::ViewTransform& view() { return view_; }
    const render::FrameStats& stats() const { return stats_; }
    // The colour range on screen (the renderer's, kept across frames that were not re-rendered).
    render::ColorRange range() const { return renderer_ ? renderer_->current_range() : render::ColorRange{}; }
    render::TileCache& cache() { return *cache_; }
    bool busy() const { return cache_->busy() || !stats_.all_exact() || render_deferred_; }
    // The image on screen is the current view's, from exact tiles only (screenshots wait for it).
    bool exact() const { return !render_deferred_ && stats_.all_exact(); }

    // Scripts: hover as if the mouse were at pixel (px, py) (framebuffer pixels in the view).
    void set_scripted_hover(std::optional<std::pair<double, double>> pixel) { scripted_hover_ = pixel; }
    // What is under the mouse in this view (query < 0: nothing). While the mouse is over the view
    // it is also the model's hover, which the other panels follow.
    const view::HoverInfo& hover() const { return hover_; }

protected:
    struct Behaviour {
        const char* widget_id;        // ImGui id of the view's button
        bool square_cells;            // the map: one scale for both axes; else one per axis
        bool keys_need_hover;         // take keyboard zoom/pan/fit only while hovered
    };
    MatrixView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache,
               const Behaviour& behaviour);

    // Panel requests addressed to this view (go to a token, fit), consumed once per frame.
    virtual void take_requests() {}
    virtual void row_clicked(int64_t row) = 0;
    // The row drawn highlighted (-1: none), and the left axis label of a row.
    virtual int64_t highlighted_row() const = 0;
    virtual std::string row_label(int64_t row) const = 0;
    // The tooltip's first line: what the hovered row is.
    virtual std::string describe_row(const view::HoverInfo& hover) const = 0;

    DebuggerModel& model_;
    render::ViewTransform view_;

private:
    void handle_input(float fb_x, float fb_y);
    void zoom_with_wheel(double px, double py, float wheel);
    void update_hover(double px, double py);
    void publish_hover(bool hovering);
    void draw_overlays(float fb_x, float fb_y);
    void draw_axis_labels(float fb_x, float fb_y);
    void draw_diff_band(float fb_x, float fb_y);
    void draw_tooltip();
    void ensure_renderer(uint32_t width, uint32_t height);

    render::VulkanContext& context_;
    Behaviour behaviour_;
    render::TileCacheOptions cache_options_;
    std::unique_ptr<render::TileCache> cache_;
    std::unique_ptr<render::AttentionMapRenderer> renderer_;
    render::FrameStats stats_;
    render::MatrixExtent extent_;  // this frame's
    bool fitted_ = false;
    bool have_frame_ = false;
    uint64_t content_version_ = 0;  // bumped whenever the renderer draws a new image
    bool render_deferred_ = false;  // the last draw() skipped rendering: the GPU was busy with the one before

    // The view's rectangle: ImGui (screen) units, and framebuffer pixels for the blit.
    float x0_ = 0, y0_ = 0, w_ = 0, h_ = 0;
    int32_t fb_x0_ = 0, fb_y0_ = 0;

    // Hover cache: recomputed only when the cell, the head or the levels change.
    struct HoverKey {
        int64_t row = -2, key = -2;
        int layer = -1, head = -1;
        render::CellLevels levels{-1, -1};
        render::MatrixExtent extent;
        bool operator==(const HoverKey&) const = default;
    } hover_key_;
    view::HoverInfo hover_;
    bool hover_published_ = false;
    std::optional<std::pair<double, double>> scripted_hover_;
    double drag_distance_ = 0;
};

}  // namespace attn::app
