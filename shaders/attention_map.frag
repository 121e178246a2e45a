#version 450
// The tile was coloured by tile_colorize.comp: one texel fetch per pixel (no filtering, no
// coordinate normalisation — the cheapest read lavapipe can do per pixel).
layout(set = 0, binding = 0) uniform sampler2DArray colored_tiles;

layout(location = 0) in vec2 texel;  // in texels of the 256×256 layer
layout(location = 1) flat in uint layer;
layout(location = 0) out vec4 color;

void main() {
    color = texelFetch(colored_tiles, ivec3(clamp(ivec2(texel), ivec2(0), ivec2(255)), int(layer)), 0);
}
