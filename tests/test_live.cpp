// The decoder (one token at a time, branching) and the live runner (a Decoder on its own thread
// driven by UI commands) on the default model.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <thread>

#include "engine/cpu_backend.h"
#include "engine/decoder.h"
#include "engine/generation.h"
#include "engine/live_runner.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace attn;
using attn::testing::TempDir;

namespace {

const char* kPrompt = "One, two, three, four, five, six, seven, eight,";

GenerationRequest live_request(int tokens) {
    GenerationRequest r;
    r.prompt = kPrompt;
    r.sampling.max_new_tokens = tokens;
    r.sampling.stop_at_eos = false;
    return r;
}

// Bit-identical unless a tolerance is given (a branch re-runs its last prompt position as a
// one-token decode, whose GEMMs round differently from the prefill's).
void require_same_rows(const CaptureStore& a, const CaptureStore& b, int64_t positions, float tolerance = 0) {
    const CpuTileSource sa(a, 1), sb(b, 1);
    for (int layer : {0, a.shape().n_layer / 2, a.shape().n_layer - 1})
        for (int head : {0, a.shape().n_head - 1})
            for (int64_t q : {int64_t(0), positions / 2, positions - 1}) {
                const std::vector<float> ra = sa.row(layer, head, q), rb = sb.row(layer, head, q);
                REQUIRE(ra.size() == rb.size());
                if (tolerance == 0) {
                    REQUIRE(std::memcmp(ra.data(), rb.data(), ra.size() * sizeof(float)) == 0);
                } else {
                    float worst = 0;
                    for (size_t j = 0; j < ra.size(); ++j) worst = std::max(worst, std::fabs(ra[j] - rb[j]));
                    REQUIRE(worst <= tolerance);
                }
            }
}

}  // namespace

TEST_CASE("stepping a decoder gives what generate gives", "[live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    auto backend_a = make_cpu_backend(*model), backend_b = make_cpu_backend(*model);
    const Session generated = generate(*model, *backend_a, live_request(6));
    Decoder decoder(*model, *backend_b, live_request(6));
    decoder.prefill();
    for (int i = 0; i < 6; ++i) decoder.step();
    const Session& stepped = decoder.session();
    REQUIRE(stepped.steps.size() == generated.steps.size());
    for (size_t t = 0; t < stepped.steps.size(); ++t) {
        CHECK(stepped.steps[t].token_id == generated.steps[t].token_id);
        CHECK(stepped.steps[t].logprob == generated.steps[t].logprob);
        CHECK(stepped.steps[t].forward_ms > 0);
        CHECK(stepped.steps[t].attention_ms.size() == size_t(model->config.n_layer));
    }
    CHECK(stepped.text == generated.text);
    CHECK(stepped.prefill_ms > 0);
    require_same_rows(*stepped.capture, *generated.capture, stepped.positions());
}

