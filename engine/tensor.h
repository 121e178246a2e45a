#pragma once
// Tensor descriptions shared by the GGUF and safetensors readers.
//
// Shape convention: row-major, outermost dimension first (numpy / safetensors
// order). A linear layer's weight is {out_features, in_features}. The GGUF reader
// reverses GGUF's ne[] (fastest first) into this order.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

enum class DType : uint8_t {
    F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K,
    I8, I16, I32, I64, F64,  // readable in safetensors metadata; not loadable as weights
};

std::string_view dtype_name(DType type);

// Bytes taken by `elements` values of `type` (elements must be a multiple of the block size
// for quantised types). Returns 0 if it is not.
size_t dtype_bytes(DType type, uint64_t elements);
// Elements per quantisation block (1 for plain types).
uint32_t dtype_block_elements(DType type);

struct TensorInfo {
    std::string name;
    DType type = DType::F32;
    std::vector<int64_t> shape;  // outermost first
    const std::byte* data = nullptr;  // points into the mapped file
    size_t bytes = 0;

    uint64_t elements() const {
        uint64_t n = 1;
        for (int64_t d : shape) n *= static_cast<uint64_t>(d);
        return n;
    }
};

// Converts any supported weight type to fp32. `out.size()` must equal `info.elements()`.
// Throws attn::Error naming the tensor for unsupported types or size mismatches.
void dequantize(const TensorInfo& info, std::span<float> out);
std::vector<float> dequantize(const TensorInfo& info);

// fp16 / bf16 scalar conversions (exact, round-to-nearest-even for the float→half direction).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

}  // namespace attn
