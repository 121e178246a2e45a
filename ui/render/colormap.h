#pragma once
// Colormaps as 256-entry RGBA8 tables, built from each map's published anchor colours
// (9 evenly spaced samples of matplotlib's viridis and magma; Moreland's "cool to warm"
// diverging map) by piecewise-linear interpolation in sRGB. The tables are uploaded once;
// the colorize compute pass looks values up in them.
#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace attn::render {

enum class Colormap { Viridis, Magma, Diverging };
enum class ValueScale { Linear, Log };

using ColormapTable = std::array<uint32_t, 256>;  // packed RGBA8 (R in the low byte)

const ColormapTable& colormap_table(Colormap map);
std::optional<Colormap> parse_colormap(const std::string& name);
const char* colormap_name(Colormap map);

}  // namespace attn::render
