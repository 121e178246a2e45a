#pragma once
// Whole-file writes that never leave a half-written file under the final name:
// write a temporary beside it, fsync, rename over the target, fsync the directory.
#include <string>
#include <string_view>

namespace attn {
void write_file_atomically(const std::string& path, std::string_view bytes);
}  // namespace attn
