// The elementwise / normalisation kernels (kernels/*.cuh) against their CPU twins
// (engine/ops_cpu.h) on fresh random inputs: outputs poisoned with NaN before every launch,
// relative error ‖gpu − cpu‖ / ‖cpu‖ within fp32 or bf16 bounds, never NaN. The GPU tests are
// compiled wherever nvcc is found and skip with a printed reason where no device is present.
// The CPU twins themselves are checked on known values in "[ops]", which always runs.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/model.h"
#include "engine/ops_cpu.h"

using namespace attn;

// ---- CPU twins on known values (always runs) --------------------------------------------------

TEST_CASE("ops_cpu: the CPU twins on known values", "[ops]") {
    SECTION("rms_norm of a known vector") {
        const float x[2] = {3.f, 4.f}, w[2] = {1.f, 2.f};
        float y[2];
        ops::rms_norm(x, w, 2, 0.0, y);  // rms = sqrt(12.5)
        CHECK(y[0] == Approx(3.0 / std::sqrt(12.5)).epsilon(1e-6));
        CHECK(y[1] == Approx(8.0 / std::sqrt(12.5)).epsilon(1e-6));
    }
    SECTION("layer_norm of a known vector") {
        const float x[4] = {1.f, 2.f, 3.f, 4.f}, w[4] = {1.f, 1.f, 1.f, 2.f}, b[4] = {0.f, 0.f, 1.f, 0.f};
        float y[4];
        ops::layer_norm(x, w, b, 4, 0.0, y);  // mean 2.5, variance 1.25
        const double s = 1.0 / std::sqrt(1.25);
        CHECK(y[0] == Approx(-1.5 * s).epsilon(1e-6));
        CHECK(y[1] == Approx(-0.5 * s).epsilon(1e-6));
        CHECK(y[2] == Approx(0.5 * s + 1.0).epsilon(1e-6));
        CHECK(y[3] == Approx(2.0 * 1.5 * s).epsilon(1e-6));
    }
    SECTION("silu, swiglu and gelu_tanh") {
        CHECK(ops::silu(0.f) == 0.f);
        CHECK(ops::silu(1.f) == Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
        CHECK(ops::gelu_tanh(0.f) == 0.f);
        CHECK(ops::gelu_tanh(10.f) == Approx(10.0).epsilon(1e-6));
        CHECK(ops::gelu_tanh(1.f) == Approx(0.8411919906).epsilon(1e-6));
        const float gate[3] = {0.f, 1.f, -2.f}, up[3] = {5.f, 2.f, 3.f};
        float out[3];
        ops::swiglu(gate, up, 3, out);
        CHECK(out[0] == 0.f);
        CHECK(out[1] == Approx(2.0 * ops::silu(1.f)));
        CHECK(out[2] == Approx(3.0 * ops::silu(-2.f)));
        float g[2] = {0.f, 1.f};
        ops::gelu_tanh_inplace(g, 2);
        CHECK(g[1] == ops::gelu_tanh(1.f));
    }
    SECTION("embedding copies rows; add_inplace adds") {
        const float table[6] = {0, 1, 10, 11, 20, 21};
        const int32_t ids[3] = {2, 0, 2};
        float out[6];
        ops::embedding(table, ids, 3, 2, out);
        CHECK(std::vector<float>(out, out + 6) == std::vector<float>{20, 21, 0, 1, 20, 21});
        ops::add_inplace(out, table, 6);
        CHECK(std::vector<float>(out, out + 6) == std::vector<float>{20, 22, 10, 12, 40, 42});
    }
    SECTION("rope: identity at position 0, preserves norms, scores depend on relative position only") {
        ModelConfig c;
        c.head_dim = 64;
        c.rope_theta = 100000.0;
        const std::vector<float> inv = ops::rope_inverse_frequencies(c, {});
        REQUIRE(inv.size() == 32);
        CHECK(inv[0] == 1.0f);
        std::mt19937 rng(7);
        std::normal_distribution<float> normal;
        for (RopePairing pairing : {RopePairing::Interleaved, RopePairing::HalfSplit}) {
            std::vector<float> q(64), k(64);
            for (float& v : q) v = normal(rng);
            for (float& v : k) v = normal(rng);
            auto rotated = [&](std::vector<float> v, int64_t pos) {
                ops::rope(v.data(), 1, 1, 64, pos, inv.data(), pairing);
                return v;
            };
            auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
                double s = 0;
                for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
                return s;
            };
            CHECK(rotated(q, 0) == q);
            const std::vector<float> q9 = rotated(q, 9);
            CHECK(q9 != q);
            CHECK(std::sqrt(dot(q9, q9)) == Approx(std::sqrt(dot(q, q))).epsilon(1e-5));
            CHECK(dot(rotated(q, 17), rotated(k, 5)) == Approx(dot(rotated(q, 112), rotated(k, 100))).epsilon(1e-4).margin(1e-3));
            // Two rows, two heads: row r is at position pos0 + r, each head rotated alike.
            std::vector<float> block(4 * 64);
            for (int i = 0; i < 4; ++i) std::copy(q.begin(), q.end(), block.begin() + i * 64);
            ops::rope(block.data(), 2, 2, 64, 9, inv.data(), pairing);
            CHECK(std::vector<float>(block.begin() + 64, block.begin() + 128) == q9);
            CHECK(std::vector<float>(block.begin() + 128, block.begin() + 192) == rotated(q, 10));
        }
    }
    SECTION("linear: Y = X Wt + b") {
        const float x[4] = {1, 2, 3, 4};            // {2 rows, 2 in}
        const float w[6] = {1, 0, 0, 1, 1, 1};      // {3 out, 2 in}
        const float b[3] = {0.5f, 0.f, -1.f};
        float y[6];
        ops::linear(x, 2, 2, w, b, 3, y);
        CHECK(std::vector<float>(y, y + 6) == std::vector<float>{1.5f, 2, 2, 3.5f, 4, 6});
        ops::linear(x, 1, 2, w, nullptr, 3, y);
        CHECK(std::vector<float>(y, y + 3) == std::vector<float>{1, 2, 3});
    }
}

