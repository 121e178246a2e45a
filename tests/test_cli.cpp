// The attnscope executable end to end: every command, its JSON and files, its errors, and a
// capture killed mid-way that reopens with its complete steps.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include <cmath>
#include <sstream>

#include "engine/cpu_backend.h"
#include "engine/generation.h"
#include "engine/session_file.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"
#ifdef ATTNSCOPE_HAVE_APP
#include "ui/app/private_display.h"
#endif

namespace fs = std::filesystem;

namespace {

using Result = attn::testing::CliResult;
Result run(const std::string& args) { return attn::testing::run_cli(args); }

fs::path scratch(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("attnscope_cli_" + std::to_string(getpid()));
    fs::create_directories(dir);
    return dir / name;
}

// The last line of stdout that parses as JSON.
nlohmann::json last_json(const std::string& text) {
    size_t end = text.find_last_not_of('\n');
    size_t begin = text.rfind('\n', end);
    return nlohmann::json::parse(text.substr(begin == std::string::npos ? 0 : begin + 1, end + 1));
}

}  // namespace

TEST_CASE("every command has --help", "[cli]") {
    for (const char* command : {"", "generate", "capture", "inspect", "tile", "view", "bench", "bench cpu", "bench render"}) {
        INFO(command);
        const Result r = run(std::string(command) + " --help");
        CHECK(r.exit_code == 0);
        CHECK(r.out.find("Usage") != std::string::npos);
    }
}

TEST_CASE("errors go to stderr with a non-zero exit", "[cli][errors]") {
    Result r = run("inspect /nonexistent/session.attn");
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("/nonexistent/session.attn") != std::string::npos);
    r = run("generate --model /nonexistent/model.gguf --prompt hi");
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("/nonexistent/model.gguf") != std::string::npos);
    r = run("frobnicate");
    CHECK(r.exit_code != 0);
    const fs::path not_a_session = scratch("garbage.attn");
    std::ofstream(not_a_session) << "this is not a session file at all";
    r = run("tile " + not_a_session.string() + " --layer 0 --head 0 --level 0 --x 0 --y 0 --npy /dev/null");
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("garbage.attn") != std::string::npos);
    r = run("view --synthetic 512 --present bogus");
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("bogus") != std::string::npos);
}

TEST_CASE("capture, inspect and tile on the default model", "[cli]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    const fs::path session = scratch("cli.attn");
    Result r = run("capture --prompt 'The sky is blue because' -n 6 --backend cpu -q -o " + session.string());
    REQUIRE(r.exit_code == 0);
    CHECK(!r.out.empty());
    REQUIRE(fs::exists(session));
    CHECK_FALSE(fs::exists(session.string() + ".partial"));

    r = run("inspect " + session.string() + " --layer 2 --head 5 --query 7 --json");
    REQUIRE(r.exit_code == 0);
    const nlohmann::json row = last_json(r.out);
    const auto probs = row["probs"].get<std::vector<double>>();
    REQUIRE(probs.size() == 8);
    double sum = 0;
    for (double p : probs) sum += p;
    CHECK(sum == Approx(1.0).margin(1e-5));
    CHECK(row["tokens"].size() == 8);

    r = run("inspect " + session.string() + " --json");
    REQUIRE(r.exit_code == 0);
    const nlohmann::json stats = last_json(r.out);
    CHECK(stats["heads"].size() == static_cast<size_t>(model->config.n_layer * model->config.n_head));
    for (const auto& h : stats["heads"]) {
        CHECK(h["max"].get<double>() <= 1.0);
        CHECK(h["entropy"].get<double>() >= 0.0);
    }

    const fs::path npy = scratch("tile.npy"), png = scratch("tile.png");
    r = run("tile " + session.string() + " --layer 2 --head 5 --level 0 --x 0 --y 0 --npy " + npy.string() +
            " --png " + png.string());
    REQUIRE(r.exit_code == 0);
    // Unsigned exports still carry their provenance record: the tile's array and its hash.
    for (const fs::path& file : {npy, png}) {
        const nlohmann::json record = nlohmann::json::parse(attn::testing::read_file_string(file.string() + ".provenance.json"));
        CHECK(record["exhibits"][0]["file"] == file.filename().string());
        REQUIRE(record["arrays"].size() == 1);
        CHECK(record["arrays"][0]["kind"] == "tile_sum");
        CHECK(record["arrays"][0]["sha256"].get<std::string>().size() == 64);
    }
    std::ifstream in(npy, std::ios::binary);
    std::string bytes(std::istreambuf_iterator<char>(in), {});
    REQUIRE(bytes.substr(0, 6) == "\x93NUMPY");
    const size_t header = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    CHECK((10 + header) % 64 == 0);
    CHECK(bytes.find("'shape': (256, 256)") != std::string::npos);
    REQUIRE(bytes.size() == 10 + header + 256 * 256 * 4);
    const float* values = reinterpret_cast<const float*>(bytes.data() + 10 + header);
    double total = 0;
    for (int i = 0; i < 256 * 256; ++i) total += values[i];
    CHECK(total == Approx(static_cast<double>(stats["positions"].get<int64_t>())).epsilon(1e-5));
    std::ifstream png_in(png, std::ios::binary);
    char magic[8] = {};
    png_in.read(magic, 8);
    CHECK(std::string(magic + 1, 3) == "PNG");
}

