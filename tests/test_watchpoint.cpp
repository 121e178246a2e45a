// Watchpoints (engine/watchpoint.h): the grammar (valid forms, canonical text, errors with columns) and
// evaluation on a crafted session whose attention changes at known steps.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <map>

#include "engine/error.h"
#include "engine/watchpoint.h"
#include "tests/crafted_session.h"

using namespace attn;

namespace {

// Uses tests/crafted_session.h: every logprob given, 2 layers × 2 heads.
Session make_crafted_session(const std::vector<std::string>& words, int64_t prompt_tokens,
                             const std::function<std::vector<int64_t>(int, int, int64_t)>& focus,
                             const std::vector<float>& logprobs) {
    REQUIRE(logprobs.size() == words.size() - static_cast<size_t>(prompt_tokens));
    attn::testing::CraftedSpec spec;
    spec.words = words;
    spec.prompt_tokens = prompt_tokens;
    spec.focus = focus;
    spec.logprobs = logprobs;
    return attn::testing::make_crafted_session(spec);
}

// Prompt "The contract says that" (4 tokens), then 5 decode steps (queries 4..8). L0H0 is uniform, L0H1
// a previous-token head, L1H1 a sink head, and L1H0 is uniform except at step 2 (query 6), where it
// looks only at " contract". Step 3's token has probability e^−2.5 ≈ 0.08.
Session make_contract_session() {
    const std::vector<std::string> words{"The", " contract", " says", " that", " the", " buyer", " pays", " the", " seller"};
    return make_crafted_session(
        words, 4,
        [](int layer, int head, int64_t i) -> std::vector<int64_t> {
            if (layer == 0) return head == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{std::max<int64_t>(i - 1, 0)};
            if (head == 1) return {0};
            return i == 6 ? std::vector<int64_t>{1} : std::vector<int64_t>{};
        },
        {-0.1f, -0.2f, -0.3f, -2.5f, -0.05f});
}

// The first step at which the watchpoint fires (what "Run to watchpoint" stops at); -1: none.
int64_t first_firing_step(const Watchpoint& w, const Session& session, const CpuTileSource& source, int64_t from = 0) {
    for (int64_t step = from; step < static_cast<int64_t>(session.steps.size()); ++step)
        if (evaluate(w, session, source, step).fired) return step;
    return -1;
}

std::vector<int64_t> firing_steps(const std::string& text, const Session& session, const CpuTileSource& source) {
    const Watchpoint w = parse_watchpoint(text);
    std::vector<int64_t> steps;
    for (int64_t step = 0; step < static_cast<int64_t>(session.steps.size()); ++step)
        if (evaluate(w, session, source, step).fired) steps.push_back(step);
    return steps;
}

bool same_range(const IndexRange& a, const IndexRange& b) { return a.first == b.first && a.last == b.last; }

}  // namespace

