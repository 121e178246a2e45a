// Issue 6's views in the window (text view, sentence graph, heads table, comparison, clusters, the
// head grid's label filter), driven by scripts through the attnscope command line on a private Xvfb,
// over a hand-crafted session whose attention is known: the `state` lines must report what the
// crafted heads do, and the screenshots must show it where the state says it is drawn.
// Skipped with a visible WARN where there is no windowed debugger or no Xvfb.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/session_file.h"
#include "engine/text_segments.h"
#include "tests/crafted_session.h"
#include "tests/test_support.h"
#include "tests/window_support.h"

#ifdef ATTNSCOPE_HAVE_APP
#include <stb_image.h>

#include "ui/app/private_display.h"
#endif

namespace {

using attn::testing::Image;
using attn::testing::states_of;
#ifdef ATTNSCOPE_HAVE_APP
using attn::testing::run_window;
#endif

namespace fs = std::filesystem;
using attn::testing::CraftedSpec;
using attn::testing::TempDir;

// One token per entry: three English sentences, a blank line, a Chinese sentence, and a sentence
// with an emoji and a token that splits "é" into its two bytes (the second is a partial token).
const std::vector<std::string> kWords = {"The", " cat", " sat", " down", ".",  " A",   " dog", " ran", " far",
                                         " away", ".", " Birds", " sing", " at", " dawn", ".", "\n\n", "北京",
                                         "很", "大", "。", " Fun", " \xF0\x9F\x98\x80", " caf", "\xC3", "\xA9", "."};

struct Crafted {
    attn::Session session;
    std::vector<attn::Segment> sentences;
};

// Heads: L0H0 previous token, L0H1 sink, L0H2 sentence 2 → sentence 1 (uniform elsewhere),
// L1H0 uniform, L1H1 itself, L1H2 previous token.
Crafted make_session() {
    CraftedSpec spec;
    spec.words = kWords;
    spec.prompt_tokens = 21;  // the last six tokens are "generated"
    spec.n_layer = 2;
    spec.n_head = 3;
    const attn::Session plain = attn::testing::make_crafted_session(spec);
    Crafted out;
    out.sentences = attn::segment_session(plain, attn::Granularity::Sentence);
    REQUIRE(out.sentences.size() >= 4);
    const attn::Segment s1 = out.sentences[1], s2 = out.sentences[2];
    spec.focus = [s1, s2](int layer, int head, int64_t q) -> std::vector<int64_t> {
        if (head == 0 && layer == 0) return {std::max<int64_t>(0, q - 1)};
        if (layer == 0 && head == 1) return {0};
        if (layer == 0 && head == 2) {
            if (q >= s2.first && q < s2.last) {
                std::vector<int64_t> keys;
                for (int64_t k = s1.first; k < s1.last; ++k) keys.push_back(k);
                return keys;
            }
            return {};
        }
        if (layer == 1 && head == 0) return {};
        if (layer == 1 && head == 1) return {q};
        return {std::max<int64_t>(0, q - 1)};
    };
    out.session = attn::testing::make_crafted_session(spec);
    return out;
}

// ATTNSCOPE_KEEP_SCREENSHOTS=DIR keeps a copy of each screenshot (to look at them by eye).
#ifdef ATTNSCOPE_HAVE_APP

bool orange(const unsigned char* p) { return p[0] > 170 && p[1] > 70 && p[1] < 175 && p[2] < 90; }
bool red(const unsigned char* p) { return p[0] > 150 && p[1] < 120 && p[2] < 120; }
bool blue(const unsigned char* p) { return p[2] > 150 && p[0] < 140 && p[1] < 160; }

#endif

}  // namespace

