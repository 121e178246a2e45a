// Dequantisation against gguf-py's numpy reference (fixtures from tests/fixtures/make_format_fixtures.py),
// and the fp16 / bf16 scalar conversions.
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <set>

#include <catch2/catch.hpp>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/tensor.h"

namespace {

std::string format_fixture(const std::string& name) { return std::string(ATTNSCOPE_FIXTURES_DIR) + "/formats/" + name; }

std::vector<float> read_f32_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(raw.size() % 4 == 0);
    std::vector<float> values(raw.size() / 4);
    std::memcpy(values.data(), raw.data(), raw.size());
    return values;
}

// Bit-for-bit equality; any two NaNs count as equal (their payloads are not part of the contract).
bool same_float(float a, float b) {
    if (std::isnan(a) && std::isnan(b)) return true;
    return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

// Exact reference for fp16 → float, written differently from the engine's bit manipulation.
double half_reference(uint16_t h) {
    const int sign = (h & 0x8000) ? -1 : 1;
    const int exponent = (h >> 10) & 0x1F;
    const int mantissa = h & 0x3FF;
    if (exponent == 0x1F) return mantissa ? std::nan("") : sign * INFINITY;
    if (exponent == 0) return sign * std::ldexp(mantissa, -24);
    return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

}  // namespace

TEST_CASE("dtype block sizes and byte counts follow ggml", "[quant]") {
    using attn::DType;
    struct Row {
        DType type;
        const char* name;
        uint32_t block;
        size_t block_bytes;
    };
    const Row rows[] = {
        {DType::F32, "F32", 1, 4},      {DType::F16, "F16", 1, 2},      {DType::BF16, "BF16", 1, 2},
        {DType::Q8_0, "Q8_0", 32, 34},  {DType::Q4_0, "Q4_0", 32, 18},  {DType::Q4_1, "Q4_1", 32, 20},
        {DType::Q5_0, "Q5_0", 32, 22},  {DType::Q5_1, "Q5_1", 32, 24},  {DType::Q4_K, "Q4_K", 256, 144},
        {DType::Q5_K, "Q5_K", 256, 176}, {DType::Q6_K, "Q6_K", 256, 210}, {DType::I8, "I8", 1, 1},
        {DType::I16, "I16", 1, 2},      {DType::I32, "I32", 1, 4},      {DType::I64, "I64", 1, 8},
        {DType::F64, "F64", 1, 8},
    };
    for (const Row& row : rows) {
        INFO(row.name);
        CHECK(attn::dtype_name(row.type) == row.name);
        CHECK(attn::dtype_block_elements(row.type) == row.block);
        CHECK(attn::dtype_bytes(row.type, row.block * 3) == row.block_bytes * 3);
        CHECK(attn::dtype_bytes(row.type, 0) == 0);
        if (row.block > 1) CHECK(attn::dtype_bytes(row.type, row.block + 1) == 0);  // not whole blocks
    }
    CHECK(attn::dtype_bytes(DType::F32, uint64_t{1} << 62) == 0);  // would overflow size_t
}

TEST_CASE("every supported ggml type dequantises exactly like gguf-py", "[quant]") {
    const auto file = attn::GgufFile::open(format_fixture("quant_types.gguf"));
    std::set<attn::DType> types_seen;
    for (const attn::TensorInfo& info : file->tensors()) {
        INFO("tensor " << info.name << " (" << attn::dtype_name(info.type) << ")");
        const std::vector<float> expected = read_f32_file(format_fixture("quant_ref/" + info.name + ".f32"));
        const std::vector<float> actual = attn::dequantize(info);
        REQUIRE(actual.size() == expected.size());
        size_t mismatches = 0, first_mismatch = 0;
        for (size_t i = 0; i < actual.size(); ++i)
            if (!same_float(actual[i], expected[i]) && mismatches++ == 0) first_mismatch = i;
        INFO("first mismatch at " << first_mismatch << ": " << actual[first_mismatch] << " vs "
                                  << expected[first_mismatch]);
        CHECK(mismatches == 0);
        types_seen.insert(info.type);
    }
    using attn::DType;
    const std::set<DType> all = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                                 DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};
    CHECK(types_seen == all);
}

TEST_CASE("dequantize checks its arguments and names the tensor", "[quant]") {
    std::vector<std::byte> storage(64 * 20);
    attn::TensorInfo info;
    info.name = "blk.7.ffn_up.weight";
    info.type = attn::DType::Q4_1;
    info.shape = {2, 32};
    info.data = storage.data();
    info.bytes = 2 * 20;
    std::vector<float> out(64);
    CHECK_NOTHROW(attn::dequantize(info, out));

    std::vector<float> wrong_size(63);
    REQUIRE_THROWS_WITH(attn::dequantize(info, wrong_size),
                        Catch::Contains("blk.7.ffn_up.weight") && Catch::Contains("output"));

    info.bytes = 41;
    REQUIRE_THROWS_WITH(attn::dequantize(info), Catch::Contains("blk.7.ffn_up.weight") && Catch::Contains("bytes"));

    info.shape = {2, 33};  // rows are not whole blocks
    info.bytes = 40;
    REQUIRE_THROWS_WITH(attn::dequantize(info), Catch::Contains("block size"));

    info.type = attn::DType::I32;
    info.shape = {4};
    info.bytes = 16;
    REQUIRE_THROWS_WITH(attn::dequantize(info), Catch::Contains("blk.7.ffn_up.weight") && Catch::Contains("I32"));

    info.type = attn::DType::F32;
    info.shape = {-4};
    REQUIRE_THROWS_WITH(attn::dequantize(info), Catch::Contains("negative"));

    // A shape whose element count is absurd must fail before allocating anything.
    info.shape = {int64_t{1} << 40, int64_t{1} << 40};
    REQUIRE_THROWS_AS(attn::dequantize(info), attn::Error);
}

