#include "ui/app/frame_damage.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace attn::app {

namespace {

inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v * 0x9E3779B97F4A7C15ull;
    h = (h << 31) | (h >> 33);
    return h * 0xBF58476D1CE4E5B9ull;
}

struct PixelRect {
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // [x0, x1) × [y0, y1)
    bool empty() const { return x1 <= x0 || y1 <= y0; }
};

// The scissor ImGui's Vulkan backend makes of a clip rectangle (its own rounding: offset and extent
// truncated), so that what we clip to is exactly what it draws.
PixelRect scissor_of(const ImVec4& clip, const ImDrawData& draw, VkExtent2D extent) {
    const ImVec2 pos = draw.DisplayPos, scale = draw.FramebufferScale;
    float x0 = (clip.x - pos.x) * scale.x, y0 = (clip.y - pos.y) * scale.y;
    float x1 = (clip.z - pos.x) * scale.x, y1 = (clip.w - pos.y) * scale.y;
    x0 = std::max(x0, 0.f);
    y0 = std::max(y0, 0.f);
    x1 = std::min(x1, static_cast<float>(extent.width));
    y1 = std::min(y1, static_cast<float>(extent.height));
    if (x1 <= x0 || y1 <= y0) return {};
    PixelRect r;
    r.x0 = static_cast<int>(x0);
    r.y0 = static_cast<int>(y0);
    r.x1 = r.x0 + static_cast<int>(x1 - x0);
    r.y1 = r.y0 + static_cast<int>(y1 - y0);
    return r;
}

bool whole(float v) { return std::fabs(v - std::round(v)) < 1e-6f && v >= 1.f; }

}  // namespace

const std::vector<VkRect2D>& FrameDamage::update(const ImDrawData& draw, std::span<const UnderLayer> layers,
                                                  VkExtent2D extent) {
    if (extent.width != extent_.width || extent.height != extent_.height) {
        extent_ = extent;
        cols_ = static_cast<int>((extent.width + kCell - 1) / kCell);
        rows_ = static_cast<int>((extent.height + kCell - 1) / kCell);
        previous_.assign(size_t(cols_) * rows_, 0);
        valid_ = false;
    }
    hashes_.assign(size_t(cols_) * rows_, 0x243F6A8885A308D3ull);
    const auto add = [&](const PixelRect& r, uint64_t h) {
        const int c0 = std::max(0, r.x0 / kCell), c1 = std::min(cols_ - 1, (r.x1 - 1) / kCell);
        const int r0 = std::max(0, r.y0 / kCell), r1 = std::min(rows_ - 1, (r.y1 - 1) / kCell);
        for (int row = r0; row <= r1; ++row) {
            uint64_t* line = &hashes_[size_t(row) * cols_];
            for (int c = c0; c <= c1; ++c) line[c] = mix(line[c], h);
        }
    };

    for (const UnderLayer& layer : layers) {
        PixelRect r{layer.rect.offset.x, layer.rect.offset.y, layer.rect.offset.x + static_cast<int>(layer.rect.extent.width),
                    layer.rect.offset.y + static_cast<int>(layer.rect.extent.height)};
        r.x0 = std::max(r.x0, 0);
        r.y0 = std::max(r.y0, 0);
        r.x1 = std::min(r.x1, static_cast<int>(extent.width));
        r.y1 = std::min(r.y1, static_cast<int>(extent.height));
        if (r.empty()) continue;
        add(r, mix(mix(mix(uint64_t(uint32_t(r.x0)) << 32 | uint32_t(r.y0), uint64_t(uint32_t(r.x1)) << 32 | uint32_t(r.y1)),
                       layer.version),
                   0x5851F42D4C957F2Dull));
    }

    const ImVec2 pos = draw.DisplayPos, scale = draw.FramebufferScale;
    for (int l = 0; l < draw.CmdListsCount; ++l) {
        const ImDrawList* list = draw.CmdLists[l];
        const ImDrawVert* vertices = list->VtxBuffer.Data;
        const ImDrawIdx* indices = list->IdxBuffer.Data;
        for (const ImDrawCmd& cmd : list->CmdBuffer) {
            if (cmd.UserCallback) continue;  // none in this application (they would draw unhashed pixels)
            const PixelRect clip = scissor_of(cmd.ClipRect, draw, extent);
            if (clip.empty()) continue;
            uint64_t cmd_hash = mix(reinterpret_cast<uintptr_t>(cmd.TextureId),
                                    uint64_t(uint32_t(clip.x0)) << 32 | uint32_t(clip.y0));
            cmd_hash = mix(cmd_hash, uint64_t(uint32_t(clip.x1)) << 32 | uint32_t(clip.y1));
            for (unsigned i = 0; i + 2 < cmd.ElemCount; i += 3) {
                const ImDrawVert* v[3] = {&vertices[cmd.VtxOffset + indices[cmd.IdxOffset + i]],
                                          &vertices[cmd.VtxOffset + indices[cmd.IdxOffset + i + 1]],
                                          &vertices[cmd.VtxOffset + indices[cmd.IdxOffset + i + 2]]};
                float x0 = v[0]->pos.x, x1 = x0, y0 = v[0]->pos.y, y1 = y0;
                uint64_t h = cmd_hash;
                for (const ImDrawVert* vert : v) {
                    x0 = std::min(x0, vert->pos.x);
                    x1 = std::max(x1, vert->pos.x);
                    y0 = std::min(y0, vert->pos.y);
                    y1 = std::max(y1, vert->pos.y);
                    uint64_t words[3] = {};
                    static_assert(sizeof(ImDrawVert) <= sizeof(words));
                    std::memcpy(words, vert, sizeof(ImDrawVert));
                    h = mix(mix(mix(h, words[0]), words[1]), words[2]);
                }
                // The pixels the triangle can touch, inside its scissor (one pixel of margin for
                // anti-aliased edges and rounding).
                PixelRect r;
                r.x0 = std::max(clip.x0, static_cast<int>(std::floor((x0 - pos.x) * scale.x)) - 1);
                r.y0 = std::max(clip.y0, static_cast<int>(std::floor((y0 - pos.y) * scale.y)) - 1);
                r.x1 = std::min(clip.x1, static_cast<int>(std::ceil((x1 - pos.x) * scale.x)) + 1);
                r.y1 = std::min(clip.y1, static_cast<int>(std::ceil((y1 - pos.y) * scale.y)) + 1);
                if (r.empty()) continue;
                add(r, h);
            }
        }
    }

    const bool fractional_scale = !whole(scale.x) || !whole(scale.y);
    const bool everything = !valid_ || fractional_scale;
    damaged_.assign(hashes_.size(), 0);
    size_t damaged_cells = 0;
    for (size_t i = 0; i < hashes_.size(); ++i) {
        damaged_[i] = everything || hashes_[i] != previous_[i];
        damaged_cells += damaged_[i];
    }
    previous_.swap(hashes_);
    valid_ = true;
    full_ = damaged_cells == damaged_.size();
    rects_from_cells(extent);
    double area = 0;
    for (const VkRect2D& r : rects_) area += double(r.extent.width) * r.extent.height;
    damaged_fraction_ = extent.width && extent.height ? area / (double(extent.width) * extent.height) : 0;
    return rects_;
}

