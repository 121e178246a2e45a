// Kernel lab (not built by default): a host emulation of flash_fwd_kernel's control flow —
// absolute 64-row query tiles, BN-key tiles, per-row online softmax in the log2 domain, the
// emission's per-(row, key block) partials parked in a per-CTA scratch and reduced once the LSE
// is known — checked against a direct double-precision computation, for the tiling and index
// logic only (no CUDA semantics: WMMA layouts and barriers are what the GPU parity tests check).
//   g++ -std=c++20 -O2 kernels/lab/flash_emulation.cpp -o /tmp/flash_emulation && /tmp/flash_emulation
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {

constexpr int kBM = 64, kOv = 128;

struct Case {
    int nh, nkv, D, window;
    int64_t n, pos0;  // two chunks [0, pos0) and [pos0, n) when pos0 > 0
};

int64_t tri(int64_t qb, int64_t kb) { return qb * (qb + 1) / 2 + kb; }

// One chunk [pos0, pos0 + T) with keys [0, T_kv), as the kernel does it.
void emulate(const Case& c, int BN, const std::vector<float>& q, const std::vector<float>& k,
             const std::vector<float>& v, int64_t pos0, int64_t T, int64_t T_kv, std::vector<double>& o,
             std::vector<double>& lse, std::vector<float>& ov_sum, std::vector<float>& ov_max, int64_t ts) {
    const float scale_log2 = (1.f / std::sqrt(float(c.D))) * 1.4426950408889634f;
    const int64_t first = pos0 / kBM, n_qtiles = (pos0 + T - 1) / kBM - first + 1;
    const int group = c.nh / c.nkv;
    for (int64_t item = 0; item < n_qtiles * c.nh; ++item) {
        const int64_t qt_rel = n_qtiles - 1 - item / c.nh;
        const int h = int(item % c.nh), kvh = h / group;
        const int64_t q0 = (first + qt_rel) * kBM;
        const int64_t q_first = std::max(q0, pos0), q_last = std::min(q0 + kBM, pos0 + T) - 1;
        const int64_t key_lo = c.window > 0 ? std::max<int64_t>(0, q_first - c.window + 1) : 0;
        const int64_t key_hi = std::min(q_last, T_kv - 1);
        const int64_t kt_lo = key_lo / BN, kt_hi = key_hi / BN, kb_lo = kt_lo * BN / kOv, kb_hi = key_hi / kOv;
        std::vector<std::pair<float, float>> scratch(size_t((kb_hi - kb_lo + 1) * kBM), {NAN, NAN});
        std::vector<float> lse2(kBM, -INFINITY);
        for (int row = 0; row < kBM; ++row) {
            const int64_t i = q0 + row;
            const bool valid = i >= pos0 && i < pos0 + T;
            float m = -INFINITY, l = 0, part = 0, smaxb = -INFINITY;
            std::vector<float> acc(c.D, 0.f);
            for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
                const int64_t k0 = kt * BN;
                std::vector<float> s(BN);
                float smax = -INFINITY;
                for (int cc = 0; cc < BN; ++cc) {
                    const int64_t j = k0 + cc;
                    const bool vis = valid && j < T_kv && j <= i && (c.window <= 0 || i - j < c.window);
                    float dot = 0;
                    if (vis)
                        for (int d = 0; d < c.D; ++d) dot += q[(i * c.nh + h) * c.D + d] * k[(j * c.nkv + kvh) * c.D + d];
                    s[cc] = vis ? dot * scale_log2 : -INFINITY;
                    smax = std::max(smax, s[cc]);
                }
                const float m_new = std::max(m, smax);
                const float alpha = m == -INFINITY ? 0.f : std::exp2(m - m_new);
                float rsum = 0;
                for (float& d : acc) d *= alpha;
                for (int cc = 0; cc < BN; ++cc) {
                    const float e = s[cc] == -INFINITY ? 0.f : std::exp2(s[cc] - m_new);
                    rsum += e;
                    if (e != 0.f)
                        for (int d = 0; d < c.D; ++d) acc[d] += e * v[((k0 + cc) * c.nkv + kvh) * c.D + d];
                }
                l = l * alpha + rsum;
                m = m_new;
                part = part * alpha + rsum;
                smaxb = std::max(smaxb, smax);
                if ((k0 + BN) % kOv == 0 || kt == kt_hi) {
                    scratch[(k0 / kOv - kb_lo) * kBM + row] = {part > 0 ? m + std::log2(part) : -INFINITY, smaxb};
                    part = 0;
                    smaxb = -INFINITY;
                }
            }
            if (valid) {
                lse2[row] = m + std::log2(l);
                lse[(i - pos0 + (pos0 - 0)) * c.nh + h] = lse2[row] * 0.6931471805599453;
                for (int d = 0; d < c.D; ++d) o[(i * c.nh + h) * c.D + d] = acc[d] / l;
            }
        }
        const int64_t qb = q0 / kOv;
        for (int64_t kb = kb_lo; kb <= kb_hi; ++kb) {
            float s = 0, mx = 0;
            for (int r = 0; r < kBM; ++r) {
                if (lse2[r] == -INFINITY) continue;
                const auto [a, sm] = scratch[(kb - kb_lo) * kBM + r];
                if (std::isnan(a) || std::isnan(sm)) std::printf("  UNWRITTEN scratch kb=%lld row=%d\n", (long long)kb, r);
                s += a == -INFINITY ? 0.f : std::exp2(a - lse2[r]);
                mx = std::max(mx, sm == -INFINITY ? 0.f : std::exp2(sm - lse2[r]));
            }
            ov_sum[h * ts + tri(qb, kb)] += s;
            ov_max[h * ts + tri(qb, kb)] = std::max(ov_max[h * ts + tri(qb, kb)], mx);
        }
    }
}

}  // namespace

