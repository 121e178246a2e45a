#pragma once
#include <memory>

#include "engine/backend.h"

namespace attn {
// fp32 reference backend: OpenBLAS GEMMs for every projection and for the attention scores,
// a thread pool for the softmax rows and the per-position work.
std::unique_ptr<Backend> make_cpu_backend(const Model& model);
}  // namespace attn
