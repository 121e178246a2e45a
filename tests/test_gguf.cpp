// GGUF reader: the fixtures written by gguf-py, malformed inputs, and the default model when present.
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "engine/error.h"
#include "engine/gguf.h"
#include "tests/test_support.h"

using Catch::Contains;

namespace {

std::string format_fixture(const std::string& name) { return attn::testing::fixture_path("formats/" + name); }

std::vector<std::byte> read_bytes(const std::string& path) {
    REQUIRE(std::filesystem::exists(path));
    return attn::testing::read_file_bytes(path);
}

using attn::testing::read_f32_file;

std::unique_ptr<attn::GgufFile> parse(const std::vector<std::byte>& bytes, const std::string& name = "crafted.gguf") {
    return attn::GgufFile::parse(bytes, name);
}

// Writes GGUF byte streams by hand, so tests can build files gguf-py would refuse to write.
class GgufBuilder {
public:
    explicit GgufBuilder(uint32_t version = 3) {
        raw("GGUF", 4);
        u32(version);
    }
    GgufBuilder& u8(uint8_t v) { return pod(v); }
    GgufBuilder& u32(uint32_t v) { return pod(v); }
    GgufBuilder& u64(uint64_t v) { return pod(v); }
    GgufBuilder& f32(float v) { return pod(v); }
    GgufBuilder& str(const std::string& s) {
        u64(s.size());
        return raw(s.data(), s.size());
    }
    GgufBuilder& counts(uint64_t tensors, uint64_t metadata) { return u64(tensors).u64(metadata); }
    // A metadata entry header: key and value type id.
    GgufBuilder& key(const std::string& k, uint32_t type) { return str(k).u32(type); }
    // A tensor description with GGUF's fastest-first dimensions.
    GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
        str(name).u32(static_cast<uint32_t>(ne.size()));
        for (uint64_t d : ne) u64(d);
        return u32(type).u64(offset);
    }
    GgufBuilder& pad_to(size_t alignment) {
        while (bytes_.size() % alignment) bytes_.push_back(std::byte{0});
        return *this;
    }
    GgufBuilder& zeros(size_t count) {
        bytes_.resize(bytes_.size() + count);
        return *this;
    }
    const std::vector<std::byte>& bytes() const { return bytes_; }

private:
    template <typename T>
    GgufBuilder& pod(T v) { return raw(&v, sizeof v); }
    GgufBuilder& raw(const void* p, size_t n) {
        // resize + memcpy rather than insert: GCC 12 sees a false -Wstringop-overflow in the latter.
        const size_t at = bytes_.size();
        bytes_.resize(at + n);
        if (n) std::memcpy(bytes_.data() + at, p, n);
        return *this;
    }
    std::vector<std::byte> bytes_;
};

constexpr uint32_t kU32 = 4, kF32 = 6, kString = 8, kArray = 9, kU64 = 10;
constexpr uint32_t kTypeF32 = 0, kTypeQ4_1 = 3;

// A valid file with one 8-value F32 tensor; the starting point of most malformed variants.
std::vector<std::byte> one_tensor_file(uint64_t offset = 0, uint64_t ne0 = 8, uint32_t type = kTypeF32) {
    GgufBuilder b;
    b.counts(1, 1).key("general.architecture", kString).str("llama");
    b.tensor("w", {ne0}, type, offset).pad_to(32).zeros(32);
    return b.bytes();
}

}  // namespace

