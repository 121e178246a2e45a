// Rules (engine/rules.h): parsing JSON and TOML with errors that give the line and what is wrong;
// verdicts on crafted sessions that violate and satisfy a rule (a Chinese-pattern rule among them);
// the match log against its JSON Schema (docs/schemas/rules-result.schema.json); the CLI's exit
// codes; a live run paused by a violated rule.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/head_fingerprints.h"
#include "engine/live_runner.h"
#include "engine/rules.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/json_schema.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace attn;
using nlohmann::json;

namespace {

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// Prompt: 0 客户 1 有 2 逾期记录 3 ， 4 其 5 身份证号 6 为 7 1234 8 。  Steps: 9 核对 10 身份证号 11 后 12 拒绝
// (step 1 is the second 身份证号). `attends`: the layer-1 heads whose 身份证号 rows look at 逾期记录; every
// other row of layer 1 looks at itself. Layer 0 always looks at 逾期记录 from 身份证号 (outside the rule).
Session make_credit_session(std::function<bool(int head)> attends) {
    attn::testing::CraftedSpec spec;
    spec.words = {"客户", "有", "逾期记录", "，", "其", "身份证号", "为", "1234", "。", "核对", "身份证号", "后", "拒绝"};
    spec.prompt_tokens = 9;
    spec.n_layer = 2;
    spec.n_head = 2;
    spec.focus = [attends](int layer, int head, int64_t i) -> std::vector<int64_t> {
        const bool id_row = i == 5 || i == 10;
        if (id_row && (layer == 0 || attends(head))) return {2};
        return {i};
    };
    return attn::testing::make_crafted_session(spec);
}

const char* kRulesToml = R"(# the ID number must look at the overdue record
[[rules]]
id = "id-needs-overdue"
description = "身份证号 attends to 逾期记录"
layers = "1"
query = { regex = "身份证号|ID number" }
key = { regex = "逾期记录|overdue" }
aggregate = "max"
op = ">="
threshold = 0.05

[[rules]]
id = "id-ignores-phone"
layers = "*"
query = "身份证号"
key = { regex = "电话" }
op = "<="
threshold = 0.01
scope = "prompt"
)";

std::vector<std::string> schema_errors(const json& value) {
    const json schema = json::parse(attn::testing::read_file_string(std::string(ATTNSCOPE_SOURCE_DIR) +
                                                                    "/docs/schemas/rules-result.schema.json"));
    return attn::testing::json_schema_errors(value, schema);
}

}  // namespace

TEST_CASE("rules files: TOML and JSON with defaults", "[rules]") {
    const RuleSet toml = parse_rules(kRulesToml, "credit.toml");
    REQUIRE(toml.rules.size() == 2);
    const Rule& r = toml.rules[0];
    CHECK(r.id == "id-needs-overdue");
    CHECK(r.line == 2);
    CHECK(r.layers.first == 1);
    CHECK(r.layers.last == 1);
    CHECK(r.heads.first == 0);
    CHECK(r.heads.last == -1);
    CHECK(r.query.kind == SpanSelectorKind::Regex);
    CHECK(r.query.pattern == "身份证号|ID number");
    CHECK(r.aggregate == RuleAggregate::Max);
    CHECK(r.op == RuleOp::GreaterEqual);
    CHECK(r.threshold == 0.05);
    CHECK(r.scope == RuleScope::Both);
    CHECK(r.pause);
    CHECK(toml.rules[1].query.kind == SpanSelectorKind::Regex);  // a plain string is a regex
    CHECK(toml.rules[1].scope == RuleScope::Prompt);

    const RuleSet j = parse_rules(R"({"rules": [
      {"layers": [10, 20], "label": ["induction", "copier"], "query": {"tokens": [3, 5]},
       "key": {"bytes": [0, 12]}, "aggregate": "all", "op": "<", "threshold": 1e-3, "scope": "steps", "pause": false},
      {"layers": "10–12", "heads": 2, "query": {"any": true}, "key": {"regex": "overdue", "ignore_case": true},
       "aggregate": "mean", "op": ">", "threshold": 0}
    ]})",
                                  "r.json");
    REQUIRE(j.rules.size() == 2);
    CHECK(j.rules[0].id == "rule 1");
    CHECK(j.rules[0].layers.first == 10);
    CHECK(j.rules[0].layers.last == 20);
    CHECK(j.rules[0].labels == std::vector<std::string>{"induction", "copier"});
    CHECK(j.rules[0].query.kind == SpanSelectorKind::Tokens);
    CHECK(j.rules[0].key.kind == SpanSelectorKind::Bytes);
    CHECK(j.rules[0].aggregate == RuleAggregate::All);
    CHECK_FALSE(j.rules[0].pause);
    CHECK(j.rules[1].layers.last == 12);
    CHECK(j.rules[1].heads.first == 2);
    CHECK(j.rules[1].query.kind == SpanSelectorKind::Any);
    CHECK(j.rules[1].key.ignore_case);
    CHECK(j.uses_labels());
}

