# Build-time script: turns one SPIR-V file into a C++ source holding its words, so the
# executable carries its shaders and never looks for the build directory at run time.
#   cmake -DINPUT=x.spv -DOUTPUT=x.spv.cpp -DSYMBOL=name -P embed_spirv.cmake
file(READ "${INPUT}" bytes HEX)
string(LENGTH "${bytes}" hex_length)
math(EXPR byte_count "${hex_length} / 2")
math(EXPR remainder "${byte_count} % 4")
if(NOT remainder EQUAL 0)
  message(FATAL_ERROR "${INPUT}: ${byte_count} bytes is not a whole number of SPIR-V words")
endif()
# SPIR-V words are little-endian on disk: regroup each 4 bytes into one 0xDDCCBBAA literal.
string(REGEX REPLACE "(..)(..)(..)(..)" "0x\\4\\3\\2\\1u," words "${bytes}")
string(REGEX REPLACE "(([^,]*,){8})" "\\1\n    " words "${words}")
math(EXPR word_count "${byte_count} / 4")
file(WRITE "${OUTPUT}.tmp"
"// Generated from ${INPUT} by third_party/embed_spirv.cmake. Do not edit.\n"
"#include <cstddef>\n#include <cstdint>\n"
"namespace attn::render::spirv {\n"
"extern const uint32_t ${SYMBOL}[] = {\n    ${words}\n};\n"
"extern const size_t ${SYMBOL}_words = ${word_count};\n"
"}\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
