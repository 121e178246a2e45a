#pragma once
// One exception type for every user-facing failure: bad files, bad arguments,
// unsupported models. The message must name the thing (file, tensor, option) and
// the problem, because it is printed as-is by the CLI.
#include <sstream>
#include <stdexcept>
#include <string>

namespace attn {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

template <typename... Parts>
std::string cat(const Parts&... parts) {
    std::ostringstream out;
    (out << ... << parts);
    return out.str();
}

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    throw Error(cat(parts...));
}

// For entry points: call inside a catch (...) block. Prints "attnscope: error: <what>" for the
// exception being handled and returns the exit code (1).
int report_current_exception();

}  // namespace attn
