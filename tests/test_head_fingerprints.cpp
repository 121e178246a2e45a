// Head fingerprints, automatic and user labels, and 2-D projections of heads
// (engine/head_fingerprints.h, engine/head_projection.h, `attnscope heads`), on crafted sessions
// whose attention is known.
#include <zstd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/attention_metrics.h"
#include "engine/error.h"
#include "engine/head_fingerprints.h"
#include "engine/head_projection.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/test_support.h"
#ifdef ATTNSCOPE_HAVE_UI
#include "ui/view/synthetic_session.h"
#endif

using namespace attn;
using attn::testing::CraftedSpec;
using attn::testing::make_crafted_session;
using attn::testing::TempDir;
using Catch::Matchers::Contains;

namespace {

bool has_label(const HeadFingerprint& f, const std::string& label) {
    return std::find(f.labels.begin(), f.labels.end(), label) != f.labels.end();
}

std::vector<std::string> distinct_words(int n) {
    std::vector<std::string> words;
    for (int i = 0; i < n; ++i) words.push_back((i ? " w" : "w") + std::to_string(i));
    return words;
}

// Layer 0: a previous-token head, a sink head, a uniform head and a head three tokens back;
// layer 1: the same heads in reverse order.
enum Kind { kPrevious, kSink, kUniform, kThreeBack };
Kind kind_of(int layer, int head) { return static_cast<Kind>(layer == 0 ? head : 3 - head); }

CraftedSpec four_kinds_spec(int tokens = 24, int64_t prompt_tokens = 24) {
    CraftedSpec spec;
    spec.words = distinct_words(tokens);
    spec.prompt_tokens = prompt_tokens;
    spec.n_layer = 2;
    spec.n_head = 4;
    spec.focus = [](int layer, int head, int64_t q) -> std::vector<int64_t> {
        switch (kind_of(layer, head)) {
            case kPrevious: return {q >= 1 ? q - 1 : 0};
            case kSink: return {0};
            case kUniform: return {};
            case kThreeBack: return {q >= 3 ? q - 3 : 0};
        }
        return {};
    };
    return spec;
}

// Equal up to the float rounding of scores computed in GEMMs of different shapes (none here: the
// crafted keys are one-hot, so every score is a single product).
void require_same(const HeadFingerprint& a, const HeadFingerprint& b) {
    const auto same = [](double x, double y) { return x == Approx(y).epsilon(1e-9).margin(1e-12); };
    CHECK(a.layer == b.layer);
    CHECK(a.head == b.head);
    CHECK(a.rows == b.rows);
    CHECK(same(a.entropy_bits, b.entropy_bits));
    CHECK(same(a.normalized_entropy, b.normalized_entropy));
    CHECK(same(a.sink_mass, b.sink_mass));
    CHECK(same(a.previous_token, b.previous_token));
    CHECK(same(a.induction, b.induction));
    CHECK(a.induction_rows == b.induction_rows);
    CHECK(same(a.local_mass, b.local_mass));
    CHECK(same(a.local_mass_if_uniform, b.local_mass_if_uniform));
    CHECK(same(a.mean_distance, b.mean_distance));
    CHECK(a.keys_for_90 == b.keys_for_90);
    CHECK(same(a.keys_for_90_fraction, b.keys_for_90_fraction));
    CHECK(a.positional_offset == b.positional_offset);
    CHECK(same(a.positional_mass, b.positional_mass));
    CHECK(a.labels == b.labels);
}

// A session of random Q and K (GQA: two query heads per KV head) with exact LSE, tokens drawn from
// a small vocabulary so that many rows have earlier occurrences.
Session random_session(int64_t n, int sliding_window, uint32_t seed) {
    const CaptureShape shape{2, 4, 2, 16, 0.5f, sliding_window};
    Session session;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_int_distribution<int32_t> vocabulary(0, 11);
    for (int64_t i = 0; i < n; ++i) session.tokens.push_back(Token{vocabulary(rng), 0, 0});
    session.prompt_tokens = n;
    session.capture = std::make_unique<CaptureStore>(shape);
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        std::vector<float> q(static_cast<size_t>(n * shape.n_head * shape.head_dim));
        std::vector<float> k(static_cast<size_t>(n * shape.n_kv_head * shape.head_dim));
        for (float& x : q) x = normal(rng);
        for (float& x : k) x = normal(rng);
        std::vector<float> lse(static_cast<size_t>(n * shape.n_head));
        for (int64_t i = 0; i < n; ++i)
            for (int head = 0; head < shape.n_head; ++head) {
                double total = 0;
                for (int64_t j = 0; j <= i; ++j) {
                    if (!shape.visible(i, j)) continue;
                    double dot = 0;
                    for (int d = 0; d < shape.head_dim; ++d)
                        dot += double(q[(i * shape.n_head + head) * shape.head_dim + d]) *
                               double(k[(j * shape.n_kv_head + shape.kv_head_of(head)) * shape.head_dim + d]);
                    total += std::exp(double(shape.scale) * dot);
                }
                lse[i * shape.n_head + head] = static_cast<float>(std::log(total));
            }
        session.capture->record_layer(layer, 0, n, q.data(), k.data(), lse.data());
    }
    return session;
}