TEST_CASE("rules: the example files in assets/rules parse", "[rules]") {
    const std::string dir = std::string(ATTNSCOPE_SOURCE_DIR) + "/assets/rules/";
    const auto ontology = std::make_shared<const Ontology>(load_ontology(dir + "credit-review.ontology.json"));
    CHECK(ontology->types.size() == 4);
    const RuleSet rules = load_rules(dir + "credit-review.rules.toml", ontology);
    REQUIRE(rules.rules.size() == 2);
    CHECK(rules.rules[1].key.kind == SpanSelectorKind::Type);
    CHECK_THAT(error_of([&] { load_rules(dir + "credit-review.rules.toml"); }), Catch::Contains("no ontology was given"));
}

TEST_CASE("rules files: errors give the file, line, entry and what is wrong", "[rules]") {
    // TOML
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nquery = \"a\"\nkey = \"b\"\nop = \">=\"\nthreshold = \"0.05\"\n", "r.toml"); }),
               Catch::StartsWith("r.toml:5:13: rules[0].threshold: expected a number, found a string (\"0.05\")"));
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nquery = \"a\"\nkey = \"b\"\nop = \">=\nthreshold = 1\n", "r.toml"); }),
               Catch::StartsWith("r.toml:4:") && Catch::Contains("invalid TOML"));
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nquery = \"a\"\nkey = \"b\"\nop = \"=>\"\nthreshold = 1\n", "r.toml"); }),
               Catch::StartsWith("r.toml:4:6: rules[0].op: expected \">=\", \">\", \"<=\" or \"<\""));
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nquery = \"(a\"\nkey = \"b\"\nop = \">=\"\nthreshold = 1\n", "r.toml"); }),
               Catch::StartsWith("r.toml:2:9: rules[0].query:") && Catch::Contains("(a"));
    CHECK_THAT(error_of([] {
                   parse_rules("[[rules]]\nlayers = \"20-10\"\nquery = \"a\"\nkey = \"b\"\nop = \">=\"\nthreshold = 1\n", "r.toml");
               }),
               Catch::StartsWith("r.toml:2:10: rules[0].layers: the range ends (10) before it starts (20)"));
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nquery = { type = \"drug\" }\nkey = \"b\"\nop = \">=\"\nthreshold = 1\n", "r.toml"); }),
               Catch::StartsWith("r.toml:2:") && Catch::Contains("no ontology was given"));
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nquery = { regex = \"a\", tokens = [1, 2] }\nkey = \"b\"\nop = \">=\"\nthreshold = 1\n", "r.toml"); }),
               Catch::Contains("only one of"));
    CHECK_THAT(error_of([] { parse_rules("[[rules]]\nkey = \"b\"\nop = \">=\"\nthreshold = 1\n", "r.toml"); }),
               Catch::StartsWith("r.toml:1:") && Catch::Contains("rules[0]: missing the field \"query\""));
    // JSON
    CHECK_THAT(error_of([] {
                   parse_rules("{\"rules\": [\n  {\"query\": \"a\", \"key\": \"b\", \"op\": \">=\",\n   \"treshold\": 0.1}\n]}", "r.json");
               }),
               Catch::StartsWith("r.json:3:4: rules[0].treshold: unknown field \"treshold\" (expected one of: id,"));
    CHECK_THAT(error_of([] {
                   parse_rules("{\"rules\": [\n  {\"query\": \"a\", \"key\": \"b\", \"op\": \">=\", \"threshold\": 0.1,\n   \"treshold\": 0.1}\n]}",
                               "r.json");
               }),
               Catch::StartsWith("r.json:3:4: rules[0].treshold: unknown field \"treshold\""));
    CHECK_THAT(error_of([] { parse_rules("{\"rules\": [\n  {\"query\": \"a\"\n   \"key\": \"b\"}\n]}", "r.json"); }),
               Catch::StartsWith("r.json:3:4: invalid JSON: expected ',' or '}' in the object, found '\"'"));
    CHECK_THAT(error_of([] { parse_rules("{\"rules\": [{\"query\": \"a\\d\"}]}", "r.json"); }),
               Catch::StartsWith("r.json:1:25: invalid JSON: expected a valid escape") && Catch::Contains("\\\\"));
    CHECK_THAT(error_of([] {
                   parse_rules("{\"rules\": [{\"id\": \"x\", \"query\": \"a\", \"key\": \"b\", \"op\": \">=\", \"threshold\": 1},\n"
                               "{\"id\": \"x\", \"query\": \"a\", \"key\": \"b\", \"op\": \">=\", \"threshold\": 1}]}",
                               "r.json");
               }),
               Catch::StartsWith("r.json:2:8: rules[1].id: the id \"x\" is used twice (first at line 1)"));
    CHECK_THAT(error_of([] { parse_rules("{\"rules\": []}", "r.json"); }), Catch::Contains("the file has no rules"));
    CHECK_THAT(error_of([] { load_rules("/nonexistent/rules.toml"); }), Catch::StartsWith("/nonexistent/rules.toml: cannot read"));
}

