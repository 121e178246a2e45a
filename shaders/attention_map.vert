#version 450
// One instance per tile quad: a pixel rectangle on screen and the texel rectangle of the cached
// tile (or of the ancestor standing in for it) that fills it.
layout(location = 0) in vec4 pixel_rect;  // x0, y0, x1, y1 in viewport pixels
layout(location = 1) in vec4 texel_rect;  // u0, v0, u1, v1 normalised to the 256×256 layer
layout(location = 2) in uint layer;

layout(push_constant) uniform Params {
    vec2 viewport_size;
} params;

layout(location = 0) out vec2 texel;  // in texels, for texelFetch
layout(location = 1) flat out uint out_layer;

void main() {
    // Two triangles from the vertex index: corners (0,0) (1,0) (0,1) / (1,0) (1,1) (0,1).
    const vec2 corners[6] = vec2[](vec2(0, 0), vec2(1, 0), vec2(0, 1), vec2(1, 0), vec2(1, 1), vec2(0, 1));
    const vec2 c = corners[gl_VertexIndex];
    const vec2 pixel = mix(pixel_rect.xy, pixel_rect.zw, c);
    texel = mix(texel_rect.xy, texel_rect.zw, c) * 256.0;
    out_layer = layer;
    gl_Position = vec4(pixel / params.viewport_size * 2.0 - 1.0, 0.0, 1.0);
}