// The metrics of head_fingerprints.h computed the plain way, from CpuTileSource::row.
HeadFingerprint reference_fingerprint(const Session& session, int layer, int head, const std::vector<int64_t>& rows,
                                      int window) {
    const CpuTileSource source(*session.capture);
    const CaptureShape& shape = session.capture->shape();
    HeadFingerprint f;
    std::vector<double> offset_mass(HeadFingerprints::kMaxOffset + 1, 0.0);
    std::vector<int64_t> offset_rows(HeadFingerprints::kMaxOffset + 1, 0);
    for (int64_t q : rows) {
        const std::vector<float> row = source.row(layer, head, q);
        const int64_t visible = shape.sliding_window > 0 ? std::min<int64_t>(q + 1, shape.sliding_window) : q + 1;
        const double entropy = entropy_bits(row);
        f.entropy_bits += entropy;
        f.normalized_entropy += entropy / std::log2(double(visible));
        f.sink_mass += row[0];
        f.previous_token += row[q - 1];
        std::vector<int64_t> induction_keys;
        for (int64_t j = 0; j < q; ++j)
            if (session.tokens[j].id == session.tokens[q].id) induction_keys.push_back(j + 1);
        if (!induction_keys.empty()) {
            f.induction += mass_on_keys(row, induction_keys);
            ++f.induction_rows;
        }
        for (int64_t key = std::max<int64_t>(0, q - window); key <= q; ++key) f.local_mass += row[key];
        f.local_mass_if_uniform += double(std::min<int64_t>(window + 1, visible)) / double(visible);
        double total = 0;
        for (int64_t key = 0; key <= q; ++key) {
            f.mean_distance += row[key] * double(q - key);
            total += row[key];
        }
        std::vector<float> sorted = row;
        std::sort(sorted.begin(), sorted.end(), std::greater<float>());
        int64_t count = 0;
        for (double held = 0; held < 0.9 * total; ++count) held += sorted[count];
        f.keys_for_90 += double(count);
        f.keys_for_90_fraction += double(count) / double(visible);
        for (int64_t d = 0; d <= std::min<int64_t>(HeadFingerprints::kMaxOffset, q - 1); ++d) {
            offset_mass[d] += row[q - d];
            ++offset_rows[d];
        }
    }
    const double n = double(rows.size());
    f.rows = int64_t(rows.size());
    for (double* mean : {&f.entropy_bits, &f.normalized_entropy, &f.sink_mass, &f.previous_token, &f.local_mass,
                         &f.local_mass_if_uniform, &f.mean_distance, &f.keys_for_90, &f.keys_for_90_fraction})
        *mean /= n;
    f.induction /= std::max<double>(1, double(f.induction_rows));
    for (int d = 0; d <= HeadFingerprints::kMaxOffset; ++d)
        if (d != 1 && offset_rows[d] * 2 >= f.rows && (f.positional_offset < 0 || offset_mass[d] / offset_rows[d] > f.positional_mass)) {
            f.positional_offset = d;
            f.positional_mass = offset_mass[d] / offset_rows[d];
        }
    return f;
}

FeatureMatrix random_features(int64_t rows, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    FeatureMatrix m{rows, cols, {}};
    for (int64_t i = 0; i < rows * cols; ++i) m.values.push_back(normal(rng));
    return m;
}

// Two tight blobs of `each` points: around the origin and around (10, …, 10).
FeatureMatrix two_blobs(int64_t each, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> noise(0.0, 0.3);
    FeatureMatrix m{2 * each, cols, {}};
    for (int64_t r = 0; r < 2 * each; ++r)
        for (int64_t c = 0; c < cols; ++c) m.values.push_back((r < each ? 0.0 : 10.0) + noise(rng));
    return m;
}

// Rewrites the footer chunk (the last one) of a session file with `edit` applied to its JSON, as
// a file from before some footer field would have it.
template <typename Edit>
void rewrite_footer(const std::string& path, Edit edit) {
    std::string file = attn::testing::read_file_string(path);
    auto u64 = [&](size_t at) {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(file[at + i])) << (8 * i);
        return v;
    };
    size_t offset = 16, last = 0;
    while (offset < file.size()) {
        last = offset;
        offset += 32 + u64(offset + 8);
    }
    REQUIRE(offset == file.size());
    REQUIRE(std::memcmp(file.data() + last, "FOOT", 4) == 0);
    const std::string frame = file.substr(last + 32);
    std::string raw(u64(last + 16), '\0');
    REQUIRE(ZSTD_decompress(raw.data(), raw.size(), frame.data(), frame.size()) == raw.size());
    uint64_t json_size = 0;
    for (int i = 0; i < 8; ++i) json_size |= uint64_t(uint8_t(raw[i])) << (8 * i);
    REQUIRE(json_size == raw.size() - 8);
    nlohmann::json footer = nlohmann::json::parse(raw.substr(8));
    edit(footer);
    const std::string text = footer.dump();
    std::string payload(8, '\0');
    for (int i = 0; i < 8; ++i) payload[i] = char(uint64_t(text.size()) >> (8 * i));
    payload += text;
    ZSTD_CCtx* context = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1);
    std::string compressed(ZSTD_compressBound(payload.size()), '\0');
    const size_t size = ZSTD_compress2(context, compressed.data(), compressed.size(), payload.data(), payload.size());
    ZSTD_freeCCtx(context);
    REQUIRE_FALSE(ZSTD_isError(size));
    compressed.resize(size);
    std::string header = file.substr(last, 8);
    auto put_u64 = [&](uint64_t v) {
        for (int i = 0; i < 8; ++i) header.push_back(char(v >> (8 * i)));
    };
    put_u64(compressed.size());
    put_u64(payload.size());
    uint32_t checksum = 0;
    std::memcpy(&checksum, compressed.data() + compressed.size() - 4, 4);  // little-endian machine
    put_u64(checksum);
    file = file.substr(0, last) + header + compressed;
    std::filesystem::remove(path);
    std::ofstream(path, std::ios::binary) << file;
}

}  // namespace

