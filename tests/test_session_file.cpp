// Session files (.attn): round trips, streaming writes, recovery from files cut short or
// corrupted, atomic saves, version checks and clear errors on files that are not sessions.
#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "engine/error.h"
#include "engine/session_file.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace attn;
using attn::testing::TempDir;

namespace {


std::string read_bytes(const std::string& path) { return attn::testing::read_file_string(path); }

void write_bytes(const std::string& path, std::string_view bytes) {
    // A new file rather than a truncated one: ext4 flushes files replaced by truncation.
    std::error_code ignored;
    fs::remove(path, ignored);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

bool same_bits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }
bool same_bits(double a, double b) { return std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b); }

bool is_continuation_byte(const std::string& text, size_t at) {
    return at < text.size() && (uint8_t(text[at]) & 0xC0) == 0x80;
}

ModelConfig tiny_config(int sliding_window = 0, int layers = 3) {
    ModelConfig config;
    config.arch = Architecture::Llama;
    config.arch_name = "qwen2";
    config.n_layer = layers;
    config.n_head = 4;
    config.n_kv_head = 2;
    config.head_dim = 8;
    config.d_model = 32;
    config.d_ff = 96;
    config.vocab = 5000;
    config.max_context = 4096;
    config.norm_eps = 1e-6;
    config.rope_theta = 1000000.0;
    config.rope_pairing = RopePairing::HalfSplit;
    config.rope_scaling = {RopeScaling::Kind::Llama3, 8.0, 1.0, 4.0, 8192};
    config.qkv_bias = true;
    config.tied_embeddings = true;
    config.sliding_window = sliding_window;
    return config;
}

enum class Data { Random, Smooth, Bf16Random };

// Exact attention probabilities of one query row, in double precision.
std::vector<float> probability_row(const CaptureStore& store, int layer, int head, int64_t query) {
    const CaptureShape& shape = store.shape();
    std::vector<float> probs(size_t(query + 1), 0.f);
    const float* q = store.q(layer, query) + head * shape.head_dim;
    for (int64_t key = 0; key <= query; ++key) {
        if (!shape.visible(query, key)) continue;
        const float* k = store.k(layer, key) + shape.kv_head_of(head) * shape.head_dim;
        double dot = 0;
        for (int d = 0; d < shape.head_dim; ++d) dot += double(q[d]) * k[d];
        probs[size_t(key)] = float(std::exp(double(shape.scale) * dot - store.lse(layer, query, head)));
    }
    return probs;
}

// Appends positions [store.positions(), positions) of every layer from `source`, adding their
// overview rows when asked.
void copy_capture(const CaptureStore& source, CaptureStore& target, int64_t positions, bool overview) {
    const CaptureShape& shape = source.shape();
    const int64_t first = target.positions();
    const int64_t n = positions - first;
    if (n <= 0) return;
    std::vector<float> q(size_t(n * shape.n_head * shape.head_dim)), k(size_t(n * shape.n_kv_head * shape.head_dim)),
        lse(size_t(n * shape.n_head));
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        source.copy_q(layer, first, n, q.data());
        source.copy_k(layer, first, n, k.data());
        source.copy_lse(layer, first, n, lse.data());
        target.record_layer(layer, first, n, q.data(), k.data(), lse.data());
    }
    if (overview)
        for (int layer = 0; layer < shape.n_layer; ++layer)
            for (int head = 0; head < shape.n_head; ++head)
                for (int64_t query = first; query < positions; ++query)
                    target.accumulate_overview(layer, head, query, probability_row(target, layer, head, query));
}