TEST_CASE("gguf: reads every metadata kind and the tensor table", "[gguf]") {
    for (const char* name : {"small.gguf", "small_v2.gguf", "aligned64.gguf"}) {
        INFO(name);
        const auto file = attn::GgufFile::open(format_fixture(name));
        CHECK(file->version() == (std::string(name) == "small_v2.gguf" ? 2u : 3u));
        CHECK(file->name() == format_fixture(name));

        CHECK(file->get_string("general.architecture") == "llama");
        CHECK(file->get_int("test.u8") == 200);
        CHECK(file->get_int("test.i8") == -100);
        CHECK(file->get_int("test.u16") == 60000);
        CHECK(file->get_int("test.i16") == -30000);
        CHECK(file->get_int("test.u32") == 4000000000);
        CHECK(file->get_int("test.i32") == -2000000000);
        CHECK(std::get<uint64_t>(file->find("test.u64")->value) == (uint64_t{1} << 63) + 5);
        CHECK(file->get_int("test.i64") == -(int64_t{1} << 62));
        CHECK(file->get_float("test.f32") == 0.25);
        CHECK(file->get_float("test.f64") == -1.0e300);
        CHECK(file->get_float("test.u8") == 200.0);  // integers are accepted where a float is asked for
        CHECK(file->get_bool("test.true"));
        CHECK_FALSE(file->get_bool("test.false"));
        CHECK(file->get_string("test.string") == "h\xC3\xA9llo, \xE4\xB8\x96\xE7\x95\x8C");
        CHECK(file->get_string("test.empty_string").empty());
        CHECK(file->get_string_array("test.strings") == std::vector<std::string>{"a", "", "ccc"});
        CHECK(file->get_int_array("test.i32s") == std::vector<int64_t>{1, -2, 3});
        CHECK(file->get_int_array("test.u8s") == std::vector<int64_t>{0, 255});
        CHECK(file->get_float_array("test.f32s") == std::vector<double>{0.5, -1.5});
        CHECK(file->get_float_array("test.f64s") == std::vector<double>{2.5});
        CHECK(file->get_float_array("test.i32s") == std::vector<double>{1, -2, 3});
        CHECK(std::get<std::vector<bool>>(file->find("test.bools")->value) == std::vector<bool>{true, false, true});
        REQUIRE(file->has("test.nested"));  // arrays of arrays are validated, not kept
        CHECK(std::holds_alternative<std::monostate>(file->find("test.nested")->value));

        CHECK(file->int_or("test.u32") == 4000000000);
        CHECK_FALSE(file->int_or("no.such.key").has_value());
        CHECK_FALSE(file->float_or("no.such.key").has_value());
        CHECK(file->string_or("general.architecture") == "llama");
        CHECK_FALSE(file->string_or("no.such.key").has_value());

        REQUIRE(file->tensors().size() == 3);
        const attn::TensorInfo& norm = file->tensor("norm.weight");
        CHECK(norm.type == attn::DType::F32);
        CHECK(norm.shape == std::vector<int64_t>{8});
        CHECK(attn::dequantize(norm) == std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f});
        const attn::TensorInfo& half = file->tensor("half.weight");
        CHECK(half.type == attn::DType::F16);
        CHECK(half.shape == std::vector<int64_t>{2, 3});  // outermost first
        CHECK(half.bytes == 12);
        const attn::TensorInfo& proj = file->tensor("proj.weight");
        CHECK(proj.type == attn::DType::Q4_1);
        CHECK(proj.shape == std::vector<int64_t>{2, 32});
        CHECK(proj.bytes == 40);
        CHECK(file->find_tensor("missing") == nullptr);

        const size_t alignment = std::string(name) == "aligned64.gguf" ? 64 : 32;
        for (const attn::TensorInfo& info : file->tensors())
            CHECK(reinterpret_cast<uintptr_t>(info.data) % alignment == 0);  // mmap is page-aligned
    }
}

TEST_CASE("gguf: shapes are GGUF's ne[] reversed", "[gguf]") {
    const auto file = attn::GgufFile::open(format_fixture("quant_types.gguf"));
    CHECK(file->tensor("Q4_K.3d").shape == std::vector<int64_t>{2, 3, 256});
    CHECK(file->tensor("Q8_0.random").shape == std::vector<int64_t>{4, 256});
}

