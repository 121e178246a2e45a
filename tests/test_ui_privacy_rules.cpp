// Issue 7 in the window: personal data masked in every display and export (and shown with `pii off`),
// rules and violations (verdicts as `attnscope rules` gives them, jumps, the red highlight), ontology
// matches and anomalies, the (query word, key word) relation on hover and the heads table's syntax
// column — driven by scripts through the attnscope command line on a private Xvfb, over crafted
// sessions whose attention is known. Skipped with a visible WARN where there is no windowed debugger
// or no Xvfb (and the syntax parts where link-grammar's English dictionary is missing).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/ontology.h"
#include "engine/pii.h"
#include "engine/rules.h"
#include "engine/session_file.h"
#include "engine/syntax.h"
#include "engine/text_segments.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"
#include "tests/window_support.h"
#ifdef ATTNSCOPE_HAVE_APP
#include <stb_image.h>
#include "ui/app/debugger_model.h"
#include "ui/app/private_display.h"
#include "ui/panels/beam_tree_panel.h"
#include "ui/panels/rules_panel.h"
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
using nlohmann::json;

#ifdef ATTNSCOPE_HAVE_APP
#endif

// ---- personal data -----------------------------------------------------------------------------------

const std::vector<std::string> kPiiWords = {"Call", " 13812345678", " or", " mail", " li.lei@example.com", ".", " ID",
                                            " 11010519491231002X", " card", " 4111111111111111", " please", "."};
const std::vector<std::string> kPii = {"13812345678", "li.lei@example.com", "11010519491231002X", "4111111111111111"};

TEST_CASE("display text: personal data masked per token and per byte range, switchable", "[pii]") {
    // A byte range shows every span it touches, even partly, as one mask.
    const std::string text = "tel 13812345678 and li.lei@example.com end";
    const std::vector<attn::PiiSpan> spans = attn::find_pii(text);
    REQUIRE(spans.size() == 2);
    CHECK(attn::mask_pii_range(text, 0, text.size(), spans) == attn::mask_pii(text));
    CHECK(attn::mask_pii_range(text, 6, 9, spans) == "●●●● [PHONE]");               // inside the number
    CHECK(attn::mask_pii_range(text, 0, 6, spans) == "tel ●●●● [PHONE]");            // its first digits
    CHECK(attn::mask_pii_range(text, 10, 25, spans) == "●●●● [PHONE] and ●●●● [EMAIL]");
    CHECK(attn::mask_pii_range(text, 38, text.size(), spans) == " end");
    // The segment tables mask what they export; offsets stay the text's.
    std::vector<attn::Segment> segments(1);
    segments[0].begin = 0;
    segments[0].end = static_cast<uint32_t>(text.size());
    const std::string csv = attn::segments_csv(text, segments, spans);
    CHECK(csv.find("13812345678") == std::string::npos);
    CHECK(csv.find(",0,42,") != std::string::npos);
    CHECK(attn::segments_csv(text, segments).find("13812345678") != std::string::npos);
#ifdef ATTNSCOPE_HAVE_APP
    // The debugger's helpers, which every panel draws with: a phone number split over three tokens.
    CraftedSpec spec;
    spec.words = {"Call", " 138", "1234", "5678", " now", " li.lei@example.com", "."};
    spec.prompt_tokens = 5;
    spec.n_layer = 1;
    spec.n_head = 1;
    const attn::Session session = attn::testing::make_crafted_session(spec);
    const attn::CpuTileSource source(*session.capture, 1);
    attn::app::DebuggerModel model(session, source);
    CHECK(model.mask_pii);  // on by default
    CHECK(model.token_chars(0, false) == "Call");
    CHECK(model.token_chars(1, false) == "●●●● [PHONE]");  // the first token names the type
    CHECK(model.token_chars(2, false) == "●●●●");
    CHECK(model.token_display(3) == "●●●●");
    CHECK(model.token_display(5) == "●●●● [EMAIL]");
    CHECK(model.token_display(4) == "·now");
    CHECK(model.display_token(5) == " ●●●● [EMAIL]");
    CHECK(model.display_range(0, session.text.size()) == "Call ●●●● [PHONE] now ●●●● [EMAIL].");
    CHECK(model.alternative_text(5, session.tokens[0].id) == "●●●●");  // alternatives at a masked step
    CHECK(model.alternative_text(6, session.tokens[0].id) == "Call");
    model.mask_pii = false;
    CHECK(model.token_chars(1, false) == " 138");
    CHECK(model.display_range(0, session.text.size()) == session.text);
    CHECK(model.alternative_text(5, session.tokens[0].id) == "Call");
#endif
}

