// libFuzzer target for the GGUF reader: parse arbitrary bytes, then use everything the parse
// produced the way the runtime would. Only attn::Error may escape the reader; any crash, leak,
// sanitizer report or other exception is a bug.
#include <cstddef>
#include <cstdint>

#include "engine/error.h"
#include "engine/gguf.h"

namespace {

template <typename Getter>
void try_get(Getter&& get) {
    try {
        get();
    } catch (const attn::Error&) {
        // Wrong kind for this getter: expected for most keys.
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::unique_ptr<attn::GgufFile> file;
    try {
        file = attn::GgufFile::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz.gguf");
    } catch (const attn::Error&) {
        return 0;
    }

    for (const auto& entry : file->metadata()) {
        const std::string& key = entry.first;  // clang 14 cannot capture structured bindings
        try_get([&] { (void)file->get_int(key); });
        try_get([&] { (void)file->get_float(key); });
        try_get([&] { (void)file->get_bool(key); });
        try_get([&] { (void)file->get_string(key); });
        try_get([&] { (void)file->get_string_array(key); });
        try_get([&] { (void)file->get_int_array(key); });
        try_get([&] { (void)file->get_float_array(key); });
        try_get([&] { (void)file->int_or(key); });
        try_get([&] { (void)file->float_or(key); });
        try_get([&] { (void)file->string_or(key); });
    }
    try_get([&] { (void)file->tensor("no such tensor"); });

    // Every tensor lies inside the input, so its size is bounded by the input; the cap only keeps
    // one execution fast if the fuzzer is run with a large -max_len.
    constexpr uint64_t kMaxElements = uint64_t{1} << 24;
    for (const attn::TensorInfo& info : file->tensors()) {
        if (file->find_tensor(info.name) != &info) __builtin_trap();  // index must agree with the table
        if (info.elements() > kMaxElements) continue;
        try_get([&] { (void)attn::dequantize(info); });
    }
    return 0;
}
