#pragma once
// What is under a pixel of the attention map: shared by the headless runner and the windowed
// debugger, so both report the same numbers (query/key tokens, the exact probability from
// CpuTileSource::row, its rank in the row, and the cell's aggregated sum/max at the drawn level).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/session.h"
#include "engine/tile_source.h"
#include "ui/render/view_transform.h"
#include "ui/view/headless.h"  // HoverInfo

namespace attn::view {

// The UTF-8 text a position covers ("" when out of range).
std::string token_text(const Session& session, int64_t position);

// The token cell under pixel (px, py) of `view` showing `extent` for (layer, head). The cell
// aggregate at row levels below CpuTileSource::kFirstOverviewLevel is summed from the exact rows
// of the cell's block (a few rows, not a whole 256×256 tile of cells), so hovering stays
// interactive at 50k tokens; at coarser levels it is read from the tile the renderer shows.
HoverInfo hover_at(const Session& session, const CpuTileSource& source, const render::ViewTransform& view,
                   const render::MatrixExtent& extent, int layer, int head, double px, double py);
// The map: the whole causal matrix of the capture.
HoverInfo hover_at(const Session& session, const CpuTileSource& source, const render::ViewTransform& view, int layer,
                   int head, double px, double py);

// The decode step whose query row `query` is (-1 for a prompt row or past the last step).
int64_t step_of_query(const Session& session, int64_t query);

// rank of `p` in `row` (1 = largest), the rule hover_at uses.
int64_t rank_in_row(const std::vector<float>& row, float p);

}  // namespace attn::view