TEST_CASE("text view: hovering sentence 2 highlights sentence 1 in the text, exactly, for the chosen head", "[text][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("text_view");
    const Crafted crafted = make_session();
    const std::string session = dir.file("crafted.attn");
    attn::save_session(session, crafted.session);
    const std::string shot = dir.file("text.png"), matrix = dir.file("sentences.csv"), table = dir.file("tokens.json"),
                      view_png = dir.file("view.png");
    std::ostringstream script;
    script << "centre text\ntext_level sentence\ntext_heads set 0:2\ntext_hover 2\nstate\nscreenshot " << shot << "\n"
           << "export " << matrix << "\nexport " << view_png << "\nwait 2\n"
           << "text_level token\ntext_hover " << crafted.sentences[2].first << "\nstate\n"
           << "export_segments " << table << "\n"
           << "text_level word\ntext_hover 3\nstate\n"
           << "phrase 3 triangular\ntext_level phrase\ntext_hover 8\nstate\n"
           << "text_heads label previous-token\ntext_level paragraph\ntext_hover 1\nstate\n"
           << "text_heads selected\nstate\n";
    const auto r = run_window(session, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r->out);
    REQUIRE(states.size() == 6);

    // Sentence level, the crafted head only: sentence 2 sends (almost) all its attention to sentence 1.
    const nlohmann::json& t = states[0]["text"];
    CHECK(t["level"] == "sentence");
    CHECK(t["heads"] == nlohmann::json::array({{0, 2}}));
    CHECK_THAT(t["head_set"].get<std::string>(), Catch::Contains("L0H2"));
    CHECK(t["segments"] == crafted.sentences.size());
    CHECK(t["hovered"] == 2);
    REQUIRE(t["top_attended"].size() >= 1);
    CHECK(t["top_attended"][0]["segment"] == 1);
    CHECK(t["top_attended"][0]["value"].get<double>() > 0.99);
    CHECK_THAT(t["top_attended"][0]["text"].get<std::string>(), Catch::Contains("dog ran far away"));
    // Emoji (above U+FFFF) are boxes with their code point; the split "é" gives a partial-token marker.
    CHECK(t["boxes"].get<int>() >= 1);
    // In the screenshot: sentence 1's text is on an orange background, sentence 0's is not.
    const Image image(shot);
    CHECK(image.colours() > 64);
    const nlohmann::json rect1 = t["top_attended"][0]["rect"];
    REQUIRE(rect1.is_array());
    INFO("sentence 1 drawn at " << rect1.dump());
    CHECK(image.fraction(rect1, orange) > 0.4);
    // Sentence 0 gets nothing from sentence 2 (uniform elsewhere is not this head's rows).
    for (const auto& e : t["top_attended"])
        if (e["segment"] == 0) CHECK(e["value"].get<double>() < 1e-6);
    // The numbers: row 2 of the sentence matrix (raw mass) is all on column 1; the view PNG is the centre only.
    {
        std::ifstream in(matrix);
        std::vector<std::vector<double>> rows;
        for (std::string line; std::getline(in, line);) {
            std::vector<double> row;
            std::istringstream cells(line);
            for (std::string cell; std::getline(cells, cell, ',');) row.push_back(std::stod(cell));
            rows.push_back(row);
        }
        REQUIRE(rows.size() == crafted.sentences.size());
        const double tokens2 = double(crafted.sentences[2].token_count());
        CHECK(rows[2][1] == Approx(tokens2).epsilon(1e-3));
        CHECK(rows[2][0] == Approx(0).margin(1e-6));
        const Image view(view_png);
        CHECK(view.w < image.w);
        CHECK(view.h < image.h);
    }
    // Token level: a token of sentence 2 attends to the tokens of sentence 1 (each ~1/6).
    const nlohmann::json& tok = states[1]["text"];
    CHECK(tok["level"] == "token");
    CHECK(tok["segments"] == kWords.size());
    CHECK(tok["markers"].get<int>() >= 1);  // the token holding only the tail of "é"
    REQUIRE(tok["top_attended"].size() >= 1);
    const int64_t top_token = tok["top_attended"][0]["segment"].get<int64_t>();
    CHECK(top_token >= crafted.sentences[1].first);
    CHECK(top_token < crafted.sentences[1].last);
    CHECK(tok["top_attended"][0]["value"].get<double>() == Approx(1.0 / double(crafted.sentences[1].token_count())).epsilon(0.01));
    // The token table with spans.
    const nlohmann::json segments = nlohmann::json::parse(attn::testing::read_file_string(table));
    REQUIRE(segments["segments"].size() == kWords.size());
    CHECK(segments["segments"][24]["begin"] == crafted.session.tokens[24].begin);
    // Word and phrase levels compute (phrase: windows of 3 words, triangular weights).
    CHECK(states[2]["text"]["level"] == "word");
    CHECK(states[2]["text"].contains("top_attended"));
    CHECK(states[3]["text"]["level"] == "phrase");
    CHECK(states[3]["text"]["phrase_size"] == 3);
    CHECK(states[3]["text"]["weighting"] == "triangular");
    CHECK(states[3]["text"].contains("top_attended"));
    // A label group: the two previous-token heads, named; paragraphs: two of them.
    CHECK(states[4]["text"]["heads"] == nlohmann::json::array({{0, 0}, {1, 2}}));
    CHECK_THAT(states[4]["text"]["head_set"].get<std::string>(), Catch::Contains("previous-token"));
    CHECK(states[4]["text"]["segments"] == 2);
    // The shown head by default (never all heads silently).
    CHECK(states[5]["text"]["heads"] == nlohmann::json::array({{0, 0}}));
#endif
}