// Fills a capture with Q and K of the given kind and the exact LSE of every row.
// (exact_lse = false: random LSE instead, for shapes too large to compute it quickly.)
std::unique_ptr<CaptureStore> make_capture(const CaptureShape& shape, int64_t positions, Data data, uint64_t seed,
                                           bool overview, bool exact_lse = true) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    // Smooth: a random walk along positions for every (layer, head, dim): neighbours are close,
    // but no two values repeat exactly.
    std::vector<float> walk(size_t(shape.n_layer) * 2 * shape.n_head * shape.head_dim);
    auto value = [&](int64_t pos, int head, int d, int layer, bool is_key) {
        switch (data) {
            case Data::Smooth: {
                float& v = walk[((size_t(layer) * 2 + is_key) * shape.n_head + head) * shape.head_dim + d];
                v = 0.98f * v + 0.1f * normal(rng);
                return v;
            }
            case Data::Bf16Random:
                return std::bit_cast<float>(std::bit_cast<uint32_t>(normal(rng)) & 0xFFFF0000u);
            case Data::Random: break;
        }
        return normal(rng);
    };
    auto store = std::make_unique<CaptureStore>(shape);
    const int64_t q_row = int64_t(shape.n_head) * shape.head_dim;
    const int64_t k_row = int64_t(shape.n_kv_head) * shape.head_dim;
    std::vector<float> q(size_t(positions * q_row)), k(size_t(positions * k_row)), lse(size_t(positions * shape.n_head));
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        for (int64_t pos = 0; pos < positions; ++pos) {
            for (int head = 0; head < shape.n_head; ++head)
                for (int d = 0; d < shape.head_dim; ++d)
                    q[size_t(pos * q_row + head * shape.head_dim + d)] = value(pos, head, d, layer, false);
            for (int head = 0; head < shape.n_kv_head; ++head)
                for (int d = 0; d < shape.head_dim; ++d)
                    k[size_t(pos * k_row + head * shape.head_dim + d)] = value(pos, head, d, layer, true);
        }
        // Exact row LSE (so that overview rows are true probabilities summing to 1).
        for (int64_t pos = 0; pos < positions && !exact_lse; ++pos)
            for (int head = 0; head < shape.n_head; ++head) lse[size_t(pos * shape.n_head + head)] = 5.f + normal(rng);
        for (int64_t pos = 0; pos < positions && exact_lse; ++pos)
            for (int head = 0; head < shape.n_head; ++head) {
                double max_score = -INFINITY, sum = 0;
                std::vector<double> scores;
                for (int64_t key = 0; key <= pos; ++key) {
                    if (!shape.visible(pos, key)) continue;
                    double dot = 0;
                    for (int d = 0; d < shape.head_dim; ++d)
                        dot += double(q[size_t(pos * q_row + head * shape.head_dim + d)]) *
                               k[size_t(key * k_row + shape.kv_head_of(head) * shape.head_dim + d)];
                    scores.push_back(double(shape.scale) * dot);
                    max_score = std::max(max_score, scores.back());
                }
                for (double score : scores) sum += std::exp(score - max_score);
                lse[size_t(pos * shape.n_head + head)] = float(max_score + std::log(sum));
            }
        store->record_layer(layer, 0, positions, q.data(), k.data(), lse.data());
    }
    if (overview)
        for (int layer = 0; layer < shape.n_layer; ++layer)
            for (int head = 0; head < shape.n_head; ++head)
                for (int64_t query = 0; query < positions; ++query)
                    store->accumulate_overview(layer, head, query, probability_row(*store, layer, head, query));
    return store;
}

struct SessionOptions {
    int64_t positions = 300;
    int64_t prompt_tokens = 200;
    Data data = Data::Random;
    bool overview = true;
    int sliding_window = 0;
    uint64_t seed = 7;
    int layers = 3;
};

// A session as the runtime would produce it: BOS, prompt tokens over multi-byte text (some
// splitting characters), then one step per generated token whose bytes extend the text.
Session make_session(const SessionOptions& options) {
    std::mt19937_64 rng(options.seed);
    Session session;
    session.config = tiny_config(options.sliding_window, options.layers);
    session.identity = {"/models/tiny/模型-\xff.gguf", "gguf", "tiny «test» model", std::string(64, 'a'), 123456789};
    session.sampling.greedy = false;
    session.sampling.temperature = 0.7f;
    session.sampling.top_k = 40;
    session.sampling.top_p = 0.95f;
    session.sampling.seed = 0xDEADBEEFCAFEF00Dull;
    session.sampling.beams = 3;
    session.sampling.max_new_tokens = 100;
    session.sampling.stop_strings = {"\n\n", "终", "\xc3"};
    session.sampling.chat = true;
    session.sampling.stop_at_eos = false;
    session.prompt_tokens = options.prompt_tokens;

    const std::string prompt_source = "Hello, 世界! Attention über alles — naïve café 🌍🚀 «quoted» ";
    std::string prompt;
    while (prompt.size() < size_t(options.prompt_tokens) * 3) prompt += prompt_source;
    session.text = prompt;
    session.tokens.push_back({1, 0, 0, false, true});  // BOS: an empty span
    uint32_t at = 0;
    for (int64_t i = 1; i < options.prompt_tokens; ++i) {
        const uint32_t length = 1 + uint32_t(rng() % 3);
        session.tokens.push_back({int32_t(rng() % 5000), at, at + length, false, false});
        at += length;
    }
    session.text.resize(at);  // the prompt is exactly what its tokens cover

    const std::string generated_source = "The answer is 42 — café 東京 🌍 ok. ";
    double cumulative = 0;
    size_t source_at = 0;
    for (int64_t t = 0; t < options.positions - options.prompt_tokens; ++t) {
        StepRecord step;
        step.token_id = int32_t(rng() % 5000);
        const size_t length = 1 + rng() % 4;
        for (size_t b = 0; b < length; ++b) step.text.push_back(generated_source[(source_at + b) % generated_source.size()]);
        source_at += length;
        step.logprob = t == 3 ? -std::numeric_limits<float>::infinity() : -float(rng() % 1000) / 137.f;
        cumulative += step.logprob;
        step.cumulative_logprob = cumulative;
        for (int k = 0; k < t % 5; ++k) step.top.push_back({int32_t(rng() % 5000), 1.f / float(k + 2)});
        step.beam_id = int32_t(t % 3);
        step.kv_length = options.prompt_tokens + t + 1;
        step.evicted = t > 50 ? 7 : 0;
        const uint32_t begin = uint32_t(session.text.size());
        session.text += step.text;
        session.tokens.push_back({step.token_id, begin, uint32_t(session.text.size()), false, false});
        session.steps.push_back(step);
    }
    for (Token& token : session.tokens)
        token.partial = token.begin < token.end &&
                        (is_continuation_byte(session.text, token.begin) || is_continuation_byte(session.text, token.end));
    session.capture = make_capture(capture_shape_of(session.config), options.positions, options.data, options.seed,
                                   options.overview);
    return session;
}