TEST_CASE("a branch forced to the original token reproduces the original; another token diverges", "[live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    auto backend = make_cpu_backend(*model);
    Decoder original(*model, *backend, live_request(8));
    original.prefill();
    for (int i = 0; i < 8; ++i) original.step();
    const Session& o = original.session();

    for (int64_t at : {int64_t(0), int64_t(3)}) {
        std::unique_ptr<Backend> branch_backend;
        auto same = original.branch(at, branch_backend);
        REQUIRE(same->session().steps.size() == size_t(at));
        REQUIRE(same->session().positions() == o.prompt_tokens + at);
        StepChoice choice;
        choice.token = o.steps[at].token_id;
        choice.forced_by_user = true;
        const StepRecord& record = same->step(choice);
        CHECK(record.forced);
        CHECK(record.logprob == Approx(o.steps[at].logprob).margin(1e-5));
        CHECK(record.cumulative_logprob == Approx(o.steps[at].cumulative_logprob).margin(1e-4));
        for (int i = 0; i < 2; ++i) same->step();
        for (int i = 0; i < 3; ++i) CHECK(same->session().steps[at + i].token_id == o.steps[at + i].token_id);
        // The copied prefix and the re-run positions hold the original's values; the overview of
        // the copy (whole blocks copied, the partial block recomputed) equals a rebuilt one.
        const int64_t n = same->session().positions();
        require_same_rows(*same->session().capture, *o.capture, n, 2e-5f);
        CaptureStore rebuilt(same->session().capture->shape());
        rebuilt.copy_prefix_from(*same->session().capture, n);
        rebuild_overview(rebuilt);
        for (int layer : {0, 7})
            for (int head : {0, 5})
                for (int64_t qb = 0; qb < rebuilt.overview_blocks(); ++qb)
                    for (int64_t kb = 0; kb <= qb; ++kb)
                        REQUIRE(same->session().capture->overview_sum(layer, head, qb, kb) ==
                                Approx(rebuilt.overview_sum(layer, head, qb, kb)).margin(1e-4));
    }

    std::unique_ptr<Backend> other_backend;
    auto other = original.branch(2, other_backend);
    const int32_t alternative = o.steps[2].top.at(1).id;
    StepChoice choice;
    choice.token = alternative;
    choice.forced_by_user = true;
    const StepRecord& forced = other->step(choice);
    CHECK(forced.token_id == alternative);
    CHECK(forced.logprob == Approx(std::log(o.steps[2].top[1].prob)).margin(1e-4));
    CHECK(other->session().text.substr(0, o.tokens[o.prompt_tokens + 2].begin) ==
          o.text.substr(0, o.tokens[o.prompt_tokens + 2].begin));
    // The original branch is untouched.
    CHECK(original.session().steps.size() == 8);
}

TEST_CASE("copying a capture prefix inside a partial overview block", "[live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    auto backend = make_cpu_backend(*model);
    GenerationRequest request = live_request(0);
    std::string long_prompt;
    for (int i = 0; i < 30; ++i) long_prompt += "The cat sat on the mat and looked at the dog. ";
    request.prompt = long_prompt;
    const Session session = generate(*model, *backend, request);
    REQUIRE(session.positions() > 300);
    const int64_t keep = 300;  // two whole 128-row blocks and 44 rows of the third
    auto copy = copy_capture_prefix(*session.capture, keep);
    REQUIRE(copy->positions() == keep);
    REQUIRE(copy->overview_complete());
    CaptureStore rebuilt(copy->shape());
    rebuilt.copy_prefix_from(*session.capture, keep);
    rebuild_overview(rebuilt);
    for (int layer = 0; layer < copy->shape().n_layer; layer += 6)
        for (int head = 0; head < copy->shape().n_head; head += 4)
            for (int64_t qb = 0; qb < 3; ++qb)
                for (int64_t kb = 0; kb <= qb; ++kb) {
                    REQUIRE(copy->overview_sum(layer, head, qb, kb) ==
                            Approx(rebuilt.overview_sum(layer, head, qb, kb)).margin(1e-4));
                    REQUIRE(copy->overview_max(layer, head, qb, kb) ==
                            Approx(rebuilt.overview_max(layer, head, qb, kb)).margin(1e-6));
                }
}