TEST_CASE("generate streams the same greedy text as the engine", "[cli]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    const Result a = run("generate --prompt 'Once upon a time' -n 8 -q --backend cpu");
    const Result b = run("generate --prompt 'Once upon a time' -n 8 -q --greedy --backend cpu");
    REQUIRE(a.exit_code == 0);
    CHECK(a.out == b.out);
    CHECK(a.out.size() > 8);
    const Result s1 = run("generate --prompt 'Once upon a time' -n 8 -q --temperature 1.2 --seed 5");
    const Result s2 = run("generate --prompt 'Once upon a time' -n 8 -q --temperature 1.2 --seed 5");
    CHECK(s1.out == s2.out);
}

TEST_CASE("a capture killed mid-way reopens with its complete steps", "[cli][session]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    const fs::path session = scratch("killed.attn");
    const fs::path partial = session.string() + ".partial";
    fs::remove(session);
    fs::remove(partial);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const int devnull = ::open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(attn::testing::attnscope_binary().c_str(), "attnscope", "capture", "--prompt", "Count from one to one hundred:", "-n", "400",
              "--ignore-eos", "--flush-every", "1", "-q", "--backend", "cpu", "-o", session.c_str(),
              static_cast<char*>(nullptr));
        _exit(127);
    }
    // Wait until a few steps are on disk (as recovery reads them: a flush writes several chunks,
    // so growth of the file alone says little on a loaded machine), then kill it hard.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    size_t steps_on_disk = 0;
    while (std::chrono::steady_clock::now() < deadline && steps_on_disk < 3) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        try {
            steps_on_disk = attn::load_session(partial.string()).steps.size();
        } catch (const std::exception&) {
            // not there yet, or only the header so far
        }
    }
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    REQUIRE(steps_on_disk >= 3);
    CHECK_FALSE(fs::exists(session));  // never renamed: it did not finish
    const Result missing = run("inspect " + session.string());
    CHECK(missing.exit_code != 0);
    CHECK(missing.err.find(".partial") != std::string::npos);  // the error points at what can be recovered
    const attn::Session recovered = attn::load_session(partial.string());
    CHECK(recovered.recovered_incomplete);
    CHECK(recovered.steps.size() >= 2);
    CHECK(recovered.capture->positions() >= recovered.prompt_tokens + 2);
    CHECK(recovered.capture->overview_complete());
    const Result r = run("inspect " + partial.string() + " --layer 0 --head 0 --json");
    CHECK(r.exit_code == 0);
}

TEST_CASE("scripted live debugger: step, run to a watchpoint, scrub, diff, keyframe, recording", "[cli][live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
    return;
#else
    if (!attn::app::find_in_path("Xvfb")) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return;
    }
    const char* prompt = "The capital of France is Paris. The capital of Germany is";
    // Where "token_prob < x" first fires after step 3, from the engine's own greedy run.
    auto backend = attn::make_cpu_backend(*model);
    attn::GenerationRequest request;
    request.prompt = prompt;
    request.sampling.max_new_tokens = 20;
    request.sampling.stop_at_eos = false;
    const attn::Session reference = attn::generate(*model, *backend, request);
    int64_t fire_at = -1;
    double threshold = 0;
    for (size_t t = 4; t < reference.steps.size() && fire_at < 0; ++t) {
        const double p = std::exp(double(reference.steps[t].logprob));
        double lowest_before = 1.0;
        for (size_t s = 3; s < t; ++s) lowest_before = std::min(lowest_before, std::exp(double(reference.steps[s].logprob)));
        if (p < lowest_before - 0.02) fire_at = static_cast<int64_t>(t), threshold = (p + lowest_before) / 2;
    }
    REQUIRE(fire_at > 3);

    const fs::path script = scratch("live.script"), record = scratch("live.attn"), png = scratch("live.png");
    {
        std::ofstream out(script);
        out << "step 3\nwait_idle\nstate\n"
            << "watch token_prob < " << threshold << "\nrun 20\nwait_idle\nstate\n"
            << "scrub 1\nstate\n"
            << "diff 0 2\nstate\n"
            << "keyframe 1 the start\nwait_idle\nstate\nscreenshot " << png.string() << "\n";
    }
    const Result r = run(std::string("view --headless --prompt \"") + prompt + "\" -n 20 --size 1280x720 --script " +
                         script.string() + " --record " + record.string());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::vector<nlohmann::json> states;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
        if (!line.empty() && line[0] == '{') states.push_back(nlohmann::json::parse(line));
    REQUIRE(states.size() == 5);
    CHECK(states[0]["steps"] == 3);
    CHECK(states[0]["state"] == "paused");
    // The run paused where the watchpoint first fired.
    CHECK(states[1]["steps"] == fire_at + 1);
    CHECK(states[1]["watch_hits"] == nlohmann::json::array({fire_at}));
    CHECK_THAT(states[1]["message"].get<std::string>(), Catch::Contains("watchpoint"));
    for (int64_t t = 0; t <= fire_at; ++t) CHECK(states[1]["step_tokens"][t] == reference.steps[t].token_id);
    // Scrubbing shows the matrix as it was at step 1, with that step's query selected.
    CHECK(states[2]["shown_step"] == 1);
    CHECK(states[2]["shown_positions"] == reference.prompt_tokens + 2);
    CHECK(states[2]["selected_query"] == reference.prompt_tokens + 1);
    // The diff compares the queries of steps 0 and 2, and names the head that moved most.
    CHECK(states[3]["diff"]["earlier_query"] == reference.prompt_tokens);
    CHECK(states[3]["diff"]["later_query"] == reference.prompt_tokens + 2);
    CHECK(states[3]["diff"]["top_jsd"].get<double>() > 0.1);
    CHECK(states[4]["keyframes"] == 1);
    CHECK(fs::file_size(png) > 10000);
    // The recording reopens with the same steps.
    const attn::Session loaded = attn::load_session(record.string());
    REQUIRE(int64_t(loaded.steps.size()) == fire_at + 1);
    for (int64_t t = 0; t <= fire_at; ++t) {
        CHECK(loaded.steps[t].token_id == reference.steps[t].token_id);
        CHECK(loaded.steps[t].logprob == Approx(reference.steps[t].logprob).margin(1e-5));
    }
    REQUIRE(loaded.keyframes.size() == 1);
    CHECK(loaded.keyframes[0].name == "the start");