// The session as it was when it had `positions` positions (prompt then steps), for streaming.
Session prefix_session(const Session& full, int64_t positions) {
    Session session;
    session.config = full.config;
    session.identity = full.identity;
    session.sampling = full.sampling;
    session.prompt_tokens = full.prompt_tokens;
    session.tokens.assign(full.tokens.begin(), full.tokens.begin() + positions);
    const int64_t steps = std::max<int64_t>(0, positions - full.prompt_tokens);
    session.steps.assign(full.steps.begin(), full.steps.begin() + steps);
    size_t generated = 0;
    for (const StepRecord& step : full.steps) generated += step.text.size();
    session.text = full.text.substr(0, full.text.size() - generated);
    for (const StepRecord& step : session.steps) session.text += step.text;
    session.capture = std::make_unique<CaptureStore>(full.capture->shape());
    copy_capture(*full.capture, *session.capture, positions, true);
    return session;
}

// Extends `live` (a prefix of `full`) to `positions`, as the runtime does while decoding.
void grow_session(Session& live, const Session& full, int64_t positions) {
    for (int64_t pos = live.positions(); pos < positions; ++pos) {
        live.tokens.push_back(full.tokens[size_t(pos)]);
        if (pos >= full.prompt_tokens) {
            live.steps.push_back(full.steps[size_t(pos - full.prompt_tokens)]);
            live.text += live.steps.back().text;
        }
    }
    copy_capture(*full.capture, *live.capture, positions, true);
}

bool same_config(const ModelConfig& a, const ModelConfig& b) {
    return a.arch == b.arch && a.arch_name == b.arch_name && a.n_layer == b.n_layer && a.n_head == b.n_head &&
           a.n_kv_head == b.n_kv_head && a.head_dim == b.head_dim && a.d_model == b.d_model && a.d_ff == b.d_ff &&
           a.vocab == b.vocab && a.max_context == b.max_context && same_bits(a.norm_eps, b.norm_eps) &&
           same_bits(a.rope_theta, b.rope_theta) && a.rope_pairing == b.rope_pairing &&
           a.rope_scaling.kind == b.rope_scaling.kind && same_bits(a.rope_scaling.factor, b.rope_scaling.factor) &&
           same_bits(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor) &&
           same_bits(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor) &&
           same_bits(a.rope_scaling.original_context, b.rope_scaling.original_context) && a.qkv_bias == b.qkv_bias &&
           a.tied_embeddings == b.tied_embeddings && a.sliding_window == b.sliding_window;
}

bool same_sampling(const SamplingSettings& a, const SamplingSettings& b) {
    return a.greedy == b.greedy && same_bits(a.temperature, b.temperature) && a.top_k == b.top_k &&
           same_bits(a.top_p, b.top_p) && a.seed == b.seed && a.beams == b.beams &&
           a.max_new_tokens == b.max_new_tokens && a.stop_strings == b.stop_strings && a.chat == b.chat &&
           a.stop_at_eos == b.stop_at_eos;
}

bool same_token(const Token& a, const Token& b) {
    return a.id == b.id && a.begin == b.begin && a.end == b.end && a.partial == b.partial && a.special == b.special;
}

bool same_step(const StepRecord& a, const StepRecord& b) {
    if (a.top.size() != b.top.size()) return false;
    for (size_t k = 0; k < a.top.size(); ++k)
        if (a.top[k].id != b.top[k].id || !same_bits(a.top[k].prob, b.top[k].prob)) return false;
    return a.token_id == b.token_id && a.text == b.text && same_bits(a.logprob, b.logprob) &&
           same_bits(a.cumulative_logprob, b.cumulative_logprob) && a.beam_id == b.beam_id &&
           a.kv_length == b.kv_length && a.evicted == b.evicted;
}

