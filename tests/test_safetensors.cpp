// safetensors reader: files written by the safetensors package, sharded directories, malformed input.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "tests/test_support.h"

using Catch::Contains;
namespace fs = std::filesystem;

namespace {

std::string format_fixture(const std::string& name) { return attn::testing::fixture_path("formats/" + name); }

std::vector<std::byte> read_bytes(const std::string& path) {
    REQUIRE(std::filesystem::exists(path));
    return attn::testing::read_file_bytes(path);
}

using attn::testing::read_f32_file;

const attn::TensorInfo& by_name(const attn::SafetensorsFile& file, const std::string& name) {
    for (const attn::TensorInfo& info : file.tensors())
        if (info.name == name) return info;
    FAIL("no tensor " << name);
    throw;
}

// A safetensors byte stream from a header text and a data section.
std::vector<std::byte> make_file(const std::string& header, size_t data_bytes) {
    std::vector<std::byte> bytes(8 + header.size() + data_bytes);
    const uint64_t length = header.size();
    std::memcpy(bytes.data(), &length, 8);
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    return bytes;
}

std::unique_ptr<attn::SafetensorsFile> parse(const std::vector<std::byte>& bytes) {
    return attn::SafetensorsFile::parse(bytes, "crafted.safetensors");
}

// A scratch directory removed at the end of the test.
struct TempDir {
    fs::path path;
    // The process id keeps parallel test runs (ctest -j runs each test case as a process) apart.
    explicit TempDir(const std::string& name)
        : path(fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

}  // namespace

TEST_CASE("safetensors: reads F32, F16, BF16 and metadata from the safetensors package's output", "[safetensors]") {
    const auto file = attn::SafetensorsFile::open(format_fixture("small.safetensors"));
    REQUIRE(file->tensors().size() == 5);
    CHECK(file->metadata().at("format") == "pt");
    CHECK(file->metadata().at("note") == "attnscope fixture");

    struct Expected {
        const char* name;
        attn::DType type;
        std::vector<int64_t> shape;
    };
    const Expected expected[] = {
        {"embed.weight", attn::DType::F32, {3, 4}},
        {"layer.half", attn::DType::F16, {5}},
        {"layer.bf16", attn::DType::BF16, {2, 2, 2}},
        {"scalar", attn::DType::F32, {}},
    };
    for (const Expected& e : expected) {
        INFO(e.name);
        const attn::TensorInfo& info = by_name(*file, e.name);
        CHECK(info.type == e.type);
        CHECK(info.shape == e.shape);
        const std::vector<float> values = attn::dequantize(info);
        CHECK(values == read_f32_file(format_fixture(std::string("small_ref/") + e.name + ".f32")));
    }
    CHECK(attn::dequantize(by_name(*file, "scalar")) == std::vector<float>{1.5f});

    // Integer tensors are described, but are not weights.
    const attn::TensorInfo& positions = by_name(*file, "positions");
    CHECK(positions.type == attn::DType::I32);
    CHECK(positions.shape == std::vector<int64_t>{4});
    REQUIRE_THROWS_WITH(attn::dequantize(positions), Contains("positions") && Contains("I32"));

    // Tensors come back in file order.
    for (size_t i = 1; i < file->tensors().size(); ++i)
        CHECK(file->tensors()[i - 1].data < file->tensors()[i].data);
}

TEST_CASE("safetensors: a sharded model directory", "[safetensors]") {
    const auto model = attn::SafetensorsModel::open_dir(format_fixture("sharded"));
    CHECK(model->names() == std::vector<std::string>{"a.weight", "b.weight", "c.weight"});
    CHECK(model->tensor("a.weight").type == attn::DType::BF16);
    CHECK(model->tensor("a.weight").shape == std::vector<int64_t>{2, 3});
    CHECK(model->tensor("c.weight").type == attn::DType::F16);
    for (const std::string& name : model->names())
        CHECK(attn::dequantize(model->tensor(name)) == read_f32_file(format_fixture("sharded_ref/" + name + ".f32")));
    CHECK(model->find("d.weight") == nullptr);
    REQUIRE_THROWS_WITH(model->tensor("d.weight"), Contains("sharded") && Contains("d.weight"));
}

TEST_CASE("safetensors: single-file model directory and directory errors", "[safetensors]") {
    TempDir dir("attnscope_safetensors_test");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()),
                        Contains(dir.path.string()) && Contains("no model.safetensors"));
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir((dir.path / "missing").string()), Contains("not a directory"));

    fs::copy_file(format_fixture("small.safetensors"), dir.path / "model.safetensors");
    const auto model = attn::SafetensorsModel::open_dir(dir.path.string());
    CHECK(model->names().size() == 5);
    CHECK(model->tensor("embed.weight").shape == std::vector<int64_t>{3, 4});
}

