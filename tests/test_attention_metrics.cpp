// Attention metrics (engine/attention_metrics.h) on hand-made rows and on crafted sessions whose
// attention is known exactly: row comparison (JSD, L1, deltas), step diffs, head focus, regex mass
// and the loop alarm.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <random>

#include "engine/attention_metrics.h"
#include "tests/crafted_session.h"
#include "engine/error.h"

using namespace attn;
using attn::testing::CraftedSpec;
using attn::testing::make_crafted_session;

namespace {

std::vector<std::string> words_of(const std::string& sentence) {
    std::vector<std::string> words;
    size_t start = 0;
    while (start < sentence.size()) {
        size_t end = sentence.find(' ', start + 1);
        if (end == std::string::npos) end = sentence.size();
        words.push_back(sentence.substr(start, end - start));  // keeps the leading space, as BPE tokens do
        start = end;
    }
    return words;
}

}  // namespace

TEST_CASE("row comparison: JSD and L1 of known rows", "[metrics]") {
    SECTION("identical rows do not move") {
        const std::vector<float> row{0.1f, 0.2f, 0.3f, 0.4f};
        const RowComparison c = compare_rows(row, row);
        CHECK(c.jsd_bits == Approx(0).margin(1e-12));
        CHECK(c.l1 == Approx(0).margin(1e-12));
        CHECK(c.new_key_mass == 0);
    }
    SECTION("disjoint focus moves by one bit") {
        const RowComparison c = compare_rows(std::vector<float>{1, 0}, std::vector<float>{0, 1, 0});
        CHECK(c.jsd_bits == Approx(1.0).margin(1e-12));
        CHECK(c.l1 == Approx(2.0));
        CHECK(c.new_key_mass == 0);
    }
    SECTION("half versus all") {
        // m = (0.75, 0.25): ½·[0.5 log2(0.5/0.75) + 0.5 log2(0.5/0.25)] + ½·log2(1/0.75)
        const double expected = 0.5 * (0.5 * std::log2(0.5 / 0.75) + 0.5 * std::log2(2.0)) + 0.5 * std::log2(1 / 0.75);
        const RowComparison c = compare_rows(std::vector<float>{0.5f, 0.5f}, std::vector<float>{1, 0});
        CHECK(c.jsd_bits == Approx(expected).epsilon(1e-9));
        CHECK(c.l1 == Approx(1.0));
    }
    SECTION("the later row is renormalised over the shared keys; the rest is new-key mass") {
        const RowComparison same = compare_rows(std::vector<float>{0.5f, 0.5f}, std::vector<float>{0.25f, 0.25f, 0.5f});
        CHECK(same.jsd_bits == Approx(0).margin(1e-12));
        CHECK(same.l1 == Approx(0).margin(1e-12));
        CHECK(same.new_key_mass == Approx(0.5));

        const std::vector<float> earlier{0.5f, 0.5f}, later{0.6f, 0.2f, 0.2f};  // shared part renormalised: 0.75, 0.25
        const RowComparison c = compare_rows(earlier, later);
        CHECK(c.l1 == Approx(0.5));
        CHECK(c.new_key_mass == Approx(0.2));
        const std::vector<float> delta = attention_delta(earlier, later);
        REQUIRE(delta.size() == 2);
        CHECK(delta[0] == Approx(0.25));
        CHECK(delta[1] == Approx(-0.25));
    }
    SECTION("a later row with nothing on the shared keys is a total move") {
        const RowComparison c = compare_rows(std::vector<float>{0.5f, 0.5f}, std::vector<float>{0, 0, 1});
        CHECK(c.jsd_bits == 1.0);
        CHECK(c.l1 == 2.0);
        CHECK(c.new_key_mass == Approx(1.0));
        const std::vector<float> delta = attention_delta(std::vector<float>{0.5f, 0.5f}, std::vector<float>{0, 0, 1});
        CHECK(delta == std::vector<float>{-0.5f, -0.5f});
    }
    SECTION("JSD is symmetric, bounded and normalises its inputs") {
        const std::vector<double> p{2, 1, 1}, q{0, 1, 3};
        const double forward = jensen_shannon_bits(p, q), backward = jensen_shannon_bits(q, p);
        CHECK(forward == Approx(backward));
        CHECK(forward > 0);
        CHECK(forward < 1);
        CHECK(jensen_shannon_bits(std::vector<double>{1, 1}, std::vector<double>{3, 3}) == Approx(0).margin(1e-12));
    }
    SECTION("misuse fails") {
        CHECK_THROWS_AS(compare_rows(std::vector<float>{0.5f, 0.5f}, std::vector<float>{1}), Error);
        CHECK_THROWS_AS(compare_rows(std::vector<float>{}, std::vector<float>{1}), Error);
        CHECK_THROWS_AS(jensen_shannon_bits(std::vector<double>{1}, std::vector<double>{1, 0}), Error);
    }
}

