// Ontology checks (engine/ontology.h) and the JSON/TOML reader under them (engine/config_document.h):
// entity spans with byte and token ranges, anomaly flags on crafted attention, and errors that point
// at the line and the entry.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "engine/config_document.h"
#include "engine/error.h"
#include "engine/ontology.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/test_support.h"

using namespace attn;

namespace {

const char* kOntologyJson = R"({
  "thresholds": {"strong": 0.05, "near_zero": 0.01},
  "types": [
    {"name": "drug", "patterns": ["aspirin|ibuprofen"], "ignore_case": true},
    {"name": "side_effect", "words": ["nausea", "headache", "恶心"]},
    {"name": "colour", "words": ["white", "red"]}
  ],
  "relations": [
    {"from": "drug", "to": "side_effect", "strength": "strong"},
    {"from": "drug", "to": "colour", "strength": "near-zero"}
  ]
})";

const char* kOntologyToml = R"(
[thresholds]
strong = 0.05
near_zero = 0.01

[[types]]
name = "drug"
patterns = ["aspirin|ibuprofen"]
ignore_case = true

[[types]]
name = "side_effect"
words = ["nausea", "headache", "恶心"]

[[types]]
name = "colour"
words = ["white", "red"]

[[relations]]
from = "drug"
to = "side_effect"
strength = "strong"

[[relations]]
from = "drug"
to = "colour"
strength = "near-zero"
)";

// 0 "Aspirin" 1 " can" 2 " cause" 3 " nausea" 4 "." 5 " The" 6 " aspirin" 7 " tablet" 8 " is" 9 " white" 10 "."
// Every head: nausea looks at Aspirin (an expected strong link, followed); the second aspirin looks at
// "The" (the strong link to nausea ignored: flagged low); white looks at the second aspirin (a link
// expected near zero: flagged high); everything else looks at itself.
Session make_drug_session() {
    attn::testing::CraftedSpec spec;
    spec.words = {"Aspirin", " can", " cause", " nausea", ".", " The", " aspirin", " tablet", " is", " white", "."};
    spec.prompt_tokens = 11;
    spec.focus = [](int, int, int64_t i) -> std::vector<int64_t> {
        if (i == 3) return {0};
        if (i == 6) return {5};
        if (i == 9) return {6};
        return {i};
    };
    return attn::testing::make_crafted_session(spec);
}

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("ontology files: JSON and TOML read the same", "[ontology]") {
    const Ontology json = parse_ontology(kOntologyJson, "drugs.json");
    const Ontology toml = parse_ontology(kOntologyToml, "drugs.toml");
    for (const Ontology* o : {&json, &toml}) {
        REQUIRE(o->types.size() == 3);
        CHECK(o->types[0].name == "drug");
        CHECK(o->types[0].ignore_case);
        CHECK(o->types[1].words.size() == 3);
        REQUIRE(o->relations.size() == 2);
        CHECK(o->relations[0].strength == Strength::Strong);
        CHECK(o->relations[0].min == 0.05);
        CHECK(o->relations[1].strength == Strength::NearZero);
        CHECK(o->relations[1].max == 0.01);
        CHECK(o->relations[1].from_type == 0);
        CHECK(o->relations[1].to_type == 2);
    }
    CHECK(json.types[1].line == 5);
    CHECK(toml.types[1].line == 11);
    const Ontology numeric = parse_ontology(R"({"thresholds": {"factor": 2}, "types": [{"name": "a", "words": ["x"]}],
        "relations": [{"from": "a", "to": "a", "strength": 0.2, "aggregate": "mean", "direction": "forward"}]})",
                                            "n.json");
    CHECK(numeric.relations[0].strength == Strength::Value);
    CHECK(numeric.relations[0].min == Approx(0.1));
    CHECK(numeric.relations[0].max == Approx(0.4));
    CHECK(numeric.relations[0].aggregate == HeadAggregate::Mean);
    CHECK(numeric.relations[0].forward_only);
}

