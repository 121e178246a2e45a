#pragma once
// Which parts of the window changed since the last presented frame, so that a frame redraws only
// those and an unchanged frame is not drawn at all. On lavapipe a full 1080p ImGui frame costs
// ~12 ms of a 2-core machine, most of it re-shading window backgrounds that did not change; while
// the model decodes, a step changes a few lines of text.
//
// The framebuffer is cut into kCell × kCell cells. Each cell hashes, in draw order, everything
// drawn into it: first the layers under the UI (the attention maps blitted before the ImGui pass:
// their rectangle and content version), then every ImGui triangle whose clipped bounding box
// touches it (vertex positions, uvs and colours, texture, clip rectangle). A cell whose hash
// differs from the previous frame's is damaged. Runs of damaged cells become rectangles, and the
// frame clears, re-blits and re-draws inside those rectangles only (clip_draw_data turns them into
// ImGui clip rectangles, which the Vulkan backend turns into scissors).
//
// Only ImGui's font texture is ever bound (Debian's 1.86 backend), so equal vertices mean equal
// pixels; the content drawn under the UI is covered by the layers' versions.
#include <imgui.h>
#include <vulkan/vulkan.h>

#include <cstdint>
#include <span>
#include <vector>

namespace attn::app {

// Content drawn under the UI (framebuffer pixels); `version` changes whenever its pixels do.
struct UnderLayer {
    VkRect2D rect{};
    uint64_t version = 0;
};

class FrameDamage {
public:
    static constexpr int kCell = 32;
    // More rectangles than this are drawn as their bounding box (each one repeats the draw calls
    // that overlap it).
    static constexpr size_t kMaxRects = 48;

    // Hashes this frame and returns the damaged rectangles (framebuffer pixels, inside `extent`);
    // empty when nothing changed. The whole extent after invalidate(), on a size change, and when
    // the framebuffer scale is not a whole number (clip rectangles would not land on pixel edges).
    const std::vector<VkRect2D>& update(const ImDrawData& draw, std::span<const UnderLayer> layers, VkExtent2D extent);
    // The next update damages everything (first frame, new swapchain, a frame that was not drawn).
    void invalidate() { valid_ = false; }

    const std::vector<VkRect2D>& rects() const { return rects_; }
    bool full() const { return full_; }
    // Damaged share of the framebuffer's area in the last update, 0..1.
    double damaged_fraction() const { return damaged_fraction_; }

private:
    void rects_from_cells(VkExtent2D extent);

    bool valid_ = false;
    bool full_ = false;
    double damaged_fraction_ = 0;
    VkExtent2D extent_{};
    int cols_ = 0, rows_ = 0;
    std::vector<uint64_t> hashes_, previous_;
    std::vector<uint8_t> damaged_;
    std::vector<VkRect2D> rects_;
};

// The parts of `rects` that no layer covers (what must be cleared before the layers are blitted:
// under a layer the blit overwrites every pixel). Disjoint rectangles stay disjoint.
std::vector<VkRect2D> uncovered_parts(std::span<const VkRect2D> rects, std::span<const UnderLayer> layers);

// Restricts the draw data to `rects` (framebuffer pixels): every draw command is repeated once per
// rectangle it overlaps, with its clip rectangle cut to that rectangle; commands that overlap none
// are dropped. Callbacks are kept as they are.
void clip_draw_data(ImDrawData& draw, std::span<const VkRect2D> rects, VkExtent2D extent);

}  // namespace attn::app