TEST_CASE("watchpoint grammar: the documented forms", "[watchpoint]") {
    SECTION("a metric of one head") {
        const Watchpoint w = parse_watchpoint("entropy of L12H3 < 0.5");
        CHECK(w.aggregate == WatchAggregate::Any);
        CHECK(w.metric == WatchMetric::Entropy);
        REQUIRE(w.heads.size() == 1);
        CHECK(same_range(w.heads[0].layers, {12, 12}));
        CHECK(same_range(w.heads[0].heads, {3, 3}));
        CHECK(w.comparison == WatchComparison::Less);
        CHECK(w.threshold == 0.5);
        CHECK(w.text == "entropy of L12H3 < 0.5");
    }
    SECTION("regex mass") {
        const Watchpoint w = parse_watchpoint("mass(/contract/) of L3H1 < 0.1");
        CHECK(w.metric == WatchMetric::Mass);
        CHECK(w.pattern == "contract");
        CHECK_FALSE(w.ignore_case);
        CHECK(w.pattern_cache != nullptr);
        const Watchpoint spelled = parse_watchpoint("mass on tokens matching /a\\/b[0-9]+/i <= 1e-3");
        CHECK(spelled.pattern == "a/b[0-9]+");
        CHECK(spelled.ignore_case);
        CHECK(spelled.heads.empty());
        CHECK(spelled.comparison == WatchComparison::LessEqual);
        CHECK(spelled.threshold == 0.001);
        CHECK(parse_watchpoint("mass on /x/ > 0").pattern == "x");
    }
    SECTION("a layer, every head, step metrics") {
        const Watchpoint layer = parse_watchpoint("top1 of L5 < 0.2");
        CHECK(layer.metric == WatchMetric::Top1);
        REQUIRE(layer.heads.size() == 1);
        CHECK(same_range(layer.heads[0].layers, {5, 5}));
        CHECK(same_range(layer.heads[0].heads, {0, -1}));
        CHECK(parse_watchpoint("top1 < 0.2").heads.empty());
        CHECK(parse_watchpoint("top-1 < 0.2").metric == WatchMetric::Top1);
        const Watchpoint prob = parse_watchpoint("token_prob < 0.2");
        CHECK(prob.metric == WatchMetric::TokenProb);
        CHECK_FALSE(prob.is_head_metric());
        CHECK(parse_watchpoint("logprob<-1.5").threshold == -1.5);
        const Watchpoint jsd = parse_watchpoint("jsd of L2H0 > 0.3");
        CHECK(jsd.metric == WatchMetric::Jsd);
        CHECK(jsd.comparison == WatchComparison::Greater);
        CHECK(parse_watchpoint("l1 of L2H0 >= 1").comparison == WatchComparison::GreaterEqual);
        CHECK(parse_watchpoint("prev of L0H1 > .9").metric == WatchMetric::PreviousToken);
        CHECK(parse_watchpoint("sink > +0.5").threshold == 0.5);
    }
    SECTION("aggregates over head sets") {
        const Watchpoint mean = parse_watchpoint("mean entropy of L0-3 > 4");
        CHECK(mean.aggregate == WatchAggregate::Mean);
        CHECK(same_range(mean.heads[0].layers, {0, 3}));
        const Watchpoint all = parse_watchpoint("  ALL Sink of l*h0 , L1H2-4,H7 >= 0.9 ");
        CHECK(all.aggregate == WatchAggregate::All);
        CHECK(all.metric == WatchMetric::Sink);
        REQUIRE(all.heads.size() == 3);
        CHECK(same_range(all.heads[0].layers, {0, -1}));
        CHECK(same_range(all.heads[0].heads, {0, 0}));
        CHECK(same_range(all.heads[1].heads, {2, 4}));
        CHECK(same_range(all.heads[2].layers, {0, -1}));
        CHECK(same_range(all.heads[2].heads, {7, 7}));
        CHECK(parse_watchpoint("min top1 < 1").aggregate == WatchAggregate::Min);
        CHECK(parse_watchpoint("max jsd > 0").aggregate == WatchAggregate::Max);
        CHECK(parse_watchpoint("any jsd > 0").aggregate == WatchAggregate::Any);
    }
    SECTION("canonical text parses back to the same watchpoint") {
        for (const char* text : {"entropy of L12H3 < 0.5", "mass(/contract/) of L3H1 < 0.1", "top1 of L5 < 0.2", "top1 < 0.2",
                                 "token_prob < 0.2", "jsd of L2H0 > 0.3", "mean entropy of L0-3 > 4",
                                 "all sink of L*H0,L1H2-4,L*H7 >= 0.9", "mass(/a\\/b/i) <= 0.001", "max l1 of L*H* > 1e-07"}) {
            INFO(text);
            const Watchpoint w = parse_watchpoint(text);
            CHECK(to_string(w) == text);
            const Watchpoint again = parse_watchpoint(to_string(w));
            CHECK(again.metric == w.metric);
            CHECK(again.pattern == w.pattern);
            CHECK(again.heads.size() == w.heads.size());
            CHECK(again.threshold == w.threshold);
        }
        CHECK(to_string(parse_watchpoint("mass on /x/i > .25")) == "mass(/x/i) > 0.25");
        CHECK(to_string(parse_watchpoint("ANY entropy of h2 < 1")) == "entropy of L*H2 < 1");
    }
}