TEST_CASE("gguf: typed getters name the file and key", "[gguf]") {
    const auto file = attn::GgufFile::open(format_fixture("small.gguf"));
    const std::string path = format_fixture("small.gguf");
    REQUIRE_THROWS_WITH(file->get_string("no.such.key"), Contains(path) && Contains("no.such.key") && Contains("missing"));
    REQUIRE_THROWS_WITH(file->get_int("test.string"), Contains("test.string") && Contains("a string") && Contains("integer"));
    REQUIRE_THROWS_WITH(file->get_int("test.u64"), Contains("test.u64") && Contains("too large"));
    REQUIRE_THROWS_WITH(file->get_float("test.strings"), Contains("array of strings"));
    REQUIRE_THROWS_WITH(file->get_bool("test.u8"), Contains("test.u8"));
    REQUIRE_THROWS_WITH(file->get_string_array("test.i32s"), Contains("test.i32s") && Contains("array of integers"));
    REQUIRE_THROWS_WITH(file->get_int_array("test.f32s"), Contains("test.f32s"));
    REQUIRE_THROWS_WITH(file->string_or("test.u8"), Contains("test.u8"));
    REQUIRE_THROWS_WITH(file->tensor("blk.99.attn_q.weight"), Contains(path) && Contains("blk.99.attn_q.weight"));
}

TEST_CASE("gguf: unreadable paths are reported with the path", "[gguf]") {
    REQUIRE_THROWS_WITH(attn::GgufFile::open("/nonexistent/dir/model.gguf"),
                        Contains("/nonexistent/dir/model.gguf") && Contains("No such file"));
    REQUIRE_THROWS_WITH(attn::GgufFile::open(ATTNSCOPE_FIXTURES_DIR), Contains("directory"));

    const std::string empty =
        (std::filesystem::temp_directory_path() / ("attnscope_empty_" + std::to_string(::getpid()) + ".gguf")).string();
    { std::ofstream touch(empty); }
    {
        const attn::MappedFile mapped(empty);  // an empty file maps fine
        CHECK(mapped.bytes().empty());
    }
    REQUIRE_THROWS_WITH(attn::GgufFile::open(empty), Contains(empty) && Contains("not a GGUF file"));
    std::filesystem::remove(empty);
}

TEST_CASE("gguf: every truncation of a valid file is an error, never a crash", "[gguf]") {
    for (const char* fixture : {"small.gguf", "aligned64.gguf"}) {
        const std::vector<std::byte> whole = read_bytes(format_fixture(fixture));
        const auto complete = parse(whole);
        // The file is valid as soon as the last tensor's data is complete (trailing padding is optional).
        size_t needed = 0;
        for (const attn::TensorInfo& info : complete->tensors())
            needed = std::max(needed, static_cast<size_t>(info.data - whole.data()) + info.bytes);
        for (size_t length = 0; length < whole.size(); ++length) {
            const std::vector<std::byte> prefix(whole.begin(), whole.begin() + static_cast<ptrdiff_t>(length));
            INFO(fixture << " truncated to " << length << " of " << whole.size() << " bytes");
            if (length < needed) {
                REQUIRE_THROWS_WITH(parse(prefix, "cut.gguf"), Contains("cut.gguf"));
            } else {
                REQUIRE_NOTHROW(parse(prefix, "cut.gguf"));
            }
        }
    }
}

TEST_CASE("gguf: bad magic and unsupported versions", "[gguf]") {
    std::vector<std::byte> bytes = read_bytes(format_fixture("small.gguf"));
    std::vector<std::byte> bad = bytes;
    bad[0] = std::byte{'X'};
    REQUIRE_THROWS_WITH(parse(bad, "bad.gguf"), Contains("bad.gguf") && Contains("magic"));

    for (uint32_t version : {1u, 4u, 0u, 0x03000000u}) {
        std::vector<std::byte> changed = bytes;
        std::memcpy(&changed[4], &version, 4);
        INFO("version " << version);
        REQUIRE_THROWS_WITH(parse(changed, "old.gguf"), Contains("old.gguf") && Contains("version"));
    }
    std::vector<std::byte> v1 = bytes;
    v1[4] = std::byte{1};
    REQUIRE_THROWS_WITH(parse(v1), Contains("version 1 is not supported"));
    std::vector<std::byte> big_endian = bytes;
    std::memcpy(&big_endian[4], "\0\0\0\3", 4);
    REQUIRE_THROWS_WITH(parse(big_endian), Contains("big-endian"));
}