TEST_CASE("sample_query_rows: all rows when few, else evenly spaced including the first and last", "[heads]") {
    CHECK(sample_query_rows(0, 512).empty());
    CHECK(sample_query_rows(1, 512).empty());
    CHECK(sample_query_rows(5, 512) == std::vector<int64_t>{1, 2, 3, 4});
    CHECK(sample_query_rows(5, 1) == std::vector<int64_t>{4});
    const std::vector<int64_t> rows = sample_query_rows(50000, 512);
    REQUIRE(rows.size() == 512);
    CHECK(rows.front() == 1);
    CHECK(rows.back() == 49999);
    std::set<int64_t> gaps;
    for (size_t i = 1; i < rows.size(); ++i) gaps.insert(rows[i] - rows[i - 1]);
    CHECK(*gaps.begin() >= 97);  // (49999 − 1) / 511 = 97.8: every gap is 97 or 98
    CHECK(*gaps.rbegin() <= 98);
    CHECK_THROWS_WITH(sample_query_rows(10, 0), Contains("at least 1"));
}

TEST_CASE("fingerprint metrics equal the same metrics computed from CpuTileSource::row", "[heads]") {
    for (int sliding_window : {0, 40}) {
        const Session session = random_session(300, sliding_window, 17);
        FingerprintOptions options;
        options.max_rows = 150;  // sampled, and more than one group of rows per GEMM
        options.local_window = 5;
        const HeadFingerprints fingerprints = HeadFingerprints::compute(session, options);
        REQUIRE(fingerprints.rows().size() == 150);
        for (int layer = 0; layer < 2; ++layer)
            for (int head = 0; head < 4; ++head) {
                INFO("sliding window " << sliding_window << ", layer " << layer << " head " << head);
                const HeadFingerprint f = fingerprints.at(layer, head);
                const HeadFingerprint ref = reference_fingerprint(session, layer, head, fingerprints.rows(), 5);
                CHECK(f.rows == ref.rows);
                CHECK(f.entropy_bits == Approx(ref.entropy_bits).margin(1e-5));
                CHECK(f.normalized_entropy == Approx(ref.normalized_entropy).margin(1e-6));
                CHECK(f.sink_mass == Approx(ref.sink_mass).margin(1e-6));
                CHECK(f.previous_token == Approx(ref.previous_token).margin(1e-6));
                CHECK(f.induction_rows == ref.induction_rows);
                CHECK(f.induction_rows > 100);
                CHECK(f.induction == Approx(ref.induction).margin(1e-6));
                CHECK(f.local_mass == Approx(ref.local_mass).margin(1e-6));
                CHECK(f.local_mass_if_uniform == Approx(ref.local_mass_if_uniform).margin(1e-12));
                CHECK(f.mean_distance == Approx(ref.mean_distance).margin(1e-4));
                // A row whose 90% falls within float rounding of a key's edge may count one key more or less.
                CHECK(f.keys_for_90 == Approx(ref.keys_for_90).margin(2.0 / 150));
                CHECK(f.keys_for_90_fraction == Approx(ref.keys_for_90_fraction).margin(0.01));
                CHECK(f.positional_offset == ref.positional_offset);
                CHECK(f.positional_mass == Approx(ref.positional_mass).margin(1e-6));
            }
    }
}

TEST_CASE("fingerprints of crafted heads: previous token, sink, uniform, fixed offset", "[heads]") {
    const Session session = make_crafted_session(four_kinds_spec());
    const CpuTileSource source(*session.capture);
    const HeadFingerprints fingerprints = HeadFingerprints::compute(session);
    CHECK(fingerprints.rows().size() == 23);  // rows 1..23
    CHECK_FALSE(fingerprints.sampled());
    for (int layer = 0; layer < 2; ++layer) {
        const HeadFingerprint previous = fingerprints.at(layer, layer == 0 ? 0 : 3);
        CHECK(previous.previous_token == Approx(1).margin(1e-4));
        CHECK(previous.keys_for_90 == 1);
        CHECK(previous.mean_distance == Approx(1).margin(1e-4));
        CHECK(previous.entropy_bits == Approx(0).margin(1e-4));
        CHECK(has_label(previous, "previous-token"));
        CHECK_FALSE(has_label(previous, "sink"));
        CHECK_FALSE(has_label(previous, "broad"));
        CHECK_FALSE(has_label(previous, "local"));

        const HeadFingerprint sink = fingerprints.at(layer, layer == 0 ? 1 : 2);
        CHECK(sink.sink_mass == Approx(1).margin(1e-4));
        CHECK(sink.keys_for_90 == 1);
        CHECK(has_label(sink, "sink"));
        CHECK_FALSE(has_label(sink, "previous-token"));
        CHECK_FALSE(has_label(sink, "positional"));  // key 0 never passes for a fixed offset
        CHECK_FALSE(has_label(sink, "broad"));

        const HeadFingerprint uniform = fingerprints.at(layer, layer == 0 ? 2 : 1);
        CHECK(uniform.normalized_entropy == Approx(1).margin(1e-6));
        CHECK(uniform.keys_for_90_fraction == Approx(0.9).margin(0.1));
        CHECK(has_label(uniform, "broad"));
        CHECK_FALSE(has_label(uniform, "local"));  // its window mass is what uniform rows have
        CHECK_FALSE(has_label(uniform, "sink"));

        const HeadFingerprint three_back = fingerprints.at(layer, layer == 0 ? 3 : 0);
        CHECK(three_back.positional_offset == 3);
        CHECK(three_back.positional_mass == Approx(1).margin(1e-4));
        CHECK(has_label(three_back, "positional"));
        CHECK_FALSE(has_label(three_back, "previous-token"));
    }
    // Distinct words: no row has an earlier occurrence of its token.
    CHECK(fingerprints.at(0, 0).induction_rows == 0);
    CHECK(fingerprints.at(0, 0).induction == 0);
}

