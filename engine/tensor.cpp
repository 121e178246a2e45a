// Dequantisation must reproduce gguf-py's numpy reference bit for bit: every scaled value is a
// float32 multiply rounded on its own, then a float32 add or subtract. A fused multiply-add
// skips that intermediate rounding, so contraction is switched off for this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "engine/tensor.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <system_error>
#include <thread>
#include <vector>

#include "engine/error.h"

static_assert(std::endian::native == std::endian::little,
              "model files are little-endian and are read in place");

namespace attn {

namespace {

constexpr uint32_t kBlock = 32;     // QK of the _0 / _1 formats
constexpr uint32_t kSuperBlock = 256;  // QK_K of the K formats

struct TypeLayout {
    std::string_view name;
    uint32_t block_elements;
    uint32_t block_bytes;
};

TypeLayout layout(DType type) {
    switch (type) {
        case DType::F32: return {"F32", 1, 4};
        case DType::F16: return {"F16", 1, 2};
        case DType::BF16: return {"BF16", 1, 2};
        case DType::Q8_0: return {"Q8_0", kBlock, 2 + 32};
        case DType::Q4_0: return {"Q4_0", kBlock, 2 + 16};
        case DType::Q4_1: return {"Q4_1", kBlock, 2 + 2 + 16};
        case DType::Q5_0: return {"Q5_0", kBlock, 2 + 4 + 16};
        case DType::Q5_1: return {"Q5_1", kBlock, 2 + 2 + 4 + 16};
        case DType::Q4_K: return {"Q4_K", kSuperBlock, 2 + 2 + 12 + 128};
        case DType::Q5_K: return {"Q5_K", kSuperBlock, 2 + 2 + 12 + 32 + 128};
        case DType::Q6_K: return {"Q6_K", kSuperBlock, 128 + 64 + 16 + 2};
        case DType::I8: return {"I8", 1, 1};
        case DType::I16: return {"I16", 1, 2};
        case DType::I32: return {"I32", 1, 4};
        case DType::I64: return {"I64", 1, 8};
        case DType::F64: return {"F64", 1, 8};
    }
    return {"unknown", 0, 0};
}

const uint8_t* as_u8(const std::byte* p) { return reinterpret_cast<const uint8_t*>(p); }

uint16_t load_u16(const std::byte* p) {
    uint16_t value;
    std::memcpy(&value, p, sizeof value);
    return value;
}

uint32_t load_u32(const std::byte* p) {
    uint32_t value;
    std::memcpy(&value, p, sizeof value);
    return value;
}

float load_half(const std::byte* p) { return half_to_float(load_u16(p)); }

// ---- block decoders: each turns `blocks` consecutive blocks at `src` into floats at `dst` ----

void decode_f32(const std::byte* src, float* dst, size_t count) {
    std::memcpy(dst, src, count * sizeof(float));
}

void decode_f16(const std::byte* src, float* dst, size_t count) {
    for (size_t i = 0; i < count; ++i) dst[i] = load_half(src + 2 * i);
}

void decode_bf16(const std::byte* src, float* dst, size_t count) {
    for (size_t i = 0; i < count; ++i) dst[i] = bf16_to_float(load_u16(src + 2 * i));
}

// Q8_0: fp16 scale, 32 signed bytes.
void decode_q8_0(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 34, dst += kBlock) {
        const float scale = load_half(src);
        const auto* q = reinterpret_cast<const int8_t*>(src + 2);
        for (uint32_t i = 0; i < kBlock; ++i) dst[i] = static_cast<float>(q[i]) * scale;
    }
}

// Q4_0: fp16 scale, 16 bytes of nibbles; low nibbles are elements 0..15, high nibbles 16..31.
void decode_q4_0(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 18, dst += kBlock) {
        const float scale = load_half(src);
        const uint8_t* qs = as_u8(src + 2);
        for (uint32_t j = 0; j < 16; ++j) {
            dst[j] = scale * static_cast<float>((qs[j] & 0x0F) - 8);
            dst[j + 16] = scale * static_cast<float>((qs[j] >> 4) - 8);
        }
    }
}

// Q4_1: fp16 scale, fp16 minimum, 16 bytes of nibbles.
void decode_q4_1(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 20, dst += kBlock) {
        const float scale = load_half(src);
        const float minimum = load_half(src + 2);
        const uint8_t* qs = as_u8(src + 4);
        for (uint32_t j = 0; j < 16; ++j) {
            dst[j] = scale * static_cast<float>(qs[j] & 0x0F) + minimum;
            dst[j + 16] = scale * static_cast<float>(qs[j] >> 4) + minimum;
        }
    }
}