#ifdef ATTNSCOPE_HAVE_APP
TEST_CASE("beam tree: a token is masked where its hypothesis completes personal data, not elsewhere", "[pii]") {
    CraftedSpec spec;
    // The session's own text has no personal data ("Call 1381234 now ok.5678"); one beam makes some.
    spec.words = {"Call", " 138", "1234", " now", " ok", ".", "5678"};
    spec.prompt_tokens = 2;
    spec.n_layer = 1;
    spec.n_head = 1;
    attn::Session session = attn::testing::make_crafted_session(spec);
    const auto id = [&](size_t word) { return session.tokens[word].id; };
    // Two beams after "Call 138": "1234" then either "5678" (a phone number, 13812345678) and ".",
    // or " now" (7 digits: nothing) and " ok".
    attn::BeamTree& tree = session.beam_tree;
    tree.beams = 2;
    tree.nodes = {{id(2), -1, 0, 0, -0.1, false}, {id(6), 0, 1, 0, -0.2, false}, {id(3), 0, 1, 1, -0.3, false},
                  {id(5), 1, 2, 0, -0.4, true}, {id(4), 2, 2, 1, -0.5, true}};
    tree.finals = {3, 4};
    tree.best = 3;
    const attn::CpuTileSource source(*session.capture, 1);
    attn::app::DebuggerModel model(session, source);
    REQUIRE(model.vocab_text(id(2)) == "1234");  // not masked in the session's own text
    std::vector<std::string> labels = attn::panels::beam_node_labels(model);
    REQUIRE(labels.size() == 5);
    CHECK(labels[0] == "●●●●");  // "1234": inside the number on the first beam
    CHECK(labels[1] == "●●●●");  // "5678"
    CHECK(labels[2] == model.vocab_text(id(3)));  // " now": the other beam
    CHECK(labels[3] == model.vocab_text(id(5)));
    CHECK(labels[4] == model.vocab_text(id(4)));
    model.mask_pii = false;
    labels = attn::panels::beam_node_labels(model);
    CHECK(labels[0] == "1234");
    CHECK(labels[1] == "5678");
}
#endif