TEST_CASE("an induction head scores 1 on repeated text; a previous-token head does not", "[heads]") {
    CraftedSpec spec;
    // " a … h" twice, then four more: rows 8..19 follow an earlier occurrence of their token.
    for (int repeat = 0; repeat < 3; ++repeat)
        for (const char* word : {" a", " b", " c", " d", " e", " f", " g", " h"})
            if (spec.words.size() < 20) spec.words.push_back(word);
    spec.prompt_tokens = 20;
    spec.n_layer = 1;
    spec.n_head = 2;
    spec.focus = [](int, int head, int64_t q) -> std::vector<int64_t> {
        if (head == 1) return {q - (q >= 1 ? 1 : 0)};
        // Induction: the key after the token's earlier occurrences (8 and 16 back).
        if (q >= 16) return {q - 15, q - 7};
        if (q >= 8) return {q - 7};
        return {0};
    };
    const Session session = make_crafted_session(spec);
    const CpuTileSource source(*session.capture);
    const HeadFingerprints fingerprints = HeadFingerprints::compute(session);
    const HeadFingerprint induction = fingerprints.at(0, 0);
    CHECK(induction.induction_rows == 12);
    CHECK(induction.induction == Approx(1).margin(1e-4));
    CHECK(has_label(induction, "induction"));
    const HeadFingerprint previous = fingerprints.at(0, 1);
    CHECK(previous.induction_rows == 12);
    CHECK(previous.induction == Approx(0).margin(1e-4));
    CHECK_FALSE(has_label(previous, "induction"));
    CHECK(heads_with_label(fingerprints.all(), {}, "Induction") == std::vector<std::pair<int, int>>{{0, 0}});
}

TEST_CASE("folding in one decode step at a time equals computing over the same rows", "[heads]") {
    CraftedSpec spec = four_kinds_spec(30, 9);
    spec.words[20] = spec.words[3];  // some repeated tokens for the induction keys
    spec.words[25] = spec.words[7];
    spec.focus = [](int layer, int head, int64_t q) -> std::vector<int64_t> {
        std::vector<int64_t> keys{q / 2};
        if ((q + layer + head) % 3 == 0) keys.push_back(q);
        if (q >= 2 && head % 2 == 1) keys.push_back(q - 2);
        return keys;
    };
    const Session session = make_crafted_session(spec);
    const CpuTileSource source(*session.capture);

    HeadFingerprints live(session.capture->shape());
    live.fold_in(*session.capture, session.tokens, sample_query_rows(session.prompt_tokens, 512));  // the prompt
    for (int64_t step = 0; step < static_cast<int64_t>(session.steps.size()); ++step)
        live.fold_in(*session.capture, session.tokens, session.prompt_tokens + step);
    const HeadFingerprints all_at_once = HeadFingerprints::compute(session);
    FingerprintOptions one_thread;
    one_thread.threads = 1;
    const HeadFingerprints serial = HeadFingerprints::compute(session, one_thread);
    REQUIRE(live.rows() == all_at_once.rows());
    CHECK(live.rows_available() == all_at_once.rows_available());
    for (int layer = 0; layer < 2; ++layer)
        for (int head = 0; head < 4; ++head) {
            require_same(live.at(layer, head), all_at_once.at(layer, head));
            require_same(serial.at(layer, head), all_at_once.at(layer, head));
        }
    CHECK(all_at_once.at(0, 0).induction_rows == 2);

    SECTION("rows out of order or not captured are refused, changing nothing") {
        HeadFingerprints copy = live;
        CHECK_THROWS_WITH(copy.fold_in(*session.capture, session.tokens, 5), Contains("in order"));
        CHECK_THROWS_WITH(copy.fold_in(*session.capture, session.tokens, 0), Contains("rows start at 1"));
        CHECK_THROWS_WITH(copy.fold_in(*session.capture, session.tokens, 40), Contains("no token"));
        std::vector<Token> more_tokens = session.tokens;
        more_tokens.resize(50);
        CHECK_THROWS_WITH(copy.fold_in(*session.capture, more_tokens, 40), Contains("not captured"));
        CHECK(copy.rows() == live.rows());
        require_same(copy.at(1, 2), live.at(1, 2));
    }
}