TEST_CASE("ontology matching: labelled spans with bytes and tokens", "[ontology]") {
    const Ontology o = parse_ontology(kOntologyJson, "drugs.json");
    const Session session = make_drug_session();
    const std::vector<TextSpan> spans = match_entities(o, session);
    REQUIRE(spans.size() == 4);
    CHECK(o.types[spans[0].type].name == "drug");
    CHECK(spans[0].begin == 0);
    CHECK(spans[0].end == 7);
    CHECK(spans[0].first == 0);
    CHECK(spans[0].last == 1);
    CHECK(o.types[spans[1].type].name == "side_effect");
    CHECK(session.text.substr(spans[1].begin, spans[1].end - spans[1].begin) == "nausea");
    CHECK(spans[1].first == 3);
    CHECK(o.types[spans[2].type].name == "drug");
    CHECK(spans[2].first == 6);
    CHECK(o.types[spans[3].type].name == "colour");
    CHECK(spans[3].first == 9);
    // Words match whole words only; Chinese words have no word boundary to ask for.
    const std::string text = "reddish nausea; 服用后恶心";
    const std::vector<TextSpan> more = match_entities(o, text, {});
    REQUIRE(more.size() == 2);
    CHECK(text.substr(more[0].begin, more[0].end - more[0].begin) == "nausea");
    CHECK(text.substr(more[1].begin, more[1].end - more[1].begin) == "恶心");
}

TEST_CASE("ontology anomalies: ignored strong links and unexpected attention are flagged with their numbers",
          "[ontology]") {
    const Ontology o = parse_ontology(kOntologyToml, "drugs.toml");
    const Session session = make_drug_session();
    const CpuTileSource source(*session.capture, 1);
    const std::vector<HeadRef> heads = all_heads(session.capture->shape());
    const OntologyReport report = check_ontology(o, session, source, heads, 1);
    REQUIRE(report.relations.size() == 2);
    CHECK(report.anomalies == 2);

    const RelationCheck& strong = report.relations[0];
    REQUIRE(strong.pairs.size() == 2);
    CHECK(strong.flagged == 1);
    // nausea (query) → Aspirin (key): followed.
    CHECK(report.spans[strong.pairs[0].query_span].first == 3);
    CHECK(report.spans[strong.pairs[0].key_span].first == 0);
    CHECK_FALSE(strong.pairs[0].from_is_query);
    CHECK(strong.pairs[0].value == Approx(1).margin(1e-6));
    CHECK_FALSE(strong.pairs[0].flagged);
    // the second aspirin (query) → nausea (key): ignored.
    CHECK(report.spans[strong.pairs[1].query_span].first == 6);
    CHECK(strong.pairs[1].from_is_query);
    CHECK(strong.pairs[1].value < 1e-6);
    CHECK(strong.pairs[1].flag == "low");
    CHECK(strong.pairs[1].per_head.size() == heads.size());

    const RelationCheck& near_zero = report.relations[1];
    REQUIRE(near_zero.pairs.size() == 2);
    CHECK(near_zero.flagged == 1);
    CHECK(near_zero.pairs[0].value < 1e-6);  // white → Aspirin
    CHECK_FALSE(near_zero.pairs[0].flagged);
    CHECK(near_zero.pairs[1].value == Approx(1).margin(1e-6));  // white → aspirin
    CHECK(near_zero.pairs[1].flag == "high");

    // The share is exact: the same number from the rows.
    const double from_row = source.row(1, 0, 9)[6];
    CHECK(near_zero.pairs[1].per_head[2] == Approx(from_row).epsilon(1e-6));

    // "forward" keeps only the pairs where the drug attends.
    const Ontology forward = parse_ontology(R"({"types": [{"name": "drug", "patterns": ["(?:A|a)spirin"]},
        {"name": "side_effect", "words": ["nausea"]}],
        "relations": [{"from": "drug", "to": "side_effect", "strength": "strong", "direction": "forward"}]})",
                                            "f.json");
    const OntologyReport f = check_ontology(forward, session, source, heads, 1);
    REQUIRE(f.relations[0].pairs.size() == 1);
    CHECK(f.relations[0].pairs[0].flag == "low");

    const nlohmann::json j = ontology_report_json(o, session, report);
    CHECK(j["anomalies"] == 2);
    CHECK(j["spans"][1]["text"] == "nausea");
    CHECK(j["relations"][1]["pairs"][1]["flag"] == "high");
}