TEST_CASE("gguf: absurd counts and lengths fail before allocating", "[gguf]") {
    const uint64_t huge = uint64_t{1} << 60;
    {
        GgufBuilder b;
        b.counts(huge, 0);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("crafted.gguf") && Contains("tensors"));
    }
    {
        GgufBuilder b;
        b.counts(0, huge);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("metadata entries"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).key("tokenizer.ggml.tokens", kArray).u32(kString).u64(huge).zeros(64);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("tokenizer.ggml.tokens") && Contains("array of"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).key("general.name", kString).u64(uint64_t{1} << 63).zeros(64);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("general.name") && Contains("claims"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).u64(huge).zeros(64);  // key length
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("key") && Contains("metadata entry 0"));
    }
    {
        GgufBuilder b;
        b.counts(1, 0).u64(huge).zeros(64);  // tensor name length
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("name of tensor 0"));
    }
    {
        // Arrays nested deeper than any model needs are refused rather than recursed into.
        GgufBuilder b;
        b.counts(0, 1).key("deep", kArray);
        for (int i = 0; i < 200; ++i) b.u32(kArray).u64(1);
        b.u32(kU32).u64(0);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("deep") && Contains("nests"));
    }
}

TEST_CASE("gguf: malformed metadata", "[gguf]") {
    {
        GgufBuilder b;
        b.counts(0, 1).key("weird", 13).u32(0);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("weird") && Contains("unknown value type id 13"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).key("weird", kArray).u32(99).u64(1).u32(0);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("weird") && Contains("unknown value type id 99"));
    }
    {
        GgufBuilder b;
        b.counts(0, 2).key("twice", kU32).u32(1).key("twice", kU32).u32(2);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("duplicate") && Contains("twice"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).key("big", kArray).u32(kU64).u64(1).u64(~uint64_t{0});
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("big") && Contains("signed 64-bit"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).key("general.alignment", kU32).u32(48);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("alignment") && Contains("power of two"));
    }
    {
        GgufBuilder b;
        b.counts(0, 1).key("general.alignment", kF32).f32(32);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("general.alignment") && Contains("integer"));
    }
}

TEST_CASE("gguf: malformed tensor descriptions", "[gguf]") {
    CHECK_NOTHROW(parse(one_tensor_file()));
    CHECK(parse(one_tensor_file())->tensor("w").bytes == 32);

    REQUIRE_THROWS_WITH(parse(one_tensor_file(32)), Contains("crafted.gguf") && Contains("'w'") && Contains("outside the file"));
    REQUIRE_THROWS_WITH(parse(one_tensor_file(uint64_t{1} << 63)), Contains("outside the file"));
    REQUIRE_THROWS_WITH(parse(one_tensor_file(4)), Contains("'w'") && Contains("not a multiple of the alignment"));
    REQUIRE_THROWS_WITH(parse(one_tensor_file(0, 9)), Contains("outside the file"));  // 36 bytes > 32
    REQUIRE_THROWS_WITH(parse(one_tensor_file(0, 8, 99)), Contains("'w'") && Contains("type id 99"));
    REQUIRE_THROWS_WITH(parse(one_tensor_file(0, 8, 10)), Contains("type id 10") && Contains("Q2_K"));
    REQUIRE_THROWS_WITH(parse(one_tensor_file(0, 33, kTypeQ4_1)), Contains("'w'") && Contains("block size 32"));
    REQUIRE_THROWS_WITH(parse(one_tensor_file(0, 0)), Contains("'w'") && Contains("size 0"));

    auto with_dims = [](std::vector<uint64_t> ne) {
        GgufBuilder b;
        b.counts(1, 0).tensor("t", std::move(ne), kTypeF32, 0).pad_to(32).zeros(64);
        return b.bytes();
    };
    REQUIRE_THROWS_WITH(parse(with_dims({})), Contains("'t'") && Contains("0 dimensions"));
    REQUIRE_THROWS_WITH(parse(with_dims({1, 1, 1, 1, 1})), Contains("'t'") && Contains("5 dimensions"));
    REQUIRE_THROWS_WITH(parse(with_dims({uint64_t{1} << 32, uint64_t{1} << 32})), Contains("'t'") && Contains("overflow"));
    REQUIRE_THROWS_WITH(parse(with_dims({uint64_t{1} << 63})), Contains("'t'") && Contains("overflow"));
    REQUIRE_THROWS_WITH(parse(with_dims({uint64_t{1} << 62})), Contains("'t'") && Contains("byte size that overflows"));
    REQUIRE_THROWS_WITH(parse(with_dims({uint64_t{1} << 61})), Contains("'t'") && Contains("outside the file"));
    CHECK(parse(with_dims({4, 2, 1}))->tensor("t").shape == std::vector<int64_t>{1, 2, 4});

    {
        GgufBuilder b;
        b.counts(2, 0).tensor("a", {8}, kTypeF32, 0).tensor("b", {8}, kTypeF32, 0).pad_to(32).zeros(64);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("'a'") && Contains("'b'") && Contains("overlap"));
    }
    {
        GgufBuilder b;
        b.counts(2, 0).tensor("a", {8}, kTypeF32, 0).tensor("a", {8}, kTypeF32, 32).pad_to(32).zeros(64);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("duplicate") && Contains("'a'"));
    }
    {
        // Data start computed past the end of the file.
        GgufBuilder b;
        b.counts(1, 0).tensor("t", {8}, kTypeF32, 0);
        REQUIRE_THROWS_WITH(parse(b.bytes()), Contains("past the end"));
    }
}