void FrameDamage::rects_from_cells(VkExtent2D extent) {
    rects_.clear();
    if (full_) {
        rects_.push_back(VkRect2D{{0, 0}, extent});
        return;
    }
    // Runs of damaged cells per row; a run with the same columns as one in the row above extends it.
    struct Open {
        int c0, c1, r0, r1;  // cells [c0, c1) × [r0, r1)
    };
    std::vector<Open> open, next, closed;
    for (int row = 0; row < rows_; ++row) {
        next.clear();
        const uint8_t* line = &damaged_[size_t(row) * cols_];
        for (int c = 0; c < cols_;) {
            if (!line[c]) {
                ++c;
                continue;
            }
            int end = c;
            while (end < cols_ && line[end]) ++end;
            auto same = std::find_if(open.begin(), open.end(), [&](const Open& o) { return o.c0 == c && o.c1 == end; });
            if (same != open.end()) {
                Open o = *same;
                o.r1 = row + 1;
                open.erase(same);
                next.push_back(o);
            } else {
                next.push_back({c, end, row, row + 1});
            }
            c = end;
        }
        closed.insert(closed.end(), open.begin(), open.end());
        open.swap(next);
    }
    closed.insert(closed.end(), open.begin(), open.end());
    if (closed.empty()) return;
    const auto to_pixels = [&](int c0, int c1, int r0, int r1) {
        const uint32_t x0 = uint32_t(c0) * kCell, y0 = uint32_t(r0) * kCell;
        const uint32_t x1 = std::min<uint32_t>(uint32_t(c1) * kCell, extent.width);
        const uint32_t y1 = std::min<uint32_t>(uint32_t(r1) * kCell, extent.height);
        return VkRect2D{{int32_t(x0), int32_t(y0)}, {x1 - x0, y1 - y0}};
    };
    if (closed.size() > kMaxRects) {
        Open box = closed.front();
        for (const Open& o : closed) {
            box.c0 = std::min(box.c0, o.c0);
            box.c1 = std::max(box.c1, o.c1);
            box.r0 = std::min(box.r0, o.r0);
            box.r1 = std::max(box.r1, o.r1);
        }
        rects_.push_back(to_pixels(box.c0, box.c1, box.r0, box.r1));
        return;
    }
    for (const Open& o : closed) rects_.push_back(to_pixels(o.c0, o.c1, o.r0, o.r1));
}