#ifdef ATTNSCOPE_HAVE_CUDA_KERNELS

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/add.cuh"
#include "kernels/cuda_check.h"
#include "kernels/embedding.cuh"
#include "kernels/gelu.cuh"
#include "kernels/gemm.cuh"
#include "kernels/layer_norm.cuh"
#include "kernels/rms_norm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"

namespace {

using bf16 = __nv_bfloat16;

#define REQUIRE_CUDA_OR_SKIP()                                                   \
    do {                                                                         \
        std::string why_not_;                                                    \
        if (!attn::gpu::cuda_device_available(&why_not_)) {                      \
            WARN("SKIPPED: no CUDA device: " << why_not_);                       \
            return;                                                              \
        }                                                                        \
    } while (0)

constexpr double kFp32Bound = 1e-5;  // fp32 in, fp32 out: only summation order / libm ulps differ
constexpr double kBf16Bound = 1e-2;  // bf16 output rounding (2^-9 relative at worst per element)

// Host bf16, round to nearest even (the device's __float2bfloat16_rn).
uint16_t to_bf16_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}
float from_bf16_bits(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// Rounds values to bf16-representable floats, so the GPU's bf16 inputs and the CPU twin's fp32
// inputs are the same numbers and only the kernel's own error is measured.
std::vector<float> bf16_rounded(std::vector<float> v) {
    for (float& f : v) f = from_bf16_bits(to_bf16_bits(f));
    return v;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.f, float offset = 0.f) {
    std::normal_distribution<float> normal(offset, scale);
    std::vector<float> v(n);
    for (float& f : v) f = normal(rng);
    return v;
}

struct Stream {
    cudaStream_t s = nullptr;
    Stream() { CUDA_CHECK(cudaStreamCreate(&s)); }
    ~Stream() { (void)cudaStreamDestroy(s); }
    void sync() const { CUDA_CHECK(cudaStreamSynchronize(s)); }
};

// A device allocation holding n fp32 or bf16 values.
struct Dev {
    void* p = nullptr;
    size_t n = 0;
    bool is_bf16 = false;
    Dev(size_t count, bool bf) : n(count), is_bf16(bf) { CUDA_CHECK(cudaMalloc(&p, bytes())); }
    Dev(Dev&& o) noexcept : p(o.p), n(o.n), is_bf16(o.is_bf16) { o.p = nullptr; }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
    ~Dev() { (void)cudaFree(p); }
    size_t bytes() const { return n * (is_bf16 ? 2 : 4); }
    float* f32() const { return static_cast<float*>(p); }
    bf16* b16() const { return static_cast<bf16*>(p); }
    void poison() const { CUDA_CHECK(cudaMemset(p, 0xff, bytes())); }  // all-ones: NaN in fp32 and bf16
    void upload(const std::vector<float>& v) const {
        REQUIRE(v.size() == n);
        if (!is_bf16) {
            CUDA_CHECK(cudaMemcpy(p, v.data(), bytes(), cudaMemcpyHostToDevice));
            return;
        }
        std::vector<uint16_t> bits(n);
        for (size_t i = 0; i < n; ++i) bits[i] = to_bf16_bits(v[i]);
        CUDA_CHECK(cudaMemcpy(p, bits.data(), bytes(), cudaMemcpyHostToDevice));
    }
    std::vector<float> download() const {
        CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<float> v(n);
        if (!is_bf16) {
            CUDA_CHECK(cudaMemcpy(v.data(), p, bytes(), cudaMemcpyDeviceToHost));
            return v;
        }
        std::vector<uint16_t> bits(n);
        CUDA_CHECK(cudaMemcpy(bits.data(), p, bytes(), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; ++i) v[i] = from_bf16_bits(bits[i]);
        return v;
    }
};

Dev f32_dev(const std::vector<float>& v) {
    Dev d(v.size(), false);
    d.upload(v);
    return d;
}
Dev bf16_dev(const std::vector<float>& v) {
    Dev d(v.size(), true);
    d.upload(v);
    return d;
}

// ‖got − want‖ / ‖want‖, failing on any NaN/Inf in got (unwritten poisoned elements show up here).
double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
    REQUIRE(got.size() == want.size());
    double diff = 0, norm = 0;
    size_t non_finite = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) ++non_finite;
        diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
        norm += double(want[i]) * want[i];
    }
    INFO(non_finite << " of " << got.size() << " outputs are NaN/Inf (unwritten or overflowed)");
    REQUIRE(non_finite == 0);
    if (norm == 0) return std::sqrt(diff);
    return std::sqrt(diff / norm);
}