namespace {

std::string models_dir() {
    if (const char* env = std::getenv("ATTNSCOPE_MODELS"); env && *env) return env;
    const char* home = std::getenv("HOME");
    return std::string(home ? home : "") + "/.cache/attnscope/models";
}

// The fixture's checksum: sum of float32 bit patterns, and sum weighted by 1-based index, mod 2^64.
std::pair<uint64_t, uint64_t> checksum(const std::vector<float>& values) {
    uint64_t plain = 0, weighted = 0;
    for (size_t i = 0; i < values.size(); ++i) {
        const uint64_t bits = std::bit_cast<uint32_t>(values[i]);
        plain += bits;
        weighted += bits * (i + 1);
    }
    return {plain, weighted};
}

}  // namespace

TEST_CASE("gguf: the default SmolLM2 model matches gguf-py", "[gguf][model]") {
    const std::string path = models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::filesystem::exists(path)) {
        WARN("default model not found at " << path << " (set ATTNSCOPE_MODELS); skipping the real-model check");
        return;
    }
    const auto file = attn::GgufFile::open(path);
    CHECK(file->version() == 3);
    CHECK(file->tensors().size() == 272);
    CHECK(file->get_string("general.architecture") == "llama");
    CHECK(file->get_int("llama.block_count") == 30);
    CHECK(file->get_string_array("tokenizer.ggml.tokens").size() == 49152);
    const attn::TensorInfo& embedding = file->tensor("token_embd.weight");
    CHECK(embedding.shape == std::vector<int64_t>{49152, 576});
    CHECK(embedding.type == attn::DType::Q8_0);

    // Every tensor, checked against gguf-py's dequantisation by checksum.
    std::ifstream reference(format_fixture("smollm2_reference.txt"));
    REQUIRE(reference.good());
    std::string line;
    size_t checked = 0;
    while (std::getline(reference, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream fields(line);
        std::string name, type;
        uint64_t elements = 0, plain = 0, weighted = 0;
        fields >> name >> type >> elements >> plain >> weighted;
        INFO("tensor " << name);
        const attn::TensorInfo& info = file->tensor(name);
        CHECK(attn::dtype_name(info.type) == type);
        const std::vector<float> values = attn::dequantize(info);
        REQUIRE(values.size() == elements);
        CHECK(checksum(values) == std::make_pair(plain, weighted));

        const std::string first_values = format_fixture("smollm2_ref/" + name + ".f32");
        if (std::filesystem::exists(first_values)) {
            const std::vector<float> expected = read_f32_file(first_values);
            REQUIRE(expected.size() <= values.size());
            for (size_t i = 0; i < expected.size(); ++i) REQUIRE(std::bit_cast<uint32_t>(values[i]) == std::bit_cast<uint32_t>(expected[i]));
        }
        ++checked;
    }
    CHECK(checked == 272);
}
