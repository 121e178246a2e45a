#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace attn {

namespace {

using Json = nlohmann::json;

// Same cap as the reference implementation: a larger header is corrupt or hostile.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

struct DtypeEntry {
    const char* name;
    DType type;
};
constexpr DtypeEntry kDtypes[] = {
    {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
    {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16},   {"I8", DType::I8},
};

std::optional<DType> dtype_from_name(const std::string& name) {
    for (const DtypeEntry& entry : kDtypes)
        if (name == entry.name) return entry.type;
    return std::nullopt;
}

// A non-negative JSON integer, or nullopt for anything else (negative, float, string...).
std::optional<uint64_t> as_count(const Json& value) {
    if (value.is_number_unsigned()) return value.get<uint64_t>();
    if (value.is_number_integer() && value.get<int64_t>() >= 0) return static_cast<uint64_t>(value.get<int64_t>());
    return std::nullopt;
}

Json parse_json(std::string_view text, const std::string& name, const char* what) {
    try {
        return Json::parse(text.begin(), text.end());
    } catch (const Json::exception& error) {
        fail(name, ": invalid JSON in ", what, ": ", error.what());
    }
}

struct Span {
    uint64_t begin, end;
};

TensorInfo parse_tensor_entry(const std::string& file, const std::string& tensor_name, const Json& entry,
                              std::span<const std::byte> data, Span& offsets) {
    const std::string owner = cat(file, ": tensor '", tensor_name, "'");
    if (!entry.is_object()) fail(owner, " is described by a JSON ", entry.type_name(), ", expected an object");

    const auto dtype_field = entry.find("dtype");
    if (dtype_field == entry.end() || !dtype_field->is_string()) fail(owner, " has no \"dtype\" string");
    const std::string dtype_text = dtype_field->get<std::string>();
    const std::optional<DType> type = dtype_from_name(dtype_text);
    if (!type) fail(owner, " has unsupported dtype '", dtype_text, "'");

    const auto shape_field = entry.find("shape");
    if (shape_field == entry.end() || !shape_field->is_array()) fail(owner, " has no \"shape\" array");
    std::vector<int64_t> shape;
    uint64_t elements = 1;
    for (const Json& dim : *shape_field) {
        const std::optional<uint64_t> size = as_count(dim);
        if (!size || *size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            fail(owner, " has a shape entry that is not a non-negative integer: ", dim.dump());
        if (*size != 0 && elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / *size)
            fail(owner, " has an element count that overflows 64 bits");
        elements *= *size;
        shape.push_back(static_cast<int64_t>(*size));
    }

    const auto offsets_field = entry.find("data_offsets");
    if (offsets_field == entry.end() || !offsets_field->is_array() || offsets_field->size() != 2)
        fail(owner, " has no \"data_offsets\" pair");
    const std::optional<uint64_t> begin = as_count((*offsets_field)[0]);
    const std::optional<uint64_t> end = as_count((*offsets_field)[1]);
    if (!begin || !end) fail(owner, " has data_offsets that are not non-negative integers");
    if (*end < *begin) fail(owner, " has data_offsets [", *begin, ", ", *end, ") that end before they begin");
    if (*end > data.size())
        fail(owner, " has data_offsets [", *begin, ", ", *end, ") outside the data section of ", data.size(),
             " bytes");

    // Plain types only, so the byte size is elements × element size unless that overflows.
    const uint64_t element_bytes = dtype_bytes(*type, 1);
    const bool overflows = elements > std::numeric_limits<uint64_t>::max() / element_bytes;
    if (overflows || *end - *begin != elements * element_bytes)
        fail(owner, " has ", *end - *begin, " bytes of data but ", dtype_text, " with shape ", shape_field->dump(),
             " needs ", overflows ? std::string("more than 2^64") : std::to_string(elements * element_bytes));

    TensorInfo info;
    info.name = tensor_name;
    info.type = *type;
    info.shape = std::move(shape);
    info.data = data.data() + *begin;
    info.bytes = static_cast<size_t>(*end - *begin);
    offsets = {*begin, *end};
    return info;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
    auto map = std::make_unique<MappedFile>(path);
    std::unique_ptr<SafetensorsFile> file = parse(map->bytes(), path);
    file->map_ = std::move(map);
    return file;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(std::span<const std::byte> bytes, const std::string& name) {
    std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
    file->name_ = name;

    if (bytes.size() < 8)
        fail(name, ": not a safetensors file (", bytes.size(), " bytes, too short for the 8-byte header length)");
    uint64_t header_bytes;
    std::memcpy(&header_bytes, bytes.data(), 8);  // little-endian, like the host (asserted in tensor.cpp)
    if (header_bytes > bytes.size() - 8)
        fail(name, ": header length ", header_bytes, " exceeds the ", bytes.size() - 8, " bytes after it");
    if (header_bytes > kMaxHeaderBytes)
        fail(name, ": header length ", header_bytes, " is larger than the ", kMaxHeaderBytes, "-byte limit");
    if (header_bytes == 0 || static_cast<char>(bytes[8]) != '{')
        fail(name, ": not a safetensors file (the header does not start with a JSON object)");

    const std::string_view header_text(reinterpret_cast<const char*>(bytes.data() + 8), header_bytes);
    const Json header = parse_json(header_text, name, "the header");
    if (!header.is_object()) fail(name, ": the header is a JSON ", header.type_name(), ", expected an object");
    const std::span<const std::byte> data = bytes.subspan(8 + header_bytes);

    std::vector<Span> spans;
    for (const auto& [key, entry] : header.items()) {
        if (key == "__metadata__") {
            if (!entry.is_object()) fail(name, ": __metadata__ is a JSON ", entry.type_name(), ", expected an object");
            for (const auto& [meta_key, meta_value] : entry.items()) {
                if (!meta_value.is_string())
                    fail(name, ": __metadata__ entry '", meta_key, "' is a JSON ", meta_value.type_name(),
                         ", expected a string");
                file->metadata_[meta_key] = meta_value.get<std::string>();
            }
            continue;
        }
        Span span{};
        file->tensors_.push_back(parse_tensor_entry(name, key, entry, data, span));
        spans.push_back(span);
    }

    // Keep the tensors in file order and reject overlaps: sharing bytes means a corrupt header.
    std::vector<size_t> order(spans.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return spans[a].begin != spans[b].begin ? spans[a].begin < spans[b].begin : spans[a].end < spans[b].end;
    });
    for (size_t k = 1; k < order.size(); ++k)
        if (spans[order[k - 1]].end > spans[order[k]].begin)
            fail(name, ": tensors '", file->tensors_[order[k - 1]].name, "' and '", file->tensors_[order[k]].name,
                 "' overlap in the data section");
    std::vector<TensorInfo> sorted;
    sorted.reserve(order.size());
    for (size_t k : order) sorted.push_back(std::move(file->tensors_[k]));
    file->tensors_ = std::move(sorted);
    return file;
}

std::unique_ptr<SafetensorsModel> SafetensorsModel::open_dir(const std::string& dir) {
    namespace fs = std::filesystem;
    std::unique_ptr<SafetensorsModel> model(new SafetensorsModel());
    model->dir_ = dir;

    const fs::path single = fs::path(dir) / "model.safetensors";
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    std::error_code ignored;
    if (!fs::is_directory(dir, ignored)) fail(dir, ": not a directory");

    // Which shard each tensor should be in, when an index names them.
    std::map<std::string, std::string> expected_shard;
    std::vector<std::string> shard_names;
    if (fs::exists(single, ignored)) {
        shard_names.push_back("model.safetensors");
    } else if (fs::exists(index, ignored)) {
        const MappedFile index_file(index.string());
        const auto index_bytes = index_file.bytes();
        const Json parsed = parse_json(
            std::string_view(reinterpret_cast<const char*>(index_bytes.data()), index_bytes.size()),
            index.string(), "the index");
        const auto weight_map = parsed.is_object() ? parsed.find("weight_map") : parsed.end();
        if (weight_map == parsed.end() || !weight_map->is_object())
            fail(index.string(), ": no \"weight_map\" object");
        std::set<std::string> unique_shards;
        for (const auto& [tensor_name, shard] : weight_map->items()) {
            if (!shard.is_string())
                fail(index.string(), ": weight_map entry '", tensor_name, "' is not a file name string");
            const std::string shard_name = shard.get<std::string>();
            // Shards live beside the index; anything path-like could point elsewhere on disk.
            if (shard_name.empty() || shard_name == "." || shard_name == ".." ||
                shard_name.find_first_of("/\\") != std::string::npos)
                fail(index.string(), ": weight_map entry '", tensor_name, "' names shard '", shard_name,
                     "', which is not a plain file name");
            expected_shard[tensor_name] = shard_name;
            unique_shards.insert(shard_name);
        }
        shard_names.assign(unique_shards.begin(), unique_shards.end());
    } else {
        fail(dir, ": no model.safetensors or model.safetensors.index.json in this directory");
    }

    std::map<std::string, std::string> shard_of;  // tensor → shard it was found in
    for (const std::string& shard_name : shard_names) {
        model->files_.push_back(SafetensorsFile::open((fs::path(dir) / shard_name).string()));
        for (const TensorInfo& info : model->files_.back()->tensors()) {
            const auto [it, inserted] = model->by_name_.emplace(info.name, &info);
            if (!inserted)
                fail(dir, ": tensor '", info.name, "' appears in both '", shard_of[info.name], "' and '", shard_name,
                     "'");
            shard_of[info.name] = shard_name;
        }
    }
    for (const auto& [tensor_name, shard_name] : expected_shard) {
        const auto found = shard_of.find(tensor_name);
        if (found == shard_of.end())
            fail(index.string(), ": lists tensor '", tensor_name, "' in '", shard_name, "' but no shard contains it");
        if (found->second != shard_name)
            fail(index.string(), ": lists tensor '", tensor_name, "' in '", shard_name, "' but it is in '",
                 found->second, "'");
    }
    return model;
}

const TensorInfo* SafetensorsModel::find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& SafetensorsModel::tensor(const std::string& name) const {
    const TensorInfo* info = find(name);
    if (info == nullptr) fail(dir_, ": no tensor named '", name, "'");
    return *info;
}

std::vector<std::string> SafetensorsModel::names() const {
    std::vector<std::string> result;
    result.reserve(by_name_.size());
    for (const auto& entry : by_name_) result.push_back(entry.first);
    return result;
}

}  // namespace attn