TEST_CASE("head focus of crafted heads: uniform, one-hot, previous token, sink", "[metrics]") {
    CraftedSpec spec;
    spec.words = words_of("a b c d e f g h i j");
    spec.prompt_tokens = 5;
    spec.focus = [](int layer, int head, int64_t i) -> std::vector<int64_t> {
        if (layer == 0 && head == 0) return {};                       // uniform
        if (layer == 0 && head == 1) return {std::min<int64_t>(i, 3)};  // one-hot on key 3
        if (layer == 1 && head == 0) return {std::max<int64_t>(i - 1, 0)};  // previous token
        return {0};                                                   // sink
    };
    const Session session = make_crafted_session(spec);
    const CpuTileSource source(*session.capture);
    for (int64_t i : {2, 4, 9}) {  // from 2 on, the sink key is not the previous token
        INFO("query " << i);
        const HeadFocus uniform = head_focus(source.row(0, 0, i));
        CHECK(uniform.entropy_bits == Approx(std::log2(double(i + 1))).epsilon(1e-6));
        CHECK(uniform.top1 == Approx(1.0 / double(i + 1)).epsilon(1e-6));
        CHECK(uniform.top1_key == 0);  // ties: the first key
        CHECK(entropy_bits(source.row(0, 0, i)) == Approx(uniform.entropy_bits));

        const HeadFocus one_hot = head_focus(source.row(0, 1, i));
        CHECK(one_hot.entropy_bits == Approx(0).margin(1e-6));
        CHECK(one_hot.top1 == Approx(1.0).epsilon(1e-6));
        CHECK(one_hot.top1_key == std::min<int64_t>(i, 3));

        const HeadFocus previous = head_focus(source.row(1, 0, i));
        CHECK(previous.previous_token_mass == Approx(1.0).epsilon(1e-6));
        CHECK(previous.top1_key == i - 1);

        const HeadFocus sink = head_focus(source.row(1, 1, i));
        CHECK(sink.sink_mass == Approx(1.0).epsilon(1e-6));
        CHECK(sink.previous_token_mass == Approx(0).margin(1e-6));
    }
    CHECK(head_focus(source.row(1, 0, 0)).previous_token_mass == 0);  // query 0 has no previous token
    CHECK(head_focus(std::vector<float>{}).top1_key == -1);
    CHECK(query_of_step(session, 0) == 5);
    CHECK(query_of_step(session, 4) == 9);
    CHECK_THROWS_AS(query_of_step(session, 5), Error);
    CHECK_THROWS_AS(query_of_step(session, -1), Error);
}

