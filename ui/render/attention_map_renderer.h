#pragma once
// AttentionMapRenderer: draws one (layer, head) attention matrix from the TileCache — the whole
// causal matrix (the map), or the decode steps' rows of it (the waterfall, cells not square).
//
// Per frame: choose the levels (one cell ≤ one pixel on each axis), enumerate the visible causal tiles,
// request the missing ones (visible first, nearest the centre first; stale requests cancelled),
// upload what producers finished, colour new or out-of-date tiles in a compute pass (budgeted
// per frame), then draw one instanced quad per tile — a missing tile shows the sub-rectangle of
// its nearest cached ancestor, upscaled — into an offscreen RGBA8 target. A frame whose draw list,
// colours and view are unchanged is not re-rendered at all.
#include <algorithm>
#include <array>
#include <unordered_map>
#include <cstdint>
#include <string>
#include <vector>

#include "ui/render/colormap.h"
#include "ui/render/tile_cache.h"
#include "ui/render/view_transform.h"

namespace attn::render {

struct RenderSettings {
    int layer = 0, head = 0;
    Plane plane = Plane::Max;
    Colormap colormap = Colormap::Viridis;
    ValueScale scale = ValueScale::Log;
    bool lock_range = false;        // keep the current range while the view moves
    bool manual_range = false;      // use range_low/high as given (log10 values when scale is Log)
    float range_low = -6, range_high = 0;
    float log_decades = 6;          // automatic log range: [max · 10^-decades, max]
    int max_colorize_per_frame = 1;  // each costs 3–5 ms on lavapipe at 256×256: one per frame keeps p99 low
    int max_uploads_per_frame = 64;
    bool operator==(const RenderSettings&) const = default;
};

// The value range every visible tile is coloured with (one range: no seams between tiles).
struct ColorRange {
    float low = 0, high = 1;  // log10 values when log_scale
    bool log_scale = true;
    Colormap colormap = Colormap::Viridis;
    bool operator==(const ColorRange&) const = default;
};

struct FrameStats {
    bool rendered = false;     // false: nothing changed, the previous image stands
    int level = 0;             // key level (the map's only level)
    int row_level = 0;         // row level: equal to level in the map
    int visible_tiles = 0;     // at the drawn level, lower triangle
    int exact_tiles = 0;       // drawn from their own (coloured, current-range) tile
    int fallback_tiles = 0;    // drawn from an ancestor
    int missing_tiles = 0;     // nothing cached to draw yet
    int uploads = 0, colorized = 0;
    ColorRange range;
    double cpu_ms = 0;         // whole frame on the calling thread, GPU wait included
    bool all_exact() const { return exact_tiles == visible_tiles; }
};

class AttentionMapRenderer {
public:
    static constexpr std::array<float, 4> kEmptyColor{0.10f, 0.10f, 0.11f, 1.0f};

    AttentionMapRenderer(VulkanContext& context, TileCache& cache, const MatrixExtent& extent, uint32_t width,
                         uint32_t height);
    ~AttentionMapRenderer();
    AttentionMapRenderer(const AttentionMapRenderer&) = delete;
    AttentionMapRenderer& operator=(const AttentionMapRenderer&) = delete;

    uint32_t width() const { return targets_[0].width; }
    uint32_t height() const { return targets_[0].height; }
    const MatrixExtent& extent() const { return extent_; }
    // The matrix shown grows while the model decodes and shrinks to an earlier step when the
    // timeline scrubs back (quads are clipped to it, cell by cell).
    void set_extent(const MatrixExtent& extent);
    // The map: positions × positions.
    void set_positions(int64_t positions);

    FrameStats render(const ViewTransform& view, const RenderSettings& settings);
    // Asynchronous: render() submits and returns; the GPU work is waited for at the start of the next
    // render() (or read_pixels()), when its command buffer, instance data and staging space are
    // reused. Later work on the same queue (the window's blit of target()) is ordered after it by
    // the render pass's dependencies. Off by default: the headless runner and `bench render` time
    // render() as a whole frame, GPU included.
    void set_asynchronous(bool asynchronous) { asynchronous_ = asynchronous; }
    bool asynchronous() const { return asynchronous_; }
    // True while the last asynchronous render() is still on the GPU: a render() now would wait for it.
    bool gpu_busy() const;
    // RGBA8 pixels of the last rendered frame, row-major from the top.
    std::vector<uint8_t> read_pixels();
    void write_png(const std::string& path);