TEST_CASE("watchpoint grammar: errors name the column and what was expected", "[watchpoint]") {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"entropi < 0.5", "column 1: expected a metric"},
        {"", "column 1: expected a metric"},
        {"top10 < 1", "column 1: expected a metric"},
        {"entropy of L12H3 0.5", "column 18: expected a comparison (<, <=, >, >=), found '0.5'"},
        {"entropy 0.5", "column 9: expected 'of' and a head set, or a comparison"},
        {"mass(/con(/) of L1H0 < 0.1", "column 6: expected a valid ECMAScript regex"},
        {"mass(/contract/ < 0.1", "column 17: expected ')' after the regex, found '<'"},
        {"mass(/unclosed < 0.1", "column 6: expected a regex closed by '/'"},
        {"mass(//) < 0.1", "column 6: expected a non-empty regex"},
        {"mass < 0.1", "column 6: expected '(' or 'on' and a /regex/ after mass"},
        {"top1 of L5-2 < 0.2", "column 12: expected a last layer >= 5"},
        {"token_prob of L1 < 0.2", "column 12: expected a comparison (token_prob and logprob have no heads)"},
        {"mean token_prob < 0.2", "column 6: expected a head metric after the aggregate"},
        {"entropy < ", "column 11: expected a number, found the end of the text"},
        {"entropy < x", "column 11: expected a number, found 'x'"},
        {"entropy < 0.5 extra", "column 15: expected the end of the watchpoint, found 'extra'"},
        {"entropy of X3 < 1", "column 12: expected a head set"},
        {"entropy of L1H0, < 1", "column 18: expected a head set"},
        {"entropy of L1x < 1", "column 14: expected ',' or a comparison after the head set"},
        {"entropy of L < 1", "column 12: expected a head set"},
    };
    for (const auto& [text, message] : cases) {
        INFO("watchpoint: " << text);
        CHECK_THROWS_AS(parse_watchpoint(text), Error);
        CHECK_THROWS_WITH(parse_watchpoint(text), Catch::Contains(message) && Catch::Contains("watchpoint \"" + text + "\""));
    }
}

