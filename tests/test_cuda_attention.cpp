// Parity of the CUDA attention kernels (kernels/flash_attention, decode_attention,
// attention_tiles) with their CPU twins on fresh random inputs. The reference used here is a
// small double-precision implementation of P = exp(scale·q·k − LSE); the first test (always run,
// GPU or not) checks that reference against CpuTileSource and CaptureStore's overview, so the GPU
// tests compare with something that is itself verified. GPU tests print
// "SKIPPED: no CUDA device: <reason>" and return where no device is usable.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/capture_store.h"
#include "engine/tile_source.h"

#ifdef ATTNSCOPE_HAVE_CUDA_KERNELS
#include "kernels/attention_tiles.cuh"
#include "kernels/decode_attention.cuh"
#include "kernels/flash_attention.cuh"
#endif

using namespace attn;

namespace {

// ---------------------------------------------------------------- CPU reference (double)

struct RefShape {
    int n_head = 0, n_kv_head = 0, head_dim = 0;
    float scale = 0.f;
    int window = 0;
    int kv_of(int h) const { return h / (n_head / n_kv_head); }
    bool visible(int64_t i, int64_t j) const { return j <= i && (window <= 0 || i - j < window); }
};

constexpr int64_t kOv = 128;
int64_t tri(int64_t qb, int64_t kb) { return qb * (qb + 1) / 2 + kb; }
int64_t tri_size(int64_t positions) {
    const int64_t blocks = (positions + kOv - 1) / kOv;
    return blocks * (blocks + 1) / 2;
}

double dot(const float* a, const float* b, int n) {
    double s = 0;
    for (int d = 0; d < n; ++d) s += double(a[d]) * double(b[d]);
    return s;
}

// Scores of query i (positions indexing q_all) over keys 0..i: exact LSE and probabilities.
struct RefRow {
    double lse;
    std::vector<double> p;  // [i + 1], 0 where masked
};
RefRow ref_row(const RefShape& s, const float* q_row, const float* k, int64_t i, int h) {
    const int D = s.head_dim, kvh = s.kv_of(h);
    RefRow r;
    r.p.assign(size_t(i + 1), 0.0);
    double m = -INFINITY;
    std::vector<double> sc(size_t(i + 1), -INFINITY);
    for (int64_t j = 0; j <= i; ++j)
        if (s.visible(i, j)) {
            sc[j] = double(s.scale) * dot(q_row, k + (j * s.n_kv_head + kvh) * D, D);
            m = std::max(m, sc[j]);
        }
    double sum = 0;
    for (int64_t j = 0; j <= i; ++j)
        if (s.visible(i, j)) sum += std::exp(sc[j] - m);
    r.lse = m + std::log(sum);
    for (int64_t j = 0; j <= i; ++j)
        if (s.visible(i, j)) r.p[j] = std::exp(sc[j] - r.lse);
    return r;
}

struct RefAttention {
    std::vector<double> o, lse;             // rows [pos0, n): [row, head, d], [row, head]
    std::vector<double> ov_sum, ov_max;     // [head][tri_size(n)], rows [pos0, n) only
};
// q: [n, n_head, D] for all positions; k, v: [n, n_kv_head, D].
RefAttention ref_attention(const RefShape& s, const std::vector<float>& q, const std::vector<float>& k,
                           const std::vector<float>& v, int64_t pos0, int64_t n) {
    const int D = s.head_dim, nh = s.n_head;
    RefAttention out;
    out.o.assign(size_t((n - pos0) * nh * D), 0.0);
    out.lse.assign(size_t((n - pos0) * nh), 0.0);
    const int64_t ts = tri_size(n);
    out.ov_sum.assign(size_t(nh * ts), 0.0);
    out.ov_max.assign(size_t(nh * ts), 0.0);
    for (int h = 0; h < nh; ++h) {
        const int kvh = s.kv_of(h);
        for (int64_t i = pos0; i < n; ++i) {
            const RefRow r = ref_row(s, &q[(i * nh + h) * D], k.data(), i, h);
            out.lse[(i - pos0) * nh + h] = r.lse;
            double* o = &out.o[((i - pos0) * nh + h) * D];
            for (int64_t j = 0; j <= i; ++j) {
                if (r.p[j] == 0.0) continue;
                const float* vr = &v[(j * s.n_kv_head + kvh) * D];
                for (int d = 0; d < D; ++d) o[d] += r.p[j] * vr[d];
                const int64_t idx = h * ts + tri(i / kOv, j / kOv);
                out.ov_sum[idx] += r.p[j];
                out.ov_max[idx] = std::max(out.ov_max[idx], r.p[j]);
            }
        }
    }
    return out;
}

struct RefTile {
    std::vector<double> sum, max;
};
// Exact tile from Q, K, LSE (the CpuTileSource contract): cells of 2^level tokens.
RefTile ref_tile(const RefShape& s, const std::vector<float>& q, const std::vector<float>& k,
                 const std::vector<float>& lse, int64_t n, int h, int level, int64_t tx, int64_t ty) {
    constexpr int E = 256;
    RefTile t;
    t.sum.assign(E * E, 0.0);
    t.max.assign(E * E, 0.0);
    const int64_t span = int64_t(E) << level;
    const int64_t q0 = ty * span, q1 = std::min(n, q0 + span), k0 = tx * span, k1 = std::min(n, k0 + span);
    const int D = s.head_dim, kvh = s.kv_of(h);
    for (int64_t i = q0; i < q1; ++i)
        for (int64_t j = k0; j < std::min(k1, i + 1); ++j) {
            if (!s.visible(i, j)) continue;
            const double p = std::exp(double(s.scale) * dot(&q[(i * s.n_head + h) * D], &k[(j * s.n_kv_head + kvh) * D], D) -
                                      double(lse[i * s.n_head + h]));
            const int64_t cell = ((i - q0) >> level) * E + ((j - k0) >> level);
            t.sum[cell] += p;
            t.max[cell] = std::max(t.max[cell], p);
        }
    return t;
}

// ---------------------------------------------------------------- helpers

template <typename A, typename B>
double rel_error(const A& a, const B& b) {
    REQUIRE(a.size() == b.size());
    double num = 0, den = 0;
    for (size_t e = 0; e < a.size(); ++e) {
        const double d = double(a[e]) - double(b[e]);
        num += d * d;
        den += double(b[e]) * double(b[e]);
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <typename A>
bool any_nan(const A& a) {
    return std::any_of(a.begin(), a.end(), [](auto x) { return std::isnan(double(x)); });
}

uint16_t to_bf16(float f) {  // round to nearest even
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}
float from_bf16(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Random values already representable in bf16 (so the CPU and GPU see identical inputs).
std::vector<float> random_bf16_values(size_t n, std::mt19937& rng, float sigma = 1.f) {
    std::normal_distribution<float> normal(0.f, sigma);
    std::vector<float> v(n);
    for (float& x : v) x = from_bf16(to_bf16(normal(rng)));
    return v;
}

struct RandomQKV {
    RefShape shape;
    int64_t n = 0;
    std::vector<float> q, k, v;
    RandomQKV(RefShape s, int64_t positions, uint32_t seed) : shape(s), n(positions) {
        std::mt19937 rng(seed);
        q = random_bf16_values(size_t(n * s.n_head * s.head_dim), rng, 1.5f);
        k = random_bf16_values(size_t(n * s.n_kv_head * s.head_dim), rng, 1.0f);
        v = random_bf16_values(size_t(n * s.n_kv_head * s.head_dim), rng, 1.0f);
        // A sink on key 0 so sums and maxes differ visibly across blocks.
        for (int kvh = 0; kvh < s.n_kv_head; ++kvh)
            for (int d = 0; d < s.head_dim; ++d) {
                float& x = k[size_t(kvh * s.head_dim + d)];
                x = from_bf16(to_bf16(x + 0.5f));
            }
    }
    // Exact fp32 LSE of every row (for the tile inputs).
    std::vector<float> lse() const {
        std::vector<float> out(size_t(n * shape.n_head));
        for (int64_t i = 0; i < n; ++i)
            for (int h = 0; h < shape.n_head; ++h)
                out[i * shape.n_head + h] = float(ref_row(shape, &q[(i * shape.n_head + h) * shape.head_dim], k.data(), i, h).lse);
        return out;
    }
};

std::unique_ptr<CaptureStore> fill_store(const RandomQKV& in, const std::vector<float>& lse) {
    CaptureShape cs{1, in.shape.n_head, in.shape.n_kv_head, in.shape.head_dim, in.shape.scale, in.shape.window};
    auto store = std::make_unique<CaptureStore>(cs);
    store->record_layer(0, 0, in.n, in.q.data(), in.k.data(), lse.data());
    return store;
}

}  // namespace

// Always runs: the reference above agrees with CpuTileSource and the CaptureStore overview.
TEST_CASE("cuda attention: the CPU reference agrees with CpuTileSource and the overview", "[cuda]") {
    for (int window : {0, 90}) {
        CAPTURE(window);
        const RefShape s{4, 2, 16, 0.25f, window};
        const RandomQKV in(s, 300, 11u + uint32_t(window));
        const std::vector<float> lse = in.lse();
        auto store = fill_store(in, lse);
        CpuTileSource tiles(*store, 1);
        for (int h : {0, 3}) {
            for (int64_t i : {int64_t(0), int64_t(130), int64_t(299)}) {
                const std::vector<float> row = tiles.row(0, h, i);
                const RefRow r = ref_row(s, &in.q[(i * s.n_head + h) * s.head_dim], in.k.data(), i, h);
                CHECK(rel_error(row, r.p) < 1e-5);
            }
            for (auto [level, tx, ty] : {std::tuple{0, 0, 0}, std::tuple{0, 0, 1}, std::tuple{1, 0, 0}, std::tuple{3, 0, 0}}) {
                CAPTURE(h, level, tx, ty);
                const Tile t = tiles.tile({0, h, level, tx, ty}, true);
                const RefTile r = ref_tile(s, in.q, in.k, lse, in.n, h, level, tx, ty);
                CHECK(rel_error(t.sum, r.sum) < 1e-5);
                CHECK(rel_error(t.max, r.max) < 1e-5);
            }
            const double m = tiles.mass(0, h, 10, 250, 5, 200);
            double ref_m = 0;
            for (int64_t i = 10; i < 250; ++i) {
                const RefRow r = ref_row(s, &in.q[(i * s.n_head + h) * s.head_dim], in.k.data(), i, h);
                for (int64_t j = 5; j < std::min<int64_t>(200, i + 1); ++j) ref_m += r.p[j];
            }
            CHECK(std::abs(m - ref_m) < 1e-4 * std::max(1.0, ref_m));
        }
        // Overview: CaptureStore rebuilt from Q, K, LSE vs the reference's single pass.
        rebuild_overview(*store, 1);
        const RefAttention ref = ref_attention(s, in.q, in.k, in.v, 0, in.n);
        const int64_t ts = tri_size(in.n);
        for (int h = 0; h < s.n_head; ++h) {
            std::vector<double> sums, maxes, rs, rm;
            for (int64_t qb = 0; qb < store->overview_blocks(); ++qb)
                for (int64_t kb = 0; kb <= qb; ++kb) {
                    sums.push_back(store->overview_sum(0, h, qb, kb));
                    maxes.push_back(store->overview_max(0, h, qb, kb));
                    rs.push_back(ref.ov_sum[h * ts + tri(qb, kb)]);
                    rm.push_back(ref.ov_max[h * ts + tri(qb, kb)]);
                }
            CHECK(rel_error(sums, rs) < 1e-5);
            CHECK(rel_error(maxes, rm) < 1e-5);
        }
    }
}

#ifdef ATTNSCOPE_HAVE_CUDA_KERNELS

namespace {

bool gpu_or_skip() {
    std::string why;
    if (gpu::attention_device_available(&why)) return true;
    WARN("SKIPPED: no CUDA device: " << why);
    return false;
}

struct DeviceBuffer {
    void* p = nullptr;
    size_t bytes = 0;
    explicit DeviceBuffer(size_t n) : p(gpu::dev::alloc(n)), bytes(n) {}
    ~DeviceBuffer() {
        try {
            gpu::dev::free(p);
        } catch (...) {
        }
    }
    DeviceBuffer(DeviceBuffer&& other) noexcept : p(other.p), bytes(other.bytes) { other.p = nullptr; }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(DeviceBuffer&&) = delete;
    template <typename T>
    T* as() const {
        return static_cast<T*>(p);
    }
};

DeviceBuffer upload_bf16(const std::vector<float>& v) {
    std::vector<uint16_t> h(v.size());
    for (size_t e = 0; e < v.size(); ++e) h[e] = to_bf16(v[e]);
    DeviceBuffer d(h.size() * 2);
    gpu::dev::copy_to_device(d.p, h.data(), h.size() * 2);
    return d;
}
DeviceBuffer upload_f32(const std::vector<float>& v) {
    DeviceBuffer d(v.size() * 4);
    gpu::dev::copy_to_device(d.p, v.data(), v.size() * 4);
    return d;
}
std::vector<float> download_f32(const DeviceBuffer& d, size_t n) {
    std::vector<float> h(n);
    gpu::dev::copy_to_host(h.data(), d.p, n * 4);
    return h;
}
std::vector<float> download_out(const DeviceBuffer& d, size_t n, gpu::OutType t) {
    if (t == gpu::OutType::F32) return download_f32(d, n);
    std::vector<uint16_t> h(n);
    gpu::dev::copy_to_host(h.data(), d.p, n * 2);
    std::vector<float> f(n);
    for (size_t e = 0; e < n; ++e) f[e] = from_bf16(h[e]);
    return f;
}

struct PrefillCase {
    RefShape shape;
    int64_t n;
    int64_t pos0;  // > 0: run as two chunks [0, pos0) and [pos0, n) into one overview
    gpu::OutType out;
    bool emit;
};

void run_prefill_case(const PrefillCase& c, uint32_t seed) {
    const RefShape& s = c.shape;
    const RandomQKV in(s, c.n, seed);
    const RefAttention ref = ref_attention(s, in.q, in.k, in.v, 0, c.n);
    const int D = s.head_dim, nh = s.n_head;
    const DeviceBuffer q = upload_bf16(in.q), k = upload_bf16(in.k), v = upload_bf16(in.v);
    const size_t out_bytes = c.out == gpu::OutType::F32 ? 4 : 2;
    const DeviceBuffer o(size_t(c.n) * nh * D * out_bytes), lse(size_t(c.n) * nh * 4);
    const int64_t ts = tri_size(c.n);
    const DeviceBuffer ov_sum(size_t(nh * ts) * 4), ov_max(size_t(nh * ts) * 4);
    gpu::dev::fill_nan(o.p, o.bytes);
    gpu::dev::fill_nan(lse.p, lse.bytes);
    if (c.emit) {
        gpu::dev::zero(ov_sum.p, ov_sum.bytes);
        gpu::dev::zero(ov_max.p, ov_max.bytes);
    } else {
        gpu::dev::fill_nan(ov_sum.p, ov_sum.bytes);  // must stay untouched
        gpu::dev::fill_nan(ov_max.p, ov_max.bytes);
    }
    std::vector<std::pair<int64_t, int64_t>> chunks;
    if (c.pos0 > 0) chunks = {{0, c.pos0}, {c.pos0, c.n}};
    else chunks = {{0, c.n}};
    for (auto [p0, p1] : chunks) {
        gpu::FlashAttentionParams a;
        a.q = static_cast<const char*>(q.p) + size_t(p0) * nh * D * 2;
        a.k = k.p;
        a.v = v.p;
        a.o = static_cast<char*>(o.p) + size_t(p0) * nh * D * out_bytes;
        a.lse = lse.as<float>() + p0 * nh;
        a.out_type = c.out;
        a.emit_overview = c.emit;
        a.overview_sum = c.emit ? ov_sum.as<float>() : nullptr;
        a.overview_max = c.emit ? ov_max.as<float>() : nullptr;
        a.overview_head_stride = ts;
        a.T = p1 - p0;
        a.pos0 = p0;
        a.T_kv = p1;
        a.n_head = nh;
        a.n_kv_head = s.n_kv_head;
        a.head_dim = D;
        a.scale = s.scale;
        a.sliding_window = s.window;
        const size_t ws = gpu::flash_attention_workspace_bytes(a);
        const DeviceBuffer work(ws);
        gpu::flash_attention_forward(a, work.p, ws);
        gpu::dev::synchronize();
    }
    const std::vector<float> o_h = download_out(o, size_t(c.n) * nh * D, c.out);
    const std::vector<float> lse_h = download_f32(lse, size_t(c.n) * nh);
    REQUIRE_FALSE(any_nan(o_h));
    REQUIRE_FALSE(any_nan(lse_h));
    CHECK(rel_error(o_h, ref.o) < 1e-2);
    double lse_err = 0;
    for (size_t e = 0; e < lse_h.size(); ++e) lse_err = std::max(lse_err, std::abs(double(lse_h[e]) - ref.lse[e]));
    CHECK(lse_err < 2e-3);
    const std::vector<float> s_h = download_f32(ov_sum, size_t(nh * ts)), m_h = download_f32(ov_max, size_t(nh * ts));
    if (c.emit) {
        REQUIRE_FALSE(any_nan(s_h));
        REQUIRE_FALSE(any_nan(m_h));
        CHECK(rel_error(s_h, ref.ov_sum) < 2e-3);
        CHECK(rel_error(m_h, ref.ov_max) < 2e-3);
        // Row mass is 1: Σ over a query block's row of key blocks = rows in the block.
        for (int h = 0; h < nh; ++h)
            for (int64_t qb = 0; qb * kOv < c.n; ++qb) {
                double total = 0;
                for (int64_t kb = 0; kb <= qb; ++kb) total += s_h[size_t(h * ts + tri(qb, kb))];
                CHECK(std::abs(total - double(std::min(kOv, c.n - qb * kOv))) < 1e-2 * kOv);
            }
    } else {
        CHECK(std::all_of(s_h.begin(), s_h.end(), [](float x) { return std::isnan(x); }));
        CHECK(std::all_of(m_h.begin(), m_h.end(), [](float x) { return std::isnan(x); }));
    }
}

}  // namespace

TEST_CASE("cuda attention: fused prefill matches the CPU (O, LSE, overview)", "[cuda]") {
    if (!gpu_or_skip()) return;
    const float s64 = 1.f / 8.f, s128 = 1.f / std::sqrt(128.f);
    SECTION("head_dim 64, GQA 4:2, T not a multiple of 128, bf16 out") {
        run_prefill_case({{4, 2, 64, s64, 0}, 300, 0, gpu::OutType::Bf16, true}, 1);
    }
    SECTION("head_dim 128, GQA 2:1, chunked prefill pos0 = 200, f32 out") {
        run_prefill_case({{2, 1, 128, s128, 0}, 333, 200, gpu::OutType::F32, true}, 2);
    }
    SECTION("head_dim 64, sliding window 100, pos0 = 77 (not tile aligned)") {
        run_prefill_case({{3, 3, 64, s64, 100}, 520, 77, gpu::OutType::F32, true}, 3);
    }
    SECTION("head_dim 128, sliding window 300, MHA") {
        run_prefill_case({{2, 2, 128, s128, 300}, 700, 0, gpu::OutType::Bf16, true}, 4);
    }
    SECTION("emission off leaves the overview untouched, O and LSE still right") {
        run_prefill_case({{4, 1, 64, s64, 0}, 200, 0, gpu::OutType::F32, false}, 5);
        run_prefill_case({{2, 1, 128, s128, 0}, 129, 64, gpu::OutType::Bf16, false}, 6);
    }
    SECTION("single token and tiny T") {
        run_prefill_case({{2, 1, 64, s64, 0}, 1, 0, gpu::OutType::F32, true}, 7);
        run_prefill_case({{2, 2, 128, s128, 0}, 17, 0, gpu::OutType::F32, true}, 8);
    }
}

TEST_CASE("cuda attention: split-K decode matches the CPU (O, LSE)", "[cuda]") {
    if (!gpu_or_skip()) return;
    struct Case {
        RefShape s;
        int64_t L;
        int splits;
        gpu::OutType out;
    };
    const Case cases[] = {
        {{4, 2, 64, 0.125f, 0}, 1000, 0, gpu::OutType::F32},
        {{4, 2, 64, 0.125f, 0}, 1000, 7, gpu::OutType::Bf16},
        {{2, 1, 128, 0.0884f, 300}, 777, 0, gpu::OutType::F32},
        {{3, 3, 128, 0.0884f, 0}, 1, 0, gpu::OutType::F32},
        {{2, 2, 64, 0.125f, 0}, 5, 16, gpu::OutType::F32},  // more splits than keys
    };
    uint32_t seed = 100;
    for (const Case& c : cases) {
        CAPTURE(c.s.n_head, c.s.head_dim, c.s.window, c.L, c.splits);
        const RandomQKV in(c.s, c.L, seed++);
        const int D = c.s.head_dim, nh = c.s.n_head;
        const int64_t i = c.L - 1;
        const std::vector<float> q_last(in.q.begin() + i * nh * D, in.q.end());
        const DeviceBuffer q = upload_bf16(q_last), k = upload_bf16(in.k), v = upload_bf16(in.v);
        const size_t ob = c.out == gpu::OutType::F32 ? 4 : 2;
        const DeviceBuffer o(size_t(nh) * D * ob), lse(size_t(nh) * 4);
        gpu::dev::fill_nan(o.p, o.bytes);
        gpu::dev::fill_nan(lse.p, lse.bytes);
        gpu::DecodeAttentionParams a;
        a.q = q.p;
        a.k = k.p;
        a.v = v.p;
        a.o = o.p;
        a.lse = lse.as<float>();
        a.out_type = c.out;
        a.L = c.L;
        a.n_head = nh;
        a.n_kv_head = c.s.n_kv_head;
        a.head_dim = D;
        a.scale = c.s.scale;
        a.sliding_window = c.s.window;
        a.n_splits = c.splits;
        const size_t ws = gpu::decode_attention_workspace_bytes(a);
        const DeviceBuffer work(ws);
        gpu::decode_attention(a, work.p, ws);
        gpu::dev::synchronize();
        const std::vector<float> o_h = download_out(o, size_t(nh) * D, c.out), lse_h = download_f32(lse, size_t(nh));
        REQUIRE_FALSE(any_nan(o_h));
        REQUIRE_FALSE(any_nan(lse_h));
        const RefAttention ref = ref_attention(c.s, in.q, in.k, in.v, i, c.L);
        CHECK(rel_error(o_h, ref.o) < 1e-2);
        for (int h = 0; h < nh; ++h) CHECK(std::abs(double(lse_h[h]) - ref.lse[h]) < 2e-3);
    }
}

TEST_CASE("cuda attention: tiles, rows and masses match CpuTileSource", "[cuda]") {
    if (!gpu_or_skip()) return;
    for (bool bf16 : {false, true}) {
        for (int window : {0, 150}) {
            CAPTURE(bf16, window);
            const RefShape s{4, 2, 64, 0.125f, window};
            const RandomQKV in(s, 700, 200u + uint32_t(window) + (bf16 ? 1u : 0u));
            const std::vector<float> lse = in.lse();
            auto store = fill_store(in, lse);  // no overview: CpuTileSource computes every level exactly
            CpuTileSource cpu(*store, 1);
            const DeviceBuffer q = bf16 ? upload_bf16(in.q) : upload_f32(in.q);
            const DeviceBuffer k = bf16 ? upload_bf16(in.k) : upload_f32(in.k);
            const DeviceBuffer l = upload_f32(lse);
            gpu::TileInputs ti;
            ti.q = q.p;
            ti.k = k.p;
            ti.lse = l.as<float>();
            ti.bf16 = bf16;
            ti.positions = in.n;
            ti.n_head = s.n_head;
            ti.n_kv_head = s.n_kv_head;
            ti.head_dim = s.head_dim;
            ti.scale = s.scale;
            ti.sliding_window = window;
            const DeviceBuffer sum(256 * 256 * 4), max(256 * 256 * 4);
            for (auto [h, level, tx, ty] : {std::tuple{0, 0, 0, 0}, std::tuple{1, 0, 0, 2}, std::tuple{3, 0, 2, 2},
                                            std::tuple{2, 0, 1, 0}, std::tuple{0, 1, 0, 1}, std::tuple{1, 2, 0, 0},
                                            std::tuple{3, 5, 0, 0}, std::tuple{2, 6, 0, 0}, std::tuple{0, 7, 0, 0}}) {
                CAPTURE(h, level, tx, ty);
                gpu::dev::fill_nan(sum.p, sum.bytes);
                gpu::dev::fill_nan(max.p, max.bytes);
                gpu::attention_tile(ti, h, level, tx, ty, sum.as<float>(), max.as<float>());
                gpu::dev::synchronize();
                const std::vector<float> gs = download_f32(sum, 256 * 256), gm = download_f32(max, 256 * 256);
                REQUIRE_FALSE(any_nan(gs));
                REQUIRE_FALSE(any_nan(gm));
                const Tile t = cpu.tile({0, h, level, tx, ty}, true);
                CHECK(rel_error(gs, t.sum) < 1e-4);
                CHECK(rel_error(gm, t.max) < 1e-4);
            }
            for (auto [h, i] : {std::pair{0, int64_t(0)}, std::pair{3, int64_t(255)}, std::pair{1, int64_t(699)}}) {
                const DeviceBuffer row(size_t(i + 1) * 4);
                gpu::dev::fill_nan(row.p, row.bytes);
                gpu::attention_row(ti, h, i, row.as<float>());
                gpu::dev::synchronize();
                const std::vector<float> g = download_f32(row, size_t(i + 1));
                REQUIRE_FALSE(any_nan(g));
                CHECK(rel_error(g, cpu.row(0, h, i)) < 1e-4);
            }
            for (auto [q0, q1, k0, k1] : {std::tuple{0, 700, 0, 700}, std::tuple{10, 333, 5, 300}}) {
                const double g = gpu::attention_mass(ti, 2, q0, q1, k0, k1);
                const double c = cpu.mass(0, 2, q0, q1, k0, k1);
                CHECK(std::abs(g - c) < 1e-4 * std::max(1.0, c));
            }
        }
    }
}

#else

TEST_CASE("cuda attention: kernels not built", "[cuda]") {
    WARN("SKIPPED: no CUDA device: attnscope was built without the CUDA kernels (nvcc not found)");
}

#endif