TEST_CASE("sentence graph: the crafted edge, communities, a click selects the sentence in the text view", "[text][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("graph_view");
    const Crafted crafted = make_session();
    const std::string session = dir.file("crafted.attn");
    attn::save_session(session, crafted.session);
    const std::string shot = dir.file("graph.png"), flow = dir.file("flow.png");
    std::ostringstream script;
    script << "text_heads set 0:2\ngraph sentences\nstate\nscreenshot " << shot << "\n"
           << "graph_select 2\nstate\n"
           << "graph paragraphs\nstate\nscreenshot " << flow << "\n";
    const auto r = run_window(session, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r->out);
    REQUIRE(states.size() == 3);
    const nlohmann::json& g = states[0]["graph"];
    CHECK(g["ready"] == true);
    CHECK(g["nodes"] == crafted.sentences.size());
    CHECK(g["communities"].get<int>() >= 1);
    CHECK(g["strongest_edge"]["from"] == 2);
    CHECK(g["strongest_edge"]["to"] == 1);
    CHECK(g["strongest_edge"]["weight"].get<double>() > 0.99);
    // Nodes are drawn where the state says (a node's colour, not the canvas background).
    const Image image(shot);
    CHECK(image.colours() > 64);
    for (const auto& node : g["node_list"]) {
        const auto* p = image.at(int(node["at"][0].get<double>()), int(node["at"][1].get<double>()));
        CHECK(int(p[0]) + int(p[1]) + int(p[2]) > 150);
    }
    // The click (graph_select) selected sentence 2 in the text view.
    CHECK(states[1]["centre"] == "text");
    CHECK(states[1]["text"]["level"] == "sentence");
    CHECK(states[1]["text"]["hovered"] == 2);
    CHECK(states[1]["text"]["top_attended"][0]["segment"] == 1);
    // Paragraph flow: two paragraphs.
    CHECK(states[2]["graph"]["view"] == "paragraphs");
    CHECK(states[2]["graph"]["paragraphs"] == 2);
    // A hand-made session has no hidden states: no topics, and the view says why.
    CHECK_THAT(states[2]["graph"]["topics_problem"].get<std::string>(), Catch::Contains("without hidden states"));
    CHECK(Image(flow).colours() > 64);
#endif
}

TEST_CASE("paragraph flow: topics from hidden states order the paragraphs, colour bands on both axes", "[topics][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("topic_flow");
    // Three paragraphs; the first and the last share a topic (their hidden states point one way).
    attn::testing::CraftedSpec spec;
    spec.words = {"Cats", " purr", " softly", ".", "\n\nStocks", " fell", " today", ".", "\n\nKittens", " purr", " too", "."};
    spec.prompt_tokens = 12;
    attn::Session session = attn::testing::make_crafted_session(spec);
    const int width = 8;
    std::vector<float> hidden(12 * width, 0.f);
    for (int p = 0; p < 12; ++p) hidden[size_t(p * width + (p >= 4 && p < 8 ? 1 : 0))] = 1.f;
    session.capture->record_hidden(0, 12, width, hidden.data());
    const std::string path = dir.file("topics.attn"), flow = dir.file("flow.png");
    attn::save_session(path, session);
    const auto r = run_window(path, "text_heads set 0:0\ngraph paragraphs\nstate\nscreenshot " + flow + "\n", dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r->out);
    REQUIRE(states.size() == 1);
    const nlohmann::json& g = states[0]["graph"];
    CHECK(g["view"] == "paragraphs");
    REQUIRE(g.contains("topics"));
    CHECK(g["topics"].size() == 2);
    CHECK(g["topics"][0]["description"] == "¶0, ¶2");
    CHECK(g["topic_of"] == nlohmann::json::array({0, 1, 0}));
    CHECK(g["order"] == nlohmann::json::array({0, 2, 1}));  // by topic, then text order
    const Image image(flow);
    // The legend and bands use the topic palette: orange (topic 0) and purple (topic 1) appear.
    size_t topic0 = 0, topic1 = 0;
    for (int y = 0; y < image.h; ++y)
        for (int x = 0; x < image.w; ++x) {
            const unsigned char* p = image.at(x, y);
            if (p[0] == 230 && p[1] == 97 && p[2] == 1) ++topic0;
            if (p[0] == 94 && p[1] == 60 && p[2] == 153) ++topic1;
        }
    CHECK(topic0 > 100);
    CHECK(topic1 > 50);
#endif
}