TEST_CASE("watchpoints fire at the right steps of a crafted session", "[watchpoint]") {
    const Session session = make_contract_session();
    const CpuTileSource source(*session.capture);
    REQUIRE(session.steps.size() == 5);

    SECTION("one head's entropy, top-1 and change") {
        const Watchpoint focused = parse_watchpoint("entropy of L1H0 < 0.5");
        CHECK(first_firing_step(focused, session, source) == 2);
        CHECK(first_firing_step(focused, session, source, 3) == -1);
        const WatchpointHit hit = evaluate(focused, session, source, 2);
        CHECK(hit.fired);
        CHECK(hit.value == Approx(0).margin(1e-6));
        CHECK(hit.layer == 1);
        CHECK(hit.head == 0);
        CHECK(hit.step == 2);
        CHECK(hit.query == 6);
        const WatchpointHit quiet = evaluate(focused, session, source, 0);
        CHECK_FALSE(quiet.fired);
        CHECK(quiet.value == Approx(std::log2(5.0)).epsilon(1e-6));  // uniform over keys 0..4

        CHECK(firing_steps("top1 of L1H0 > 0.9", session, source) == std::vector<int64_t>{2});
        // Uniform → uniform is no change (shared keys renormalised); into and out of the focus is.
        CHECK(firing_steps("jsd of L1H0 > 0.3", session, source) == std::vector<int64_t>{2, 3});
        CHECK(firing_steps("l1 of L1H0 > 1", session, source) == std::vector<int64_t>{2, 3});
        CHECK(firing_steps("prev of L0H1 > 0.9", session, source) == std::vector<int64_t>{0, 1, 2, 3, 4});
    }
    SECTION("any head of a layer, any head of the model") {
        CHECK(firing_steps("top1 of L1 < 0.25", session, source) == std::vector<int64_t>{0, 1, 3, 4});
        const WatchpointHit hit = evaluate(parse_watchpoint("top1 < 0.25"), session, source, 0);
        CHECK(hit.fired);
        CHECK(hit.value == Approx(1.0 / 5.0).epsilon(1e-6));  // the uniform heads at query 4
        CHECK(hit.layer == 0);
        CHECK(hit.head == 0);
        CHECK(hit.satisfying_heads == 2);
        const WatchpointHit focused = evaluate(parse_watchpoint("top1 < 0.25"), session, source, 2);
        CHECK(focused.satisfying_heads == 1);  // L1H0 is focused at step 2; L0H0 still uniform
        CHECK(focused.layer == 0);
    }
    SECTION("regex mass, in the text as it was at the step") {
        const Watchpoint w = parse_watchpoint("mass(/contract/) of L1H0 > 0.5");
        CHECK(firing_steps("mass(/contract/) of L1H0 > 0.5", session, source) == std::vector<int64_t>{2});
        for (int64_t step = 0; step < 5; ++step) {
            const std::vector<float> row = source.row(1, 0, 4 + step);
            CHECK(evaluate(w, session, source, step).value == Approx(row[1]));  // " contract" is token 1
        }
        CHECK(firing_steps("mass on /CONTRACT/i of L1H0 > 0.5", session, source) == std::vector<int64_t>{2});
        // "pays the seller" is complete only once " seller" (step 4) is generated.
        const Watchpoint later = parse_watchpoint("mass(/pays the seller/) of L0H0 > 0");
        CHECK(evaluate(later, session, source, 3).value == 0);
        CHECK(evaluate(later, session, source, 4).value == Approx(3.0 / 9.0).epsilon(1e-6));
        CHECK(evaluate(later, session, source, 3).value == 0);  // memoised per text, still per step
        const Watchpoint copy = later;  // copies share the compiled pattern and its memo
        CHECK(copy.pattern_cache == later.pattern_cache);
        CHECK(evaluate(copy, session, source, 4, 1).fired);
    }
    SECTION("the sampled token's probability") {
        CHECK(firing_steps("token_prob < 0.2", session, source) == std::vector<int64_t>{3});
        const WatchpointHit hit = evaluate(parse_watchpoint("token_prob < 0.2"), session, source, 3);
        CHECK(hit.value == Approx(std::exp(-2.5)));
        CHECK(hit.layer == -1);
        CHECK(firing_steps("logprob <= -2.5", session, source) == std::vector<int64_t>{3});
    }
    SECTION("aggregates") {
        const WatchpointHit mean = evaluate(parse_watchpoint("mean entropy of L0-1 > 1"), session, source, 0);
        CHECK(mean.value == Approx(std::log2(5.0) / 2).epsilon(1e-6));  // two uniform heads, two focused ones
        CHECK(mean.fired);
        CHECK(mean.layer == -1);
        CHECK(firing_steps("all entropy of L0H0,L1H0 > 1", session, source) == std::vector<int64_t>{0, 1, 3, 4});
        const WatchpointHit blocked = evaluate(parse_watchpoint("all entropy of L0H0,L1H0 > 1"), session, source, 2);
        CHECK(blocked.value == Approx(0).margin(1e-6));  // the head that keeps "all" from firing
        CHECK(blocked.layer == 1);
        CHECK(blocked.head == 0);
        CHECK(blocked.satisfying_heads == 1);
        const WatchpointHit smallest = evaluate(parse_watchpoint("min entropy of L*H0 < 0.5"), session, source, 2);
        CHECK(smallest.fired);
        CHECK(smallest.layer == 1);
        const WatchpointHit largest = evaluate(parse_watchpoint("max sink of H1 > 0.9"), session, source, 1);
        CHECK(largest.fired);
        CHECK(largest.layer == 1);
        CHECK(largest.head == 1);
    }
    SECTION("the same answer on the calling thread") {
        for (const char* text : {"top1 < 0.25", "jsd of L1 > 0.3", "mean entropy > 1"})
            for (int64_t step = 0; step < 5; ++step) {
                const Watchpoint w = parse_watchpoint(text);
                const WatchpointHit pooled = evaluate(w, session, source, step), inline_hit = evaluate(w, session, source, step, 1);
                CHECK(pooled.value == inline_hit.value);
                CHECK(pooled.layer == inline_hit.layer);
                CHECK(pooled.head == inline_hit.head);
            }
    }
    SECTION("heads and steps beyond the session fail") {
        CHECK_THROWS_WITH(evaluate(parse_watchpoint("entropy of L5H0 < 1"), session, source, 0),
                          Catch::Contains("layer 5 is out of range"));
        CHECK_THROWS_WITH(evaluate(parse_watchpoint("entropy of L1H0-2 < 1"), session, source, 0),
                          Catch::Contains("head 2 is out of range"));
        CHECK_THROWS_AS(evaluate(parse_watchpoint("entropy < 1"), session, source, 5), Error);
        CHECK(watched_heads(parse_watchpoint("entropy of L*H1,L1 < 1"), session.capture->shape()) ==
              std::vector<std::pair<int, int>>{{0, 1}, {1, 0}, {1, 1}});
    }
}