TEST_CASE("regex mass: tokens overlapping matches, summed from the row", "[metrics]") {
    CraftedSpec spec;
    // "con" + "tract" are two tokens of one word; " Contract" differs in case only.
    spec.words = {"The", " con", "tract", " says", " Contract", " law", " xy", " contract"};
    spec.prompt_tokens = 6;
    spec.focus = [](int, int head, int64_t i) -> std::vector<int64_t> {
        if (head == 0) return {};  // uniform
        return i >= 2 ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{};  // "con" and "tract"
    };
    const Session session = make_crafted_session(spec);
    const CpuTileSource source(*session.capture);

    const std::vector<int64_t> matched = tokens_matching(session, compile_pattern("contract"));
    CHECK(matched == std::vector<int64_t>{1, 2, 7});  // a match spanning two tokens marks both
    CHECK(tokens_matching(session, compile_pattern("contract", true)) == std::vector<int64_t>{1, 2, 4, 7});
    CHECK(tokens_matching(session, compile_pattern("on")) == std::vector<int64_t>{1, 4, 7});
    CHECK(tokens_matching(session, compile_pattern("t l")) == std::vector<int64_t>{4, 5});  // across a boundary
    CHECK(tokens_matching(session, compile_pattern("z*")).empty());                      // empty matches only
    // Limited to the text up to a token: what was known when that token was the latest.
    CHECK(tokens_matching(session, compile_pattern("Contract law"), session.tokens[4].end).empty());
    CHECK(tokens_matching(session, compile_pattern("Contract law"), session.tokens[5].end) == std::vector<int64_t>{4, 5});
    CHECK_THROWS_WITH(compile_pattern("con("), Catch::Contains("con("));

    for (int64_t query : {2, 5, 7}) {
        INFO("query " << query);
        const std::vector<float> uniform = source.row(0, 0, query), focused = source.row(0, 1, query);
        double expected_uniform = 0, expected_focused = 0;
        for (int64_t key : matched)
            if (key <= query) {
                expected_uniform += uniform[key];
                expected_focused += focused[key];
            }
        CHECK(mass_on_keys(uniform, matched) == Approx(expected_uniform));
        CHECK(mass_on_keys(focused, matched) == Approx(expected_focused));
        const double uniform_count = query >= 7 ? 3 : 2;  // keys 1, 2 (and 7)
        CHECK(mass_on_keys(uniform, matched) == Approx(uniform_count / double(query + 1)).epsilon(1e-6));
        CHECK(mass_on_keys(focused, matched) == Approx(1.0).epsilon(1e-6));
    }
}

TEST_CASE("step diff: per-head JSD/L1 and the ranking of moved heads", "[metrics]") {
    CraftedSpec spec;
    spec.words = words_of("a b c d e f g h i j k l");
    spec.prompt_tokens = 8;
    spec.n_layer = 3;
    spec.n_head = 2;
    spec.focus = [](int layer, int head, int64_t i) -> std::vector<int64_t> {
        // (Early queries that can't see the key look at themselves.)
        if (layer == 2 && head == 1) return {std::min<int64_t>(i, i < 10 ? 2 : 5)};  // key 2 → key 5 from query 10
        if (layer == 1 && head == 0) return {std::min<int64_t>(i, i < 10 ? 2 : 3)};  // key 2 → key 3
        if (layer == 1 && head == 1) return {0};               // sink: stays
        if (layer == 0 && head == 1) return {i};               // self: moves onto the new key
        return {};                                             // uniform: same focus after renormalising
    };
    const Session session = make_crafted_session(spec);
    const CpuTileSource source(*session.capture);

    const StepDiff diff = diff_steps(source, session, 10, 9);
    CHECK(diff.earlier_query == 9);
    CHECK(diff.later_query == 10);
    REQUIRE(diff.heads.size() == 6);
    CHECK(diff.at(2, 1).change.jsd_bits == Approx(1.0).epsilon(1e-6));
    CHECK(diff.at(2, 1).change.l1 == Approx(2.0).epsilon(1e-6));
    CHECK(diff.at(1, 0).change.jsd_bits == Approx(1.0).epsilon(1e-6));
    CHECK(diff.at(1, 1).change.jsd_bits == Approx(0).margin(1e-6));
    CHECK(diff.at(0, 0).change.jsd_bits == Approx(0).margin(1e-6));
    CHECK(diff.at(0, 0).change.new_key_mass == Approx(1.0 / 11.0).epsilon(1e-6));
    CHECK(diff.at(0, 1).change.new_key_mass == Approx(1.0).epsilon(1e-6));
    CHECK(diff.at(0, 1).change.jsd_bits == 1.0);  // (almost) nothing left on the shared keys: a total move
    CHECK(diff.at(0, 1).change.l1 == 2.0);

    // Ranking: JSD descending; equal heads keep layer/head order.
    REQUIRE(diff.ranking.size() == 6);
    for (size_t r = 1; r < diff.ranking.size(); ++r)
        CHECK(diff.heads[diff.ranking[r - 1]].change.jsd_bits >= diff.heads[diff.ranking[r]].change.jsd_bits - 1e-9);
    CHECK(diff.moved_most().change.jsd_bits == Approx(1.0).epsilon(1e-6));
    CHECK(diff.heads[diff.ranking[5]].change.jsd_bits == Approx(0).margin(1e-6));

    // Deltas: head (2, 1) loses key 2 and gains key 5.
    const std::vector<float> delta = key_deltas(source, 2, 1, 9, 10);
    REQUIRE(delta.size() == 10);
    CHECK(delta[2] == Approx(-1.0).epsilon(1e-6));
    CHECK(delta[5] == Approx(1.0).epsilon(1e-6));
    double l1 = 0;
    for (float d : delta) l1 += std::abs(d);
    CHECK(l1 == Approx(diff.at(2, 1).change.l1).epsilon(1e-6));

    // Same answer on the calling thread only and on a private pool.
    for (int threads : {1, 3}) {
        const StepDiff again = diff_steps(source, session, 9, 10, threads);
        for (size_t h = 0; h < diff.heads.size(); ++h) {
            CHECK(again.heads[h].change.jsd_bits == diff.heads[h].change.jsd_bits);
            CHECK(again.heads[h].change.l1 == diff.heads[h].change.l1);
        }
        CHECK(again.ranking == diff.ranking);
    }
    const StepDiff none = diff_steps(source, session, 7, 7);
    for (const HeadDiff& d : none.heads) CHECK(d.change.jsd_bits == Approx(0).margin(1e-9));
    CHECK_THROWS_AS(diff_steps(source, session, 0, 12), Error);  // past the capture
}

