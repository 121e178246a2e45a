// CpuTileSource on synthetic captures whose probabilities are known exactly (computed here in
// double precision): rows, tiles at every level (exact and from the overview), masses, windows, GQA.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "engine/error.h"
#include "engine/tile_source.h"

using namespace attn;

namespace {

struct SyntheticCapture {
    CaptureShape shape;
    std::unique_ptr<CaptureStore> store;
    // Reference probabilities in double: [layer][head][i][j]
    std::vector<std::vector<std::vector<std::vector<double>>>> p;

    SyntheticCapture(int64_t n, int window, uint32_t seed, int64_t record_chunk = 97) {
        shape = {2, 4, 2, 16, 0.25f, window};
        store = std::make_unique<CaptureStore>(shape);
        std::mt19937 rng(seed);
        std::normal_distribution<float> normal(0.f, 1.f);
        const int qrow = shape.n_head * shape.head_dim, krow = shape.n_kv_head * shape.head_dim;
        p.resize(shape.n_layer);
        for (int l = 0; l < shape.n_layer; ++l) {
            std::vector<float> q(n * qrow), k(n * krow), lse(n * shape.n_head);
            for (float& x : q) x = normal(rng);
            for (float& x : k) x = normal(rng);
            // A sink on key 0 and a stripe, so sums and maxes differ visibly.
            for (int d = 0; d < shape.head_dim; ++d) k[d] += 2.0f;
            p[l].assign(shape.n_head, std::vector<std::vector<double>>(n));
            for (int h = 0; h < shape.n_head; ++h) {
                const int kvh = shape.kv_head_of(h);
                for (int64_t i = 0; i < n; ++i) {
                    std::vector<double> s(i + 1, -INFINITY);
                    double m = -INFINITY;
                    for (int64_t j = 0; j <= i; ++j) {
                        if (!shape.visible(i, j)) continue;
                        double dot = 0;
                        for (int d = 0; d < shape.head_dim; ++d)
                            dot += double(q[i * qrow + h * shape.head_dim + d]) * k[j * krow + kvh * shape.head_dim + d];
                        s[j] = shape.scale * dot;
                        m = std::max(m, s[j]);
                    }
                    double sum = 0;
                    for (double v : s) sum += std::isinf(v) ? 0 : std::exp(v - m);
                    const double row_lse = m + std::log(sum);
                    lse[i * shape.n_head + h] = static_cast<float>(row_lse);
                    p[l][h][i].resize(i + 1);
                    for (int64_t j = 0; j <= i; ++j) p[l][h][i][j] = std::isinf(s[j]) ? 0 : std::exp(s[j] - row_lse);
                }
            }
            for (int64_t pos = 0; pos < n; pos += record_chunk) {
                const int64_t take = std::min(record_chunk, n - pos);
                store->record_layer(l, pos, take, &q[pos * qrow], &k[pos * krow], &lse[pos * shape.n_head]);
            }
            for (int h = 0; h < shape.n_head; ++h)
                for (int64_t i = 0; i < n; ++i) {
                    std::vector<float> row(p[l][h][i].begin(), p[l][h][i].end());
                    store->accumulate_overview(l, h, i, row);
                }
        }
    }

    double block_sum(int l, int h, int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
        double total = 0;
        for (int64_t i = q0; i < std::min<int64_t>(q1, p[l][h].size()); ++i)
            for (int64_t j = k0; j < std::min<int64_t>(k1, i + 1); ++j) total += p[l][h][i][j];
        return total;
    }
    double block_max(int l, int h, int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
        double peak = 0;
        for (int64_t i = q0; i < std::min<int64_t>(q1, p[l][h].size()); ++i)
            for (int64_t j = k0; j < std::min<int64_t>(k1, i + 1); ++j) peak = std::max(peak, p[l][h][i][j]);
        return peak;
    }
};

}  // namespace