TEST_CASE("multithreaded dequantisation matches block-by-block decoding", "[quant]") {
    // Large enough to be split across threads; each slice decoded alone must give the same values.
    constexpr size_t kBlocks = 1 << 16;  // 2M values of Q4_1
    std::vector<std::byte> storage(kBlocks * 20);
    std::mt19937 random(1234);
    for (auto& b : storage) b = static_cast<std::byte>(random());
    for (size_t block = 0; block < kBlocks; ++block) {  // finite scales and minimums
        const uint16_t scale = attn::float_to_half(static_cast<float>(static_cast<int>(random() % 2001) - 1000) * 1e-4f);
        const uint16_t minimum = attn::float_to_half(static_cast<float>(static_cast<int>(random() % 2001) - 1000) * 1e-3f);
        std::memcpy(&storage[block * 20], &scale, 2);
        std::memcpy(&storage[block * 20 + 2], &minimum, 2);
    }
    attn::TensorInfo whole{"big", attn::DType::Q4_1, {int64_t{kBlocks}, 32}, storage.data(), storage.size()};
    const std::vector<float> all = attn::dequantize(whole);

    for (size_t first_block : {size_t{0}, kBlocks / 3, kBlocks / 2 + 1, kBlocks - 8}) {
        attn::TensorInfo slice{"slice", attn::DType::Q4_1, {8, 32}, storage.data() + first_block * 20, 8 * 20};
        const std::vector<float> part = attn::dequantize(slice);
        for (size_t i = 0; i < part.size(); ++i) REQUIRE(same_float(part[i], all[first_block * 32 + i]));
    }
}

TEST_CASE("fp16 conversion is exact for every half value", "[quant]") {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float value = attn::half_to_float(static_cast<uint16_t>(h));
        const double expected = half_reference(static_cast<uint16_t>(h));
        if (std::isnan(expected)) {
            REQUIRE(std::isnan(value));
            // NaN stays NaN with its sign on the way back (and quiet).
            const uint16_t back = attn::float_to_half(value);
            REQUIRE((back & 0x7C00) == 0x7C00);
            REQUIRE((back & 0x03FF) != 0);
            REQUIRE((back & 0x8000) == (h & 0x8000));
            continue;
        }
        REQUIRE(static_cast<double>(value) == expected);
        REQUIRE(std::signbit(value) == ((h & 0x8000) != 0));
        REQUIRE(attn::float_to_half(value) == h);  // round trip is the identity
    }
}

TEST_CASE("float to fp16 rounds to nearest, ties to even", "[quant]") {
    // The midpoint between two adjacent halves is exact in float; it must go to the even one, and
    // the floats on either side of it to the nearer one.
    for (uint32_t h = 0; h < 0x7BFF; ++h) {
        for (uint32_t sign : {0u, 0x8000u}) {
            const auto low = static_cast<uint16_t>(h | sign), high = static_cast<uint16_t>((h + 1) | sign);
            const float a = attn::half_to_float(low), b = attn::half_to_float(high);
            const float midpoint = (a + b) / 2;
            REQUIRE(attn::float_to_half(midpoint) == ((h & 1) ? high : low));
            REQUIRE(attn::float_to_half(std::nextafter(midpoint, a)) == low);
            REQUIRE(attn::float_to_half(std::nextafter(midpoint, b)) == high);
        }
    }
    CHECK(attn::float_to_half(65504.0f) == 0x7BFF);
    CHECK(attn::float_to_half(65519.99f) == 0x7BFF);
    CHECK(attn::float_to_half(65520.0f) == 0x7C00);  // halfway to the next binade rounds to infinity
    CHECK(attn::float_to_half(1e10f) == 0x7C00);
    CHECK(attn::float_to_half(-INFINITY) == 0xFC00);
    CHECK(attn::float_to_half(0x1p-25f) == 0x0000);  // halfway to the smallest subnormal: even is zero
    CHECK(attn::float_to_half(std::nextafter(0x1p-25f, 1.0f)) == 0x0001);
    CHECK(attn::float_to_half(-0x1p-30f) == 0x8000);
    CHECK(attn::float_to_half(1e-45f) == 0x0000);
}

TEST_CASE("bf16 conversion is exact and rounds to nearest even", "[quant]") {
    for (uint32_t b = 0; b < 65536; ++b) {
        const float value = attn::bf16_to_float(static_cast<uint16_t>(b));
        REQUIRE(std::bit_cast<uint32_t>(value) == b << 16);
        if (std::isnan(value)) {
            REQUIRE(std::isnan(attn::bf16_to_float(attn::float_to_bf16(value))));
            continue;
        }
        REQUIRE(attn::float_to_bf16(value) == b);
        if ((b & 0x7FFF) < 0x7F7F) {  // finite, with a finite next value
            const float next = attn::bf16_to_float(static_cast<uint16_t>(b + 1));
            const float midpoint = std::bit_cast<float>((b << 16) | 0x8000u);
            REQUIRE(attn::float_to_bf16(midpoint) == ((b & 1) ? b + 1 : b));
            REQUIRE(attn::float_to_bf16(std::nextafter(midpoint, value)) == b);
            REQUIRE(attn::float_to_bf16(std::nextafter(midpoint, next)) == b + 1);
        }
    }
    // A NaN whose payload sits only in the dropped bits must not become infinity.
    CHECK(std::isnan(attn::bf16_to_float(attn::float_to_bf16(std::bit_cast<float>(0x7F800001u)))));
}
