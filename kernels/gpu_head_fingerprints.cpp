// Head fingerprints on the GPU: the host side of kernels/head_fingerprints.cu, registered with the
// engine's compute_head_fingerprints (engine/head_fingerprints.cpp).
//
// The same query rows as the CPU (sample_query_rows), layer by layer: the sampled query rows and
// their LSE gathered and uploaded, the keys 0..last query uploaded whole (fp32, as the store holds
// them), then one launch per group of rows small enough that the blocks' scratch rows of P stay
// under kScratchBytes. Each record comes back as a FingerprintRow and HeadFingerprints::from_rows
// averages them with the CPU's code, so the two paths differ only in how each row was measured.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/head_fingerprints.h"
#include "kernels/cuda_check.h"
#include "kernels/device_memory.h"
#include "kernels/head_fingerprints.cuh"

namespace attn {

using gpu::DeviceBuffer;

namespace {

constexpr int64_t kScratchBytes = int64_t(256) << 20;

struct StreamHandle {
    cudaStream_t stream = nullptr;
    StreamHandle() { CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
    ~StreamHandle() {
        if (stream) (void)cudaStreamDestroy(stream);
    }
    StreamHandle(const StreamHandle&) = delete;
    StreamHandle& operator=(const StreamHandle&) = delete;
};

template <typename T>
void upload(const DeviceBuffer& to, const std::vector<T>& from, cudaStream_t stream) {
    CUDA_CHECK(cudaMemcpyAsync(to.get(), from.data(), from.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
}

FingerprintRow row_from_record(const double* record, int64_t query) {
    FingerprintRow row;
    row.query = query;
    row.total = record[gpu::kFpTotal];
    row.entropy_bits = std::max(record[gpu::kFpSurprisal], 0.0) / std::numbers::ln2;  // as the CPU's RowGroup
    row.distance = record[gpu::kFpDistance];
    row.sink = record[gpu::kFpSink];
    row.previous = record[gpu::kFpPrevious];
    row.induction = record[gpu::kFpInduction];
    row.has_earlier = record[gpu::kFpHasEarlier] != 0.0;
    row.local = record[gpu::kFpLocal];
    // A NaN (an unwritten record: the buffer is poisoned before each launch) stays visible as a
    // nonsense count rather than turning into 0.
    row.keys_for_90 = std::isfinite(record[gpu::kFpKeys90]) ? static_cast<int64_t>(record[gpu::kFpKeys90]) : -1;
    for (int64_t d = 0; d <= std::min<int64_t>(FingerprintRow::kMaxOffset, query - 1); ++d)
        row.offset_mass[static_cast<size_t>(d)] = record[gpu::kFpOffset0 + d];
    return row;
}

}  // namespace

bool cuda_fingerprints_available(std::string* why_not) { return gpu::cuda_kernels_runnable(why_not); }

HeadFingerprints compute_head_fingerprints_cuda(const Session& session, const FingerprintOptions& options) {
    if (!session.capture) fail("the session has no captured attention");
    std::string why;
    if (!gpu::cuda_kernels_runnable(&why)) fail("head fingerprints on the GPU are unavailable: ", why);
    const CaptureStore& store = *session.capture;
    const CaptureShape& shape = store.shape();
    (void)HeadFingerprints(shape, options);  // checks the options before any device work
    const int64_t end = std::min(store.positions(), session.positions());
    const std::vector<int64_t> queries = sample_query_rows(end, options.max_rows);
    const int64_t rows_available = std::max<int64_t>(0, end - 1);
    if (queries.empty()) return HeadFingerprints::from_rows(shape, options, queries, {}, rows_available);

    const int64_t n_rows = static_cast<int64_t>(queries.size());
    const int64_t key_positions = queries.back() + 1;
    const int n_head = shape.n_head, hd = shape.head_dim;
    const int64_t q_row = int64_t(n_head) * hd, k_row = int64_t(shape.n_kv_head) * hd;
    const int64_t chunk = std::clamp<int64_t>(kScratchBytes / (int64_t(sizeof(float)) * n_head * key_positions), 1, n_rows);
    const std::string what = cat("head fingerprints of ", key_positions, " positions");
    const std::string hint = "set ATTNSCOPE_FINGERPRINTS=cpu";

    StreamHandle stream;
    DeviceBuffer d_tokens(size_t(key_positions) * sizeof(int32_t), what, hint);
    DeviceBuffer d_queries(size_t(n_rows) * sizeof(int64_t), what, hint);
    DeviceBuffer d_q(size_t(n_rows * q_row) * sizeof(float), what, hint);
    DeviceBuffer d_lse(size_t(n_rows * n_head) * sizeof(float), what, hint);
    DeviceBuffer d_k(size_t(key_positions * k_row) * sizeof(float), what, hint);
    DeviceBuffer d_scratch(size_t(chunk * n_head * key_positions) * sizeof(float), what, hint);
    DeviceBuffer d_out(size_t(chunk * n_head * gpu::kFingerprintFields) * sizeof(double), what, hint);

    std::vector<int32_t> tokens(static_cast<size_t>(key_positions));
    for (int64_t j = 0; j < key_positions; ++j) tokens[size_t(j)] = session.tokens[size_t(j)].id;
    upload(d_tokens, tokens, stream.stream);
    upload(d_queries, queries, stream.stream);

    std::vector<float> q(size_t(n_rows * q_row)), lse(size_t(n_rows * n_head)), k(size_t(key_positions * k_row));
    std::vector<double> records(size_t(chunk * n_head * gpu::kFingerprintFields));
    std::vector<FingerprintRow> measured(size_t(shape.n_layer) * n_head * size_t(n_rows));
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        for (int64_t r = 0; r < n_rows; ++r) {
            std::copy_n(store.q(layer, queries[size_t(r)]), q_row, q.begin() + r * q_row);
            for (int head = 0; head < n_head; ++head) lse[size_t(r * n_head + head)] = store.lse(layer, queries[size_t(r)], head);
        }
        for (int64_t j0 = 0; j0 < key_positions;) {  // the store's chunks, one contiguous run each
            const int64_t run = std::min(key_positions - j0, store.contiguous_from(j0));
            std::copy_n(store.k(layer, j0), run * k_row, k.begin() + j0 * k_row);
            j0 += run;
        }
        upload(d_q, q, stream.stream);
        upload(d_lse, lse, stream.stream);
        upload(d_k, k, stream.stream);
        // Copies from pageable memory return once staged; the stream is also synchronised after
        // each launch below, before the next layer rewrites these vectors.
        for (int64_t r0 = 0; r0 < n_rows; r0 += chunk) {
            const int64_t rows = std::min(chunk, n_rows - r0);
            gpu::FingerprintInputs in;
            in.q = d_q.as<float>() + r0 * q_row;
            in.lse = d_lse.as<float>() + r0 * n_head;
            in.queries = d_queries.as<int64_t>() + r0;
            in.rows = rows;
            in.k = d_k.as<float>();
            in.tokens = d_tokens.as<int32_t>();
            in.positions = key_positions;
            in.n_head = n_head;
            in.n_kv_head = shape.n_kv_head;
            in.head_dim = hd;
            in.scale = shape.scale;
            in.sliding_window = shape.sliding_window;
            in.local_window = options.local_window;
            const size_t record_bytes = size_t(rows * n_head * gpu::kFingerprintFields) * sizeof(double);
            CUDA_CHECK(cudaMemsetAsync(d_out.get(), 0xff, record_bytes, stream.stream));  // NaN: unwritten shows
            gpu::head_fingerprint_rows(in, d_scratch.as<float>(), key_positions, d_out.as<double>(), stream.stream);
            CUDA_CHECK(cudaMemcpyAsync(records.data(), d_out.get(), record_bytes, cudaMemcpyDeviceToHost, stream.stream));
            CUDA_CHECK(cudaStreamSynchronize(stream.stream));
            for (int head = 0; head < n_head; ++head)
                for (int64_t r = 0; r < rows; ++r)
                    measured[(size_t(layer) * n_head + size_t(head)) * size_t(n_rows) + size_t(r0 + r)] = row_from_record(
                        records.data() + (int64_t(head) * rows + r) * gpu::kFingerprintFields, queries[size_t(r0 + r)]);
        }
    }
    return HeadFingerprints::from_rows(shape, options, queries, measured, rows_available);
}

}  // namespace attn
