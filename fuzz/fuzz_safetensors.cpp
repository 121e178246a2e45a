// libFuzzer target for the safetensors reader: parse arbitrary bytes, walk the metadata and
// dequantise every tensor. Only attn::Error may escape; anything else is a bug.
#include <cstddef>
#include <cstdint>

#include "engine/error.h"
#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::unique_ptr<attn::SafetensorsFile> file;
    try {
        file = attn::SafetensorsFile::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz.safetensors");
    } catch (const attn::Error&) {
        return 0;
    }

    size_t metadata_bytes = 0;
    for (const auto& [key, value] : file->metadata()) metadata_bytes += key.size() + value.size();
    if (metadata_bytes > size) __builtin_trap();  // metadata can only come from the input

    constexpr uint64_t kMaxElements = uint64_t{1} << 24;
    for (const attn::TensorInfo& info : file->tensors()) {
        if (info.elements() > kMaxElements) continue;  // zero-sized dims allow huge shapes with no data
        try {
            (void)attn::dequantize(info);
        } catch (const attn::Error&) {
            // Integer and F64 tensors are described but not convertible.
        }
    }
    return 0;
}