TEST_CASE("heads table: sort, label filter (also the grid's), a user label survives save and reload", "[heads][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("heads_table");
    const Crafted crafted = make_session();
    const std::string session = dir.file("crafted.attn"), saved = dir.file("labelled.attn");
    attn::save_session(session, crafted.session);
    const std::string grid = dir.file("grid.png");
    std::ostringstream script;
    script << "centre fingerprints\nheads_sort sink desc\nstate\n"
           << "heads_sort previous_token desc\nheads_filter previous-token\nstate\n"
           << "centre heads\nscreenshot " << grid << "\n"
           << "label 1 0 my group\nsave_session " << saved << "\nheads_filter my group\nstate\n";
    const auto r = run_window(session, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r->out);
    REQUIRE(states.size() == 3);
    const nlohmann::json& by_sink = states[0]["fingerprints"];
    CHECK(by_sink["ready"] == true);
    CHECK(by_sink["sort"] == "sink");
    REQUIRE(by_sink["rows"].size() == 6);
    CHECK(by_sink["rows"][0]["layer"] == 0);
    CHECK(by_sink["rows"][0]["head"] == 1);
    CHECK(by_sink["rows"][0]["sink"].get<double>() > 0.99);
    for (size_t i = 1; i < 6; ++i) CHECK(by_sink["rows"][i - 1]["sink"].get<double>() >= by_sink["rows"][i]["sink"].get<double>());
    // The filter leaves the two previous-token heads, and the grid dims the others.
    const nlohmann::json& prev = states[1]["fingerprints"];
    REQUIRE(prev["rows"].size() == 2);
    CHECK(prev["rows"][0]["previous_token"].get<double>() > 0.99);
    std::set<std::pair<int, int>> heads;
    for (const auto& row : prev["rows"]) heads.insert({row["layer"].get<int>(), row["head"].get<int>()});
    CHECK(heads == std::set<std::pair<int, int>>{{0, 0}, {1, 2}});
    CHECK(states[1]["grid_filter"]["heads"] == 2);
    CHECK(Image(grid).colours() > 64);
    // A user label filters too, and is written into the saved session.
    CHECK(states[2]["labels"] == nlohmann::json::array({{1, 0, "my group"}}));
    REQUIRE(states[2]["fingerprints"]["rows"].size() == 1);
    CHECK(states[2]["fingerprints"]["rows"][0]["layer"] == 1);
    CHECK(states[2]["fingerprints"]["rows"][0]["head"] == 0);
    const attn::Session reloaded = attn::load_session(saved);
    REQUIRE(reloaded.head_labels.size() == 1);
    CHECK(reloaded.head_labels[0].text == "my group");
    // Reopened, the window shows the label.
    TempDir again("heads_table_again");
    const auto r2 = run_window(saved, "centre fingerprints\nheads_filter my group\nstate\n", again);
    REQUIRE(r2);
    INFO(r2->err);
    REQUIRE(r2->exit_code == 0);
    const std::vector<nlohmann::json> states2 = states_of(r2->out);
    REQUIRE(states2.size() == 1);
    CHECK(states2[0]["labels"] == nlohmann::json::array({{1, 0, "my group"}}));
    CHECK(states2[0]["fingerprints"]["rows"].size() == 1);
#endif
}

TEST_CASE("comparison: heads side by side with one zoom, their difference in the diverging colormap, another session", "[heads][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("compare_view");
    const Crafted crafted = make_session();
    const std::string session = dir.file("crafted.attn");
    attn::save_session(session, crafted.session);
    const std::string shot = dir.file("compare.png");
    std::ostringstream script;
    // L0H0 (previous token) against L0H1 (sink): A − B is red on the sub-diagonal, blue on column 0.
    script << "compare 0 0 0 1\nfit\nwait_exact\nstate\nscreenshot " << shot << "\n"
           << "show 0 0 8 8\nwait 2\nstate\n"
           << "compare_session " << session << "\nstate\n";
    const auto r = run_window(session, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r->out);
    REQUIRE(states.size() == 3);
    const nlohmann::json& c = states[0]["compare"];
    REQUIRE(c["maps"].size() == 2);
    CHECK(c["maps"][0]["view"] == c["maps"][1]["view"]);
    CHECK(c["diff"]["ready"] == true);
    CHECK(c["diff"]["level"] == 0);
    CHECK(c["diff"]["max_abs"].get<double>() > 0.99);
    const Image image(shot);
    CHECK(image.colours() > 64);
    CHECK(image.fraction(c["diff"]["rect"], red) > 0.002);
    CHECK(image.fraction(c["diff"]["rect"], blue) > 0.002);
    // A zoom in the script goes to every map.
    const nlohmann::json& zoomed = states[1]["compare"];
    CHECK(zoomed["maps"][0]["view"] == zoomed["maps"][1]["view"]);
    CHECK(zoomed["maps"][0]["view"][2].get<double>() < c["maps"][0]["view"][2].get<double>());
    // The same session opened as "another session": a third map of head A, identical to it.
    const nlohmann::json& other = states[2]["compare"];
    REQUIRE(other["maps"].size() == 3);
    CHECK(other["maps"][2]["other_session"] == true);
    CHECK(other["maps"][2]["layer"] == 0);
    CHECK(other["maps"][2]["head"] == 0);
#endif
}

