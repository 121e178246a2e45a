#pragma once
// Hugging Face safetensors reader: a single model.safetensors or a sharded set listed in
// model.safetensors.index.json. Files are memory-mapped; header offsets are validated.
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/mapped_file.h"
#include "engine/tensor.h"

namespace attn {

class SafetensorsFile {
public:
    static std::unique_ptr<SafetensorsFile> open(const std::string& path);
    static std::unique_ptr<SafetensorsFile> parse(std::span<const std::byte> bytes, const std::string& name);

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

private:
    SafetensorsFile() = default;
    std::unique_ptr<MappedFile> map_;
    std::string name_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face model directory (single file or sharded index).
class SafetensorsModel {
public:
    static std::unique_ptr<SafetensorsModel> open_dir(const std::string& dir);
    const TensorInfo* find(const std::string& name) const;
    const TensorInfo& tensor(const std::string& name) const;  // throws naming dir + tensor
    std::vector<std::string> names() const;

private:
    std::string dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, const TensorInfo*> by_name_;
};

}  // namespace attn
