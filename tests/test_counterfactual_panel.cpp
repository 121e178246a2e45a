// The counterfactual panel in the window (issue 7), driven by scripts through the attnscope command
// line on a private Xvfb: a live run of the default model on a short prompt, a key span masked in the
// shown head (its mass on the span must be exactly 0 after), a head ablated, the JSON export, and a
// reopened session without a model (Run is refused with the reason). Skipped with a visible WARN
// where there is no windowed debugger, no Xvfb or no default model.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/session_file.h"
#include "tests/crafted_session.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"
#include "tests/window_support.h"

#ifdef ATTNSCOPE_HAVE_APP
#include <stb_image.h>

#include "engine/cpu_backend.h"
#include "engine/generation.h"
#include "engine/pii.h"
#include "engine/tile_source.h"
#include "ui/app/debugger_model.h"
#include "ui/app/private_display.h"
#include "ui/panels/counterfactual_panel.h"
#endif

namespace {

namespace fs = std::filesystem;
using attn::testing::states_of;

}  // namespace

TEST_CASE("counterfactual panel: mask a key span in the shown head, ablate a head, export, screenshot", "[counterfactual][app]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
    return;
#else
    if (!attn::app::find_in_path("Xvfb")) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return;
    }
    attn::testing::TempDir dir("cfpanel");
    const std::string script = dir.path() + "/cf.script", exported = dir.path() + "/cf.json", png = dir.path() + "/cf.png";
    {
        std::ofstream out(script);
        out << "run 3\nwait_idle\nstate\n"
            << "layer 1\nhead 4\n"
            << "counterfactual mask 1 4\nstate\ncounterfactual_wait\nstate\n"
            << "counterfactual_export " << exported << "\n"
            << "screenshot " << png << "\n"
            << "counterfactual ablate 0 2 mean\ncounterfactual_wait\nstate\n";
    }
    const attn::testing::CliResult r = attn::testing::run_cli(
        "view --headless --backend cpu --greedy --prompt \"The capital of France is Paris. The capital of Italy is\" -n 3 "
        "--size 1280x800 --script " + script + " --record " + dir.path() + "/live.attn");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r.out);
    REQUIRE(states.size() == 4);
    CHECK(states[0]["steps"] == 3);
    CHECK(states[0]["counterfactual"]["can_run"] == true);
    CHECK_FALSE(states[0]["counterfactual"].contains("intervention"));

    // While it runs (or just after): the run is counted.
    CHECK(states[1]["counterfactual"]["runs"] == 1);

    const nlohmann::json& masked = states[2]["counterfactual"];
    INFO(masked.dump());
    CHECK_FALSE(masked.contains("error"));
    CHECK(masked["kind"] == "mask_keys");
    CHECK(masked["key_spans"] == nlohmann::json::array({nlohmann::json::array({1, 4})}));
    // The masked head's mass on the span: some before, exactly none after (every compared query).
    CHECK(masked["shown_head"]["layer"] == 1);
    CHECK(masked["shown_head"]["head"] == 4);
    CHECK(masked["shown_head"]["span_mass_before"].get<double>() > 0.001);
    CHECK(masked["shown_head"]["span_mass_after"].get<double>() == 0.0);
    CHECK(masked["shown_head"]["query_span_mass_after"].get<double>() == 0.0);
    // The key deltas of the shown head at the shown query: what the span lost went elsewhere.
    CHECK(masked["shown_head"]["delta_lost"].get<double>() ==
          Approx(-masked["shown_head"]["query_span_mass_before"].get<double>()).margin(2e-3));
    CHECK(masked["shown_head"]["delta_gained"].get<double>() == Approx(-masked["shown_head"]["delta_lost"].get<double>()).margin(2e-3));
    // Every head is ranked; some moved.
    CHECK(masked["heads"] == model->config.n_layer * model->config.n_head);
    REQUIRE(masked["top_heads"].size() == 5);
    CHECK(masked["top_heads"][0]["mean_jsd_bits"].get<double>() > 0);
    CHECK(masked["compared_queries"] == 4);  // the last prompt row and the 3 steps' rows
    REQUIRE(masked["outputs"].size() == 3);
    for (const auto& o : masked["outputs"]) CHECK(o["before"].get<double>() > 0);
    CHECK(masked["free_run"].contains("first_divergence"));

    // The export is the engine's JSON.
    const nlohmann::json j = nlohmann::json::parse(attn::testing::read_file_string(exported));
    CHECK(j["intervention"]["kind"] == "mask_keys");
    CHECK(j["heads"].size() == size_t(model->config.n_layer * model->config.n_head));
    CHECK(j["outputs"].size() == 3);

    // Mean ablation of another head: the ablated head's own rows are unchanged (its output is replaced
    // after the softmax), later layers' rows move.
    const nlohmann::json& ablated = states[3]["counterfactual"];
    INFO(ablated.dump());
    CHECK(ablated["kind"] == "ablate_heads");
    CHECK(ablated["runs"] == 2);
    CHECK(ablated["key_spans"].empty());
    CHECK_FALSE(ablated["shown_head"].contains("span_mass_after"));  // no span: no span mass
    CHECK(ablated["top_heads"][0]["layer"].get<int>() > 0);

    // The screenshot: the window drawn, the panel's gained/lost bars in the right-hand column.
    int w = 0, h = 0, channels = 0;
    unsigned char* pixels = stbi_load(png.c_str(), &w, &h, &channels, 4);
    REQUIRE(pixels);
    std::set<uint32_t> colours;
    size_t red = 0, blue = 0;
    for (int y = 0; y < h; ++y)
        for (int x = w * 3 / 4; x < w; ++x) {
            const unsigned char* p = pixels + (size_t(y) * size_t(w) + size_t(x)) * 4;
            colours.insert(uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
            if (p[0] > 190 && p[1] > 55 && p[1] < 100 && p[2] > 45 && p[2] < 90) ++red;
            if (p[2] > 200 && p[0] > 55 && p[0] < 100 && p[1] > 105 && p[1] < 150) ++blue;
        }
    stbi_image_free(pixels);
    CHECK(colours.size() > 50);
    CHECK(red > 100);   // the bars of the keys that gained
    CHECK(blue > 100);  // … and of those that lost (the masked span)
#endif
}

