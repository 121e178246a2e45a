// Head fingerprints on the GPU (kernels/head_fingerprints.cu, kernels/gpu_head_fingerprints.cpp)
// against the CPU's HeadFingerprints::compute.
//   [heads]        run everywhere: the kernel's host emulation (kernels/lab/fingerprint_emulation.h,
//                  the same key striding, partial sums and ThresholdSearch) agrees with the CPU, and
//                  the dispatcher falls back to the CPU (or is forced to it) with the same result.
//   [cuda][heads]  need a device: the GPU result agrees with the CPU on crafted sessions and random
//                  ones with GQA and a sliding window; a direct launch into NaN-poisoned buffers
//                  writes every field. They print "SKIPPED: no CUDA device: <why>" without one.
// Tolerance: masses, entropy and distance within 1e-5 absolute + 1e-4 relative (fp32 scores from
// another summation order; the CPU's are a BLAS GEMM). keys_for_90 is a count, exact but for rows
// where the top-k mass equals 90% of the total to within the rounding of the sums (a tie: either
// count is right, and they differ by one key). On random attention such a row is rare (the float
// scores differ by an ulp or two between the two paths): at most 1% of the rows (at least 1) may
// differ, by one key each. On crafted rows of exactly equal values (the uniform heads) the boundary
// can fall on a sum of equal keys on every row: there each row may differ by one key.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numbers>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "crafted_session.h"
#include "engine/error.h"
#include "engine/head_fingerprints.h"
#include "kernels/lab/fingerprint_emulation.h"

#ifdef ATTNSCOPE_HAVE_CUDA_KERNELS
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
#include "kernels/device_memory.h"
#include "kernels/head_fingerprints.cuh"
#endif

using namespace attn;
using attn::testing::CraftedSpec;
using attn::testing::make_crafted_session;

namespace {

bool close(double value, double reference) {
    return std::abs(value - reference) <= 1e-5 + 1e-4 * std::abs(reference);  // false for NaN
}

// Every metric of every head of `got` against the CPU's `want`.
void check_fingerprints(const HeadFingerprints& got, const HeadFingerprints& want, bool ties_possible) {
    REQUIRE(got.rows() == want.rows());
    REQUIRE(got.rows_available() == want.rows_available());
    const std::vector<HeadFingerprint> a = got.all(), b = want.all();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        INFO("layer " << b[i].layer << " head " << b[i].head);
        CHECK(a[i].rows == b[i].rows);
        CHECK(close(a[i].entropy_bits, b[i].entropy_bits));
        CHECK(close(a[i].normalized_entropy, b[i].normalized_entropy));
        CHECK(close(a[i].sink_mass, b[i].sink_mass));
        CHECK(close(a[i].previous_token, b[i].previous_token));
        CHECK(close(a[i].induction, b[i].induction));
        CHECK(a[i].induction_rows == b[i].induction_rows);
        CHECK(close(a[i].local_mass, b[i].local_mass));
        CHECK(a[i].local_mass_if_uniform == b[i].local_mass_if_uniform);
        CHECK(close(a[i].mean_distance, b[i].mean_distance));
        // keys_for_90 is a mean of counts: rows × the difference is how many keys differ in all.
        const double keys_apart = std::abs(a[i].keys_for_90 - b[i].keys_for_90) * double(b[i].rows);
        const double rows_allowed = ties_possible ? double(b[i].rows) : std::max(1.0, 0.01 * double(b[i].rows));
        CHECK(keys_apart <= rows_allowed + 1e-6);
        CHECK(std::abs(a[i].keys_for_90_fraction - b[i].keys_for_90_fraction) * double(b[i].rows) <= rows_allowed + 1e-6);
        CHECK(a[i].positional_offset == b[i].positional_offset);
        CHECK(close(a[i].positional_mass, b[i].positional_mass));
        CHECK(a[i].labels == b[i].labels);
    }
}

// Previous-token, sink, uniform and 3-back heads, then an induction head over repeated text.
Session crafted_kinds() {
    CraftedSpec spec;
    for (int i = 0; i < 24; ++i) spec.words.push_back(" w" + std::to_string(i));
    spec.prompt_tokens = 24;
    spec.n_layer = 2;
    spec.n_head = 4;
    spec.focus = [](int layer, int head, int64_t q) -> std::vector<int64_t> {
        switch ((head + layer) % 4) {
            case 0: return {std::max<int64_t>(0, q - 1)};
            case 1: return {0};
            case 2: return {};
            default: return {std::max<int64_t>(0, q - 3)};
        }
    };
    return make_crafted_session(spec);
}