TEST_CASE("rules: a crafted session that satisfies and one that violates a Chinese-pattern rule", "[rules]") {
    const RuleSet rules = parse_rules(kRulesToml, "credit.toml");

    SECTION("satisfied") {
        const Session session = make_credit_session([](int head) { return head == 0; });
        const CpuTileSource source(*session.capture, 1);
        const RulesReport report = evaluate_rules(rules, session, source);
        REQUIRE(report.results.size() == 2);
        const RuleResult& r = report.results[0];
        CHECK(r.verdict == Verdict::Pass);
        REQUIRE(r.heads.size() == 2);  // layer 1
        CHECK((r.heads[0] == HeadRef{1, 0}));
        REQUIRE(r.checks.size() == 2);  // the prompt's 身份证号 and step 1's
        CHECK(r.checks[0].step == -1);
        CHECK(r.checks[0].q0 == 5);
        CHECK(r.checks[0].value == Approx(1).margin(1e-6));
        CHECK((r.checks[0].head == HeadRef{1, 0}));
        CHECK(r.checks[1].step == 1);
        CHECK(r.checks[1].q0 == 10);
        CHECK(r.checks[1].passed);
        CHECK(r.query_spans.size() == 2);
        CHECK(r.key_spans.size() == 1);
        CHECK(r.violations == 0);
        // The second rule: no 电话 in the prompt.
        CHECK(report.results[1].verdict == Verdict::NotApplicable);
        CHECK_THAT(report.results[1].reason, Catch::Contains("matches nothing in the prompt"));
        CHECK(report.overall == Verdict::Pass);
        CHECK(report.passed == 1);
        CHECK(report.not_applicable == 1);
    }
    SECTION("violated (layer 0 attends, but the rule is about layer 1)") {
        const Session session = make_credit_session([](int) { return false; });
        const CpuTileSource source(*session.capture, 1);
        const RulesReport report = evaluate_rules(rules, session, source);
        const RuleResult& r = report.results[0];
        CHECK(r.verdict == Verdict::Fail);
        CHECK(r.violations == 2);
        CHECK(r.prompt_violated);
        CHECK(r.offending_steps == std::vector<int64_t>{1});
        CHECK((r.offending_heads == std::vector<HeadRef>{{1, 0}, {1, 1}}));
        REQUIRE(r.offending_spans.size() == 2);
        CHECK(session.text.substr(r.offending_spans[0].begin, r.offending_spans[0].end - r.offending_spans[0].begin) == "身份证号");
        CHECK(r.checks[0].value < 1e-6);
        // The number is exact: the row's probability on 逾期记录.
        CHECK(r.checks[1].heads[0].value == Approx(source.row(1, 0, 10)[2]).epsilon(1e-5));
        CHECK(report.overall == Verdict::Fail);
        const std::string text = rules_report_text(report, rules, session);
        CHECK_THAT(text, Catch::Contains("FAIL  id-needs-overdue (credit.toml:2)"));
        CHECK_THAT(text, Catch::Contains("step 1"));
    }
    SECTION("aggregates and head labels") {
        // Head 1 attends, head 0 does not: max passes, mean is 0.5, min and all fail, and a rule on the
        // user label "reviewer" (head 0 only) fails.
        Session session = make_credit_session([](int head) { return head == 1; });
        add_head_label(session, 1, 0, "reviewer");
        const CpuTileSource source(*session.capture, 1);
        auto verdict_with = [&](const std::string& extra) {
            const RuleSet set = parse_rules(cat("[[rules]]\nlayers = 1\nquery = \"身份证号\"\nkey = \"逾期记录\"\nop = \">=\"\n"
                                                "threshold = 0.4\nscope = \"prompt\"\n",
                                                extra),
                                            "a.toml");
            const RulesReport report = evaluate_rules(set, session, source);
            return std::pair{report.results[0].verdict, report.results[0].checks.empty() ? -1.0 : report.results[0].checks[0].value};
        };
        CHECK(verdict_with("aggregate = \"max\"\n").first == Verdict::Pass);
        CHECK(verdict_with("aggregate = \"any\"\n").first == Verdict::Pass);
        CHECK(verdict_with("aggregate = \"mean\"\n").first == Verdict::Pass);
        CHECK(verdict_with("aggregate = \"mean\"\n").second == Approx(0.5).margin(1e-6));
        CHECK(verdict_with("aggregate = \"min\"\n").first == Verdict::Fail);
        CHECK(verdict_with("aggregate = \"all\"\n").first == Verdict::Fail);
        CHECK(verdict_with("label = \"Reviewer\"\n").first == Verdict::Fail);
        CHECK(verdict_with("label = \"nobody\"\n").first == Verdict::NotApplicable);
        // Explicit token and byte ranges select the same span.
        CHECK(verdict_with("").first == Verdict::Pass);
        const RuleSet by_range = parse_rules(R"({"rules": [{"layers": 1, "heads": 1, "query": {"tokens": [5, 6]},
            "key": {"bytes": [9, 21]}, "op": ">=", "threshold": 0.9, "scope": "prompt"}]})",
                                             "r.json");
        const RulesReport range_report = evaluate_rules(by_range, session, source);
        CHECK(range_report.results[0].verdict == Verdict::Pass);
        REQUIRE(range_report.results[0].checks.size() == 1);
        CHECK(range_report.results[0].checks[0].keys.size() == 1);
        CHECK(range_report.results[0].checks[0].keys[0].first == 2);
        // Layers beyond the model: an error naming the rule and its line.
        const RuleSet too_deep = parse_rules("[[rules]]\nid = \"deep\"\nlayers = \"10-20\"\nquery = \"a\"\nkey = \"b\"\nop = \">=\"\n"
                                             "threshold = 1\n",
                                             "deep.toml");
        CHECK_THAT(error_of([&] { evaluate_rules(too_deep, session, source); }),
                   Catch::StartsWith("rule \"deep\" (deep.toml:1): layers 10-20 are outside the model's 2 layers"));
    }
    SECTION("ontology types as selectors") {
        const auto ontology = std::make_shared<const Ontology>(parse_ontology(
            R"({"types": [{"name": "id", "words": ["身份证号", "ID number"]}, {"name": "record", "patterns": ["逾期\\S{2}"]}]})",
            "o.json"));
        const RuleSet set = parse_rules(R"({"rules": [{"layers": 0, "query": {"type": "id"}, "key": {"type": "record"},
            "op": ">=", "threshold": 0.5}]})",
                                        "t.json", ontology);
        const Session session = make_credit_session([](int) { return false; });
        const CpuTileSource source(*session.capture, 1);
        const RulesReport report = evaluate_rules(set, session, source);
        CHECK(report.results[0].verdict == Verdict::Pass);
        CHECK(report.results[0].checks.size() == 2);
        CHECK(report.ontology_file == "o.json");
        const json log = rules_report_json(report, set, session);
        CHECK(log["rules"][0]["key_spans"][0]["type"] == "record");
        CHECK(schema_errors(log).empty());
    }
}

