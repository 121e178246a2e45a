#include <cmath>

#include "kernels/common.cuh"
#include "kernels/embedding.cuh"

namespace attn::gpu {
namespace {

using namespace detail;

// One block per token.
template <typename Tw, typename Ty>
__global__ void embedding_kernel(const Tw* __restrict__ table, const Tw* __restrict__ pos_table,
                                 const int32_t* __restrict__ ids, int64_t vocab, int64_t d, int64_t pos0,
                                 Ty* __restrict__ out) {
    const int64_t t = blockIdx.x;
    const int32_t id = ids[t];
    Ty* row = out + t * d;
    if (id < 0 || id >= vocab) {
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) row[i] = from_f32<Ty>(NAN);
        return;
    }
    const Tw* src = table + int64_t(id) * d;
    const Tw* pos = pos_table ? pos_table + (pos0 + t) * d : nullptr;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = to_f32(src[i]);
        if (pos) v += to_f32(pos[i]);
        row[i] = from_f32<Ty>(v);
    }
}

template <typename Tw, typename Ty>
void launch(const Tw* table, const Tw* pos_table, const int32_t* ids, int64_t n, int64_t vocab, int64_t d,
            int64_t pos0, Ty* out, cudaStream_t stream) {
    check_rows("embedding", n, d);
    if (vocab <= 0 || pos0 < 0) fail("embedding: bad vocab ", vocab, " or pos0 ", pos0);
    if (n == 0) return;
    const int threads = d >= 1024 ? 256 : 128;
    embedding_kernel<<<static_cast<unsigned>(n), threads, 0, stream>>>(table, pos_table, ids, vocab, d, pos0, out);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void embedding(const float* table, const float* pos_table, const int32_t* ids, int64_t n, int64_t vocab, int64_t d,
               int64_t pos0, float* out, cudaStream_t stream) {
    launch(table, pos_table, ids, n, vocab, d, pos0, out, stream);
}
void embedding(const bf16* table, const bf16* pos_table, const int32_t* ids, int64_t n, int64_t vocab, int64_t d,
               int64_t pos0, bf16* out, cudaStream_t stream) {
    launch(table, pos_table, ids, n, vocab, d, pos0, out, stream);
}
void embedding(const bf16* table, const bf16* pos_table, const int32_t* ids, int64_t n, int64_t vocab, int64_t d,
               int64_t pos0, float* out, cudaStream_t stream) {
    launch(table, pos_table, ids, n, vocab, d, pos0, out, stream);
}

}  // namespace attn::gpu