TEST_CASE("a sample of rows is used on long sessions and says so", "[heads]") {
    const Session session = make_crafted_session(four_kinds_spec(40));
    const CpuTileSource source(*session.capture);
    FingerprintOptions options;
    options.max_rows = 6;
    const HeadFingerprints fingerprints = HeadFingerprints::compute(session, options);
    CHECK(fingerprints.sampled());
    CHECK(fingerprints.rows_available() == 39);
    CHECK(fingerprints.rows() == sample_query_rows(40, 6));
    CHECK(fingerprints.rows().back() == 39);
    CHECK(fingerprints.at(0, 0).previous_token == Approx(1).margin(1e-4));  // the same head, fewer rows
}

TEST_CASE("user head labels: add, remove, filter, and round-trip through a session file", "[heads]") {
    Session session = make_crafted_session(four_kinds_spec());
    add_head_label(session, 1, 2, "copies names");
    add_head_label(session, 1, 2, "copies names");  // once
    add_head_label(session, 0, 3, "three back");
    add_head_label(session, 0, 3, "Copies names");
    CHECK(session.head_labels.size() == 3);
    CHECK(user_labels_of(session, 0, 3) == std::vector<std::string>{"three back", "Copies names"});
    CHECK_THROWS_WITH(add_head_label(session, 2, 0, "x"), Contains("layer 2 is out of range"));
    CHECK_THROWS_WITH(add_head_label(session, 0, 4, "x"), Contains("head 4 is out of range"));
    CHECK_THROWS_WITH(add_head_label(session, 0, 0, ""), Contains("needs some text"));

    const CpuTileSource source(*session.capture);
    const std::vector<HeadFingerprint> heads = HeadFingerprints::compute(session).all();
    CHECK(heads_with_label(heads, session.head_labels, "copies names") == std::vector<std::pair<int, int>>{{0, 3}, {1, 2}});
    // Automatic and user labels together: the sink heads are (0, 1) and (1, 2).
    CHECK(heads_with_label(heads, session.head_labels, "sink") == std::vector<std::pair<int, int>>{{0, 1}, {1, 2}});
    CHECK(heads_with_label(heads, session.head_labels, "nothing").empty());

    TempDir dir("head_labels");
    const std::string path = dir.file("labels.attn");
    save_session(path, session);
    Session loaded = load_session(path);
    CHECK(loaded.head_labels == session.head_labels);
    CHECK_FALSE(loaded.recovered_incomplete);

    CHECK(remove_head_labels(loaded, 0, 3, "three back") == 1);
    CHECK(remove_head_labels(loaded, 0, 3, "three back") == 0);
    CHECK(remove_head_labels(loaded, 1, 2) == 1);
    save_session(path, loaded);
    CHECK(load_session(path).head_labels == std::vector<HeadLabel>{{0, 3, "Copies names"}});

    SECTION("a file from before head labels (no field in its footer) loads with none") {
        rewrite_footer(path, [](nlohmann::json& footer) {
            REQUIRE(footer.contains("head_labels"));
            footer.erase("head_labels");
        });
        const Session old = load_session(path);
        CHECK_FALSE(old.recovered_incomplete);
        CHECK(old.head_labels.empty());
        CHECK(old.positions() == session.positions());
    }
    SECTION("a label naming a head the capture lacks makes the footer damaged, not the session wrong") {
        rewrite_footer(path, [](nlohmann::json& footer) {
            footer["head_labels"] = nlohmann::json::array({{{"layer", 7}, {"head", 0}, {"text", "ghost"}}});
        });
        const Session damaged = load_session(path);
        CHECK(damaged.recovered_incomplete);
        CHECK(damaged.head_labels.empty());
    }
}

TEST_CASE("PCA recovers a dominant direction and is deterministic", "[heads]") {
    const std::vector<double> direction = [] {
        std::vector<double> u{1, 2, -1, 0.5, 0};
        double norm = 0;
        for (double v : u) norm += v * v;
        for (double& v : u) v /= std::sqrt(norm);
        return u;
    }();
    std::mt19937 rng(3);
    std::normal_distribution<double> spread(0.0, 5.0), noise(0.0, 0.05);
    FeatureMatrix m{60, 5, {}};
    for (int r = 0; r < 60; ++r) {
        const double t = spread(rng);
        for (int c = 0; c < 5; ++c) m.values.push_back(3.0 + t * direction[c] + noise(rng));
    }
    const PcaResult pca = pca_2d(m);
    double dot = 0;
    for (int c = 0; c < 5; ++c) dot += pca.components[c] * direction[c];
    CHECK(std::fabs(dot) == Approx(1).margin(1e-3));
    CHECK(pca.explained[0] > 0.99);
    CHECK(pca.explained[1] < 0.01);
    // Loadings are unit vectors, orthogonal.
    double norm0 = 0, norm1 = 0, cross = 0;
    for (int c = 0; c < 5; ++c) {
        norm0 += pca.components[c] * pca.components[c];
        norm1 += pca.components[5 + c] * pca.components[5 + c];
        cross += pca.components[c] * pca.components[5 + c];
    }
    CHECK(norm0 == Approx(1));
    CHECK(norm1 == Approx(1));
    CHECK(cross == Approx(0).margin(1e-9));
    const FeatureMatrix features = random_features(50, 8, 11);
    CHECK(pca_2d(features).coordinates == pca_2d(features).coordinates);
}