namespace {

// A session with prompt `prompt` and generated text `generated` (space-separated words), two layers of
// two heads: L1H0 is an induction head (at query i it attends to the key right after the most recent
// earlier occurrence of token i, when there is one, else to key 0), the others are uniform, previous-token
// and sink heads. With copying = false, L1H0 is a previous-token head instead.
Session make_generation(const std::string& prompt, const std::string& generated, bool copying) {
    CraftedSpec spec;
    spec.words = words_of(prompt);
    spec.prompt_tokens = static_cast<int64_t>(spec.words.size());
    for (const std::string& word : words_of(generated)) spec.words.push_back(word);
    const std::vector<std::string> words = spec.words;
    spec.focus = [words, copying](int layer, int head, int64_t i) -> std::vector<int64_t> {
        if (layer == 0) return head == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{std::max<int64_t>(i - 1, 0)};
        if (head == 1) return {0};
        if (!copying) return {std::max<int64_t>(i - 1, 0)};
        for (int64_t e = i - 1; e >= 0; --e)
            if (words[e] == words[i]) return {e + 1};
        return {0};
    };
    return make_crafted_session(spec);
}

}  // namespace

TEST_CASE("loop alarm: repeated n-gram with copying attention", "[metrics]") {
    // Prompt 3 tokens; generated x y z w x y z w x y z (steps 0..10).
    const Session looping = make_generation("Once upon a", " x y z w x y z w x y z", true);
    const CpuTileSource source(*looping.capture);
    const int64_t last = static_cast<int64_t>(looping.steps.size()) - 1;

    const LoopAlarm alarm = detect_loop(looping, source, last);
    CHECK(alarm.fired);
    CHECK(alarm.query == 13);
    CHECK(alarm.ngram_length == 7);  // " x y z w x y z": the whole repeat, back to the end of the prompt
    CHECK(alarm.ngram_begin == 7);
    CHECK(alarm.earlier_begin == 3);
    CHECK(alarm.occurrences == 1);
    CHECK(alarm.ngram_text == " x y z w x y z");
    CHECK(alarm.successor_keys == std::vector<int64_t>{10});
    CHECK(alarm.score == Approx(1.0).epsilon(1e-6));
    CHECK(alarm.best_layer == 1);
    CHECK(alarm.best_head == 0);
    CHECK(alarm.copying_heads == 1);
    CHECK(alarm.considered_heads == 4);

    // The first steps don't repeat yet; the alarm starts once 3 generated tokens repeat (step 6: " x y z").
    for (int64_t step = 0; step <= last; ++step) {
        INFO("step " << step);
        CHECK(detect_loop(looping, source, step).fired == (step >= 6));
    }

    SECTION("layers and thresholds restrict what counts as copying") {
        LoopAlarmParams params;
        params.layers = {0};
        CHECK_FALSE(detect_loop(looping, source, last, params).fired);  // layer 0 has no copying head
        params.layers = {1};
        CHECK(detect_loop(looping, source, last, params).fired);
        params.min_copying_heads = 2;
        CHECK_FALSE(detect_loop(looping, source, last, params).fired);
        params = {};
        params.min_ngram = 8;
        CHECK(detect_loop(looping, source, last, params).ngram_length == 0);
        params.threads = 1;
        params.min_ngram = 3;
        params.max_ngram = 4;
        const LoopAlarm shorter = detect_loop(looping, source, last, params);
        CHECK(shorter.fired);
        CHECK(shorter.ngram_length == 4);
        CHECK(shorter.occurrences == 1);
        params.layers = {5};
        CHECK_THROWS_AS(detect_loop(looping, source, last, params), Error);
    }
}