// Q5_0: fp16 scale, 32 fifth bits (bit i belongs to element i), 16 bytes of nibbles.
void decode_q5_0(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 22, dst += kBlock) {
        const float scale = load_half(src);
        const uint32_t high_bits = load_u32(src + 2);
        const uint8_t* qs = as_u8(src + 6);
        for (uint32_t j = 0; j < 16; ++j) {
            const int low = (qs[j] & 0x0F) | static_cast<int>(((high_bits >> j) & 1) << 4);
            const int high = (qs[j] >> 4) | static_cast<int>(((high_bits >> (j + 16)) & 1) << 4);
            dst[j] = scale * static_cast<float>(low - 16);
            dst[j + 16] = scale * static_cast<float>(high - 16);
        }
    }
}

// Q5_1: fp16 scale, fp16 minimum, 32 fifth bits, 16 bytes of nibbles.
void decode_q5_1(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 24, dst += kBlock) {
        const float scale = load_half(src);
        const float minimum = load_half(src + 2);
        const uint32_t high_bits = load_u32(src + 4);
        const uint8_t* qs = as_u8(src + 8);
        for (uint32_t j = 0; j < 16; ++j) {
            const uint32_t low = (qs[j] & 0x0Fu) | (((high_bits >> j) & 1u) << 4);
            const uint32_t high = (qs[j] >> 4) | (((high_bits >> (j + 16)) & 1u) << 4);
            dst[j] = scale * static_cast<float>(low) + minimum;
            dst[j + 16] = scale * static_cast<float>(high) + minimum;
        }
    }
}

// The K formats pack eight 6-bit scales and eight 6-bit minimums into 12 bytes: bytes 0..3 hold
// scales 0..3 (low 6 bits), bytes 4..7 minimums 0..3, and bytes 8..11 the low 4 bits of
// scales/minimums 4..7, whose top 2 bits sit in the spare top bits of bytes 0..7.
void unpack_k_scales(const uint8_t* packed, uint8_t scales[8], uint8_t minimums[8]) {
    for (int j = 0; j < 4; ++j) {
        scales[j] = packed[j] & 0x3F;
        minimums[j] = packed[j + 4] & 0x3F;
        scales[j + 4] = static_cast<uint8_t>((packed[j + 8] & 0x0F) | ((packed[j] >> 2) & 0x30));
        minimums[j + 4] = static_cast<uint8_t>((packed[j + 8] >> 4) | ((packed[j + 4] >> 2) & 0x30));
    }
}

// Q4_K: fp16 d, fp16 dmin, 12 bytes of scales, 128 bytes of nibbles. Sub-block j (32 values)
// takes nibble (j % 2) of bytes [32 * (j / 2), +32).
void decode_q4_k(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 144, dst += kSuperBlock) {
        const float d = load_half(src);
        const float dmin = load_half(src + 2);
        uint8_t scales[8], minimums[8];
        unpack_k_scales(as_u8(src + 4), scales, minimums);
        const uint8_t* qs = as_u8(src + 16);
        for (uint32_t j = 0; j < 8; ++j) {
            const float scale = d * static_cast<float>(scales[j]);
            const float offset = dmin * static_cast<float>(minimums[j]);
            const uint8_t* chunk = qs + 32 * (j / 2);
            const uint32_t shift = 4 * (j % 2);
            float* out = dst + 32 * j;
            for (uint32_t l = 0; l < 32; ++l)
                out[l] = scale * static_cast<float>((chunk[l] >> shift) & 0x0F) - offset;
        }
    }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits; sub-block j takes bit j of byte l for value l.