TEST_CASE("live runner: step, run, watchpoint pause, branch, recording, concurrent readers", "[live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    // The greedy reference: where would "token_prob < x" first fire?
    auto backend = make_cpu_backend(*model);
    const Session reference = generate(*model, *backend, live_request(16));
    int64_t fire_at = -1;
    double threshold = 0;
    double lowest = 2;
    for (size_t t = 0; t < reference.steps.size(); ++t) {
        const double p = std::exp(double(reference.steps[t].logprob));
        if (t >= 5 && p < lowest - 1e-4) {
            fire_at = static_cast<int64_t>(t);
            threshold = p + 0.5 * (std::min(lowest, 1.0) - p);
            break;
        }
        lowest = std::min(lowest, p);
    }
    REQUIRE(fire_at >= 5);

    TempDir dir("live");
    const std::string path = dir.file("live.attn");
    Session view;
    std::vector<StepFindings> findings;
    uint64_t generation = 0;
    {
        LiveOptions options;
        options.record_path = path;
        LiveRunner runner(*model, BackendKind::Cpu, options);
        CHECK(runner.status().state == LiveState::Empty);
        runner.start(live_request(16));
        REQUIRE(runner.wait_idle(120));
        REQUIRE(runner.status().state == LiveState::Paused);
        REQUIRE(runner.sync(view, findings, generation));
        CHECK(view.prompt_tokens == reference.prompt_tokens);
        CHECK(view.steps.empty());

        runner.step();
        runner.step(2);
        REQUIRE(runner.wait_idle(120));
        runner.sync(view, findings, generation);
        REQUIRE(view.steps.size() == 3);
        for (size_t t = 0; t < 3; ++t) CHECK(view.steps[t].token_id == reference.steps[t].token_id);
        CHECK(view.text == reference.text.substr(0, view.tokens.back().end));

        // Run with a watchpoint: it pauses at the step where it first fires.
        runner.set_watchpoints({parse_watchpoint(cat("token_prob < ", threshold))});
        runner.run();
        // Meanwhile, read the capture as the UI does: every row below the synced positions is final.
        std::vector<std::pair<int64_t, std::vector<float>>> seen;
        while (runner.status().busy || runner.status().state == LiveState::Running) {
            runner.sync(view, findings, generation);
            const int64_t n = std::min<int64_t>(view.positions(), view.capture->positions());
            const CpuTileSource source(*view.capture, 1);
            seen.emplace_back(n - 1, source.row(3, 2, n - 1));
            (void)source.tile(TileRequest{3, 2, 0, 0, 0}, true);
        }
        REQUIRE(runner.wait_idle(120));
        runner.sync(view, findings, generation);
        LiveStatus status = runner.status();
        CHECK(status.state == LiveState::Paused);
        CHECK_THAT(status.message, Catch::Contains("watchpoint"));
        REQUIRE(int64_t(view.steps.size()) == fire_at + 1);
        REQUIRE(findings.size() == view.steps.size());
        CHECK(findings[fire_at].watchpoints_fired.size() == 1);
        for (int64_t t = 3; t < fire_at; ++t) CHECK(findings[t].watchpoints_fired.empty());
        REQUIRE(findings[fire_at].change);
        CHECK(findings[fire_at].change->later_query == view.prompt_tokens + fire_at);
        CHECK(findings[fire_at].change->heads.size() == size_t(model->config.n_layer * model->config.n_head));
        const CpuTileSource source(*view.capture, 1);
        for (const auto& [q, row] : seen) REQUIRE(source.row(3, 2, q) == row);

        // Branch at step 2 with the second-best token; the original stays.
        runner.set_watchpoints({});
        const int32_t alternative = view.steps[2].top.at(1).id;
        runner.add_keyframe(1, "before the branch");
        runner.branch(2, alternative);
        REQUIRE(runner.wait_idle(120));
        runner.sync(view, findings, generation);
        REQUIRE(view.steps.size() == 3);
        CHECK(view.steps[2].token_id == alternative);
        CHECK(view.steps[2].forced);
        CHECK(runner.branches().size() == 2);
        CHECK(runner.branches()[1].at_step == 2);
        runner.step(2);
        runner.select_branch(0);
        REQUIRE(runner.wait_idle(120));
        runner.sync(view, findings, generation);
        CHECK(int64_t(view.steps.size()) == fire_at + 1);
        REQUIRE(view.keyframes.size() == 1);
        CHECK(view.keyframes[0].name == "before the branch");
    }
    // The recordings: the first branch as seen live, and the second one beside it.
    const Session loaded = load_session(path);
    CHECK_FALSE(loaded.recovered_incomplete);
    REQUIRE(loaded.steps.size() == view.steps.size());
    for (size_t t = 0; t < view.steps.size(); ++t) {
        CHECK(loaded.steps[t].token_id == view.steps[t].token_id);
        CHECK(loaded.steps[t].logprob == view.steps[t].logprob);
        CHECK(loaded.steps[t].forward_ms == view.steps[t].forward_ms);
    }
    CHECK(loaded.text == view.text);
    REQUIRE(loaded.keyframes.size() == 1);
    require_same_rows(*loaded.capture, *view.capture, loaded.positions());
    const Session branch = load_session(dir.file("live-branch1.attn"));
    CHECK(branch.steps.size() == 5);
    CHECK(branch.steps[2].forced);
}

