#include "engine/error.h"

#include <cstdio>
#include <exception>
#include <new>

namespace attn {

int report_current_exception() {
    try {
        throw;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "attnscope: error: out of memory\n");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "attnscope: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "attnscope: error: unknown failure\n");
    }
    return 1;
}

}  // namespace attn