#define CHECK_REL(got, want, bound)                        \
    do {                                                   \
        const double rel_ = relative_error((got), (want)); \
        INFO("relative error " << rel_);                   \
        CHECK(rel_ <= (bound));                            \
    } while (0)

}  // namespace

TEST_CASE("cuda: device availability reports a reason", "[cuda]") {
    std::string why_not;
    const bool available = gpu::cuda_device_available(&why_not);
    if (!available) {
        CHECK_FALSE(why_not.empty());
        WARN("SKIPPED: no CUDA device: " << why_not);
    } else {
        CHECK(why_not.empty());
    }
}

TEST_CASE("cuda: rms_norm matches the CPU twin", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    std::mt19937 rng(1);
    const float eps = 1e-5f;
    for (int64_t d : {64, 576, 2049}) {
        const int64_t rows = 7;
        INFO("d = " << d);
        const std::vector<float> x = random_vector(rows * d, rng, 2.f), w = random_vector(d, rng, 0.1f, 1.f);
        auto cpu = [&](const std::vector<float>& xs, const std::vector<float>& ws) {
            std::vector<float> y(rows * d);
            for (int64_t r = 0; r < rows; ++r) ops::rms_norm(&xs[r * d], ws.data(), d, eps, &y[r * d]);
            return y;
        };
        {  // fp32
            Dev dx = f32_dev(x), dw = f32_dev(w), dy(rows * d, false);
            dy.poison();
            gpu::rms_norm(dx.f32(), dw.f32(), dy.f32(), rows, d, eps, stream.s);
            CHECK_REL(dy.download(), cpu(x, w), kFp32Bound);
        }
        const std::vector<float> xb = bf16_rounded(x), wb = bf16_rounded(w);
        {  // bf16 -> bf16
            Dev dx = bf16_dev(xb), dw = bf16_dev(wb), dy(rows * d, true);
            dy.poison();
            gpu::rms_norm(dx.b16(), dw.b16(), dy.b16(), rows, d, eps, stream.s);
            CHECK_REL(dy.download(), cpu(xb, wb), kBf16Bound);
        }
        {  // fp32 residual -> bf16
            Dev dx = f32_dev(x), dw = bf16_dev(wb), dy(rows * d, true);
            dy.poison();
            gpu::rms_norm(dx.f32(), dw.b16(), dy.b16(), rows, d, eps, stream.s);
            CHECK_REL(dy.download(), cpu(x, wb), kBf16Bound);
        }
    }
}