TEST_CASE("window: personal data is masked in the text view, its exports and the state line; pii off shows it", "[pii][app]") {
    attn::Session session;
    {
        CraftedSpec spec;
        spec.words = kPiiWords;
        spec.prompt_tokens = 9;  // the card number and the rest are "generated"
        spec.n_layer = 1;
        spec.n_head = 2;
        spec.focus = [](int, int head, int64_t q) -> std::vector<int64_t> { return {head == 0 ? std::max<int64_t>(0, q - 1) : std::min<int64_t>(q, 1)}; };
        session = attn::testing::make_crafted_session(spec);
    }
    // The detector finds all four (the test is about the views, not the detector: it must see them).
    REQUIRE(attn::find_pii(session.text).size() == 4);
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("ui_pii");
    const std::string path = dir.file("pii.attn");
    attn::save_session(path, session);
    std::ostringstream script;
    // Token 4 is the e-mail address: hovered, it is the state's hovered_text; token 1 (the phone) is
    // what the previous-token head of token 2 attends to, so it is in top_attended.
    script << "centre text\ntext_level token\ntext_hover 2\nstate\nexport_segments " << dir.file("tokens.csv") << "\n"
           << "text_level word\nexport_segments " << dir.file("words.json") << "\n"
           << "text_level sentence\nexport_segments " << dir.file("sentences.csv") << "\ntext_hover 0\nstate\n"
           << "screenshot " << dir.file("masked.png") << "\n"
           << "centre map\nshow 1 1 2 2\nhover 300 300\n"  // the map shows one cell: query 1 (the phone), key 1
           << "centre text\npii off\ntext_level token\ntext_hover 2\nstate\nexport_segments " << dir.file("tokens-plain.csv") << "\n";
    const auto r = run_window(path, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<json> states = states_of(r->out);
    REQUIRE(states.size() == 4);
    for (const char* file : {"tokens.csv", "words.json", "sentences.csv"}) {
        const std::string text = attn::testing::read_file_string(dir.file(file));
        INFO(file << ":\n" << text);
        for (const std::string& secret : kPii) CHECK(text.find(secret) == std::string::npos);
        CHECK(text.find("●●●● [PHONE]") != std::string::npos);
        CHECK(text.find("●●●● [EMAIL]") != std::string::npos);
        CHECK(text.find("●●●● [ID]") != std::string::npos);
        CHECK(text.find("●●●● [CARD]") != std::string::npos);
    }
    for (size_t i = 0; i < 2; ++i) {
        const std::string line = states[i].dump();
        INFO(line);
        for (const std::string& secret : kPii) CHECK(line.find(secret) == std::string::npos);
        CHECK(states[i]["pii"]["masking"] == true);
        CHECK(states[i]["pii"]["spans"] == 4);
    }
    // Token 2 (" or") attends to token 1 (the phone) in head 0: that entry's text is masked.
    CHECK(states[0]["text"]["top_attended"][0]["text"] == " ●●●● [PHONE]");
    CHECK_THAT(states[1]["text"]["hovered_text"].get<std::string>(), Catch::Contains("●●●● [EMAIL]"));
    // The map's hover line: the tokens as displayed.
    CHECK(states[2]["hover"]["query"] == 1);
    CHECK(states[2]["hover"]["query_token"] == " ●●●● [PHONE]");
    CHECK(states[2]["hover"]["key_token"] == " ●●●● [PHONE]");
    // Switched off: the same state line and export show the data.
    CHECK(states[3]["pii"]["masking"] == false);
    CHECK(states[3]["text"]["top_attended"][0]["text"] == " 13812345678");
    const std::string plain = attn::testing::read_file_string(dir.file("tokens-plain.csv"));
    for (const std::string& secret : kPii) CHECK(plain.find(secret) != std::string::npos);
    CHECK(plain.find("●●●●") == std::string::npos);

    // Every export carries its provenance record (FILE.provenance.json), saying whether it was masked.
    for (const auto& [file, masked] : {std::pair<std::string, bool>{"tokens.csv", true}, {"tokens-plain.csv", false}}) {
        const std::string record_text = attn::testing::read_file_string(dir.file(file) + ".provenance.json");
        INFO(file << " record:\n" << record_text);
        REQUIRE_FALSE(record_text.empty());
        const json record = json::parse(record_text);
        CHECK(record["schema"] == "attnscope.provenance/1");
        CHECK(record["exhibits"][0]["file"] == file);
        CHECK(record["exhibits"][0]["kind"] == "segment_table");
        CHECK(record["privacy"]["pii_masking"] == masked);
        CHECK(record["session"]["file_sha256"].get<std::string>().size() == 64);
        for (const std::string& secret : kPii) CHECK(record_text.find(secret) == std::string::npos);
    }
    // With view --key the exports are signed too, and verify checks the file against its record.
    const auto keygen = attn::testing::run_cli("keygen -o " + dir.file("k.key"));
    REQUIRE(keygen.exit_code == 0);
    const auto signed_run = run_window(path + " --key " + dir.file("k.key"),
                                       "centre text\ntext_level word\nexport_segments " + dir.file("signed.json") + "\n", dir);
    REQUIRE(signed_run);
    REQUIRE(signed_run->exit_code == 0);
    const auto verified = attn::testing::run_cli("verify " + dir.file("signed.json"));
    INFO(verified.out << verified.err);
    CHECK(verified.exit_code == 0);
    { std::ofstream(dir.file("signed.json"), std::ios::app) << " "; }
    CHECK(attn::testing::run_cli("verify " + dir.file("signed.json")).exit_code != 0);

    // --no-pii-masking starts with masking off.
    const auto off = run_window(path + " --no-pii-masking", "centre text\ntext_level token\ntext_hover 2\nstate\n", dir);
    REQUIRE(off);
    REQUIRE(off->exit_code == 0);
    const std::vector<json> off_states = states_of(off->out);
    REQUIRE(off_states.size() == 1);
    CHECK(off_states[0]["pii"]["masking"] == false);
#endif
}

// ---- rules -------------------------------------------------------------------------------------------

// Prompt: 0 客户 1 有 2 逾期记录 3 ， 4 其 5 身份证号 6 为 7 1234 8 。  Steps: 9 核对 10 身份证号 11 后 12 拒绝.
// Layer 0 always looks at 逾期记录 from 身份证号; layer 1 never does (it looks at itself).
attn::Session make_credit_session() {
    CraftedSpec spec;
    spec.words = {"客户", "有", "逾期记录", "，", "其", "身份证号", "为", "1234", "。", "核对", "身份证号", "后", "拒绝"};
    spec.prompt_tokens = 9;
    spec.n_layer = 2;
    spec.n_head = 2;
    spec.focus = [](int layer, int, int64_t i) -> std::vector<int64_t> {
        if ((i == 5 || i == 10) && layer == 0) return {2};
        return {i};
    };
    return attn::testing::make_crafted_session(spec);
}

const char* kRules = R"([[rules]]
id = "layer1-needs-overdue"
layers = "1"
query = { regex = "身份证号" }
key = { regex = "逾期记录" }
op = ">="
threshold = 0.05

[[rules]]
id = "layer0-needs-overdue"
layers = "0"
query = "身份证号"
key = "逾期记录"
op = ">="
threshold = 0.5
)";