TEST_CASE("clusters: PCA scatter of the heads, k-means groups, points drawn, export", "[heads][app]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("clusters_view");
    const Crafted crafted = make_session();
    const std::string session = dir.file("crafted.attn");
    attn::save_session(session, crafted.session);
    const std::string shot = dir.file("clusters.png"), csv = dir.file("heads.csv");
    std::ostringstream script;
    script << "clusters pca fingerprints 3 1\nstate\nscreenshot " << shot << "\nexport " << csv << "\n"
           << "clusters tsne fingerprints 3 7\nstate\n";
    const auto r = run_window(session, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r->out);
    REQUIRE(states.size() == 2);
    const nlohmann::json& c = states[0]["clusters"];
    CHECK(c["ready"] == true);
    CHECK(c["method"] == "pca");
    CHECK(c["points"] == 6);
    CHECK(c["clusters"] == 3);
    const Image image(shot);
    CHECK(image.colours() > 64);
    for (const auto& point : c["point_list"]) {
        const auto* p = image.at(int(point["at"][0].get<double>()), int(point["at"][1].get<double>()));
        CHECK(int(p[0]) + int(p[1]) + int(p[2]) > 200);  // a point's colour, not the dark canvas
    }
    // The two previous-token heads share a group.
    int g00 = -1, g12 = -2;
    for (const auto& point : c["point_list"]) {
        if (point["layer"] == 0 && point["head"] == 0) g00 = point["cluster"];
        if (point["layer"] == 1 && point["head"] == 2) g12 = point["cluster"];
    }
    CHECK(g00 == g12);
    const std::string text = attn::testing::read_file_string(csv);
    CHECK(std::count(text.begin(), text.end(), '\n') == 7);  // header + 6 heads
    CHECK(states[1]["clusters"]["method"] == "tsne");
    CHECK(states[1]["clusters"]["points"] == 6);
#endif
}

TEST_CASE("live: the heads table folds each decode step into the fingerprints, the text view follows the run", "[heads][app][live]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    if (!attn::app::find_in_path("Xvfb")) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return;
    }
    TempDir dir("live_heads");
    const std::string script = dir.file("script.txt");
    std::ofstream(script) << "wait_idle\ncentre fingerprints\nstate\nstep 3\nwait_idle\nstate\n"
                          << "label 0 1 mine\ncentre text\ntext_level word\ntext_hover 1\nstate\n";
    const std::string model = attn::testing::fixture_path("tiny_models/tiny_llama");
    const attn::testing::CliResult r = attn::testing::run_cli("view --headless --model " + model +
                                                              " --prompt \"one two three four five six\" -n 8 --size 1280x800 --script " +
                                                              script + " --record " + dir.file("live.attn"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::vector<nlohmann::json> states = states_of(r.out);
    REQUIRE(states.size() == 3);
    const nlohmann::json &before = states[0]["fingerprints"], &after = states[1]["fingerprints"];
    CHECK(before["ready"] == true);
    CHECK(before["positions"] == states[0]["positions"]);
    CHECK(before["rows_used"].get<int64_t>() == states[0]["positions"].get<int64_t>() - 1);
    CHECK(after["ready"] == true);
    CHECK(after["positions"] == states[1]["positions"]);
    CHECK(after["positions"].get<int64_t>() > before["positions"].get<int64_t>());
    CHECK(after["folded_in"] == true);
    CHECK(after["rows_used"].get<int64_t>() == states[1]["positions"].get<int64_t>() - 1);
    // Live: labels stay in the view; the text view segments the live text and highlights.
    CHECK(states[2]["labels"] == nlohmann::json::array({{0, 1, "mine"}}));
    CHECK(states[2]["text"]["level"] == "word");
    CHECK(states[2]["text"]["hovered"] == 1);
    CHECK(states[2]["text"].contains("top_attended"));
#endif
}