TEST_CASE("t-SNE: same seed same output, another seed another output, blobs stay apart", "[heads]") {
    const FeatureMatrix blobs = two_blobs(15, 6, 5);
    TsneOptions options;
    options.perplexity = 5;
    options.iterations = 500;
    options.seed = 7;
    const std::vector<double> first = tsne_2d(blobs, options);
    CHECK(tsne_2d(blobs, options) == first);
    options.seed = 8;
    CHECK(tsne_2d(blobs, options) != first);
    // Every point is nearer the centre of its own blob than the other blob's.
    double centre[2][2] = {{0, 0}, {0, 0}};
    for (int i = 0; i < 30; ++i)
        for (int axis = 0; axis < 2; ++axis) centre[i / 15][axis] += first[2 * i + axis] / 15;
    for (int i = 0; i < 30; ++i) {
        auto distance = [&](int blob) { return std::hypot(first[2 * i] - centre[blob][0], first[2 * i + 1] - centre[blob][1]); };
        CHECK(distance(i / 15) < distance(1 - i / 15));
    }
    CHECK_THROWS_WITH(tsne_2d(blobs, {0.0, 10, 1}), Contains("perplexity"));
}

TEST_CASE("k-means++ separates two obvious blobs, deterministically", "[heads]") {
    const FeatureMatrix blobs = two_blobs(20, 3, 9);
    for (uint64_t seed : {1, 2, 3}) {
        const KmeansResult result = kmeans(blobs, 2, seed);
        REQUIRE(result.k == 2);
        for (int r = 0; r < 40; ++r) CHECK(result.cluster[r] == (r < 20 ? 0 : 1));  // numbered by first member
        CHECK(kmeans(blobs, 2, seed).cluster == result.cluster);
    }
    CHECK(kmeans(blobs, 100, 1).k == 40);  // more clusters than points: one each
}

TEST_CASE("projections of crafted heads from fingerprints and from patterns", "[heads]") {
    const Session session = make_crafted_session(four_kinds_spec());
    const CpuTileSource source(*session.capture);
    const std::vector<HeadFingerprint> heads = HeadFingerprints::compute(session).all();

    const FeatureMatrix patterns = pattern_features(source, *session.capture);
    CHECK(patterns.rows == 8);
    CHECK(patterns.cols == 24 * 25 / 2);  // 24 tokens: one grid cell per token
    // The same kind of head has the same pattern in both layers (layer 1 lists them reversed).
    for (int head = 0; head < 4; ++head)
        for (int64_t c = 0; c < patterns.cols; ++c) CHECK(patterns.at(head, c) == Approx(patterns.at(4 + 3 - head, c)).margin(1e-6));

    for (ProjectionFeatures features : {ProjectionFeatures::Fingerprints, ProjectionFeatures::Patterns}) {
        ProjectionOptions options;
        options.features = features;
        options.k = 4;
        const HeadProjection pca = project_heads(source, session, heads, options);
        REQUIRE(pca.points.size() == 8);
        // The four kinds are four clusters; the same kind in both layers shares one.
        for (int head = 0; head < 4; ++head) CHECK(pca.points[head].cluster == pca.points[4 + 3 - head].cluster);
        std::set<int> clusters;
        for (const HeadPoint& p : pca.points) clusters.insert(p.cluster);
        CHECK(clusters.size() == 4);
        // PCA is exact: the seed (which only seeds k-means++ here) moves no point.
        options.seed = 2;
        const HeadProjection reseeded = project_heads(source, session, heads, options);
        for (size_t i = 0; i < pca.points.size(); ++i) {
            CHECK(reseeded.points[i].x == pca.points[i].x);
            CHECK(reseeded.points[i].y == pca.points[i].y);
        }
        options.method = ProjectionMethod::Tsne;
        options.perplexity = 2;
        const std::string tsne = projection_csv(project_heads(source, session, heads, options));
        CHECK(projection_csv(project_heads(source, session, heads, options)) == tsne);
        options.seed = 3;
        CHECK(projection_csv(project_heads(source, session, heads, options)) != tsne);
    }
}

TEST_CASE("projection files: CSV and JSON, written atomically, labels quoted", "[heads]") {
    Session session = make_crafted_session(four_kinds_spec());
    add_head_label(session, 0, 0, "says \"hi\", twice");
    const CpuTileSource source(*session.capture);
    const std::vector<HeadFingerprint> heads = HeadFingerprints::compute(session).all();
    const HeadProjection projection = project_heads(source, session, heads, ProjectionOptions{});
    TempDir dir("projection");
    write_projection(dir.file("p.csv"), projection);
    const std::string csv = attn::testing::read_file_string(dir.file("p.csv"));
    CHECK(csv.rfind("layer,head,x,y,cluster,labels\n0,0,", 0) == 0);
    CHECK_THAT(csv, Contains("\"previous-token;says \"\"hi\"\", twice\"\n"));
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 9);
    write_projection(dir.file("p.json"), projection);
    const nlohmann::json json = nlohmann::json::parse(attn::testing::read_file_string(dir.file("p.json")));
    CHECK(json["method"] == "pca");
    REQUIRE(json["points"].size() == 8);
    CHECK(json["points"][0]["labels"] == nlohmann::json::array({"previous-token", "says \"hi\", twice"}));
    CHECK_THROWS_WITH(write_projection(dir.file("p.txt"), projection), Contains(".csv or .json"));
    for (const auto& entry : std::filesystem::directory_iterator(dir.path()))  // no temporary files left
        CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
}