TEST_CASE("violations: a new one pulses, then stays red; its step and heads are marked", "[rules]") {
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    attn::panels::RulesState state;
    CHECK(attn::panels::violation_pulse(state) == 0.f);
    CHECK_FALSE(attn::panels::violation_pulsing(state));
    attn::panels::Violation v;
    v.step = 2;
    v.offending = {{1, 0}};
    state.violations.push_back(v);
    state.pulse_start = std::chrono::steady_clock::now();
    CHECK(attn::panels::violation_pulsing(state));
    CHECK(attn::panels::violation_pulse(state) > 0.9f);  // starts at full strength
    state.pulse_start = std::chrono::steady_clock::now() - std::chrono::seconds(10);
    CHECK_FALSE(attn::panels::violation_pulsing(state));
    CHECK(attn::panels::violation_pulse(state) == Approx(0.35f));  // steady red afterwards
    CHECK(attn::panels::step_violated(state, 2));
    CHECK_FALSE(attn::panels::step_violated(state, 3));
    CHECK(attn::panels::head_violated(state, 1, 0));
    CHECK_FALSE(attn::panels::head_violated(state, 0, 1));
#endif
}

TEST_CASE("window: the Rules panel's verdicts match attnscope rules; a violation opens its step and worst head, and is red", "[rules][app]") {
    const attn::Session session = make_credit_session();
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("ui_rules");
    const std::string path = dir.file("credit.attn");
    attn::save_session(path, session);
    std::ofstream(dir.file("rules.toml")) << kRules;
    std::ofstream(dir.file("broken.toml")) << "[[rules]]\nquery = \"a\"\nkey = \"b\"\nop = \">=\"\nthreshold = \"high\"\n";
    const auto cli = attn::testing::run_cli("rules " + path + " --rules " + dir.file("rules.toml") + " --json");
    REQUIRE(cli.exit_code == 1);
    const json log = json::parse(cli.out);

    std::ostringstream script;
    script << "rules " << dir.file("broken.toml") << "\nstate\n"
           << "rules " << dir.file("rules.toml") << "\nstate\n"
           << "violation 1\nstate\n"
           << "centre text\ntext_level token\ntext_hover 10\nstate\nscreenshot " << dir.file("rules.png") << "\n";
    const auto r = run_window(path, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<json> states = states_of(r->out);
    REQUIRE(states.size() == 4);
    // A bad file: its error with the line and column, and no rules.
    CHECK_THAT(states[0]["rules"]["error"].get<std::string>(), Catch::Contains("broken.toml:5:13: rules[0].threshold"));
    CHECK(states[0]["rules"]["verdicts"].empty());
    // The verdicts are attnscope rules' verdicts, rule by rule.
    const json& rules = states[1]["rules"];
    REQUIRE(rules["verdicts"].size() == log["rules"].size());
    int64_t violations = 0;
    for (size_t i = 0; i < log["rules"].size(); ++i) {
        CHECK(rules["verdicts"][i]["id"] == log["rules"][i]["id"]);
        CHECK(rules["verdicts"][i]["verdict"] == log["rules"][i]["verdict"]);
        violations += log["rules"][i]["violations"].get<int64_t>();
    }
    CHECK(rules["verdicts"][0]["verdict"] == "fail");
    CHECK(rules["verdicts"][1]["verdict"] == "pass");
    CHECK(rules["violations"] == violations);
    REQUIRE(rules["violations"] == 2);  // the prompt's 身份证号 and step 1's
    CHECK(rules["violation_list"][0]["step"] == -1);
    CHECK(rules["violation_list"][1]["step"] == 1);
    CHECK(rules["violation_list"][1]["query"] == "身份证号");
    CHECK(rules["violation_list"][1]["keys"] == "逾期记录");
    CHECK(rules["violation_list"][1]["value"].get<double>() < 0.05);
    // Clicking violation 1: step 1 shown, its query row selected, the worst head (layer 1) in the map.
    CHECK(states[2]["shown_step"] == 1);
    CHECK(states[2]["selected_query"] == 10);
    CHECK(states[2]["layer"] == 1);
    // The offending span (token 10) is framed in red in the text view.
    const json rect = states[3]["text"]["hovered_rect"];
    REQUIRE(rect.is_array());
    const Image image(dir.file("rules.png"));
    CHECK(image.fraction(rect, [](const unsigned char* p) { return p[0] > 150 && p[1] < 110 && p[2] < 110; }) > 0.1);
#endif
}

TEST_CASE("window: ontology matches and anomalies as attnscope ontology finds them", "[rules][ontology][app]") {
    const attn::Session session = make_credit_session();
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("ui_ontology");
    const std::string path = dir.file("credit.attn");
    attn::save_session(path, session);
    const std::string onto = R"({"types": [{"name": "id", "words": ["身份证号"]}, {"name": "record", "patterns": ["逾期记录"]}],
        "relations": [{"from": "id", "to": "record", "strength": "strong"}]})";
    std::ofstream(dir.file("o.json")) << onto;
    const attn::Ontology ontology = attn::parse_ontology(onto, "o.json");
    const auto spans = attn::match_entities(ontology, session);
    // The text view's heads: the shown head (L1H0 here), which never looks at the record: anomalies.
    const attn::CpuTileSource source(*session.capture, 1);
    const std::vector<attn::HeadRef> heads = {{1, 0}};
    const attn::OntologyReport report = attn::check_ontology(ontology, session, source, heads);
    REQUIRE(report.anomalies > 0);
    const auto r = run_window(path + " --layer 1 --ontology " + dir.file("o.json"), "centre text\ntext_level word\nstate\n", dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<json> states = states_of(r->out);
    REQUIRE(states.size() == 1);
    CHECK(states[0]["rules"]["entity_spans"] == spans.size());
    CHECK(states[0]["rules"]["anomalies"] == report.anomalies);
    // Both 身份证号 spans and the record are in flagged pairs: the text view frames three spans.
    std::set<size_t> flagged;
    for (const auto& rc : report.relations)
        for (const auto& p : rc.pairs)
            if (p.flagged) flagged.insert(p.query_span), flagged.insert(p.key_span);
    CHECK(flagged.size() == 3);
    CHECK(states[0]["rules"]["anomaly_spans"] == flagged.size());
#endif
}

