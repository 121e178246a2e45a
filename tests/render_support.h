#pragma once
// Helpers shared by the headless rendering tests ([render], [waterfall]): one Vulkan context for
// the whole test binary (instance creation with validation is slow on lavapipe), the validation
// check every rendering test ends with, and pixel classification of screenshots.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/capture_store.h"
#include "ui/render/attention_map_renderer.h"
#include "ui/render/vulkan_context.h"
#include "ui/view/headless.h"

namespace attn::testing {

// If Vulkan cannot start, every test using it fails and says why — it never skips silently.
inline render::VulkanContext& vulkan() {
    static std::unique_ptr<render::VulkanContext> context;
    static std::string failure;
    if (!context && failure.empty()) {
        try {
            render::VulkanContextOptions options;
            options.validation = true;
            options.require_validation = true;
            context = std::make_unique<render::VulkanContext>(options);
            std::printf("[render] Vulkan device: %s, validation %s\n", context->device_description().c_str(),
                        context->validation_enabled() ? "on" : "off");
        } catch (const std::exception& e) {
            failure = e.what();
        }
    }
    if (!context) FAIL("Vulkan could not be initialised for the rendering tests: " << failure);
    return *context;
}

inline void require_no_validation_errors() {
    const std::vector<std::string> errors = vulkan().validation_errors();
    for (const std::string& e : errors) UNSCOPED_INFO("validation error: " << e);
    REQUIRE(errors.empty());
}

struct Rgba {
    int r, g, b, a;
};
inline Rgba pixel(const std::vector<uint8_t>& pixels, uint32_t width, int x, int y) {
    const size_t i = (static_cast<size_t>(y) * width + static_cast<size_t>(x)) * 4;
    return {pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]};
}
inline bool is_empty(const Rgba& p) {
    auto near = [](int v, float f) { return std::abs(v - static_cast<int>(std::lround(f * 255))) <= 1; };
    return near(p.r, render::AttentionMapRenderer::kEmptyColor[0]) && near(p.g, render::AttentionMapRenderer::kEmptyColor[1]) &&
           near(p.b, render::AttentionMapRenderer::kEmptyColor[2]);
}
// The top of viridis is yellow (253, 231, 37), the bottom dark purple (68, 1, 84).
inline bool is_bright(const Rgba& p) { return p.r > 180 && p.g > 180 && p.b < 120; }
inline bool is_dark(const Rgba& p) { return p.g < 60 && !is_empty(p); }

// Appends positions [begin, begin + count) of `from` to `to`, as a forward pass records them
// (the live growth tests grow a capture this way).
inline void copy_captured_rows(const CaptureStore& from, CaptureStore& to, int64_t begin, int64_t count) {
    const CaptureShape& shape = from.shape();
    std::vector<float> q(static_cast<size_t>(count * shape.n_head * shape.head_dim));
    std::vector<float> k(static_cast<size_t>(count * shape.n_kv_head * shape.head_dim));
    std::vector<float> lse(static_cast<size_t>(count * shape.n_head));
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        from.copy_q(layer, begin, count, q.data());
        from.copy_k(layer, begin, count, k.data());
        from.copy_lse(layer, begin, count, lse.data());
        to.record_layer(layer, begin, count, q.data(), k.data(), lse.data());
    }
}

inline view::HeadlessOptions small_view(uint32_t width, uint32_t height) {
    view::HeadlessOptions o;
    o.width = width, o.height = height;
    o.cache.budget_bytes = 64ull << 20;
    o.cache.workers = 2;
    return o;
}

}  // namespace attn::testing
