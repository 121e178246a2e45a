#pragma once
#include <cstdint>
#include <string>

namespace attn {
// Bytes the kernel says can still be allocated without swapping (MemAvailable), or 0 if unknown.
uint64_t available_memory_bytes();
std::string format_bytes(uint64_t bytes);  // "1.23 GiB"
// Throws attn::Error saying `what` needs `bytes` but only so much is available.
void require_memory(uint64_t bytes, const std::string& what);
}  // namespace attn