#endif
}

TEST_CASE("scripted live debugger: beam tree, following a beam, loading another model from the panel", "[cli][live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
    return;
#else
    if (!attn::app::find_in_path("Xvfb")) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return;
    }
    const char* prompt = "One, two, three, four, five,";
    auto backend = attn::make_cpu_backend(*model);
    attn::GenerationRequest request;
    request.prompt = prompt;
    request.sampling.max_new_tokens = 4;
    request.sampling.stop_at_eos = false;
    request.sampling.beams = 2;
    const attn::Session reference = attn::generate(*model, *backend, request);
    const attn::BeamTree& tree = reference.beam_tree;
    int32_t other = -1;
    for (int32_t f : tree.finals)
        if (f != tree.best) other = f;
    REQUIRE(other >= 0);

    const std::string tiny = std::string(ATTNSCOPE_FIXTURES_DIR) + "/tiny_models/tiny_llama";
    const fs::path script = scratch("beams.script"), png = scratch("beams.png");
    const char* keep = std::getenv("ATTNSCOPE_KEEP_SCREENSHOT");  // to look at the panel by eye
    {
        std::ofstream out(script);
        out << "wait_idle\nrun\nwait_idle\nstate\n"
            << "follow_beam " << other << "\nrun\nwait_idle\nstate\nscreenshot " << png.string() << "\n"
            << "load_model " << fs::path(tiny).string() << "_missing\nstate\n"
            << "load_model " << tiny << "\nwait_idle\nwait 3\nwait_idle\nstep 2\nwait_idle\nstate\n";
    }
    const Result r = run(std::string("view --headless --prompt \"") + prompt + "\" -n 4 --beams 2 --size 1280x800 --script " +
                         script.string() + " --record " + scratch("beams.attn").string());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::vector<nlohmann::json> states;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
        if (!line.empty() && line[0] == '{') states.push_back(nlohmann::json::parse(line));
    REQUIRE(states.size() == 4);
    // The run replayed the best hypothesis of the search the view shows as a tree.
    REQUIRE(states[0].contains("beam"));
    CHECK(states[0]["beam"]["nodes"] == tree.nodes.size());
    CHECK(states[0]["beam"]["best"] == tree.best);
    CHECK(states[0]["beam"]["followed"] == tree.best);
    const std::vector<int32_t> best_tokens = tree.tokens_of(tree.best), other_tokens = tree.tokens_of(other);
    for (size_t t = 0; t < best_tokens.size(); ++t) CHECK(states[0]["step_tokens"][t] == best_tokens[t]);
    // Following another hypothesis: a second branch that replays it.
    CHECK(states[1]["beam"]["followed"] == other);
    CHECK(states[1]["branches"] == 2);
    for (size_t t = 0; t < other_tokens.size(); ++t) CHECK(states[1]["step_tokens"][t] == other_tokens[t]);
    CHECK(fs::file_size(png) > 10000);
    if (keep) fs::copy_file(png, keep, fs::copy_options::overwrite_existing);
    // A model that does not exist: the panel says why, the run goes on.
    CHECK_THAT(states[2]["model_error"].get<std::string>(), Catch::Contains("does not exist"));
    CHECK(states[2]["branches"] == 2);
    // Another model loaded from the panel: the run restarted on it with the same prompt.
    CHECK(states[3]["model"] != states[0]["model"]);
    CHECK(states[3]["steps"] == 2);
    CHECK(states[3]["branches"] == 1);
    CHECK(states[3]["state"] == "paused");
    // The panel's sampling (2 beams) carried over: two steps into the replay of the new search's best.
    CHECK(states[3]["beam"]["followed"].get<int>() >= 0);
#endif
}