Session crafted_induction() {
    CraftedSpec spec;
    const std::vector<std::string> words{" a", " b", " c", " d", " e", " f", " g", " h"};
    for (int round = 0; round < 3; ++round)
        for (const std::string& w : words) spec.words.push_back(w);
    spec.prompt_tokens = static_cast<int64_t>(spec.words.size());
    spec.n_layer = 1;
    spec.n_head = 2;
    spec.focus = [](int, int head, int64_t q) -> std::vector<int64_t> {
        if (head == 1 || q < 8) return {std::max<int64_t>(0, q - 1)};
        return {q - 7};  // the token after the previous occurrence of this one
    };
    return make_crafted_session(spec);
}

// Random Q and K with exact LSE: GQA (n_head / n_kv_head query heads per KV head), an optional
// sliding window, tokens from a small vocabulary (many induction rows).
Session random_session(int64_t n, int n_head, int n_kv_head, int head_dim, int sliding_window, uint32_t seed) {
    const CaptureShape shape{2, n_head, n_kv_head, head_dim, 1.0f / std::sqrt(float(head_dim)), sliding_window};
    Session session;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.5f);
    std::uniform_int_distribution<int32_t> vocabulary(0, 9);
    for (int64_t i = 0; i < n; ++i) session.tokens.push_back(Token{vocabulary(rng), 0, 0});
    session.prompt_tokens = n;
    session.capture = std::make_unique<CaptureStore>(shape);
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        std::vector<float> q(size_t(n * n_head * head_dim)), k(size_t(n * n_kv_head * head_dim));
        for (float& x : q) x = normal(rng);
        for (float& x : k) x = normal(rng);
        std::vector<float> lse(size_t(n * n_head));
        for (int64_t i = 0; i < n; ++i)
            for (int head = 0; head < n_head; ++head) {
                double total = 0;
                for (int64_t j = 0; j <= i; ++j) {
                    if (!shape.visible(i, j)) continue;
                    double dot = 0;
                    for (int d = 0; d < head_dim; ++d)
                        dot += double(q[size_t((i * n_head + head) * head_dim + d)]) *
                               double(k[size_t((j * n_kv_head + shape.kv_head_of(head)) * head_dim + d)]);
                    total += std::exp(double(shape.scale) * dot);
                }
                lse[size_t(i * n_head + head)] = static_cast<float>(std::log(total));
            }
        session.capture->record_layer(layer, 0, n, q.data(), k.data(), lse.data());
    }
    return session;
}