bool same_capture_rows(const CaptureStore& a, const CaptureStore& b, int64_t positions) {
    const CaptureShape& shape = a.shape();
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int64_t pos = 0; pos < positions; ++pos) {
            if (std::memcmp(a.q(layer, pos), b.q(layer, pos), sizeof(float) * shape.n_head * shape.head_dim) != 0 ||
                std::memcmp(a.k(layer, pos), b.k(layer, pos), sizeof(float) * shape.n_kv_head * shape.head_dim) != 0)
                return false;
            for (int head = 0; head < shape.n_head; ++head)
                if (!same_bits(a.lse(layer, pos, head), b.lse(layer, pos, head))) return false;
        }
    return true;
}

// Empty if `loaded` is a consistent prefix of `original` (every float bit-exact); otherwise
// what differs. A prefix keeps positions all layers have and the tokens and steps of those.
std::string prefix_mismatch(const Session& loaded, const Session& original) {
    if (!same_config(loaded.config, original.config)) return "config differs";
    const ModelIdentity &a = loaded.identity, &b = original.identity;
    if (a.path != b.path || a.format != b.format || a.name != b.name || a.sha256 != b.sha256 ||
        a.file_bytes != b.file_bytes)
        return "identity differs";
    if (!same_sampling(loaded.sampling, original.sampling)) return "sampling differs";
    if (!loaded.capture || !(loaded.capture->shape() == original.capture->shape())) return "capture shape differs";
    const int64_t positions = loaded.capture->positions();
    if (positions > original.capture->positions()) return "more positions than the original";
    if (!same_capture_rows(*loaded.capture, *original.capture, positions)) return "capture data differs";
    if (positions > 0 && !loaded.capture->overview_complete()) return "overview not complete";
    if (loaded.tokens.size() > original.tokens.size() || int64_t(loaded.tokens.size()) > positions)
        return "too many tokens";
    for (size_t i = 0; i < loaded.tokens.size(); ++i)
        if (!same_token(loaded.tokens[i], original.tokens[i])) return cat("token ", i, " differs");
    if (loaded.steps.size() > original.steps.size()) return "too many steps";
    for (size_t t = 0; t < loaded.steps.size(); ++t)
        if (!same_step(loaded.steps[t], original.steps[t])) return cat("step ", t, " differs");
    if (loaded.prompt_tokens != std::min(original.prompt_tokens, positions)) return "prompt token count differs";
    if (original.text.compare(0, loaded.text.size(), loaded.text) != 0) return "text is not a prefix";
    size_t generated = 0;
    for (const StepRecord& step : loaded.steps) generated += step.text.size();
    if (loaded.text.size() < generated) return "text shorter than its steps";
    for (const Token& token : loaded.tokens)
        if (token.end > loaded.text.size()) return "token span outside the text";
    return {};
}

// Exactly the original, overview included.
std::string full_mismatch(const Session& loaded, const Session& original) {
    if (std::string problem = prefix_mismatch(loaded, original); !problem.empty()) return problem;
    if (loaded.capture->positions() != original.capture->positions()) return "positions differ";
    if (loaded.tokens.size() != original.tokens.size()) return "token count differs";
    if (loaded.steps.size() != original.steps.size()) return "step count differs";
    if (loaded.text != original.text) return "text differs";
    if (loaded.prompt_tokens != original.prompt_tokens) return "prompt tokens differ";
    const CaptureShape& shape = original.capture->shape();
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head) {
            const auto sums_a = loaded.capture->overview_sums(layer, head), sums_b = original.capture->overview_sums(layer, head);
            const auto max_a = loaded.capture->overview_maxes(layer, head), max_b = original.capture->overview_maxes(layer, head);
            if (sums_a.size() != sums_b.size() || max_a.size() != max_b.size() ||
                std::memcmp(sums_a.data(), sums_b.data(), sums_a.size_bytes()) != 0 ||
                std::memcmp(max_a.data(), max_b.data(), max_a.size_bytes()) != 0)
                return cat("overview of layer ", layer, " head ", head, " differs");
        }
    return {};
}