TEST_CASE("counterfactual panel: a reopened session needs a model from the Model panel, of its own shape", "[counterfactual][app]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
    return;
#else
    const auto xvfb = attn::app::find_in_path("Xvfb");
    if (!xvfb) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return;
    }
    attn::testing::TempDir dir("cfpanel_nomodel");
    attn::testing::CraftedSpec spec;
    spec.words = {"The", " cat", " sat", " on", " the", " mat", "."};
    spec.prompt_tokens = 5;
    spec.n_layer = 1;
    spec.n_head = 2;
    const std::string session = dir.path() + "/crafted.attn", script = dir.path() + "/s.script";
    attn::save_session(session, attn::testing::make_crafted_session(spec));
    {
        std::ofstream out(script);
        out << "state\nload_model default\nwait 2\nstate\ncounterfactual mask 1 2\ncounterfactual_wait\nstate\n";
    }
    attn::app::PrivateDisplay display(*xvfb, 1100, 800);
    REQUIRE_FALSE(display.display().empty());
    const std::string old = std::getenv("DISPLAY") ? std::getenv("DISPLAY") : "";
    ::setenv("DISPLAY", display.display().c_str(), 1);
    const attn::testing::CliResult r =
        attn::testing::run_cli("view " + session + " --size 1024x700 --frames 2 --script " + script);
    if (old.empty()) ::unsetenv("DISPLAY");
    else ::setenv("DISPLAY", old.c_str(), 1);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r.out);
    REQUIRE(states.size() == 3);
    const std::string why = states[0]["counterfactual"]["can_run"].get<std::string>();
    CHECK(why.find("Model panel") != std::string::npos);
    // With a model loaded the reopened session stays shown and Run is possible …
    CHECK(states[1]["counterfactual"]["can_run"] == true);
    CHECK(states[1]["positions"] == 7);
    // … but this one is not the crafted session's model: the engine's refusal is shown, nothing else.
    const nlohmann::json& refused = states[2]["counterfactual"];
    INFO(refused.dump());
    CHECK(refused["runs"] == 1);
    CHECK(refused["error"].get<std::string>().find("does not match the session's") != std::string::npos);
    CHECK_FALSE(refused.contains("intervention"));