TEST_CASE("window, live: a violated rule with pause = true pauses the run; the panel says why and lists it", "[rules][live][app]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    if (!attn::app::find_in_path("Xvfb")) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return;
    }
    TempDir dir("ui_rules_live");
    // Some SmolLM2 heads put almost all of a decode step's attention on the first token (the attention
    // sink): a rule forbidding more than half fails at the first decode step.
    std::ofstream(dir.file("sink.toml")) << "[[rules]]\nid = \"no-sink\"\nquery = { any = true }\n"
                                            "key = { tokens = [0, 1] }\nop = \"<=\"\nthreshold = 0.5\nscope = \"steps\"\npause = true\n";
    // Then the violation's "counterfactual" button: its keys (the first token) masked in its heads.
    std::ofstream(dir.file("live.script")) << "run 8\nwait_idle\nstate\nviolation_counterfactual 0\ncounterfactual_wait\nstate\n";
    const auto r = attn::testing::run_cli("view --headless --prompt \"The capital of France is\" -n 8 --size 1280x720 --rules " +
                                          dir.file("sink.toml") + " --script " + dir.file("live.script") + " --record " +
                                          dir.file("live.attn"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::vector<json> states = states_of(r.out);
    REQUIRE(states.size() == 2);
    const json& s = states[0];
    INFO(s.dump());
    CHECK(s["state"] == "paused");
    CHECK(s["steps"] == 1);
    CHECK_THAT(s["message"].get<std::string>(), Catch::Contains("rule \"no-sink\" violated at step 0"));
    CHECK_THAT(s["rules"]["paused_by"].get<std::string>(), Catch::Contains("no-sink"));
    REQUIRE(s["rules"]["violations"].get<int>() >= 1);
    CHECK(s["rules"]["violation_list"][0]["step"] == 0);
    CHECK(s["rules"]["violation_list"][0]["live"] == true);
    CHECK(s["rules"]["violation_list"][0]["value"].get<double>() > 0.5);
    // The panel's verdict (the whole session checked on a worker) agrees with the runner.
    CHECK(s["rules"]["verdicts"][0]["verdict"] == "fail");
    // The counterfactual of violation 0: the sink masked in the offending heads, whose mass there is then 0.
    const json& cf = states[1]["counterfactual"];
    INFO(cf.dump());
    CHECK_FALSE(cf.contains("error"));
    CHECK(cf["kind"] == "mask_keys");
    CHECK(cf["key_spans"] == json::array({json::array({0, 1})}));
    CHECK(cf["shown_head"]["span_mass_before"].get<double>() > 0.5);
    CHECK(cf["shown_head"]["span_mass_after"].get<double>() == 0.0);
#endif
}

// ---- syntax ------------------------------------------------------------------------------------------

TEST_CASE("window: a (query word, key word) pair shows the raw mass, the link-grammar relation and parts of speech", "[syntax][app]") {
    std::string why;
    if (!attn::syntax_parser_available(&why)) {
        WARN("SKIPPED: " << why);
        return;
    }
    CraftedSpec spec;
    spec.words = {"The", " cat", " chased", " the", " dog", ".", " 北京", "很", "大", "。"};
    spec.prompt_tokens = 10;
    spec.n_layer = 1;
    spec.n_head = 2;
    // Head 0: " chased" looks at " cat" (its subject); every word of head 1 looks at itself.
    spec.focus = [](int, int head, int64_t q) -> std::vector<int64_t> {
        if (head == 0 && q == 2) return {1};
        return {q};
    };
    const attn::Session session = attn::testing::make_crafted_session(spec);
    const auto words = attn::segment_session(session, attn::Granularity::Word);
    auto word_index = [&](const std::string& text) {
        for (size_t i = 0; i < words.size(); ++i)
            if (session.text.substr(words[i].begin, words[i].end - words[i].begin).find(text) != std::string::npos &&
                (words[i].kind == attn::SegmentKind::Word || words[i].kind == attn::SegmentKind::Ideographic))
                return static_cast<int64_t>(i);
        FAIL("no word " << text);
        return int64_t(-1);
    };
    const int64_t cat = word_index("cat"), chased = word_index("chased"), beijing = word_index("北京"), big = word_index("大");
#ifndef ATTNSCOPE_HAVE_APP
    WARN("SKIPPED: this build has no windowed debugger");
#else
    TempDir dir("ui_syntax");
    const std::string path = dir.file("syntax.attn");
    attn::save_session(path, session);
    std::ostringstream script;
    script << "centre text\ntext_pair " << chased << " " << cat << "\nstate\nscreenshot " << dir.file("pair.png") << "\n"
           << "text_pair " << cat << " " << chased << "\nstate\n"  // either order: the later word is the query
           << "text_pair " << big << " " << beijing << "\nstate\n"
           << "centre fingerprints\nheads_sort syntax desc\nstate\n";
    const auto r = run_window(path, script.str(), dir);
    if (!r) return;
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    const std::vector<json> states = states_of(r->out);
    REQUIRE(states.size() == 4);
    const json& pair = states[0]["text"]["pair"];
    INFO(pair.dump());
    CHECK(pair["query_segment"] == chased);
    CHECK(pair["key_segment"] == cat);
    CHECK(pair["status"] == "linked");
    CHECK_THAT(pair["relation"].get<std::string>(), Catch::Contains("subject"));
    CHECK_THAT(pair["query_pos"].get<std::string>(), Catch::StartsWith("verb"));
    CHECK(pair["key_pos"] == "noun");
    // The raw mass is exact: head 0 (the shown head) of " chased" on " cat".
    const attn::CpuTileSource source(*session.capture, 1);
    CHECK(pair["mass"].get<double>() == Approx(source.mass(0, 0, 2, 3, 1, 2)).epsilon(1e-5));
    CHECK(pair["mass"].get<double>() > 0.99);
    CHECK(states[1]["text"]["pair"]["query_segment"] == chased);
    // Chinese: no parser for it, said so.
    CHECK(states[2]["text"]["pair"]["status"] == "no_parser");
    CHECK_THAT(states[2]["text"]["pair"]["relation"].get<std::string>(), Catch::Contains("no parser for this language"));
    // The heads table's syntax column: the engine's shares, head 0 (which follows the subject link) first.
    const attn::SyntaxAnalysis analysis = attn::parse_session_syntax(session);
    const std::vector<attn::HeadRef> heads = {{0, 0}, {0, 1}};
    const auto shares = attn::syntactic_shares(source, session, analysis, heads);
    const json& rows = states[3]["fingerprints"]["rows"];
    REQUIRE(rows.size() == 2);
    CHECK(rows[0]["head"] == 0);
    CHECK(rows[0]["syntax"].get<double>() == Approx(shares[0].share).epsilon(1e-6));
    CHECK(rows[1]["syntax"].get<double>() == Approx(shares[1].share).epsilon(1e-6));
    CHECK(shares[0].share > shares[1].share);
#endif
}

}  // namespace