// Overview blocks whose rows all survived must match the original's (recomputed from Q, K, LSE).
std::string rebuilt_overview_mismatch(const Session& loaded, const Session& original) {
    const CaptureShape& shape = original.capture->shape();
    const int64_t full_blocks = loaded.capture->positions() / CaptureStore::kOverviewBlock;
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head)
            for (int64_t qb = 0; qb < full_blocks; ++qb)
                for (int64_t kb = 0; kb <= qb; ++kb) {
                    const float want = original.capture->overview_sum(layer, head, qb, kb);
                    const float got = loaded.capture->overview_sum(layer, head, qb, kb);
                    const float want_max = original.capture->overview_max(layer, head, qb, kb);
                    const float got_max = loaded.capture->overview_max(layer, head, qb, kb);
                    if (std::fabs(want - got) > 1e-3f * std::max(1.f, want) || std::fabs(want_max - got_max) > 1e-5f)
                        return cat("overview block (", qb, ", ", kb, ") of layer ", layer, " head ", head, ": ", got,
                                   " vs ", want);
                }
    return {};
}

// Offset where the first chunk (metadata) ends: file header, chunk header, frame.
uint64_t metadata_end(const std::string& bytes) {
    uint64_t compressed = 0;
    for (int i = 0; i < 8; ++i) compressed |= uint64_t(uint8_t(bytes[16 + 8 + i])) << (8 * i);
    return 16 + 32 + compressed;
}

// Loads `bytes` written to `path`: either the session or an attn::Error that names the path.
struct LoadOutcome {
    std::optional<Session> session;
    std::string error;
};

LoadOutcome load_bytes(const std::string& path, std::string_view bytes) {
    write_bytes(path, bytes);
    LoadOutcome outcome;
    try {
        outcome.session = load_session(path);
    } catch (const Error& error) {
        outcome.error = error.what();
    }
    return outcome;
}

}  // namespace

TEST_CASE("session file: capture_shape_of follows the model config", "[session_file]") {
    const CaptureShape shape = capture_shape_of(tiny_config(64));
    CHECK(shape.n_layer == 3);
    CHECK(shape.n_head == 4);
    CHECK(shape.n_kv_head == 2);
    CHECK(shape.head_dim == 8);
    CHECK(shape.scale == Approx(1.0 / std::sqrt(8.0)));
    CHECK(shape.sliding_window == 64);
}

TEST_CASE("session file: save and load round-trip every field bit-exactly", "[session_file]") {
    TempDir dir("roundtrip");
    const Session original = make_session({});
    const std::string path = dir.file("session.attn");
    save_session(path, original);
    CHECK(fs::exists(path));
    CHECK_FALSE(fs::exists(path + ".partial"));

    const Session loaded = load_session(path);
    CHECK_FALSE(loaded.recovered_incomplete);
    CHECK(full_mismatch(loaded, original) == "");
    CHECK(loaded.capture->overview_complete());
    CHECK(std::isinf(loaded.steps[3].logprob));
    CHECK(loaded.identity.path == "/models/tiny/模型-\xff.gguf");  // not valid UTF-8, still exact

    SECTION("saving over an existing file replaces it") {
        const Session other = make_session({.positions = 150, .prompt_tokens = 120, .seed = 99});
        save_session(path, other);
        CHECK(full_mismatch(load_session(path), other) == "");
        CHECK_FALSE(fs::exists(path + ".partial"));
    }
}

TEST_CASE("session file: sessions without an overview or without a capture", "[session_file]") {
    TempDir dir("variants");
    SECTION("no overview: the loader rebuilds it from Q, K and LSE") {
        const Session original = make_session({.positions = 180, .prompt_tokens = 150, .overview = false,
                                               .sliding_window = 64});
        save_session(dir.file("a.attn"), original);
        const Session loaded = load_session(dir.file("a.attn"));
        CHECK_FALSE(loaded.recovered_incomplete);
        CHECK(prefix_mismatch(loaded, original) == "");
        CHECK(loaded.capture->positions() == 180);
        CHECK(loaded.capture->shape().sliding_window == 64);
        const Session reference = make_session({.positions = 180, .prompt_tokens = 150, .sliding_window = 64});
        CHECK(rebuilt_overview_mismatch(loaded, reference) == "");
    }
    SECTION("no capture at all") {
        Session original = make_session({.positions = 40, .prompt_tokens = 30});
        original.capture.reset();
        save_session(dir.file("b.attn"), original);
        const Session loaded = load_session(dir.file("b.attn"));
        CHECK_FALSE(loaded.recovered_incomplete);
        CHECK(loaded.capture == nullptr);
        CHECK(loaded.text == original.text);
        REQUIRE(loaded.tokens.size() == original.tokens.size());
        REQUIRE(loaded.steps.size() == original.steps.size());
        for (size_t t = 0; t < loaded.steps.size(); ++t) CHECK(same_step(loaded.steps[t], original.steps[t]));
    }
    SECTION("an empty session") {
        Session original;
        original.config = tiny_config();
        original.capture = std::make_unique<CaptureStore>(capture_shape_of(original.config));
        save_session(dir.file("c.attn"), original);
        const Session loaded = load_session(dir.file("c.attn"));
        CHECK_FALSE(loaded.recovered_incomplete);
        CHECK(loaded.positions() == 0);
        CHECK(loaded.capture->positions() == 0);
    }
}