#endif
}

TEST_CASE("counterfactual panel state: worker, cancel keeps the last result, PII-masked export", "[counterfactual][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    const auto model = attn::Model::load(attn::testing::fixture_path("tiny_models/tiny_llama"));
    auto backend = attn::make_cpu_backend(*model);
    attn::GenerationRequest request;
    request.prompt = "Call me at 13812345678 today";
    request.sampling.max_new_tokens = 3;
    request.sampling.stop_at_eos = false;
    request.capture = true;
    const attn::Session session = attn::generate(*model, *backend, request);
    const attn::CpuTileSource source(*session.capture);
    attn::app::DebuggerModel view(session, source);
    attn::panels::CounterfactualState state;

    // No model: refused with the reason.
    CHECK_THROWS_WITH(attn::panels::start_counterfactual(view, state, attn::Intervention::remove_span(0, 1)),
                      Catch::Contains("load it in the Model panel"));
    state.model = model.get();
    view.settings.layer = 1;
    view.settings.head = 2;
    attn::panels::start_counterfactual(view, state, attn::panels::intervention_from_words(view, {"mask", "1", "3"}));
    CHECK(state.span == "1:3");  // the form shows what runs
    CHECK(state.kind == attn::Intervention::Kind::MaskKeys);
    attn::panels::wait_counterfactual(state);
    attn::panels::update_counterfactual(view, state);
    REQUIRE(state.shown);
    CHECK(state.error.empty());
    CHECK(state.shown->intervention.heads == std::vector<std::pair<int, int>>{{1, 2}});
    const nlohmann::json summary = attn::panels::counterfactual_json(view, state);
    CHECK(summary["shown_head"]["span_mass_after"].get<double>() == 0.0);
    CHECK(summary["shown_head"]["span_mass_before"].get<double>() > 0.0);

    // A cancelled run leaves the last result shown and says so.
    const auto* first = state.shown.get();
    attn::panels::start_counterfactual(view, state, attn::Intervention::embedding_noise(0, 2, 1.0, 7));
    attn::panels::cancel_counterfactual(state);
    attn::panels::wait_counterfactual(state);
    attn::panels::update_counterfactual(view, state);
    if (state.error == "cancelled") CHECK(state.shown.get() == first);  // else it finished before the request
    else CHECK(state.shown.get() != first);

    // The export masks the phone number wherever the session's text shows it.
    attn::panels::start_counterfactual(view, state, attn::Intervention::replace_span(0, 1, "Phone 13912345678. "));
    attn::panels::wait_counterfactual(state);
    attn::panels::update_counterfactual(view, state);
    REQUIRE(state.shown);
    REQUIRE(state.error.empty());
    attn::testing::TempDir dir("cfpanel_export");
    const std::string path = dir.path() + "/cf.json";
    attn::panels::export_counterfactual(view, state, path);
    const std::string text = attn::testing::read_file_string(path);
    CHECK(text.find("13812345678") == std::string::npos);
    INFO(text.substr(0, 600));
    CHECK(text.find("13912345678") == std::string::npos);
    CHECK(text.find(std::string(attn::kPiiMaskGlyph)) != std::string::npos);
    CHECK(nlohmann::json::parse(text)["pii_masked"] == true);
    // With masking off the same export holds the raw text.
    view.mask_pii = false;
    attn::panels::export_counterfactual(view, state, path);
    CHECK(attn::testing::read_file_string(path).find("13912345678") != std::string::npos);
#endif
}