TEST_CASE("rules: the match log validates against docs/schemas/rules-result.schema.json", "[rules]") {
    const RuleSet rules = parse_rules(kRulesToml, "credit.toml");
    for (bool attends : {true, false}) {
        const Session session = make_credit_session([attends](int) { return attends; });
        const CpuTileSource source(*session.capture, 1);
        const json log = rules_report_json(evaluate_rules(rules, session, source), rules, session);
        const std::vector<std::string> errors = schema_errors(log);
        for (const std::string& e : errors) UNSCOPED_INFO(e);
        CHECK(errors.empty());
        CHECK(log["summary"]["verdict"] == (attends ? "pass" : "fail"));
        CHECK(log["rules"][0]["checks"][1]["step"] == 1);
        CHECK(log["rules"][0]["checks"][0]["query"]["text"] == "身份证号");
    }
    // The validator catches what it should.
    const Session session = make_credit_session([](int) { return true; });
    const CpuTileSource source(*session.capture, 1);
    json broken = rules_report_json(evaluate_rules(rules, session, source), rules, session);
    broken["rules"][0]["verdict"] = "maybe";
    broken["rules"][0].erase("checks");
    broken["summary"]["extra"] = 1;
    CHECK(schema_errors(broken).size() == 3);
}

TEST_CASE("attnscope rules: verdicts and exit codes (0 pass, 1 violation, 2 error)", "[rules][cli]") {
    using attn::testing::run_cli;
    attn::testing::TempDir dir("rules_cli");
    save_session(dir.file("good.attn"), make_credit_session([](int head) { return head == 0; }));
    save_session(dir.file("bad.attn"), make_credit_session([](int) { return false; }));
    {
        std::ofstream(dir.file("rules.toml")) << kRulesToml;
        std::ofstream(dir.file("broken.toml")) << "[[rules]]\nquery = \"a\"\nkey = \"b\"\nop = \">=\"\nthreshold = \"high\"\n";
    }
    const auto good = run_cli("rules " + dir.file("good.attn") + " --rules " + dir.file("rules.toml"));
    INFO(good.out << good.err);
    CHECK(good.exit_code == 0);
    CHECK_THAT(good.out, Catch::Contains("PASS  id-needs-overdue"));
    const auto bad = run_cli("rules " + dir.file("bad.attn") + " --rules " + dir.file("rules.toml") + " --json -o " +
                             dir.file("log.json"));
    INFO(bad.err);
    CHECK(bad.exit_code == 1);
    const json log = json::parse(bad.out);
    CHECK(log["summary"]["failed"] == 1);
    CHECK(schema_errors(log).empty());
    CHECK(json::parse(attn::testing::read_file_string(dir.file("log.json"))) == log);
    const auto broken = run_cli("rules " + dir.file("good.attn") + " --rules " + dir.file("broken.toml"));
    CHECK(broken.exit_code == 2);
    CHECK_THAT(broken.err, Catch::Contains("broken.toml:5:13: rules[0].threshold: expected a number"));
    const auto missing = run_cli("rules " + dir.file("nothing.attn") + " --rules " + dir.file("rules.toml"));
    CHECK(missing.exit_code == 2);
}