// Sets an environment variable for a scope, restoring what was there.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        if (value) setenv(name, value, 1);
        else unsetenv(name);
    }
    ~ScopedEnv() {
        if (old_) setenv(name_, old_->c_str(), 1);
        else unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("the fingerprint kernel's host emulation agrees with the CPU", "[heads]") {
    SECTION("crafted heads") {
        for (const Session& session : {crafted_kinds(), crafted_induction()})
            check_fingerprints(lab::emulate_fingerprints(session), HeadFingerprints::compute(session), false);
    }
    SECTION("random attention: GQA, sliding windows, head dims with and without float4 loads, a sample") {
        struct Case {
            int64_t n;
            int n_head, n_kv_head, head_dim, window, max_rows;
        };
        for (const Case& c : {Case{300, 4, 2, 16, 0, 512}, Case{300, 6, 2, 10, 40, 512}, Case{700, 4, 1, 8, 0, 97},
                              Case{400, 4, 4, 12, 1, 512}}) {
            INFO("n " << c.n << " heads " << c.n_head << "/" << c.n_kv_head << " dim " << c.head_dim << " window "
                      << c.window << " rows " << c.max_rows);
            const Session session = random_session(c.n, c.n_head, c.n_kv_head, c.head_dim, c.window, 5);
            FingerprintOptions options;
            options.max_rows = c.max_rows;
            check_fingerprints(lab::emulate_fingerprints(session, options), HeadFingerprints::compute(session, options),
                               false);
        }
    }
}

TEST_CASE("from_rows rejects measurements that do not fit the queries", "[heads]") {
    const CaptureShape shape{1, 2, 2, 4, 1.f, 0};
    const std::vector<int64_t> queries{1, 2};
    std::vector<FingerprintRow> rows(4);
    for (size_t i = 0; i < rows.size(); ++i) rows[i].query = queries[i % 2];
    CHECK_NOTHROW(HeadFingerprints::from_rows(shape, {}, queries, rows, 2));
    CHECK_THROWS_WITH(HeadFingerprints::from_rows(shape, {}, queries, std::span(rows).first(3), 2),
                      Catch::Contains("3 measured rows for 2 heads × 2 queries"));
    rows[3].query = 5;
    CHECK_THROWS_WITH(HeadFingerprints::from_rows(shape, {}, queries, rows, 2), Catch::Contains("expected 2"));
    const std::vector<int64_t> unordered{2, 1};
    CHECK_THROWS_WITH(HeadFingerprints::from_rows(shape, {}, unordered, rows, 2), Catch::Contains("in order"));
}

TEST_CASE("compute_head_fingerprints: the CPU where no GPU is usable or when asked, the same numbers", "[heads]") {
    const Session session = random_session(200, 4, 2, 16, 0, 9);
    const std::vector<HeadFingerprint> cpu = HeadFingerprints::compute(session).all();
    const auto identical = [&](const HeadFingerprints& f) {
        const std::vector<HeadFingerprint> got = f.all();
        REQUIRE(got.size() == cpu.size());
        for (size_t i = 0; i < got.size(); ++i) {
            CHECK(got[i].entropy_bits == cpu[i].entropy_bits);
            CHECK(got[i].induction == cpu[i].induction);
            CHECK(got[i].keys_for_90 == cpu[i].keys_for_90);
            CHECK(got[i].mean_distance == cpu[i].mean_distance);
            CHECK(got[i].positional_mass == cpu[i].positional_mass);
            CHECK(got[i].labels == cpu[i].labels);
        }
    };
    std::string why;
    const bool gpu = cuda_fingerprints_available(&why);
    {
        const ScopedEnv env("ATTNSCOPE_FINGERPRINTS", nullptr);
        const ComputedFingerprints automatic = compute_head_fingerprints(session);
        if (gpu) {
            CHECK(automatic.device == "cuda");
            CHECK(automatic.cpu_reason.empty());
        } else {
            CHECK(automatic.device == "cpu");
            CHECK(automatic.cpu_reason == why);
            CHECK_FALSE(why.empty());
            identical(automatic.fingerprints);
            CHECK_THROWS_WITH(compute_head_fingerprints(session, {}, FingerprintDevice::Cuda),
                              Catch::Contains("head fingerprints on the GPU are unavailable: " + why));
        }
        const ComputedFingerprints asked = compute_head_fingerprints(session, {}, FingerprintDevice::Cpu);
        CHECK(asked.device == "cpu");
        identical(asked.fingerprints);
    }
    {
        const ScopedEnv env("ATTNSCOPE_FINGERPRINTS", "cpu");
        const ComputedFingerprints forced = compute_head_fingerprints(session);
        CHECK(forced.device == "cpu");
        CHECK(forced.cpu_reason == "ATTNSCOPE_FINGERPRINTS=cpu");
        identical(forced.fingerprints);
    }
    {
        const ScopedEnv env("ATTNSCOPE_FINGERPRINTS", "gpu");
        CHECK_THROWS_WITH(compute_head_fingerprints(session),
                          Catch::Contains("ATTNSCOPE_FINGERPRINTS must be cpu, cuda or auto (got 'gpu')"));
    }
    Session empty;
    CHECK_THROWS_WITH(compute_head_fingerprints(empty), Catch::Contains("no captured attention"));
}

#ifdef ATTNSCOPE_HAVE_CUDA_KERNELS

namespace {
bool gpu_or_skip() {
    std::string why;
    if (cuda_fingerprints_available(&why)) return true;
    WARN("SKIPPED: no CUDA device: " << why);
    return false;
}
}  // namespace

TEST_CASE("head fingerprints on the GPU equal the CPU's", "[cuda][heads]") {
    if (!gpu_or_skip()) return;
    SECTION("crafted heads") {
        for (const Session& session : {crafted_kinds(), crafted_induction()})
            check_fingerprints(compute_head_fingerprints_cuda(session, {}), HeadFingerprints::compute(session), true);
    }
    SECTION("random attention: GQA, sliding windows, scalar and float4 key loads, a sample, local windows") {
        struct Case {
            int64_t n;
            int n_head, n_kv_head, head_dim, window, max_rows, local_window;
        };
        for (const Case& c : {Case{300, 4, 2, 16, 0, 512, 8}, Case{300, 6, 2, 10, 40, 512, 8},
                              Case{1500, 9, 3, 64, 0, 200, 8}, Case{900, 4, 1, 36, 300, 512, 0},
                              Case{400, 4, 4, 12, 1, 512, 3}}) {
            INFO("n " << c.n << " heads " << c.n_head << "/" << c.n_kv_head << " dim " << c.head_dim << " window "
                      << c.window << " rows " << c.max_rows << " local " << c.local_window);
            const Session session = random_session(c.n, c.n_head, c.n_kv_head, c.head_dim, c.window, 21);
            FingerprintOptions options;
            options.max_rows = c.max_rows;
            options.local_window = c.local_window;
            const ComputedFingerprints gpu = compute_head_fingerprints(session, options, FingerprintDevice::Cuda);
            CHECK(gpu.device == "cuda");
            check_fingerprints(gpu.fingerprints, HeadFingerprints::compute(session, options), false);
        }
    }
}

TEST_CASE("the fingerprint kernel writes every field of every record (NaN-poisoned buffers)", "[cuda][heads]") {
    if (!gpu_or_skip()) return;
    const Session session = random_session(500, 6, 2, 20, 64, 33);
    const CaptureStore& store = *session.capture;
    const CaptureShape& shape = store.shape();
    const int layer = 1, local_window = 8;
    const std::vector<int64_t> queries = sample_query_rows(session.positions(), 120);
    const int64_t rows = int64_t(queries.size()), positions = queries.back() + 1, hd = shape.head_dim;
    std::vector<float> q, lse, k(store.k(layer, 0), store.k(layer, 0) + positions * shape.n_kv_head * hd);
    for (int64_t query : queries) {
        q.insert(q.end(), store.q(layer, query), store.q(layer, query) + shape.n_head * hd);
        for (int head = 0; head < shape.n_head; ++head) lse.push_back(store.lse(layer, query, head));
    }
    std::vector<int32_t> tokens;
    for (int64_t j = 0; j < positions; ++j) tokens.push_back(session.tokens[size_t(j)].id);
    const auto device_copy = [](const auto& host) {
        gpu::DeviceBuffer buffer(host.size() * sizeof(host[0]), "test input");
        CUDA_CHECK(cudaMemcpy(buffer.get(), host.data(), buffer.bytes(), cudaMemcpyHostToDevice));
        return buffer;
    };
    const gpu::DeviceBuffer d_q = device_copy(q), d_lse = device_copy(lse), d_k = device_copy(k),
                            d_tokens = device_copy(tokens), d_queries = device_copy(queries);
    const size_t fields = size_t(rows) * shape.n_head * gpu::kFingerprintFields;
    gpu::DeviceBuffer d_scratch(size_t(rows) * shape.n_head * positions * sizeof(float), "scratch");
    gpu::DeviceBuffer d_out(fields * sizeof(double), "records");
    CUDA_CHECK(cudaMemset(d_scratch.get(), 0xff, d_scratch.bytes()));  // NaN everywhere
    CUDA_CHECK(cudaMemset(d_out.get(), 0xff, d_out.bytes()));
    gpu::FingerprintInputs in;
    in.q = d_q.as<float>();
    in.lse = d_lse.as<float>();
    in.queries = d_queries.as<int64_t>();
    in.rows = rows;
    in.k = d_k.as<float>();
    in.tokens = d_tokens.as<int32_t>();
    in.positions = positions;
    in.n_head = shape.n_head;
    in.n_kv_head = shape.n_kv_head;
    in.head_dim = shape.head_dim;
    in.scale = shape.scale;
    in.sliding_window = shape.sliding_window;
    in.local_window = local_window;
    gpu::head_fingerprint_rows(in, d_scratch.as<float>(), positions, d_out.as<double>());
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> records(fields);
    CUDA_CHECK(cudaMemcpy(records.data(), d_out.get(), d_out.bytes(), cudaMemcpyDeviceToHost));
    for (int head = 0; head < shape.n_head; ++head)
        for (int64_t r = 0; r < rows; ++r) {
            const double* record = records.data() + (int64_t(head) * rows + r) * gpu::kFingerprintFields;
            const FingerprintRow want = lab::emulate_fingerprint_row(store, session.tokens, layer, head, queries[size_t(r)],
                                                                     local_window);
            INFO("head " << head << " query " << queries[size_t(r)]);
            for (int f = 0; f < gpu::kFingerprintFields; ++f) {
                INFO("field " << f);
                REQUIRE(std::isfinite(record[f]));
            }
            CHECK(close(record[gpu::kFpTotal], want.total));
            CHECK(close(std::max(record[gpu::kFpSurprisal], 0.0) / std::numbers::ln2, want.entropy_bits));
            CHECK(close(record[gpu::kFpDistance], want.distance));
            CHECK(close(record[gpu::kFpSink], want.sink));
            CHECK(close(record[gpu::kFpPrevious], want.previous));
            CHECK(close(record[gpu::kFpInduction], want.induction));
            CHECK((record[gpu::kFpHasEarlier] != 0) == want.has_earlier);
            CHECK(close(record[gpu::kFpLocal], want.local));
            CHECK(record[gpu::kFpKeys90] == double(want.keys_for_90));
            for (int64_t d = 0; d <= std::min<int64_t>(gpu::kFingerprintMaxOffset, queries[size_t(r)] - 1); ++d)
                CHECK(close(record[gpu::kFpOffset0 + d], want.offset_mass[size_t(d)]));
        }
    CHECK_THROWS_WITH(gpu::head_fingerprint_rows(in, d_scratch.as<float>(), positions - 1, d_out.as<double>()),
                      Catch::Contains("scratch rows"));
}

#else

TEST_CASE("head fingerprints on the GPU equal the CPU's", "[cuda][heads]") {
    WARN("SKIPPED: this build has no CUDA kernels (nvcc was not found at configure time)");
}

#endif
