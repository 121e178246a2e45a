#pragma once
// GGUF v2/v3 reader. The file is memory-mapped; tensors point into the mapping.
// Every length, offset and count read from the file is checked against the file size
// before use, so a malformed file gives an attn::Error naming the file and the problem.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "engine/mapped_file.h"
#include "engine/tensor.h"

namespace attn {

struct GgufValue {
    // Scalars are widened; arrays keep their element kind in one of the vectors.
    std::variant<std::monostate, bool, int64_t, uint64_t, double, std::string,
                 std::vector<int64_t>, std::vector<double>, std::vector<std::string>, std::vector<bool>>
        value;
};

class GgufFile {
public:
    static std::unique_ptr<GgufFile> open(const std::string& path);
    // Parses a buffer that stays alive for the GgufFile's lifetime (used by fuzzers and tests).
    // `name` is what error messages call the input.
    static std::unique_ptr<GgufFile> parse(std::span<const std::byte> bytes, const std::string& name);

    uint32_t version() const { return version_; }
    const std::string& name() const { return name_; }

    bool has(const std::string& key) const { return metadata_.count(key) != 0; }
    const GgufValue* find(const std::string& key) const;
    // Typed getters: throw attn::Error naming the file and key if missing or of the wrong kind.
    // Integer getters accept any integer kind that fits; get_float accepts ints and floats.
    std::string get_string(const std::string& key) const;
    int64_t get_int(const std::string& key) const;
    double get_float(const std::string& key) const;
    bool get_bool(const std::string& key) const;
    std::optional<int64_t> int_or(const std::string& key) const;    // nullopt if missing
    std::optional<double> float_or(const std::string& key) const;   // nullopt if missing
    std::optional<std::string> string_or(const std::string& key) const;
    const std::vector<std::string>& get_string_array(const std::string& key) const;
    std::vector<int64_t> get_int_array(const std::string& key) const;
    std::vector<double> get_float_array(const std::string& key) const;
    const std::map<std::string, GgufValue>& metadata() const { return metadata_; }

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find_tensor(const std::string& name) const;
    const TensorInfo& tensor(const std::string& name) const;  // throws naming file + tensor

private:
    GgufFile() = default;
    void parse_all(std::span<const std::byte> bytes);

    std::unique_ptr<MappedFile> map_;
    std::string name_;
    uint32_t version_ = 0;
    std::map<std::string, GgufValue> metadata_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

}  // namespace attn