TEST_CASE("live runner: a violated rule pauses the run, one with pause = false only reports", "[rules][live]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    GenerationRequest request;
    request.prompt = "One, two, three, four, five, six, seven, eight,";
    request.sampling.max_new_tokens = 6;
    request.sampling.stop_at_eos = false;
    // Every generated token must give (practically) nothing to " seven": some head always does.
    const char* strict = "[[rules]]\nid = \"ignore-seven\"\nquery = { any = true }\nkey = \"seven\"\naggregate = \"max\"\n"
                         "op = \"<=\"\nthreshold = 1e-12\nscope = \"steps\"\n";
    Session view;
    std::vector<StepFindings> findings;
    uint64_t generation = 0;
    {
        LiveRunner runner(*model, BackendKind::Cpu);
        runner.set_rules(std::make_shared<const RuleSet>(parse_rules(strict, "live.toml")));
        runner.start(request);
        REQUIRE(runner.wait_idle(120));
        runner.run();
        REQUIRE(runner.wait_idle(120));
        runner.sync(view, findings, generation);
        const LiveStatus status = runner.status();
        CHECK(status.state == LiveState::Paused);
        CHECK_THAT(status.message, Catch::Contains("rule \"ignore-seven\" violated at step 0"));
        REQUIRE(view.steps.size() == 1);
        REQUIRE(findings.size() == 1);
        REQUIRE(findings[0].rule_violations.size() == 1);
        const RuleResult& v = findings[0].rule_violations[0];
        CHECK(v.verdict == Verdict::Fail);
        CHECK(v.offending_steps == std::vector<int64_t>{0});
        REQUIRE(v.checks.size() == 1);
        CHECK(v.checks[0].q0 == view.prompt_tokens);
        CHECK(v.checks[0].value > 1e-12);
        CHECK(v.heads.size() == size_t(model->config.n_layer * model->config.n_head));

        // The same rule with pause = false: the run goes on to the end, every step reported.
        runner.set_rules(std::make_shared<const RuleSet>(parse_rules(std::string(strict) + "pause = false\n", "live.toml")));
        RunGoal five;
        five.steps = 5;
        runner.run(five);
        REQUIRE(runner.wait_idle(120));
        runner.sync(view, findings, generation);
        CHECK_THAT(runner.status().message, !Catch::Contains("rule"));
        CHECK(view.steps.size() == 6);
        for (size_t t = 1; t < findings.size(); ++t) CHECK(findings[t].rule_violations.size() == 1);
        CHECK(runner.rules()->rules[0].pause == false);
    }
    // The live verdicts agree with evaluating the finished session (live rows are the session's rows).
    const RuleSet rules = parse_rules(strict, "live.toml");
    const CpuTileSource source(*view.capture, 1);
    RuleEvaluationOptions options;
    options.threads = 1;
    const RulesReport report = evaluate_rules(rules, view, source, options);
    CHECK(report.results[0].verdict == Verdict::Fail);
    CHECK(report.results[0].violations == 6);
    CHECK(report.results[0].checks[3].value == Approx(findings[3].rule_violations[0].checks[0].value).epsilon(1e-6));
}