TEST_CASE("session file: streaming writer recovers exactly what was flushed", "[session_file]") {
    TempDir dir("streaming");
    const Session full = make_session({.positions = 300, .prompt_tokens = 200});
    const std::string path = dir.file("live.attn");
    Session live = prefix_session(full, 0);
    std::vector<std::pair<int64_t, std::string>> snapshots;  // positions flushed → .partial bytes

    {
        SessionWriter writer(path, live);
        grow_session(live, full, 200);  // prefill
        writer.flush(live);
        snapshots.push_back({200, read_bytes(writer.partial_path())});
        for (int64_t positions : {201, 230, 231, 260, 299}) {
            grow_session(live, full, positions);
            writer.flush(live);
            snapshots.push_back({positions, read_bytes(writer.partial_path())});
        }
        grow_session(live, full, 300);  // decoded but never flushed: lost when the process dies
        CHECK(fs::exists(path + ".partial"));
    }  // the writer goes away without finish(), as if the process were killed

    CHECK_FALSE(fs::exists(path));
    const Session recovered = load_session(path + ".partial");
    CHECK(recovered.recovered_incomplete);
    CHECK(recovered.capture->positions() == 299);
    CHECK(prefix_mismatch(recovered, full) == "");
    CHECK(recovered.tokens.size() == 299);
    CHECK(recovered.steps.size() == 99);
    CHECK(rebuilt_overview_mismatch(recovered, full) == "");

    for (const auto& [positions, bytes] : snapshots) {
        INFO("snapshot at " << positions << " positions");
        const LoadOutcome outcome = load_bytes(dir.file("snapshot.attn"), bytes);
        REQUIRE(outcome.session);
        const Session& session = *outcome.session;
        CHECK(session.recovered_incomplete);
        CHECK(session.capture->positions() == positions);
        CHECK(int64_t(session.tokens.size()) == positions);
        CHECK(int64_t(session.steps.size()) == positions - 200);
        CHECK(prefix_mismatch(session, full) == "");
        CHECK(session.text == prefix_session(full, positions).text);
    }

    SECTION("a writer that finishes produces the complete file") {
        SessionWriter writer(path, prefix_session(full, 0));
        Session again = prefix_session(full, 0);
        for (int64_t positions : {200, 250, 300}) {
            grow_session(again, full, positions);
            writer.flush(again);
        }
        writer.finish(again);
        CHECK_FALSE(fs::exists(path + ".partial"));
        const Session loaded = load_session(path);
        CHECK_FALSE(loaded.recovered_incomplete);
        CHECK(full_mismatch(loaded, full) == "");
    }
}

TEST_CASE("session file: a file cut at any offset loads a prefix or fails clearly", "[session_file]") {
    TempDir dir("truncated");
    const std::string path = dir.file("cut.attn");

    auto check_cut = [&](const Session& original, const std::string& bytes, size_t cut) {
        INFO("cut at " << cut << " of " << bytes.size());
        const LoadOutcome outcome = load_bytes(path, std::string_view(bytes).substr(0, cut));
        if (cut < metadata_end(bytes)) {
            REQUIRE_FALSE(outcome.session);
            REQUIRE(outcome.error.find(path) != std::string::npos);
            return;
        }
        REQUIRE(outcome.session);
        REQUIRE(outcome.session->recovered_incomplete == (cut < bytes.size()));
        REQUIRE(prefix_mismatch(*outcome.session, original) == "");
    };

    SECTION("every offset of a small file written in many chunks") {
        const Session original =
            make_session({.positions = 24, .prompt_tokens = 12, .data = Data::Smooth, .seed = 3, .layers = 1});
        const std::string final_path = dir.file("small.attn");
        {
            Session live = prefix_session(original, 0);
            SessionWriter writer(final_path, live);
            for (int64_t positions = 3; positions <= 24; positions += 3) {
                grow_session(live, original, positions);
                writer.flush(live);
            }
            writer.finish(live);
        }
        const std::string bytes = read_bytes(final_path);
        REQUIRE(bytes.size() < 10000);  // small enough to try every offset quickly
        for (size_t cut = 0; cut <= bytes.size(); ++cut) check_cut(original, bytes, cut);
    }
    SECTION("a stride over a larger file") {
        const Session original = make_session({});
        save_session(dir.file("large.attn"), original);
        const std::string bytes = read_bytes(dir.file("large.attn"));
        const size_t meta_end = metadata_end(bytes);
        for (size_t cut = 0; cut < meta_end + 64; cut += 7) check_cut(original, bytes, cut);
        for (size_t cut = meta_end; cut <= bytes.size(); cut += 331) check_cut(original, bytes, cut);
        for (size_t cut = bytes.size() - 200; cut <= bytes.size(); ++cut) check_cut(original, bytes, cut);
    }
}

