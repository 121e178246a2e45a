#pragma once
// The attention map inside the window. The renderer draws into its offscreen RGBA8 target (sized
// to the map's rectangle in framebuffer pixels, recreated when that changes); the shell blits the
// target into the swapchain image before the ImGui pass (Debian's ImGui 1.86 has no
// ImGui_ImplVulkan_AddTexture, and its Vulkan backend binds only the font texture), and the map's
// ImGui window has no background, so the blitted map shows through. Overlays (labels, selection,
// hover outline, tooltip) are ImGui draw-list primitives on top.
//
// Interaction: wheel zooms to the cursor; +/- zoom about the cursor (or the centre); drag or the
// arrow keys pan; F / Home fit; click selects the query row; hover shows a tooltip (query and key
// tokens, exact probability from CpuTileSource::row, rank in the row, the cell's sum/max).
#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "ui/app/debugger_model.h"
#include "ui/render/attention_map_renderer.h"
#include "ui/render/tile_cache.h"
#include "ui/render/view_transform.h"

namespace attn::app {

class MapView {
public:
    MapView(render::VulkanContext& context, DebuggerModel& model, const render::TileCacheOptions& cache);
    ~MapView();

    // Lays out and handles the map inside the current ImGui window (taking the remaining content
    // region), renders the map into the offscreen target and draws the overlays. fb_scale converts
    // ImGui (screen) units to framebuffer pixels.
    void draw(float fb_scale_x, float fb_scale_y);
    // The model's source changed (live: restart or another branch): a new cache over it.
    void reset_source();
    // Live decoding appended rows from `first_row` on: tiles over them are recomputed.
    void rows_changed_from(int64_t first_row) { cache_->invalidate_rows_from(first_row); }
    // Blits the rendered map into the swapchain image (TRANSFER_DST_OPTIMAL, left so).
    void record_blit(VkCommandBuffer cmd, VkImage image, VkExtent2D extent, bool blit_supported);

    render::ViewTransform& view() { return view_; }
    const render::FrameStats& stats() const { return stats_; }
    // The colour range on screen (the renderer's, kept across frames that were not re-rendered).
    render::ColorRange range() const { return renderer_ ? renderer_->current_range() : render::ColorRange{}; }
    render::TileCache& cache() { return *cache_; }
    bool busy() const { return cache_->busy() || !stats_.all_exact(); }

    // Scripts: hover as if the mouse were at map pixel (px, py) (framebuffer pixels in the map).
    void set_scripted_hover(std::optional<std::pair<double, double>> pixel) { scripted_hover_ = pixel; }
    const view::HoverInfo& hover() const { return model_.hover; }

private:
    void handle_input(float fb_x, float fb_y);
    void update_hover(double px, double py);
    void draw_overlays(float fb_x, float fb_y);
    void draw_tooltip();
    void ensure_renderer(uint32_t width, uint32_t height);

    render::VulkanContext& context_;
    DebuggerModel& model_;
    render::TileCacheOptions cache_options_;
    std::unique_ptr<render::TileCache> cache_;
    std::unique_ptr<render::AttentionMapRenderer> renderer_;
    render::ViewTransform view_;
    render::FrameStats stats_;
    bool fitted_ = false;
    bool have_frame_ = false;

    // The map's rectangle: ImGui (screen) units, and framebuffer pixels for the blit.
    float x0_ = 0, y0_ = 0, w_ = 0, h_ = 0;
    int32_t fb_x0_ = 0, fb_y0_ = 0;

    // Hover cache: recomputed only when the cell, the head or the level changes.
    struct HoverKey {
        int64_t query = -2, key = -2;
        int layer = -1, head = -1, level = -1;
        bool operator==(const HoverKey&) const = default;
    } hover_key_;
    std::optional<std::pair<double, double>> scripted_hover_;
    double drag_distance_ = 0;
};

}  // namespace attn::app