TEST_CASE("live runner: a cancelled prefill and errors are reported, not thrown", "[live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    LiveRunner runner(*model, BackendKind::Cpu);
    runner.step();  // nothing started
    REQUIRE(runner.wait_idle(30));
    CHECK(runner.status().state == LiveState::Failed);
    CHECK_THAT(runner.status().message, Catch::Contains("start a prompt"));

    GenerationRequest request = live_request(4);
    request.prompt.clear();
    for (int i = 0; i < 400; ++i) request.prompt += "A long prompt to be cancelled part way. ";
    runner.start(request);
    for (LiveStatus s = runner.status(); !(s.state == LiveState::Prefilling && s.prefill_done > 0); s = runner.status())
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    runner.cancel();
    REQUIRE(runner.wait_idle(120));
    CHECK(runner.status().state == LiveState::Empty);
    CHECK_THAT(runner.status().message, Catch::Contains("cancelled"));

    runner.start(live_request(2));
    runner.run();
    REQUIRE(runner.wait_idle(120));
    CHECK(runner.status().steps == 2);
}

TEST_CASE("replacing the overview's last block rows from a runtime's mirror", "[live]") {
    // The cuda backend's path, on the CPU: the store holds rows below a block boundary, a mirror
    // holds the whole overview; replacing from that block makes the store equal to the mirror.
    const CaptureShape shape{2, 2, 1, 8, 0.35f, 0};
    CaptureStore full(shape), partial(shape);
    const int64_t n = 300;
    std::vector<float> q(n * 2 * 8), k(n * 8), lse(n * 2);
    for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37f * float(i));
    for (size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.11f * float(i));
    for (int64_t i = 0; i < n; ++i) lse[i * 2] = lse[i * 2 + 1] = std::log(float(i + 1));
    for (int layer = 0; layer < 2; ++layer) full.record_layer(layer, 0, n, q.data(), k.data(), lse.data());
    rebuild_overview(full);
    partial.copy_prefix_from(full, n);  // Q, K, LSE and the whole block rows 0 and 1
    REQUIRE_FALSE(partial.overview_complete());
    const int64_t stride = full.overview_sums(0, 0).size();
    std::vector<float> sums(4 * stride), maxes(4 * stride);
    for (int layer = 0; layer < 2; ++layer)
        for (int head = 0; head < 2; ++head) {
            std::copy_n(full.overview_sums(layer, head).data(), stride, sums.begin() + (layer * 2 + head) * stride);
            std::copy_n(full.overview_maxes(layer, head).data(), stride, maxes.begin() + (layer * 2 + head) * stride);
        }
    partial.replace_overview_rows(2, sums.data(), maxes.data(), stride);
    REQUIRE(partial.overview_complete());
    for (int layer = 0; layer < 2; ++layer)
        for (int head = 0; head < 2; ++head) {
            REQUIRE(std::equal(full.overview_sums(layer, head).begin(), full.overview_sums(layer, head).end(),
                               partial.overview_sums(layer, head).begin()));
            REQUIRE(std::equal(full.overview_maxes(layer, head).begin(), full.overview_maxes(layer, head).end(),
                               partial.overview_maxes(layer, head).begin()));
        }
    CaptureStore empty(shape);
    empty.record_layer(0, 0, n, q.data(), k.data(), lse.data());
    empty.record_layer(1, 0, n, q.data(), k.data(), lse.data());
    REQUIRE_THROWS_WITH(empty.replace_overview_rows(1, sums.data(), maxes.data(), stride), Catch::Contains("missing"));
    REQUIRE_THROWS_WITH(partial.replace_overview_rows(0, sums.data(), maxes.data(), 2), Catch::Contains("cannot hold"));
}

