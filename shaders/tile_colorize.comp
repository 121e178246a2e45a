#version 450
// Colours one cached tile once: raw value (R32F layer) → scale → range → colormap → RGBA8 layer.
// Redone only when the tile arrives or the range / scale / colormap change, so drawing a frame is
// a nearest-filtered RGBA8 fetch per pixel (cheap enough for lavapipe at 2560×1440).
layout(local_size_x = 16, local_size_y = 16) in;

layout(set = 0, binding = 0, r32f) uniform readonly image2DArray raw_tiles;
layout(set = 0, binding = 1, rgba8) uniform writeonly image2DArray colored_tiles;
layout(set = 0, binding = 2) readonly buffer ColormapTable { uint colormap[256]; };

layout(push_constant) uniform Params {
    vec4 empty_color;   // cells above the diagonal or past the end of the sequence
    float range_low;    // log10 of the value when log_scale, else the value
    float range_high;
    uint layer;
    uint valid_rows;
    uint valid_cols;
    uint log_scale;
    // The causal mask: cell (column c, row r) holds keys from first_key + c·key_cell and queries up
    // to last_query + r·row_cell; it is empty when the first key comes after the last query.
    int first_key;
    int key_cell;
    int last_query;
    int row_cell;
} params;

void main() {
    const ivec2 cell = ivec2(gl_GlobalInvocationID.xy);  // x = key column, y = query row
    const ivec3 at = ivec3(cell, int(params.layer));
    if (uint(cell.y) >= params.valid_rows || uint(cell.x) >= params.valid_cols ||
        params.first_key + cell.x * params.key_cell > params.last_query + cell.y * params.row_cell) {
        imageStore(colored_tiles, at, params.empty_color);
        return;
    }
    const float value = imageLoad(raw_tiles, at).r;
    float t;
    if (params.log_scale != 0u)
        t = value > 0.0 ? (log2(value) * 0.30102999566 - params.range_low) / (params.range_high - params.range_low) : 0.0;
    else
        t = (value - params.range_low) / (params.range_high - params.range_low);
    const uint index = uint(clamp(t, 0.0, 1.0) * 255.0 + 0.5);
    imageStore(colored_tiles, at, unpackUnorm4x8(colormap[index]));
}