    // The offscreen RGBA8 image render() draws into; after render() it is in
    // VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, ready to be copied or blitted (the windowed debugger
    // blits it into the swapchain image under the ImGui pass).
    // (Two images alternate: a pan copies the previous frame shifted into the other one.)
    const GpuImage& target() const { return targets_[current_]; }

    // The range the tiles on screen would share, from their per-tile statistics (exact tiles at
    // the drawn level when there are any, else whatever stands in for them).
    ColorRange current_range() const { return range_; }

private:
    struct Instance {
        float pixel_rect[4];
        float texel_rect[4];
        uint32_t layer;
    };
    // What a visible tile was drawn from, to tell which screen regions changed between frames.
    struct DrawnTile {
        TileKey source;          // the tile itself or the ancestor standing in for it
        uint32_t layer = 0;
        uint64_t stamp = 0;      // colouring of the source layer when drawn
        uint64_t contents = 0;   // the upload that filled it (a grown tile is replaced in place)
        float texel_rect[4]{};
        double k0 = 0, r0 = 0, k1 = 0, r1 = 0;  // keys × rows covered
        bool operator==(const DrawnTile& o) const {
            return source == o.source && layer == o.layer && stamp == o.stamp && contents == o.contents &&
                   std::equal(texel_rect, texel_rect + 4, o.texel_rect);
        }
    };
    struct PixelRect {
        int x0, y0, x1, y1;
    };
    struct ColorizeJob {
        CachedTile* tile;
        TileKey key;
    };
    void create_pipelines();
    ColorRange choose_range(const RenderSettings& settings, const std::vector<const CachedTile*>& exact,
                            const std::vector<const CachedTile*>& stand_ins) const;
    uint64_t stamp_for(const ColorRange& range);

    VulkanContext& context_;
    TileCache& cache_;
    MatrixExtent extent_;

    GpuImage targets_[2];
    int current_ = 0;
    VkRenderPass render_pass_ = VK_NULL_HANDLE;  // clears the whole image
    VkRenderPass load_pass_ = VK_NULL_HANDLE;    // keeps it: only dirty rectangles are redrawn
    VkFramebuffer framebuffers_[2]{};
    VkSampler sampler_ = VK_NULL_HANDLE;
    VkDescriptorPool descriptor_pool_ = VK_NULL_HANDLE;
    VkDescriptorSetLayout colorize_set_layout_ = VK_NULL_HANDLE, draw_set_layout_ = VK_NULL_HANDLE;
    VkDescriptorSet colorize_set_ = VK_NULL_HANDLE, draw_set_ = VK_NULL_HANDLE;
    VkPipelineLayout colorize_layout_ = VK_NULL_HANDLE, draw_layout_ = VK_NULL_HANDLE;
    VkPipeline colorize_pipeline_ = VK_NULL_HANDLE, draw_pipeline_ = VK_NULL_HANDLE;
    GpuBuffer colormap_buffer_;
    GpuBuffer instance_buffer_;
    GpuBuffer readback_;
    static constexpr uint32_t kMaxInstances = 16384;

    void finish_pending();  // waits for the last asynchronous submission and releases what it used
    bool asynchronous_ = false;
    VkFence pending_fence_ = VK_NULL_HANDLE;
    VkCommandBuffer pending_cmd_ = VK_NULL_HANDLE;

    uint64_t frame_ = 0;
    ColorRange range_;
    bool have_range_ = false;
    Colormap uploaded_colormap_ = Colormap::Viridis;
    bool colormap_uploaded_ = false;
    std::vector<std::pair<ColorRange, uint64_t>> stamps_;  // each distinct colouring gets a stamp
    bool have_image_ = false;
    ViewTransform drawn_view_;
    RenderSettings drawn_settings_;
    CellLevels drawn_levels_{-1, -1};
    int64_t drawn_first_query_ = 0;
    std::unordered_map<uint64_t, DrawnTile> drawn_;  // by tile (ty << 32 | tx) at drawn_levels_
};

}  // namespace attn::render
