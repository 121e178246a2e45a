#include "ui/render/colormap.h"

#include <algorithm>
#include <cmath>
#include <span>

namespace attn::render {

namespace {

struct Rgb {
    uint8_t r, g, b;
};

// Published anchor colours, evenly spaced over [0, 1].
constexpr Rgb kViridis[] = {{68, 1, 84},    {72, 40, 120},  {62, 73, 137},  {49, 104, 142}, {38, 130, 142},
                            {31, 158, 137}, {53, 183, 121}, {110, 206, 88}, {253, 231, 37}};
constexpr Rgb kMagma[] = {{0, 0, 4},      {28, 16, 68},   {79, 18, 123},   {129, 37, 129}, {181, 54, 122},
                          {229, 80, 100}, {251, 135, 97}, {254, 194, 135}, {252, 253, 191}};
// Moreland (2009), "Diverging Color Maps for Scientific Visualization": blue, neutral grey, red.
constexpr Rgb kDiverging[] = {{59, 76, 192}, {221, 221, 221}, {180, 4, 38}};

ColormapTable build(std::span<const Rgb> anchors) {
    ColormapTable table{};
    const int segments = static_cast<int>(anchors.size()) - 1;
    for (int i = 0; i < 256; ++i) {
        const float t = static_cast<float>(i) / 255.0f * static_cast<float>(segments);
        const int s = std::min(static_cast<int>(t), segments - 1);
        const float f = t - static_cast<float>(s);
        auto mix = [&](uint8_t a, uint8_t b) {
            return static_cast<uint32_t>(std::lround(static_cast<float>(a) * (1 - f) + static_cast<float>(b) * f));
        };
        const Rgb& a = anchors[s];
        const Rgb& b = anchors[s + 1];
        table[i] = mix(a.r, b.r) | mix(a.g, b.g) << 8 | mix(a.b, b.b) << 16 | 0xffu << 24;
    }
    return table;
}

}  // namespace

const ColormapTable& colormap_table(Colormap map) {
    static const ColormapTable viridis = build(kViridis);
    static const ColormapTable magma = build(kMagma);
    static const ColormapTable diverging = build(kDiverging);
    switch (map) {
        case Colormap::Magma: return magma;
        case Colormap::Diverging: return diverging;
        case Colormap::Viridis: break;
    }
    return viridis;
}

std::optional<Colormap> parse_colormap(const std::string& name) {
    if (name == "viridis") return Colormap::Viridis;
    if (name == "magma") return Colormap::Magma;
    if (name == "diverging" || name == "coolwarm") return Colormap::Diverging;
    return std::nullopt;
}

const char* colormap_name(Colormap map) {
    switch (map) {
        case Colormap::Magma: return "magma";
        case Colormap::Diverging: return "diverging";
        case Colormap::Viridis: break;
    }
    return "viridis";
}

}  // namespace attn::render