void decode_q5_k(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 176, dst += kSuperBlock) {
        const float d = load_half(src);
        const float dmin = load_half(src + 2);
        uint8_t scales[8], minimums[8];
        unpack_k_scales(as_u8(src + 4), scales, minimums);
        const uint8_t* high_bits = as_u8(src + 16);
        const uint8_t* qs = as_u8(src + 48);
        for (uint32_t j = 0; j < 8; ++j) {
            const float scale = d * static_cast<float>(scales[j]);
            const float offset = dmin * static_cast<float>(minimums[j]);
            const uint8_t* chunk = qs + 32 * (j / 2);
            const uint32_t shift = 4 * (j % 2);
            float* out = dst + 32 * j;
            for (uint32_t l = 0; l < 32; ++l) {
                const uint32_t q = ((chunk[l] >> shift) & 0x0Fu) | (((high_bits[l] >> j) & 1u) << 4);
                out[l] = scale * static_cast<float>(q) - offset;
            }
        }
    }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed 8-bit scales (one per 16
// values), fp16 d. Each half of 128 values uses 64 low bytes and 32 high bytes.
void decode_q6_k(const std::byte* src, float* dst, size_t blocks) {
    for (size_t b = 0; b < blocks; ++b, src += 210, dst += kSuperBlock) {
        const uint8_t* low_all = as_u8(src);
        const uint8_t* high_all = as_u8(src + 128);
        const auto* scales = reinterpret_cast<const int8_t*>(src + 192);
        const float d = load_half(src + 208);
        for (uint32_t half = 0; half < 2; ++half) {
            const uint8_t* low = low_all + 64 * half;
            const uint8_t* high = high_all + 32 * half;
            for (uint32_t quarter = 0; quarter < 4; ++quarter) {
                const uint8_t* low_bytes = low + 32 * (quarter % 2);
                const uint32_t low_shift = 4 * (quarter / 2);
                const uint32_t high_shift = 2 * quarter;
                float* out = dst + 128 * half + 32 * quarter;
                for (uint32_t part = 0; part < 2; ++part) {
                    const float scale = d * static_cast<float>(scales[8 * half + 2 * quarter + part]);
                    for (uint32_t l = 16 * part; l < 16 * part + 16; ++l) {
                        const int q = static_cast<int>(((low_bytes[l] >> low_shift) & 0x0Fu) |
                                                       (((high[l] >> high_shift) & 3u) << 4));
                        out[l] = scale * static_cast<float>(q - 32);
                    }
                }
            }
        }
    }
}

using Decoder = void (*)(const std::byte*, float*, size_t);

Decoder decoder_for(DType type) {
    switch (type) {
        case DType::F32: return decode_f32;
        case DType::F16: return decode_f16;
        case DType::BF16: return decode_bf16;
        case DType::Q8_0: return decode_q8_0;
        case DType::Q4_0: return decode_q4_0;
        case DType::Q4_1: return decode_q4_1;
        case DType::Q5_0: return decode_q5_0;
        case DType::Q5_1: return decode_q5_1;
        case DType::Q4_K: return decode_q4_k;
        case DType::Q5_K: return decode_q5_k;
        case DType::Q6_K: return decode_q6_k;
        default: return nullptr;
    }
}

// Large tensors are split across threads by whole blocks; small ones are not worth a thread.
void decode_parallel(Decoder decode, const TypeLayout& block, const std::byte* src, float* dst,
                     size_t blocks) {
    constexpr size_t kMinElementsPerThread = size_t{1} << 18;
    const size_t elements = blocks * block.block_elements;
    const size_t hardware = std::max(1u, std::thread::hardware_concurrency());
    const size_t threads = std::min({hardware, size_t{8}, elements / kMinElementsPerThread});
    if (threads <= 1) {
        decode(src, dst, blocks);
        return;
    }
    const size_t per_thread = (blocks + threads - 1) / threads;
    std::vector<std::jthread> workers;
    workers.reserve(threads - 1);
    size_t first = per_thread;  // this thread decodes the first share itself
    try {
        for (; first < blocks; first += per_thread) {
            const size_t count = std::min(per_thread, blocks - first);
            workers.emplace_back(decode, src + first * block.block_bytes, dst + first * block.block_elements,
                                 count);
        }
    } catch (const std::system_error&) {
        // Could not start a thread: decode what was not handed out on this thread.
        decode(src + first * block.block_bytes, dst + first * block.block_elements, blocks - first);
    }
    decode(src, dst, std::min(per_thread, blocks));
}

}  // namespace

std::string_view dtype_name(DType type) { return layout(type).name; }

uint32_t dtype_block_elements(DType type) { return layout(type).block_elements; }

size_t dtype_bytes(DType type, uint64_t elements) {
    const TypeLayout block = layout(type);
    if (block.block_elements == 0 || elements % block.block_elements != 0) return 0;
    const uint64_t blocks = elements / block.block_elements;
    if (blocks > std::numeric_limits<size_t>::max() / block.block_bytes) return 0;
    return static_cast<size_t>(blocks) * block.block_bytes;
}