TEST_CASE("rows are the exact probabilities", "[tiles]") {
    const SyntheticCapture cap(300, 0, 1);
    const CpuTileSource tiles(*cap.store);
    for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 4; ++h)
            for (int64_t i : {0, 1, 77, 255, 256, 299}) {
                const auto row = tiles.row(l, h, i);
                REQUIRE(row.size() == static_cast<size_t>(i + 1));
                double sum = 0;
                for (int64_t j = 0; j <= i; ++j) {
                    CHECK(row[j] == Approx(cap.p[l][h][i][j]).margin(1e-6));
                    sum += row[j];
                }
                CHECK(sum == Approx(1.0).margin(1e-5));
            }
}

TEST_CASE("tiles aggregate sum and max of P at every level, causal part empty", "[tiles]") {
    const SyntheticCapture cap(600, 0, 2);
    const CpuTileSource tiles(*cap.store);
    for (int level : {0, 1, 3}) {
        const int64_t across = CpuTileSource::tiles_across(600, level);
        for (int64_t ty = 0; ty < across; ++ty)
            for (int64_t tx = 0; tx < across; ++tx) {
                const Tile tile = tiles.tile({1, 2, level, tx, ty});
                const int64_t cell = int64_t(1) << level;
                for (int r = 0; r < Tile::kEdge; r += 7)
                    for (int c = 0; c < Tile::kEdge; c += 5) {
                        const int64_t q0 = (ty * Tile::kEdge + r) * cell, k0 = (tx * Tile::kEdge + c) * cell;
                        INFO("level " << level << " tile " << tx << "," << ty << " cell " << r << "," << c);
                        CHECK(tile.sum[r * Tile::kEdge + c] ==
                              Approx(cap.block_sum(1, 2, q0, q0 + cell, k0, k0 + cell)).margin(1e-5));
                        CHECK(tile.max[r * Tile::kEdge + c] ==
                              Approx(cap.block_max(1, 2, q0, q0 + cell, k0, k0 + cell)).margin(1e-6));
                        if (k0 > q0 + cell - 1) CHECK(tile.sum[r * Tile::kEdge + c] == 0.0f);
                    }
            }
    }
    // Whole-matrix tile: every row's mass is 1.
    const Tile top = tiles.tile({0, 0, 2, 0, 0});
    double total = 0;
    for (float v : top.sum) total += v;
    CHECK(total == Approx(600.0).epsilon(1e-5));
    CHECK(top.valid_rows == 150);
    CHECK(top.valid_cols == 150);
}

TEST_CASE("anisotropic tiles from a query origin aggregate 2^row_level queries × 2^level keys", "[tiles][waterfall]") {
    const SyntheticCapture cap(600, 0, 8);
    const CpuTileSource tiles(*cap.store);
    // (level, row level delta, first query, tx, ty): the waterfall's shapes, origins not block-aligned.
    struct Shape {
        int level, delta;
        int64_t first_query, tx, ty;
    };
    for (const Shape& s : {Shape{2, -2, 137, 0, 0}, Shape{2, -2, 137, 0, 1}, Shape{0, 1, 300, 1, 0}, Shape{3, -1, 1, 0, 0}}) {
        const TileRequest request{1, 2, s.level, s.tx, s.ty, s.delta, s.first_query};
        const Tile tile = tiles.tile(request);
        const int64_t key_cell = int64_t(1) << request.level, row_cell = int64_t(1) << request.row_level();
        CHECK(tile.valid_rows == cells_covering(600 - s.first_query, request.row_level(), s.ty));
        for (int r = 0; r < tile.valid_rows; r += 3)
            for (int c = 0; c < tile.valid_cols; c += 4) {
                const int64_t q0 = s.first_query + (s.ty * Tile::kEdge + r) * row_cell, k0 = (s.tx * Tile::kEdge + c) * key_cell;
                INFO("level " << s.level << " delta " << s.delta << " origin " << s.first_query << " cell " << r << "," << c);
                CHECK(tile.sum[r * Tile::kEdge + c] ==
                      Approx(cap.block_sum(1, 2, q0, q0 + row_cell, k0, k0 + key_cell)).margin(1e-5));
                CHECK(tile.max[r * Tile::kEdge + c] ==
                      Approx(cap.block_max(1, 2, q0, q0 + row_cell, k0, k0 + key_cell)).margin(1e-6));
            }
    }
}