TEST_CASE("loop alarm stays quiet without repetition or without copying", "[metrics]") {
    SECTION("no repeated n-gram") {
        const Session fresh = make_generation("Once upon a", " x y z w v u t s r q", true);
        const CpuTileSource source(*fresh.capture);
        for (int64_t step = 0; step < static_cast<int64_t>(fresh.steps.size()); ++step) {
            const LoopAlarm alarm = detect_loop(fresh, source, step);
            CHECK_FALSE(alarm.fired);
            CHECK(alarm.ngram_length == 0);
        }
    }
    SECTION("repetition, but the attention does not copy") {
        const Session parrot = make_generation("Once upon a", " x y z w x y z w x y z", false);
        const CpuTileSource source(*parrot.capture);
        const LoopAlarm alarm = detect_loop(parrot, source, 10);
        CHECK(alarm.ngram_length == 7);
        CHECK_FALSE(alarm.fired);
        CHECK(alarm.score < 0.5);
        LoopAlarmParams repetition_only;
        repetition_only.min_copying_heads = 0;
        CHECK(detect_loop(parrot, source, 10, repetition_only).fired);
    }
    SECTION("copying from the prompt counts only when the prompt is searched") {
        const Session quoting = make_generation("p x y z w q", " x y z w", true);
        const CpuTileSource source(*quoting.capture);
        const LoopAlarm alarm = detect_loop(quoting, source, 3);
        CHECK(alarm.fired);
        CHECK(alarm.ngram_length == 4);
        CHECK(alarm.earlier_begin == 1);
        LoopAlarmParams generated_only;
        generated_only.search_prompt = false;
        CHECK_FALSE(detect_loop(quoting, source, 3, generated_only).fired);
    }
}

// Timing of a diff on the default model's shape (30 layers × 9 heads, 3 KV heads, head dim 64) at
// 3000 tokens. Q/K are random and LSE approximate: only the cost is measured.
TEST_CASE("diff_steps and detect_loop cost at SmolLM2 shape", "[.][metrics-bench]") {
    const CaptureShape shape{30, 9, 3, 64, 0.125f, 0};
    const int64_t n = 3000;
    Session session;
    session.capture = std::make_unique<CaptureStore>(shape);
    CaptureStore& store = *session.capture;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 0.5f);
    std::vector<float> q(static_cast<size_t>(n * shape.n_head * shape.head_dim));
    std::vector<float> k(static_cast<size_t>(n * shape.n_kv_head * shape.head_dim));
    std::vector<float> lse(static_cast<size_t>(n * shape.n_head));
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (int64_t i = 0; i < n; ++i)
        for (int h = 0; h < shape.n_head; ++h) lse[i * shape.n_head + h] = std::log(float(i + 1)) + 0.5f;
    for (int layer = 0; layer < shape.n_layer; ++layer) store.record_layer(layer, 0, n, q.data(), k.data(), lse.data());
    const CpuTileSource source(store);
    for (int threads : {1, 0}) {
        const auto start = std::chrono::steady_clock::now();
        const int repeats = 5;
        for (int r = 0; r < repeats; ++r) diff_steps(source, session, n - 2, n - 1, threads);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / repeats;
        WARN("diff_steps, 270 heads at " << n << " tokens, threads " << threads << ": " << ms << " ms");
    }

    // Regex over a 50k-token text (what a mass(/…/) watchpoint rescans when the text changed).
    Session words;
    for (int64_t i = 0; i < 50000; ++i) {
        const std::string word = (i % 997 == 0) ? " contract" : " w" + std::to_string(i);
        words.tokens.push_back(Token{0, static_cast<uint32_t>(words.text.size()),
                                     static_cast<uint32_t>(words.text.size() + word.size())});
        words.text += word;
    }
    const std::regex pattern = compile_pattern("contract");
    const auto start = std::chrono::steady_clock::now();
    const size_t matched = tokens_matching(words, pattern).size();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    WARN("tokens_matching over " << words.text.size() << " bytes: " << ms << " ms, " << matched << " tokens");
}