TEST_CASE("attnscope heads: table, JSON, labels, projections and clear errors", "[heads][cli]") {
    using attn::testing::run_cli;
    TempDir dir("heads_cli");
    const std::string path = dir.file("crafted.attn");
    save_session(path, make_crafted_session(four_kinds_spec(24, 16)));

    const auto r = run_cli("heads " + path + " --json");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const nlohmann::json out = nlohmann::json::parse(r.out);
    CHECK(out["rows_used"] == 23);
    CHECK(out["sampled"] == false);
    REQUIRE(out["heads"].size() == 8);
    std::set<std::pair<int, int>> seen;
    for (const nlohmann::json& head : out["heads"]) {
        seen.insert({head["layer"].get<int>(), head["head"].get<int>()});
        for (const char* key : {"rows", "entropy_bits", "normalized_entropy", "sink_mass", "previous_token", "induction",
                                "induction_rows", "local_mass", "mean_distance", "keys_for_90", "keys_for_90_fraction",
                                "positional_offset", "positional_mass", "automatic_labels", "user_labels", "labels"})
            CHECK(head.contains(key));
    }
    CHECK(seen.size() == 8);
    CHECK(out["heads"][0]["previous_token"].get<double>() == Approx(1).margin(1e-4));
    CHECK(out["heads"][0]["automatic_labels"] == nlohmann::json::array({"previous-token"}));
    CHECK(out["heads"][1]["automatic_labels"] == nlohmann::json::array({"sink"}));

    const auto table = run_cli("heads " + path + " --sort sink_mass --rows 4");
    REQUIRE(table.exit_code == 0);
    CHECK_THAT(table.out, Contains("over 4 of 23 query rows (an evenly spaced sample including the last"));
    CHECK_THAT(table.out, Contains("previous-token"));

    SECTION("user labels are written into the session file and shown") {
        REQUIRE(run_cli("heads " + path + " --label-head 1 3 'name mover'").exit_code == 0);
        CHECK(load_session(path).head_labels == std::vector<HeadLabel>{{1, 3, "name mover"}});
        const nlohmann::json labelled = nlohmann::json::parse(run_cli("heads " + path + " --json --label 'Name Mover'").out);
        REQUIRE(labelled["heads"].size() == 1);
        CHECK(labelled["heads"][0]["layer"] == 1);
        CHECK(labelled["heads"][0]["head"] == 3);
        CHECK(labelled["heads"][0]["user_labels"] == nlohmann::json::array({"name mover"}));
        CHECK(labelled["heads"][0]["labels"] == nlohmann::json::array({"previous-token", "name mover"}));
        REQUIRE(run_cli("heads " + path + " --unlabel 1 3").exit_code == 0);
        CHECK(load_session(path).head_labels.empty());
        const auto missing = run_cli("heads " + path + " --unlabel 1 3 'name mover'");
        CHECK(missing.exit_code != 0);
        CHECK_THAT(missing.err, Contains("has no user label 'name mover'"));
    }
    SECTION("projections to CSV and JSON files") {
        const auto csv = run_cli("heads " + path + " --project pca --k 4 --out " + dir.file("heads.csv"));
        INFO(csv.err);
        REQUIRE(csv.exit_code == 0);
        const std::string text = attn::testing::read_file_string(dir.file("heads.csv"));
        CHECK(text.rfind("layer,head,x,y,cluster,labels\n", 0) == 0);
        CHECK(std::count(text.begin(), text.end(), '\n') == 9);
        const auto tsne =
            run_cli("heads " + path + " --project tsne --features patterns --perplexity 2 --seed 3 --out " + dir.file("heads.json"));
        INFO(tsne.err);
        REQUIRE(tsne.exit_code == 0);
        const nlohmann::json json = nlohmann::json::parse(attn::testing::read_file_string(dir.file("heads.json")));
        CHECK(json["method"] == "tsne");
        CHECK(json["features"] == "patterns");
        CHECK(json["points"].size() == 8);
        // The same seed again: the same file.
        REQUIRE(run_cli("heads " + path + " --project tsne --features patterns --perplexity 2 --seed 3 --out " +
                        dir.file("again.json")).exit_code == 0);
        CHECK(attn::testing::read_file_string(dir.file("again.json")) ==
              attn::testing::read_file_string(dir.file("heads.json")));
    }
    SECTION("bad input: a clear error, a non-zero exit, no crash") {
        const std::string before = attn::testing::read_file_string(path);
        struct Case {
            std::string args, message;
        };
        for (const Case& c : std::vector<Case>{
                 {"heads " + dir.file("missing.attn"), "no such file"},
                 {"heads " + path + " --sort loudness", "unknown --sort metric 'loudness'"},
                 {"heads " + path + " --label-head 0 4 x", "head 4 is out of range (0..3)"},
                 {"heads " + path + " --label-head 2 0 x", "layer 2 is out of range (0..1)"},
                 {"heads " + path + " --label-head zero 0 x", "layer 'zero' is not a number"},
                 {"heads " + path + " --unlabel 0 9", "head 9 is out of range"},
                 {"heads " + path + " --project umap", "unknown projection 'umap'"},
                 {"heads " + path + " --project pca --features words", "unknown features 'words'"},
                 {"heads " + path + " --project pca --out " + dir.file("p.png"), ".csv or .json"},
                 {"heads " + path + " --rows 0", "--rows must be at least 1"},
                 {"heads " + dir.path(), "is a directory"},
             }) {
            const auto result = run_cli(c.args);
            INFO(c.args << "\n" << result.err);
            CHECK(result.exit_code == 1);
            CHECK_THAT(result.err, Contains(c.message));
        }
        CHECK(attn::testing::read_file_string(path) == before);  // nothing rewritten
    }
}