TEST_CASE("session file: corrupted bytes give an error or a correct prefix, never garbage", "[session_file]") {
    TempDir dir("corrupt");
    const std::string path = dir.file("flipped.attn");
    const Session original = make_session({.positions = 260, .prompt_tokens = 200, .seed = 11});
    save_session(dir.file("good.attn"), original);
    const std::string good = read_bytes(dir.file("good.attn"));
    const size_t meta_end = metadata_end(good);

    std::mt19937_64 rng(12345);
    int errors = 0, recovered = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::string bytes = good;
        const int flips = trial % 4 == 0 ? 1 + int(rng() % 8) : 1;
        size_t first_flip = bytes.size();
        for (int f = 0; f < flips; ++f) {
            // Half the trials aim at the small region of header and metadata.
            const size_t at = trial % 2 == 0 ? rng() % meta_end : rng() % bytes.size();
            bytes[at] = char(uint8_t(bytes[at]) ^ uint8_t(1 + rng() % 255));
            first_flip = std::min(first_flip, at);
        }
        INFO("trial " << trial << ", first flip at " << first_flip);
        const LoadOutcome outcome = load_bytes(path, bytes);
        if (!outcome.session) {
            REQUIRE(first_flip < meta_end);  // only damage to the header or metadata is fatal
            REQUIRE(outcome.error.find(path) != std::string::npos);
            ++errors;
            continue;
        }
        REQUIRE(prefix_mismatch(*outcome.session, original) == "");
        if (outcome.session->recovered_incomplete) ++recovered;
    }
    CHECK(errors > 0);
    CHECK(recovered > 0);
}

TEST_CASE("session file: a failed save leaves no half-written file", "[session_file]") {
    TempDir dir("atomic");
    const Session session = make_session({.positions = 60, .prompt_tokens = 40});

    SECTION("directory that does not exist") {
        const std::string path = dir.file("missing/dir/s.attn");
        try {
            save_session(path, session);
            FAIL("save_session should have thrown");
        } catch (const Error& error) {
            CHECK(std::string(error.what()).find(path) != std::string::npos);
        }
        CHECK_FALSE(fs::exists(path));
        CHECK_FALSE(fs::exists(path + ".partial"));
    }
    SECTION("final path is a directory: the rename fails, nothing is left behind") {
        const std::string path = dir.file("taken");
        fs::create_directories(path);
        CHECK_THROWS_AS(save_session(path, session), Error);
        CHECK(fs::is_directory(path));
        CHECK_FALSE(fs::exists(path + ".partial"));
    }
    SECTION("an existing session survives a failed save to the same path") {
        const std::string path = dir.file("keep.attn");
        save_session(path, session);
        Session broken = make_session({.positions = 60, .prompt_tokens = 40});
        broken.text += "x";  // text no longer ends with the generated bytes: refused
        CHECK_THROWS_AS(save_session(path, broken), Error);
        CHECK(full_mismatch(load_session(path), session) == "");
        CHECK_FALSE(fs::exists(path + ".partial"));
    }
    SECTION("an unfinished writer never creates the final file") {
        const std::string path = dir.file("unfinished.attn");
        {
            SessionWriter writer(path, session);
            writer.flush(session);
        }
        CHECK_FALSE(fs::exists(path));
        CHECK(fs::exists(path + ".partial"));
    }
}

TEST_CASE("session file: newer format versions and unknown flags are refused", "[session_file]") {
    TempDir dir("version");
    const std::string path = dir.file("s.attn");
    save_session(path, make_session({.positions = 20, .prompt_tokens = 10}));
    std::string bytes = read_bytes(path);

    SECTION("newer version") {
        bytes[8] = 3;
        const LoadOutcome outcome = load_bytes(path, bytes);
        REQUIRE_FALSE(outcome.session);
        CHECK(outcome.error.find("newer attnscope (format 3)") != std::string::npos);
        CHECK(outcome.error.find("reads up to 2") != std::string::npos);
        CHECK(outcome.error.find(path) != std::string::npos);
    }
    SECTION("unknown flag") {
        bytes[12] = 1;
        const LoadOutcome outcome = load_bytes(path, bytes);
        REQUIRE_FALSE(outcome.session);
        CHECK(outcome.error.find(path) != std::string::npos);
    }
}