TEST_CASE("overview-backed tiles equal exact tiles", "[tiles]") {
    const SyntheticCapture cap(700, 0, 3);
    CHECK(cap.store->overview_complete());
    const CpuTileSource tiles(*cap.store);
    const Tile from_overview = tiles.tile({0, 1, 7, 0, 0});
    // Same cells computed exactly from Q/K/LSE.
    for (int r = 0; r < 6; ++r)
        for (int c = 0; c <= r; ++c) {
            const int64_t q0 = r * 128, k0 = c * 128;
            CHECK(from_overview.sum[r * Tile::kEdge + c] == Approx(cap.block_sum(0, 1, q0, q0 + 128, k0, k0 + 128)).epsilon(1e-5));
            CHECK(from_overview.max[r * Tile::kEdge + c] == Approx(cap.block_max(0, 1, q0, q0 + 128, k0, k0 + 128)).margin(1e-6));
        }
    CHECK(from_overview.valid_rows == 6);
}

TEST_CASE("rebuild_overview recomputes the pooled overview from Q, K, LSE", "[tiles]") {
    SyntheticCapture cap(400, 0, 4);
    std::vector<float> before(cap.store->overview_sums(1, 3).begin(), cap.store->overview_sums(1, 3).end());
    cap.store->clear_overview();
    CHECK_FALSE(cap.store->overview_complete());
    rebuild_overview(*cap.store);
    CHECK(cap.store->overview_complete());
    const auto after = cap.store->overview_sums(1, 3);
    REQUIRE(after.size() == before.size());
    for (size_t b = 0; b < before.size(); ++b) CHECK(after[b] == Approx(before[b]).margin(1e-4));
}

TEST_CASE("mass over query and key spans", "[tiles]") {
    const SyntheticCapture cap(260, 0, 5);
    const CpuTileSource tiles(*cap.store);
    CHECK(tiles.mass(0, 3, 10, 200, 0, 5) == Approx(cap.block_sum(0, 3, 10, 200, 0, 5)).epsilon(1e-5));
    CHECK(tiles.mass(0, 3, 0, 260, 0, 260) == Approx(260.0).epsilon(1e-5));
    CHECK(tiles.mass(0, 3, 100, 120, 150, 200) == 0.0);  // keys after every query
}

TEST_CASE("sliding window and GQA masks", "[tiles]") {
    const SyntheticCapture cap(300, 16, 6);
    const CpuTileSource tiles(*cap.store);
    const auto row = tiles.row(1, 3, 250);
    for (int64_t j = 0; j < 235; ++j) CHECK(row[j] == 0.0f);
    double sum = 0;
    for (int64_t j = 235; j <= 250; ++j) {
        CHECK(row[j] == Approx(cap.p[1][3][250][j]).margin(1e-6));
        sum += row[j];
    }
    CHECK(sum == Approx(1.0).margin(1e-5));
    const Tile tile = tiles.tile({1, 3, 0, 0, 0});
    CHECK(tile.sum[250 * Tile::kEdge + 10] == 0.0f);
    CHECK(tile.sum[250 * Tile::kEdge + 240] == Approx(cap.p[1][3][250][240]).margin(1e-6));
}

TEST_CASE("bad tile requests name the problem", "[tiles][errors]") {
    const SyntheticCapture cap(100, 0, 7);
    const CpuTileSource tiles(*cap.store);
    CHECK_THROWS_WITH(tiles.row(5, 0, 1), Catch::Contains("layer 5"));
    CHECK_THROWS_WITH(tiles.row(0, 9, 1), Catch::Contains("head 9"));
    CHECK_THROWS_WITH(tiles.row(0, 0, 100), Catch::Contains("query 100"));
    CHECK_THROWS_WITH(tiles.tile({0, 0, 0, 1, 0}), Catch::Contains("does not exist"));
}