TEST_CASE("ontology files: errors name the file, line, entry and problem", "[ontology]") {
    CHECK_THAT(error_of([] {
                   parse_ontology(R"({
  "types": [{"name": "drug", "words": ["aspirin"]}],
  "relations": [
    {"from": "drug", "to": "drug", "strength": "strongish"}
  ]
})",
                                  "o.json");
               }),
               Catch::StartsWith("o.json:4:48: relations[0].strength: expected \"strong\""));
    CHECK_THAT(error_of([] {
                   parse_ontology("[[types]]\nname = \"drug\"\npatterns = [\"(unclosed\"]\n", "o.toml");
               }),
               Catch::StartsWith("o.toml:3:13: types[0].patterns[0]:") && Catch::Contains("(unclosed"));
    CHECK_THAT(error_of([] {
                   parse_ontology("[[types]]\nname = \"drug\"\nwords = [\"a\"]\n[[relations]]\nfrom = \"drug\"\nto = \"dose\"\n"
                                  "strength = \"weak\"\n",
                                  "o.toml");
               }),
               Catch::StartsWith("o.toml:6:6: relations[0].to: unknown entity type \"dose\""));
    CHECK_THAT(error_of([] { parse_ontology("{\"types\": [{\"name\": \"a\", \"words\": [\"x\"],}]}", "o.json"); }),
               Catch::StartsWith("o.json:1:41: invalid JSON") && Catch::Contains("trailing comma"));
    CHECK_THAT(error_of([] { parse_ontology("[[types]\nname = 1\n", "o.toml"); }),
               Catch::StartsWith("o.toml:1:") && Catch::Contains("invalid TOML"));
    CHECK_THAT(error_of([] {
                   parse_ontology("{\"types\": [{\"name\": \"a\", \"words\": [\"x\"]},\n {\"name\": \"a\", \"words\": [\"y\"]}]}",
                                  "o.json");
               }),
               Catch::StartsWith("o.json:2:11: types[1].name: the entity type \"a\" is defined twice"));
    CHECK_THAT(error_of([] { parse_ontology("{\"types\": [{\"name\": \"a\"}]}", "o.json"); }),
               Catch::Contains("has no \"patterns\" and no \"words\""));
    CHECK_THAT(error_of([] { parse_ontology("{\"types\": [{\"name\": \"a\", \"word\": [\"x\"]}]}", "o.json"); }),
               Catch::Contains("types[0].word: unknown field \"word\""));
    CHECK_THAT(error_of([] { load_ontology("/nonexistent/o.json"); }), Catch::Contains("/nonexistent/o.json"));
}

TEST_CASE("attnscope ontology: spans and anomalies", "[ontology][cli]") {
    using attn::testing::run_cli;
    attn::testing::TempDir dir("ontology_cli");
    save_session(dir.file("s.attn"), make_drug_session());
    {
        std::ofstream(dir.file("o.toml")) << kOntologyToml;
    }
    const auto r = run_cli("ontology " + dir.file("s.attn") + " --ontology " + dir.file("o.toml"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("anomalies: 2"));
    CHECK_THAT(r.out, Catch::Contains("LOW"));
    CHECK_THAT(r.out, Catch::Contains("HIGH"));
    const auto j = run_cli("ontology " + dir.file("s.attn") + " --ontology " + dir.file("o.toml") + " --json --layers 1");
    REQUIRE(j.exit_code == 0);
    const nlohmann::json out = nlohmann::json::parse(j.out);
    CHECK(out["heads"].size() == 2);
    CHECK(out["anomalies"] == 2);
}