TEST_CASE("live runner with beams: the search's tree, the best hypothesis replayed, another followed", "[live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    GenerationRequest request = live_request(6);
    request.sampling.beams = 3;
    auto backend = make_cpu_backend(*model);
    const Session generated = generate(*model, *backend, request);
    const BeamTree& tree = generated.beam_tree;
    REQUIRE_FALSE(tree.empty());
    CHECK(tree.beams == 3);
    REQUIRE(tree.best >= 0);
    // A tree: parents come first, one step earlier; siblings differ in their token.
    for (size_t i = 0; i < tree.nodes.size(); ++i) {
        const BeamNode& n = tree.nodes[i];
        if (n.parent >= 0) {
            REQUIRE(n.parent < static_cast<int32_t>(i));
            REQUIRE(tree.nodes[n.parent].step == n.step - 1);
        }
        for (size_t j = 0; j < i; ++j)
            if (tree.nodes[j].parent == n.parent && tree.nodes[j].step == n.step) REQUIRE(tree.nodes[j].token_id != n.token_id);
    }
    // generate() replays the best hypothesis; its beam ids are the slots along it.
    const std::vector<int32_t> best = tree.lineage(tree.best);
    REQUIRE(generated.steps.size() == best.size());
    for (size_t t = 0; t < best.size(); ++t) {
        CHECK(generated.steps[t].token_id == tree.nodes[best[t]].token_id);
        CHECK(generated.steps[t].beam_id == tree.nodes[best[t]].slot);
    }
    // The cumulative log-probability of the replay is the search's score (same model, same prefix).
    CHECK(generated.steps.back().cumulative_logprob == Approx(tree.nodes[tree.best].score).epsilon(1e-3));

    // The tree survives a session file.
    TempDir dir("beams");
    save_session(dir.file("beams.attn"), generated);
    const Session reloaded = load_session(dir.file("beams.attn"));
    REQUIRE(reloaded.beam_tree.nodes.size() == tree.nodes.size());
    CHECK(reloaded.beam_tree.best == tree.best);
    CHECK(reloaded.beam_tree.finals == tree.finals);
    for (size_t i = 0; i < tree.nodes.size(); ++i) {
        CHECK(reloaded.beam_tree.nodes[i].token_id == tree.nodes[i].token_id);
        CHECK(reloaded.beam_tree.nodes[i].parent == tree.nodes[i].parent);
        CHECK(reloaded.beam_tree.nodes[i].score == Approx(tree.nodes[i].score));
    }

    // Live: the same search, then steps replay the best hypothesis and stop at its end.
    LiveRunner runner(*model, BackendKind::Cpu);
    runner.start(request);
    runner.run();
    REQUIRE(runner.wait_idle(300));
    Session view;
    std::vector<StepFindings> findings;
    uint64_t generation = 0;
    runner.sync(view, findings, generation);
    REQUIRE(view.beam_tree.nodes.size() == tree.nodes.size());
    REQUIRE(view.steps.size() == best.size());
    for (size_t t = 0; t < best.size(); ++t) CHECK(view.steps[t].token_id == generated.steps[t].token_id);
    CHECK(runner.status().state == LiveState::Finished);

    // Follow another final hypothesis: a new branch from where it leaves the best one replays it.
    int32_t other = -1;
    for (int32_t f : tree.finals)
        if (f != tree.best) other = f;
    REQUIRE(other >= 0);
    const std::vector<int32_t> other_tokens = tree.tokens_of(other);
    size_t shared = 0;
    while (shared < other_tokens.size() && shared < best.size() && other_tokens[shared] == tree.nodes[best[shared]].token_id) ++shared;
    runner.follow_beam(other);
    runner.run();
    REQUIRE(runner.wait_idle(300));
    runner.sync(view, findings, generation);
    CHECK(runner.status().branches == 2);
    REQUIRE(view.steps.size() == other_tokens.size());
    for (size_t t = 0; t < other_tokens.size(); ++t) CHECK(view.steps[t].token_id == other_tokens[t]);
    CHECK(runner.branches().back().at_step == static_cast<int64_t>(shared));
    CHECK(runner.branches().back().beam_node == other);
    // Following it again selects that branch instead of making a third.
    runner.select_branch(0);
    runner.follow_beam(other);
    REQUIRE(runner.wait_idle(60));
    CHECK(runner.status().branches == 2);
    CHECK(runner.status().branch == 1);
}