namespace {

// Checks everything about `info` except the output buffer and returns its element count.
uint64_t checked_elements(const TensorInfo& info) {
    if (decoder_for(info.type) == nullptr)
        fail("tensor '", info.name, "' has type ", dtype_name(info.type),
             ", which cannot be converted to float weights");
    uint64_t elements = 1;
    for (int64_t dim : info.shape) {
        if (dim < 0) fail("tensor '", info.name, "' has a negative dimension (", dim, ")");
        if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim))
            fail("tensor '", info.name, "' has too many elements");
        elements *= static_cast<uint64_t>(dim);
    }
    const uint32_t block_elements = dtype_block_elements(info.type);
    if (elements % block_elements != 0)
        fail("tensor '", info.name, "' has ", elements, " elements, not a multiple of the ",
             dtype_name(info.type), " block size ", block_elements);
    const size_t expected_bytes = dtype_bytes(info.type, elements);
    if (info.bytes != expected_bytes)
        fail("tensor '", info.name, "' has ", info.bytes, " bytes of data but ", dtype_name(info.type),
             " with ", elements, " elements needs ", expected_bytes);
    if (elements != 0 && info.data == nullptr) fail("tensor '", info.name, "' has no data");
    return elements;
}

}  // namespace

void dequantize(const TensorInfo& info, std::span<float> out) {
    const uint64_t elements = checked_elements(info);
    if (out.size() != elements)
        fail("tensor '", info.name, "': output holds ", out.size(), " values but the tensor has ", elements);
    if (elements == 0) return;
    const TypeLayout block = layout(info.type);
    decode_parallel(decoder_for(info.type), block, info.data, out.data(), elements / block.block_elements);
}

std::vector<float> dequantize(const TensorInfo& info) {
    // Validated before allocating: the byte count bounds the element count, so a bogus shape
    // cannot request a huge buffer.
    std::vector<float> out(static_cast<size_t>(checked_elements(info)));
    dequantize(info, out);
    return out;
}

// ---- fp16 / bf16 ----

float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1Fu;
    const uint32_t mantissa = h & 0x3FFu;
    uint32_t bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | (mantissa << 13);  // inf, or NaN keeping its payload
    } else if (exponent != 0) {
        bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
    } else {
        // Zero or subnormal: mantissa × 2^-24 is exact in float.
        bits = sign | std::bit_cast<uint32_t>(static_cast<float>(mantissa) * 0x1p-24f);
    }
    return std::bit_cast<float>(bits);
}

uint16_t float_to_half(float f) {
    const uint32_t bits = std::bit_cast<uint32_t>(f);
    const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7FFFFFFFu;

    if (magnitude > 0x7F800000u)  // NaN: keep the top payload bits and make it quiet
        return static_cast<uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
    if (magnitude >= 0x477FF000u)  // ≥ 65520 rounds to infinity (also catches infinity)
        return static_cast<uint16_t>(sign | 0x7C00u);

    const uint32_t exponent = magnitude >> 23;  // biased float exponent
    if (exponent >= 113) {
        // Normal half: rebias and drop 13 mantissa bits, rounding to nearest even. A carry out of
        // the mantissa correctly bumps the exponent.
        uint32_t result = ((exponent - 112) << 10) | ((magnitude >> 13) & 0x3FFu);
        const uint32_t dropped = magnitude & 0x1FFFu;
        if (dropped > 0x1000u || (dropped == 0x1000u && (result & 1u))) ++result;
        return static_cast<uint16_t>(sign | result);
    }
    if (exponent < 102) return sign;  // below 2^-25: rounds to zero

    // Subnormal half: value = significand × 2^(exponent − 150), in units of 2^-24.
    const uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t result = significand >> shift;
    const uint32_t dropped = significand & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (dropped > halfway || (dropped == halfway && (result & 1u))) ++result;
    return static_cast<uint16_t>(sign | result);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t float_to_bf16(float f) {
    const uint32_t bits = std::bit_cast<uint32_t>(f);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u)  // NaN: truncate and force quiet so it stays NaN
        return static_cast<uint16_t>((bits >> 16) | 0x0040u);
    const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>((bits + rounding) >> 16);
}

}  // namespace attn
