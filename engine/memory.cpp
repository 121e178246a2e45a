#include "engine/memory.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "engine/error.h"

namespace attn {

uint64_t available_memory_bytes() {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    uint64_t value = 0;
    std::string unit;
    while (meminfo >> key >> value >> unit)
        if (key == "MemAvailable:") return value * 1024;
    return 0;
}

std::string format_bytes(uint64_t bytes) {
    char text[64];
    const double b = static_cast<double>(bytes);
    if (b >= 1024.0 * 1024 * 1024) std::snprintf(text, sizeof text, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) std::snprintf(text, sizeof text, "%.1f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0) std::snprintf(text, sizeof text, "%.1f KiB", b / 1024.0);
    else std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
    return text;
}

void require_memory(uint64_t bytes, const std::string& what) {
    const uint64_t available = available_memory_bytes();
    if (available != 0 && bytes > available)
        fail(what, " needs ", format_bytes(bytes), " but only ", format_bytes(available),
             " of memory is available; use a shorter prompt, fewer tokens, or --no-capture");
}

}  // namespace attn