TEST_CASE("session file: files that are not sessions give clear errors naming the path", "[session_file]") {
    TempDir dir("not_sessions");
    auto error_for = [](const std::string& path) -> std::string {
        try {
            load_session(path);
        } catch (const Error& error) {
            return error.what();
        }
        return "(no error)";
    };
    const std::string missing = dir.file("missing.attn");
    CHECK_THAT(error_for(missing), Catch::Contains(missing) && Catch::Contains("no such file"));
    const std::string directory = dir.file("folder.attn");
    fs::create_directories(directory);
    CHECK_THAT(error_for(directory), Catch::Contains(directory) && Catch::Contains("directory"));
    const std::string empty = dir.file("empty.attn");
    write_bytes(empty, "");
    CHECK_THAT(error_for(empty), Catch::Contains(empty) && Catch::Contains("empty"));
    const std::string text = dir.file("notes.attn");
    write_bytes(text, "just some notes\n");
    CHECK_THAT(error_for(text), Catch::Contains(text) && Catch::Contains("not an attnscope session"));
    const std::string gguf = dir.file("model.gguf");
    write_bytes(gguf, std::string("GGUF\x03\0\0\0", 8) + std::string(64, '\0'));
    CHECK_THAT(error_for(gguf), Catch::Contains(gguf) && Catch::Contains("not an attnscope session"));
    const std::string header_only = dir.file("header_only.attn");
    write_bytes(header_only, std::string("ATTNSCP\0\1\0\0\0\0\0\0\0", 16));
    CHECK_THAT(error_for(header_only), Catch::Contains(header_only) && Catch::Contains("not a valid or complete"));
    const std::string short_magic = dir.file("short.attn");
    write_bytes(short_magic, "ATTN");
    CHECK_THAT(error_for(short_magic), Catch::Contains(short_magic) && Catch::Contains("not a valid or complete"));
}

// The default model's shape (SmolLM2-135M: 30 layers, 9 heads, 3 kv heads, head dim 64), random
// LSE and a uniform overview: for sizes and speeds, where exact attention would take too long.
Session make_wide_session(int64_t positions, Data data) {
    Session session;
    session.config = tiny_config();
    session.config.n_layer = 30;
    session.config.n_head = 9;
    session.config.n_kv_head = 3;
    session.config.head_dim = 64;
    session.prompt_tokens = positions;
    session.text = std::string(size_t(positions), 'a');
    for (int64_t i = 0; i < positions; ++i) session.tokens.push_back({int32_t(i), uint32_t(i), uint32_t(i + 1)});
    const CaptureShape shape = capture_shape_of(session.config);
    session.capture = make_capture(shape, positions, data, 5, false, false);
    for (int layer = 0; layer < shape.n_layer; ++layer)
        for (int head = 0; head < shape.n_head; ++head)
            for (int64_t query = 0; query < positions; ++query)
                session.capture->accumulate_overview(layer, head, query,
                                                     std::vector<float>(size_t(query + 1), 1.f / float(query + 1)));
    return session;
}

TEST_CASE("session file: chunks of several megabytes (coded on several threads) round-trip", "[session_file]") {
    TempDir dir("wide");
    const Session original = make_wide_session(300, Data::Random);  // about 28 MB of Q, K, LSE
    save_session(dir.file("wide.attn"), original);
    const Session loaded = load_session(dir.file("wide.attn"));
    CHECK_FALSE(loaded.recovered_incomplete);
    CHECK(full_mismatch(loaded, original) == "");
}

// Not run by default: prints bytes per position for data of different character.
TEST_CASE("session file: compression figures", "[.][session_file][compression]") {
    TempDir dir("compression");
    const int64_t positions = 1024;
    for (const auto& [name, data] : {std::pair{"random fp32", Data::Random}, std::pair{"bf16-valued", Data::Bf16Random},
                                     std::pair{"smooth", Data::Smooth}}) {
        const Session session = make_wide_session(positions, data);
        const CaptureShape& shape = session.capture->shape();
        const double raw_per_position =
            4.0 * shape.n_layer * (shape.n_head * shape.head_dim + shape.n_kv_head * shape.head_dim + shape.n_head);
        const std::string path = dir.file("c.attn");
        const auto start = std::chrono::steady_clock::now();
        save_session(path, session);
        const double save_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const auto load_start = std::chrono::steady_clock::now();
        (void)load_session(path);
        const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
        const double per_position = double(fs::file_size(path)) / double(positions);
        std::printf("%-12s %9.0f bytes/position (raw %.0f, ratio %.3f), save %.0f MB/s, load %.0f MB/s\n", name,
                    per_position, raw_per_position, per_position / raw_per_position,
                    raw_per_position * double(positions) / save_s / 1e6,
                    raw_per_position * double(positions) / load_s / 1e6);
    }
}