TEST_CASE("cuda: layer_norm matches the CPU twin", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    std::mt19937 rng(2);
    const float eps = 1e-5f;
    for (int64_t d : {64, 768, 1025}) {
        const int64_t rows = 5;
        INFO("d = " << d);
        const std::vector<float> x = random_vector(rows * d, rng, 2.f, 3.f), w = random_vector(d, rng, 0.1f, 1.f),
                                 b = random_vector(d, rng, 0.1f);
        auto cpu = [&](const std::vector<float>& xs, const std::vector<float>& ws, const std::vector<float>& bs) {
            std::vector<float> y(rows * d);
            for (int64_t r = 0; r < rows; ++r) ops::layer_norm(&xs[r * d], ws.data(), bs.data(), d, eps, &y[r * d]);
            return y;
        };
        {
            Dev dx = f32_dev(x), dw = f32_dev(w), db = f32_dev(b), dy(rows * d, false);
            dy.poison();
            gpu::layer_norm(dx.f32(), dw.f32(), db.f32(), dy.f32(), rows, d, eps, stream.s);
            CHECK_REL(dy.download(), cpu(x, w, b), kFp32Bound);
        }
        const std::vector<float> xb = bf16_rounded(x), wb = bf16_rounded(w), bb = bf16_rounded(b);
        {
            Dev dx = bf16_dev(xb), dw = bf16_dev(wb), db = bf16_dev(bb), dy(rows * d, true);
            dy.poison();
            gpu::layer_norm(dx.b16(), dw.b16(), db.b16(), dy.b16(), rows, d, eps, stream.s);
            CHECK_REL(dy.download(), cpu(xb, wb, bb), kBf16Bound);
        }
        {
            Dev dx = f32_dev(x), dw = bf16_dev(wb), db = bf16_dev(bb), dy(rows * d, true);
            dy.poison();
            gpu::layer_norm(dx.f32(), dw.b16(), db.b16(), dy.b16(), rows, d, eps, stream.s);
            CHECK_REL(dy.download(), cpu(x, wb, bb), kBf16Bound);
        }
    }
}

TEST_CASE("cuda: rope matches the CPU twin", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    std::mt19937 rng(3);
    for (int head_dim : {64, 128}) {
        ModelConfig c;
        c.head_dim = head_dim;
        c.rope_theta = 100000.0;
        const std::vector<float> inv = ops::rope_inverse_frequencies(c, {});
        Dev dinv = f32_dev(inv);
        for (RopePairing pairing : {RopePairing::Interleaved, RopePairing::HalfSplit}) {
            const gpu::RopeLayout layout =
                pairing == RopePairing::Interleaved ? gpu::RopeLayout::Interleaved : gpu::RopeLayout::HalfSplit;
            for (int64_t pos0 : {int64_t(0), int64_t(1000), int64_t(49000)}) {
                const int64_t rows = 37;
                const int heads = 3;
                INFO("head_dim " << head_dim << ", pairing " << int(pairing) << ", pos0 " << pos0);
                const std::vector<float> x = random_vector(rows * heads * head_dim, rng);
                {
                    std::vector<float> want = x;
                    ops::rope(want.data(), rows, heads, head_dim, pos0, inv.data(), pairing);
                    Dev dx = f32_dev(x);
                    gpu::rope(dx.f32(), rows, heads, head_dim, pos0, dinv.f32(), layout, stream.s);
                    CHECK_REL(dx.download(), want, kFp32Bound);
                }
                {
                    std::vector<float> want = bf16_rounded(x);
                    Dev dx = bf16_dev(want);
                    ops::rope(want.data(), rows, heads, head_dim, pos0, inv.data(), pairing);
                    gpu::rope(dx.b16(), rows, heads, head_dim, pos0, dinv.f32(), layout, stream.s);
                    CHECK_REL(dx.download(), want, kBf16Bound);
                }
            }
        }
    }
}

