#version 450
// The tile was coloured by tile_colorize.comp: one nearest-filtered fetch per pixel.
layout(set = 0, binding = 0) uniform sampler2DArray colored_tiles;

layout(location = 0) in vec2 uv;
layout(location = 1) flat in uint layer;
layout(location = 0) out vec4 color;

void main() {
    color = texture(colored_tiles, vec3(uv, float(layer)));
}
