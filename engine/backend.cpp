#include "engine/backend.h"

#include "engine/cpu_backend.h"
#include "engine/error.h"

namespace attn {

// The CUDA backend registers itself here when it is built (kernels/, issue 3).
#ifndef ATTNSCOPE_HAVE_CUDA
bool cuda_backend_available(std::string* why_not) {
    if (why_not) *why_not = "this attnscope was built without CUDA (nvcc was not found at configure time)";
    return false;
}
std::unique_ptr<Backend> make_cuda_backend(const Model&) {
    fail("the cuda backend is unavailable: this attnscope was built without CUDA");
}
#else
// Defined in kernels/cuda_backend.cpp (attnscope_kernels), with cuda_backend_available: true when a
// device that can run this build's kernels is present, else false with the reason.
std::unique_ptr<Backend> make_cuda_backend(const Model& model);
#endif

std::unique_ptr<Backend> make_backend(BackendKind kind, const Model& model) {
    switch (kind) {
        case BackendKind::Cpu: return make_cpu_backend(model);
        case BackendKind::Cuda: {
            std::string why;
            if (!cuda_backend_available(&why)) fail("the cuda backend is unavailable: ", why);
            return make_cuda_backend(model);
        }
        case BackendKind::Auto:
            return cuda_backend_available() ? make_cuda_backend(model) : make_cpu_backend(model);
    }
    fail("unknown backend kind");
}

}  // namespace attn