TEST_CASE("cuda: swiglu and gelu_tanh match the CPU twins", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    std::mt19937 rng(4);
    const int64_t n = 3 * 1536 + 7;
    const std::vector<float> gate = random_vector(n, rng, 3.f), up = random_vector(n, rng, 2.f);
    SECTION("swiglu") {
        std::vector<float> want(n);
        ops::swiglu(gate.data(), up.data(), n, want.data());
        {
            Dev dg = f32_dev(gate), du = f32_dev(up), dy(n, false);
            dy.poison();
            gpu::swiglu(dg.f32(), du.f32(), dy.f32(), n, stream.s);
            CHECK_REL(dy.download(), want, kFp32Bound);
        }
        const std::vector<float> gb = bf16_rounded(gate), ub = bf16_rounded(up);
        ops::swiglu(gb.data(), ub.data(), n, want.data());
        Dev dg = bf16_dev(gb), du = bf16_dev(ub), dy(n, true);
        dy.poison();
        gpu::swiglu(dg.b16(), du.b16(), dy.b16(), n, stream.s);
        CHECK_REL(dy.download(), want, kBf16Bound);
        gpu::swiglu(dg.b16(), du.b16(), du.b16(), n, stream.s);  // in place, as the backend uses it
        CHECK_REL(du.download(), want, kBf16Bound);
    }
    SECTION("gelu_tanh") {
        std::vector<float> want = gate;
        ops::gelu_tanh_inplace(want.data(), n);
        {
            Dev dx = f32_dev(gate), dy(n, false);
            dy.poison();
            gpu::gelu_tanh(dx.f32(), dy.f32(), n, stream.s);
            CHECK_REL(dy.download(), want, kFp32Bound);
        }
        want = bf16_rounded(gate);
        Dev dx = bf16_dev(want), dy(n, true);
        ops::gelu_tanh_inplace(want.data(), n);
        dy.poison();
        gpu::gelu_tanh(dx.b16(), dy.b16(), n, stream.s);
        CHECK_REL(dy.download(), want, kBf16Bound);
    }
}

TEST_CASE("cuda: residual adds and bias match the CPU twins", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    std::mt19937 rng(5);
    const int64_t rows = 9, cols = 577, n = rows * cols;
    const std::vector<float> a = random_vector(n, rng), b = random_vector(n, rng), bias = random_vector(cols, rng);
    SECTION("add") {
        std::vector<float> want = a;
        ops::add_inplace(want.data(), b.data(), n);
        {
            Dev da = f32_dev(a), db = f32_dev(b), dy(n, false);
            dy.poison();
            gpu::add(da.f32(), db.f32(), dy.f32(), n, stream.s);
            CHECK_REL(dy.download(), want, kFp32Bound);
        }
        const std::vector<float> bb = bf16_rounded(b);
        {  // fp32 residual += bf16 branch, in place
            want = a;
            ops::add_inplace(want.data(), bb.data(), n);
            Dev da = f32_dev(a), db = bf16_dev(bb);
            gpu::add(da.f32(), db.b16(), da.f32(), n, stream.s);
            CHECK_REL(da.download(), want, kFp32Bound);
        }
        {
            const std::vector<float> ab = bf16_rounded(a);
            want = ab;
            ops::add_inplace(want.data(), bb.data(), n);
            Dev da = bf16_dev(ab), db = bf16_dev(bb), dy(n, true);
            dy.poison();
            gpu::add(da.b16(), db.b16(), dy.b16(), n, stream.s);
            CHECK_REL(dy.download(), want, kBf16Bound);
        }
    }
    SECTION("add_bias") {
        std::vector<float> want = a;
        for (int64_t r = 0; r < rows; ++r) ops::add_inplace(&want[r * cols], bias.data(), cols);
        Dev dy = f32_dev(a), dbias = f32_dev(bias);
        gpu::add_bias(dy.f32(), dbias.f32(), rows, cols, stream.s);
        CHECK_REL(dy.download(), want, kFp32Bound);
        const std::vector<float> ab = bf16_rounded(a), biasb = bf16_rounded(bias);
        want = ab;
        for (int64_t r = 0; r < rows; ++r) ops::add_inplace(&want[r * cols], biasb.data(), cols);
        Dev dyb = bf16_dev(ab), dbiasb = bf16_dev(biasb);
        gpu::add_bias(dyb.b16(), dbiasb.b16(), rows, cols, stream.s);
        CHECK_REL(dyb.download(), want, kBf16Bound);
    }
}