std::vector<VkRect2D> uncovered_parts(std::span<const VkRect2D> rects, std::span<const UnderLayer> layers) {
    std::vector<PixelRect> parts, next;
    for (const VkRect2D& r : rects)
        parts.push_back({r.offset.x, r.offset.y, r.offset.x + static_cast<int>(r.extent.width),
                         r.offset.y + static_cast<int>(r.extent.height)});
    for (const UnderLayer& layer : layers) {
        const PixelRect cut{layer.rect.offset.x, layer.rect.offset.y, layer.rect.offset.x + static_cast<int>(layer.rect.extent.width),
                            layer.rect.offset.y + static_cast<int>(layer.rect.extent.height)};
        next.clear();
        for (const PixelRect& p : parts) {
            const int x0 = std::max(p.x0, cut.x0), y0 = std::max(p.y0, cut.y0);
            const int x1 = std::min(p.x1, cut.x1), y1 = std::min(p.y1, cut.y1);
            if (x1 <= x0 || y1 <= y0) {
                next.push_back(p);
                continue;
            }
            // Up to four pieces around the covered part: the bands above and below, then left and right.
            if (p.y0 < y0) next.push_back({p.x0, p.y0, p.x1, y0});
            if (y1 < p.y1) next.push_back({p.x0, y1, p.x1, p.y1});
            if (p.x0 < x0) next.push_back({p.x0, y0, x0, y1});
            if (x1 < p.x1) next.push_back({x1, y0, p.x1, y1});
        }
        parts.swap(next);
    }
    std::vector<VkRect2D> out;
    for (const PixelRect& p : parts)
        out.push_back(VkRect2D{{p.x0, p.y0}, {static_cast<uint32_t>(p.x1 - p.x0), static_cast<uint32_t>(p.y1 - p.y0)}});
    return out;
}

void clip_draw_data(ImDrawData& draw, std::span<const VkRect2D> rects, VkExtent2D extent) {
    // Each command is cut into one piece per rectangle it overlaps, and each piece keeps only the
    // triangles that can touch its rectangle: lavapipe runs the vertex stage and triangle set-up for
    // every index drawn, scissored out or not, so the work follows what changed, not the window.
    const ImVec2 pos = draw.DisplayPos, scale = draw.FramebufferScale;
    ImVector<ImDrawCmd> cmds;
    ImVector<ImDrawIdx> indices;
    int total_indices = 0;
    for (int l = 0; l < draw.CmdListsCount; ++l) {
        ImDrawList* list = draw.CmdLists[l];
        const ImDrawVert* vertices = list->VtxBuffer.Data;
        const ImDrawIdx* old = list->IdxBuffer.Data;
        cmds.resize(0);
        indices.resize(0);
        for (const ImDrawCmd& cmd : list->CmdBuffer) {
            if (cmd.UserCallback) {
                cmds.push_back(cmd);
                continue;
            }
            const PixelRect clip = scissor_of(cmd.ClipRect, draw, extent);
            if (clip.empty()) continue;
            for (const VkRect2D& rect : rects) {
                const int x0 = std::max(clip.x0, rect.offset.x), y0 = std::max(clip.y0, rect.offset.y);
                const int x1 = std::min(clip.x1, rect.offset.x + static_cast<int>(rect.extent.width));
                const int y1 = std::min(clip.y1, rect.offset.y + static_cast<int>(rect.extent.height));
                if (x1 <= x0 || y1 <= y0) continue;
                // The piece's rectangle back in ImGui units, for the triangle test.
                const float ux0 = x0 / scale.x + pos.x, uy0 = y0 / scale.y + pos.y;
                const float ux1 = x1 / scale.x + pos.x, uy1 = y1 / scale.y + pos.y;
                const unsigned first = static_cast<unsigned>(indices.Size);
                for (unsigned i = 0; i + 2 < cmd.ElemCount; i += 3) {
                    const ImDrawIdx* tri = &old[cmd.IdxOffset + i];
                    const ImVec2& a = vertices[cmd.VtxOffset + tri[0]].pos;
                    const ImVec2& b = vertices[cmd.VtxOffset + tri[1]].pos;
                    const ImVec2& c = vertices[cmd.VtxOffset + tri[2]].pos;
                    if (std::max({a.x, b.x, c.x}) < ux0 || std::min({a.x, b.x, c.x}) > ux1 ||
                        std::max({a.y, b.y, c.y}) < uy0 || std::min({a.y, b.y, c.y}) > uy1)
                        continue;
                    indices.push_back(tri[0]);
                    indices.push_back(tri[1]);
                    indices.push_back(tri[2]);
                }
                const unsigned count = static_cast<unsigned>(indices.Size) - first;
                if (count == 0) continue;
                ImDrawCmd piece = cmd;
                piece.ClipRect = ImVec4(ux0, uy0, ux1, uy1);
                piece.IdxOffset = first;
                piece.ElemCount = count;
                cmds.push_back(piece);
            }
        }
        list->CmdBuffer.swap(cmds);
        list->IdxBuffer.swap(indices);
        total_indices += list->IdxBuffer.Size;
    }
    draw.TotalIdxCount = total_indices;
}

}  // namespace attn::app