#ifdef ATTNSCOPE_HAVE_UI
// Timing at 50k tokens (view/synthetic_session.h: exact Q/K/LSE with sink, previous-token, induction
// and local heads) and at SmolLM2's head shape. Only the cost is reported; run with
//   ./attnscope_tests "[heads-bench]"
TEST_CASE("head fingerprints and projections cost at 50k tokens", "[.][heads-bench]") {
    attn::view::SyntheticOptions synthetic;
    synthetic.tokens = 50000;
    synthetic.layers = 2;
    const Session session = attn::view::make_synthetic_session(synthetic);
    const CpuTileSource source(*session.capture);
    const int heads = session.capture->shape().n_layer * session.capture->shape().n_head;
    for (int rows : {512, 128}) {
        FingerprintOptions options;
        options.max_rows = rows;
        const auto start = std::chrono::steady_clock::now();
        const HeadFingerprints fingerprints = HeadFingerprints::compute(session, options);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        WARN("fingerprints of " << heads << " heads (head dim " << session.capture->shape().head_dim << ") at 50000 tokens, "
                                << rows << " rows: " << ms << " ms, " << ms / heads << " ms per head");
        for (const HeadFingerprint& f : fingerprints.all())
            WARN("  L" << f.layer << "H" << f.head << ": sink " << f.sink_mass << " prev " << f.previous_token
                       << " induction " << f.induction << " local " << f.local_mass << " labels "
                       << (f.labels.empty() ? std::string("-") : f.labels.front()));
    }
    const std::vector<HeadFingerprint> all = HeadFingerprints::compute(session).all();
    for (ProjectionFeatures features : {ProjectionFeatures::Fingerprints, ProjectionFeatures::Patterns})
        for (ProjectionMethod method : {ProjectionMethod::Pca, ProjectionMethod::Tsne}) {
            ProjectionOptions options;
            options.features = features;
            options.method = method;
            options.perplexity = 2;
            const auto start = std::chrono::steady_clock::now();
            project_heads(source, session, all, options);
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
            WARN(projection_method_name(method) << " of " << projection_features_name(features) << ": " << ms << " ms");
        }

    // SmolLM2-135M's head shape (head dim 64, 9 heads, 3 KV heads), 3 layers of random Q/K at 50k
    // tokens (LSE approximate: only the cost is measured; 27 of its 270 heads).
    const CaptureShape shape{3, 9, 3, 64, 0.125f, 0};
    const int64_t n = 50000;
    Session smol;
    smol.capture = std::make_unique<CaptureStore>(shape);
    for (int64_t i = 0; i < n; ++i) smol.tokens.push_back(Token{static_cast<int32_t>(i % 5000), 0, 0});
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 0.5f);
    std::vector<float> q(static_cast<size_t>(n * shape.n_head * shape.head_dim));
    std::vector<float> k(static_cast<size_t>(n * shape.n_kv_head * shape.head_dim));
    std::vector<float> lse(static_cast<size_t>(n * shape.n_head));
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (int64_t i = 0; i < n; ++i)
        for (int h = 0; h < shape.n_head; ++h) lse[i * shape.n_head + h] = std::log(float(i + 1)) + 0.5f;
    for (int layer = 0; layer < shape.n_layer; ++layer) smol.capture->record_layer(layer, 0, n, q.data(), k.data(), lse.data());
    const CpuTileSource smol_source(*smol.capture);
    const auto start = std::chrono::steady_clock::now();
    const HeadFingerprints smol_fingerprints = HeadFingerprints::compute(smol);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    CHECK(smol_fingerprints.rows().size() == 512);
    WARN("fingerprints of 27 heads (head dim 64) at 50000 tokens, 512 rows: " << ms << " ms, " << ms / 27
                                                                            << " ms per head → ~" << ms / 27 * 270 / 1000
                                                                            << " s for SmolLM2's 270 heads");
    // The live debugger's update: one more row per decode step, folded into fingerprints already made.
    HeadFingerprints live(shape);
    live.fold_in(*smol.capture, smol.tokens, sample_query_rows(n - 10, 64));  // "the prompt"
    live.fold_in(*smol.capture, smol.tokens, n - 10);                          // warm-up
    const auto fold_start = std::chrono::steady_clock::now();
    for (int64_t query = n - 9; query < n; ++query) live.fold_in(*smol.capture, smol.tokens, query);
    const double fold_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - fold_start).count() / 9;
    WARN("one decode step folded in (27 heads, a row of ~50000 keys): " << fold_ms << " ms → ~" << fold_ms * 10
                                                                         << " ms for SmolLM2's 270 heads");
}
#endif