TEST_CASE("safetensors: index errors name the index and the tensor", "[safetensors]") {
    TempDir dir("attnscope_safetensors_index_test");
    for (const char* shard : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})
        fs::copy_file(format_fixture(std::string("sharded/") + shard), dir.path / shard);
    const fs::path index = dir.path / "model.safetensors.index.json";
    auto write_index = [&](const std::string& text) { std::ofstream(index) << text; };

    write_index(R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "zz": "model-00001-of-00002.safetensors"}})");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()),
                        Contains("model.safetensors.index.json") && Contains("'zz'"));

    write_index(R"({"weight_map": {"a.weight": "model-00002-of-00002.safetensors"}})");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()), Contains("'a.weight'"));

    write_index(R"({"weight_map": {"a.weight": "../elsewhere.safetensors"}})");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()), Contains("not a plain file name"));

    write_index(R"({"weight_map": {"a.weight": "model-00003-of-00002.safetensors"}})");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()),
                        Contains("model-00003-of-00002.safetensors") && Contains("No such file"));

    write_index(R"({"metadata": {}})");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()), Contains("weight_map"));

    write_index("{not json");
    REQUIRE_THROWS_WITH(attn::SafetensorsModel::open_dir(dir.path.string()),
                        Contains("model.safetensors.index.json") && Contains("invalid JSON"));
}

TEST_CASE("safetensors: every truncation of a valid file is an error, never a crash", "[safetensors]") {
    const std::vector<std::byte> whole = read_bytes(format_fixture("small.safetensors"));
    const auto complete = parse(whole);
    size_t needed = 0;
    for (const attn::TensorInfo& info : complete->tensors())
        needed = std::max(needed, static_cast<size_t>(info.data - whole.data()) + info.bytes);
    for (size_t length = 0; length < whole.size(); ++length) {
        const std::vector<std::byte> prefix(whole.begin(), whole.begin() + static_cast<ptrdiff_t>(length));
        INFO("truncated to " << length << " of " << whole.size() << " bytes");
        if (length < needed) {
            REQUIRE_THROWS_WITH(attn::SafetensorsFile::parse(prefix, "cut.safetensors"), Contains("cut.safetensors"));
        } else {
            REQUIRE_NOTHROW(attn::SafetensorsFile::parse(prefix, "cut.safetensors"));
        }
    }
}

TEST_CASE("safetensors: malformed headers", "[safetensors]") {
    const std::string ok = R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})";
    CHECK(parse(make_file(ok, 16))->tensors().size() == 1);

    {
        std::vector<std::byte> bytes = make_file(ok, 16);
        const uint64_t huge = uint64_t{1} << 62;
        std::memcpy(bytes.data(), &huge, 8);
        REQUIRE_THROWS_WITH(parse(bytes), Contains("crafted.safetensors") && Contains("header length"));
    }
    REQUIRE_THROWS_WITH(parse(std::vector<std::byte>(5)), Contains("too short"));
    REQUIRE_THROWS_WITH(parse(make_file("[1, 2]", 0)), Contains("JSON object"));
    REQUIRE_THROWS_WITH(parse(make_file("{\"w\": ", 0)), Contains("invalid JSON"));
    REQUIRE_THROWS_WITH(parse(make_file(ok, 15)), Contains("'w'") && Contains("outside the data section"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 16)),
                        Contains("'w'") && Contains("12 bytes") && Contains("needs 16"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 16)),
                        Contains("end before they begin"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 16)),
                        Contains("'w'") && Contains("shape"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 16)),
                        Contains("shape"));
    REQUIRE_THROWS_WITH(
        parse(make_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 16)),
        Contains("overflow"));
    REQUIRE_THROWS_WITH(
        parse(make_file(R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]}})", 16)),
        Contains("more than 2^64"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})", 16)),
                        Contains("'w'") && Contains("unsupported dtype 'U8'"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 16)), Contains("dtype"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": {"dtype": "F32", "shape": [1]}})", 16)), Contains("data_offsets"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w": 3})", 16)), Contains("'w'") && Contains("object"));
    REQUIRE_THROWS_WITH(parse(make_file(R"({"__metadata__": {"n": 1}})", 0)), Contains("__metadata__") && Contains("'n'"));
    REQUIRE_THROWS_WITH(
        parse(make_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                        16)),
        Contains("'a'") && Contains("'b'") && Contains("overlap"));

    // An F64 tensor parses but is not a weight type.
    const auto f64 = parse(make_file(R"({"d": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})", 16));
    REQUIRE_THROWS_WITH(attn::dequantize(f64->tensors().at(0)), Contains("'d'") && Contains("F64"));
}
