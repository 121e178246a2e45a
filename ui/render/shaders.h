#pragma once
// SPIR-V of shaders/*, compiled by glslc and embedded at build time (ui/CMakeLists.txt,
// third_party/embed_spirv.cmake). Names: file name with '.' → '_'.
#include <cstddef>
#include <cstdint>

namespace attn::render::spirv {

extern const uint32_t tile_colorize_comp[];
extern const size_t tile_colorize_comp_words;
extern const uint32_t attention_map_vert[];
extern const size_t attention_map_vert_words;
extern const uint32_t attention_map_frag[];
extern const size_t attention_map_frag_words;

}  // namespace attn::render::spirv