TEST_CASE("cuda: embedding matches the CPU twin", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    std::mt19937 rng(6);
    const int64_t vocab = 101, d = 96, n = 33, positions = 64, pos0 = 20;
    const std::vector<float> table = random_vector(vocab * d, rng), pos_table = random_vector(positions * d, rng);
    std::vector<int32_t> ids(n);
    std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab - 1));
    for (int32_t& id : ids) id = pick(rng);
    int32_t* dids = nullptr;
    CUDA_CHECK(cudaMalloc(&dids, n * sizeof(int32_t)));
    CUDA_CHECK(cudaMemcpy(dids, ids.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice));

    std::vector<float> want(n * d);
    ops::embedding(table.data(), ids.data(), n, d, want.data());
    {  // fp32: a copy, exact
        Dev dt = f32_dev(table), dy(n * d, false);
        dy.poison();
        gpu::embedding(dt.f32(), nullptr, dids, n, vocab, d, 0, dy.f32(), stream.s);
        CHECK(relative_error(dy.download(), want) == 0.0);
    }
    const std::vector<float> tb = bf16_rounded(table), pb = bf16_rounded(pos_table);
    ops::embedding(tb.data(), ids.data(), n, d, want.data());
    {  // bf16 -> bf16 without positions: a copy, exact
        Dev dt = bf16_dev(tb), dy(n * d, true);
        dy.poison();
        gpu::embedding(dt.b16(), nullptr, dids, n, vocab, d, 0, dy.b16(), stream.s);
        CHECK(relative_error(dy.download(), want) == 0.0);
    }
    for (int64_t t = 0; t < n; ++t) ops::add_inplace(&want[t * d], &pb[(pos0 + t) * d], d);
    {  // GPT-2 learned positions, bf16 weights into an fp32 residual stream: fp32 sum, as the CPU
        Dev dt = bf16_dev(tb), dp = bf16_dev(pb), dy(n * d, false);
        dy.poison();
        gpu::embedding(dt.b16(), dp.b16(), dids, n, vocab, d, pos0, dy.f32(), stream.s);
        CHECK_REL(dy.download(), want, kFp32Bound);
        Dev dyb(n * d, true);
        dyb.poison();
        gpu::embedding(dt.b16(), dp.b16(), dids, n, vocab, d, pos0, dyb.b16(), stream.s);
        CHECK_REL(dyb.download(), want, kBf16Bound);
    }
    (void)cudaFree(dids);
}

TEST_CASE("cuda: cuBLAS linear (Y = X Wt) matches the CPU twin", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    Stream stream;
    gpu::CublasHandle cublas;
    std::mt19937 rng(7);
    const int64_t in = 576, out = 200;
    for (int64_t rows : {1, 37, 130}) {
        INFO("rows = " << rows);
        const std::vector<float> x = bf16_rounded(random_vector(rows * in, rng)),
                                 w = bf16_rounded(random_vector(out * in, rng, 0.05f)),
                                 y0 = random_vector(rows * out, rng);
        std::vector<float> want(rows * out);
        ops::linear(x.data(), rows, in, w.data(), nullptr, out, want.data());
        Dev dx = bf16_dev(x), dw = bf16_dev(w);
        {  // fp32 out: bf16 products are exact in fp32, only the summation order differs
            Dev dy(rows * out, false);
            dy.poison();
            gpu::linear(cublas, dx.b16(), rows, in, dw.b16(), out, dy.f32(), stream.s);
            CHECK_REL(dy.download(), want, 1e-4);
        }
        {
            Dev dy(rows * out, true);
            dy.poison();
            gpu::linear(cublas, dx.b16(), rows, in, dw.b16(), out, dy.b16(), stream.s);
            CHECK_REL(dy.download(), want, kBf16Bound);
        }
        {  // accumulate: Y = X Wt + Y (residual fused into the GEMM)
            std::vector<float> acc = y0;
            ops::add_inplace(acc.data(), want.data(), rows * out);
            Dev dy = f32_dev(y0);
            gpu::linear(cublas, dx.b16(), rows, in, dw.b16(), out, dy.f32(), stream.s, true);
            CHECK_REL(dy.download(), acc, 1e-4);
        }
    }
}

TEST_CASE("cuda: errors carry the call and file:line", "[cuda]") {
    REQUIRE_CUDA_OR_SKIP();
    try {
        void* p = nullptr;
        CUDA_CHECK(cudaMalloc(&p, size_t(1) << 62));  // 4 EiB: cudaErrorMemoryAllocation, not sticky
        (void)cudaFree(p);
        FAIL("an impossible cudaMalloc did not throw");
    } catch (const Error& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK(what.find("cudaMalloc") != std::string::npos);
        CHECK(what.find("cudaErrorMemoryAllocation") != std::string::npos);
        CHECK(what.find("test_cuda_ops.cpp:") != std::string::npos);
    }
    (void)cudaGetLastError();
}

#endif  // ATTNSCOPE_HAVE_CUDA_KERNELS
