#pragma once
// Read-only memory map of a whole file. Model files are mapped, never read into memory.
#include <cstddef>
#include <span>
#include <string>

namespace attn {

class MappedFile {
public:
    explicit MappedFile(const std::string& path);  // throws attn::Error naming the path
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    std::span<const std::byte> bytes() const { return {data_, size_}; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    const std::byte* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace attn
