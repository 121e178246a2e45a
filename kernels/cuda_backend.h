#pragma once
// The cuda backend (issue 3): the product's fast path behind attn::Backend. bf16 weights (uploaded
// once, shared by forks), bf16 activations with an fp32 residual stream, cuBLAS GEMMs with fp32
// accumulation, the fused prefill attention (flash_attention: O, LSE and the pooled overview in one
// pass), split-K decode attention, the KV cache on the GPU, decode steps through CUDA graphs.
// Semantics are the cpu backend's (engine/cpu_backend.cpp), which is the reference.
//
// Capture (CaptureStore): post-RoPE Q and K (the bf16 values the kernels used, widened to fp32)
// and the row LSEs are converted on the GPU into a staging buffer, copied to pinned host memory on
// a separate copy stream ordered by events (the compute stream never waits for the host), and
// recorded into the store once the copy has landed. The pooled overview lives on the GPU
// (prefill: emitted by the fused kernel; decode: overview_row) and is mirrored into the store with
// CaptureStore::restore_overview at the end of every forward(), so the store's overview is complete
// after each call, as with the cpu backend.
// Plain C++20 (engine headers); compiled by the host compiler, linked with the kernels.
#include <cstdint>
#include <memory>
#include <string>

#include "engine/backend.h"

namespace attn {

struct CudaBackendOptions {
    // Decode steps (one token) through a CUDA graph, re-captured each step and applied with
    // cudaGraphExecUpdate. ATTNSCOPE_CUDA_GRAPHS=0 in the environment turns it off.
    bool cuda_graphs = true;
    // Overview emission when capturing (off only to measure its cost: the store's overview then
    // stays incomplete and tiles fall back to exact recomputation).
    bool emit_overview = true;
    // Prefill chunk (positions per pass). Bounds activation and capture staging memory; large
    // enough that the fused kernel fills the GPU.
    int64_t prefill_chunk = 2048;

    static CudaBackendOptions from_environment();
};

// Throws attn::Error when no usable device is present or the model is unsupported (head_dim other
// than 64 / 128) or does not fit in GPU memory (the message says what was needed and what is free).
std::unique_ptr<Backend> make_cuda_backend(const Model& model);
std::unique_ptr<Backend> make_cuda_backend(const Model& model, const CudaBackendOptions& options);

// Why the cuda backend cannot run this model (empty if it can), without touching the GPU.
std::string cuda_backend_unsupported_reason(const ModelConfig& config);

}  // namespace attn