int main() {
    const Case cases[] = {{4, 2, 64, 0, 300, 0}, {2, 1, 128, 0, 333, 200}, {3, 3, 64, 100, 520, 77},
                          {2, 2, 128, 300, 700, 0}, {2, 1, 64, 0, 1, 0}, {2, 2, 128, 0, 17, 0}, {2, 1, 128, 0, 129, 64}};
    bool ok = true;
    uint32_t seed = 1;
    for (const Case& c : cases) {
        std::mt19937 rng(seed++);
        std::normal_distribution<float> nd(0.f, 1.f);
        std::vector<float> q(c.n * c.nh * c.D), k(c.n * c.nkv * c.D), v(c.n * c.nkv * c.D);
        for (float& x : q) x = 1.5f * nd(rng);
        for (float& x : k) x = nd(rng);
        for (float& x : v) x = nd(rng);
        const int BN = c.D == 64 ? 64 : 32;
        const int64_t blocks = (c.n + kOv - 1) / kOv, ts = blocks * (blocks + 1) / 2;
        std::vector<double> o(q.size(), NAN), lse(c.n * c.nh, NAN);
        std::vector<float> ovs(c.nh * ts, 0.f), ovm(c.nh * ts, 0.f);
        if (c.pos0 > 0) {
            emulate(c, BN, q, k, v, 0, c.pos0, c.pos0, o, lse, ovs, ovm, ts);
            emulate(c, BN, q, k, v, c.pos0, c.n - c.pos0, c.n, o, lse, ovs, ovm, ts);
        } else {
            emulate(c, BN, q, k, v, 0, c.n, c.n, o, lse, ovs, ovm, ts);
        }
        // Direct reference.
        double eo = 0, el = 0, es = 0, em = 0, no = 0, ns = 0, nm = 0;
        std::vector<double> rs(c.nh * ts, 0), rm(c.nh * ts, 0);
        const double scale = 1.0 / std::sqrt(double(c.D));
        for (int h = 0; h < c.nh; ++h)
            for (int64_t i = 0; i < c.n; ++i) {
                const int kvh = h / (c.nh / c.nkv);
                std::vector<double> s(i + 1, -INFINITY);
                double m = -INFINITY;
                for (int64_t j = 0; j <= i; ++j) {
                    if (c.window > 0 && i - j >= c.window) continue;
                    double d = 0;
                    for (int e = 0; e < c.D; ++e) d += double(q[(i * c.nh + h) * c.D + e]) * k[(j * c.nkv + kvh) * c.D + e];
                    s[j] = d * scale;
                    m = std::max(m, s[j]);
                }
                double sum = 0;
                for (double x : s) sum += x == -INFINITY ? 0 : std::exp(x - m);
                const double L = m + std::log(sum);
                el = std::max(el, std::abs(L - lse[i * c.nh + h]));
                for (int e = 0; e < c.D; ++e) {
                    double r = 0;
                    for (int64_t j = 0; j <= i; ++j)
                        if (s[j] != -INFINITY) r += std::exp(s[j] - L) * v[(j * c.nkv + kvh) * c.D + e];
                    const double g = o[(i * c.nh + h) * c.D + e];
                    eo += (g - r) * (g - r);
                    no += r * r;
                }
                for (int64_t j = 0; j <= i; ++j)
                    if (s[j] != -INFINITY) {
                        const double p = std::exp(s[j] - L);
                        rs[h * ts + tri(i / kOv, j / kOv)] += p;
                        rm[h * ts + tri(i / kOv, j / kOv)] = std::max(rm[h * ts + tri(i / kOv, j / kOv)], p);
                    }
            }
        for (size_t e = 0; e < rs.size(); ++e) {
            es += (ovs[e] - rs[e]) * (ovs[e] - rs[e]);
            ns += rs[e] * rs[e];
            em += (ovm[e] - rm[e]) * (ovm[e] - rm[e]);
            nm += rm[e] * rm[e];
        }
        const double ro = std::sqrt(eo / no), rsu = std::sqrt(es / ns), rma = std::sqrt(em / nm);
        const bool pass = ro < 1e-4 && el < 1e-4 && rsu < 1e-4 && rma < 1e-4 && !std::isnan(ro + el + rsu + rma);
        ok &= pass;
        std::printf("nh=%d nkv=%d D=%d window=%d n=%lld pos0=%lld: O %.2e  LSE %.2e  ov_sum %.2e  ov_max %.2e  %s\n", c.nh,
                    c.nkv, c.D, c.window, (long long)c.n, (long long)c.pos0, ro, el, rsu, rma, pass ? "ok" : "FAIL");
    }
    return ok ? 0 : 1;
}
