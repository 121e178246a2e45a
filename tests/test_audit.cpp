// Audit reports (engine/audit.h, `attnscope audit`): verdicts and evidence on crafted sessions that
// violate and satisfy a rule, the suggested fix (responsible heads and spans, no invented
// counterfactual), report.json against docs/schemas/audit-report.schema.json, the HTML and its
// PNGs, personal data masked in every file, the signature (a flipped byte in any file fails verify),
// the attention arrays re-derived from the session, and refusals of bad input.
#include <catch2/catch.hpp>
#include <stb_image.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "engine/audit.h"
#include "engine/error.h"
#include "engine/provenance.h"
#include "engine/rules.h"
#include "engine/session_file.h"
#include "engine/signing.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/json_schema.h"
#include "tests/test_support.h"

using namespace attn;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Personal data in the prompt (a valid resident ID, a mobile number, an e-mail address).
constexpr const char* kResidentId = "11010519491231002X";
constexpr const char* kPhone = "13812345678";
constexpr const char* kEmail = "zhang.san@example.com";

// Prompt: 0 客户 1 有 2 逾期记录 3 ， 4 其 5 身份证号 6 为 7 ID 8 ， 9 电话 10 PHONE 11 ， 12 邮箱 13 EMAIL 14 。
// Steps: 15 核对 16 身份证号 17 后 18 拒绝. `attends`: the layer-1 heads whose 身份证号 rows look at 逾期记录;
// the others look at 其 (4). Layer 0's 身份证号 rows always look at 逾期记录; every other row at itself.
Session make_audit_session(std::function<bool(int head)> attends) {
    attn::testing::CraftedSpec spec;
    spec.words = {"客户", "有", "逾期记录", "，", "其", "身份证号", "为", kResidentId, "，", "电话", kPhone, "，",
                  "邮箱", kEmail, "。", "核对", "身份证号", "后", "拒绝"};
    spec.prompt_tokens = 15;
    spec.focus = [attends](int layer, int head, int64_t i) -> std::vector<int64_t> {
        const bool id_row = i == 5 || i == 16;
        if (id_row && (layer == 0 || attends(head))) return {2};
        if (id_row) return {4};
        return {i};
    };
    Session session = attn::testing::make_crafted_session(spec);
    rebuild_overview(*session.capture);
    return session;
}

// Rule 1 is about layer 1 (fails when its heads do not attend); rule 2 holds in every session (the
// ID rows give nothing to the ID number itself: its key span is personal data, masked in the log);
// rule 3 is not applicable (no 电话 before a 身份证号).
const char* kRules = R"([[rules]]
id = "id-needs-overdue"
description = "身份证号 attends to 逾期记录"
layers = "1"
query = { regex = "身份证号" }
key = { regex = "逾期记录" }
op = ">="
threshold = 0.05

[[rules]]
id = "id-ignores-number"
query = "身份证号"
key = { regex = "\\d{17}[\\dX]" }
op = "<="
threshold = 0.01

[[rules]]
id = "id-ignores-phone"
query = "身份证号"
key = "电话"
op = "<="
threshold = 0.01
scope = "prompt"
)";

json load_schema(const std::string& name) {
    return json::parse(attn::testing::read_file_string(std::string(ATTNSCOPE_SOURCE_DIR) + "/docs/schemas/" + name));
}

std::vector<std::string> report_schema_errors(const json& report) {
    std::vector<std::string> errors = attn::testing::json_schema_errors(report, load_schema("audit-report.schema.json"));
    // Each rule's match log is the rules engine's result: checked against that schema too.
    const json rules_schema = load_schema("rules-result.schema.json");
    for (const json& rule : report["rules"])
        for (const std::string& e :
             attn::testing::json_schema_errors(rule["match_log"], rules_schema["$defs"]["rule_result"], rules_schema))
            errors.push_back("match_log " + e);
    return errors;
}

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

std::vector<std::string> files_under(const std::string& dir) {
    std::vector<std::string> files;
    for (const auto& entry : fs::recursive_directory_iterator(dir))
        if (entry.is_regular_file()) files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    return files;
}

// A session file, a rules file and a key in a scratch folder.
struct AuditFixture {
    attn::testing::TempDir dir{"audit"};
    std::string session_path = dir.file("bad.attn");
    std::string good_path = dir.file("good.attn");
    std::string rules_path = dir.file("rules.toml");
    std::string key_path = dir.file("auditor.key");

    AuditFixture() {
        save_session(session_path, make_audit_session([](int) { return false; }));
        save_session(good_path, make_audit_session([](int head) { return head == 0; }));
        std::ofstream(rules_path) << kRules;
        generate_key_file(key_path);
    }
};

}  // namespace

TEST_CASE("audit: verdicts, evidence and suggested fixes on crafted sessions", "[audit]") {
    const RuleSet rules = parse_rules(kRules, "rules.toml");
    AuditOptions options;
    options.threads = 1;
    SECTION("violated: layer 1 looks at 其 instead of 逾期记录") {
        const Session session = make_audit_session([](int) { return false; });
        const CpuTileSource source(*session.capture, 1);
        const AuditReport report = build_audit(rules, session, source, options);
        REQUIRE(report.rules_audit.size() == 3);
        CHECK(report.result.results[0].verdict == Verdict::Fail);
        CHECK(report.result.results[1].verdict == Verdict::Pass);
        CHECK(report.result.results[2].verdict == Verdict::NotApplicable);
        const AuditRule& failed = report.rules_audit[0];
        REQUIRE(failed.evidence.size() == 2);  // the prompt's 身份证号 and step 1's
        for (const AuditEvidence& e : failed.evidence) {
            CHECK_FALSE(report.result.results[0].checks[e.check].passed);
            REQUIRE(e.heads.size() == 2);
            CHECK(e.heads[0].miss == Approx(0.05).margin(1e-6));  // value ≈ 0 against 0.05
            REQUIRE(e.snapshot);
            // The rows are exact: the tile source's rows, their hashes in the provenance.
            REQUIRE_FALSE(e.rows.empty());
            for (const AuditRow& row : e.rows) {
                CHECK(row.values == source.row(row.head.layer, row.head.head, row.query));
                const auto array = std::find_if(report.provenance.arrays.begin(), report.provenance.arrays.end(),
                                                [&](const AttentionArrayRecord& a) { return a.id == row.array_id; });
                REQUIRE(array != report.provenance.arrays.end());
                CHECK(array->sha256 == sha256_floats_hex(row.values));
            }
            // Where the attention went: 其 (token 4) takes (nearly) all of it.
            REQUIRE_FALSE(e.destinations.empty());
            CHECK(e.destinations[0].span.first == 4);
            CHECK(e.destinations[0].mass > 0.99);
            CHECK_FALSE(e.destinations[0].in_key);
        }
        REQUIRE(failed.fix);
        const AuditFix& fix = *failed.fix;
        REQUIRE(fix.responsible_heads.size() == 2);
        CHECK((fix.responsible_heads[0].head == HeadRef{1, 0}));
        CHECK(fix.failed_checks[0] == 2);
        REQUIRE_FALSE(fix.responsible_spans.empty());
        CHECK(fix.responsible_spans[0].span.first == 4);
        CHECK(session.text.substr(fix.responsible_spans[0].span.begin,
                                  fix.responsible_spans[0].span.end - fix.responsible_spans[0].span.begin) == "其");
        CHECK(fix.intervention.kind == "mask_keys");
        CHECK(fix.intervention.begin == 4);
        CHECK(fix.intervention.end == 5);
        CHECK(fix.counterfactual.is_null());
        CHECK_THAT(fix.counterfactual_reason, Catch::Contains("no model"));
        CHECK_FALSE(report.rules_audit[1].fix);
        // A counterfactual run by a caller (with a model) takes the place of the reason.
        AuditReport with_result = build_audit(rules, session, source, options);
        with_result.rules_audit[0].fix->counterfactual = json{{"intervention", "mask keys [4, 5) in L1H0, L1H1"}, {"mass_after", 0.5}};
        const json jr = audit_report_json(with_result);
        CHECK(jr["rules"][0]["suggested_fix"]["counterfactual"]["mass_after"] == 0.5);
        CHECK(jr["rules"][0]["suggested_fix"]["counterfactual_reason"].is_null());
        CHECK(jr["counterfactuals"][0]["result"]["mass_after"] == 0.5);
        CHECK(report_schema_errors(jr).empty());
        CHECK_THAT(audit_report_html(with_result), Catch::Contains("Counterfactual result:") && Catch::Contains("mass_after"));

        const json j = audit_report_json(report);
        const std::vector<std::string> errors = report_schema_errors(j);
        for (const std::string& e : errors) UNSCOPED_INFO(e);
        CHECK(errors.empty());
        CHECK(j["summary"]["verdict"] == "fail");
        CHECK(j["rules"][0]["suggested_fix"]["counterfactual"].is_null());
        CHECK(j["counterfactuals"].size() == 1);
        CHECK(j["counterfactuals"][0]["reason"].get<std::string>().find("no model") != std::string::npos);
        // The validator is not vacuous.
        json broken = j;
        broken["rules"][0]["verdict"] = "maybe";
        broken["rules"][0]["evidence"][0].erase("heads");
        CHECK(report_schema_errors(broken).size() == 2);
    }
    SECTION("satisfied: head 0 of layer 1 attends") {
        const Session session = make_audit_session([](int head) { return head == 0; });
        const CpuTileSource source(*session.capture, 1);
        const AuditReport report = build_audit(rules, session, source, options);
        CHECK(report.result.results[0].verdict == Verdict::Pass);
        CHECK(report.result.overall == Verdict::Pass);
        CHECK_FALSE(report.rules_audit[0].fix);
        REQUIRE_FALSE(report.rules_audit[0].evidence.empty());
        // A passed check lists the head that carries it first.
        CHECK((report.rules_audit[0].evidence[0].heads[0].head == HeadRef{1, 0}));
        CHECK(report_schema_errors(audit_report_json(report)).empty());
    }
    SECTION("masking: every text of the report masks personal data; off, it shows it") {
        const Session session = make_audit_session([](int) { return false; });
        const CpuTileSource source(*session.capture, 1);
        const AuditReport masked = build_audit(rules, session, source, options);
        CHECK(masked.pii.size() == 3);
        const std::string dumped = audit_report_json(masked).dump() + audit_report_html(masked);
        for (const char* secret : {kResidentId, kPhone, kEmail, "1101051949", "zhang.san"})
            CHECK(dumped.find(secret) == std::string::npos);
        CHECK(dumped.find("●●●● [ID]") != std::string::npos);
        // A span that covers part of an ID number is masked too.
        const size_t id_at = session.text.find(kResidentId);
        CHECK(audit_text(masked, id_at + 2, id_at + 8) == "●●●● [ID]");
        AuditOptions open = options;
        open.mask_pii = false;
        const AuditReport plain = build_audit(rules, session, source, open);
        CHECK(audit_report_json(plain).dump().find(kResidentId) != std::string::npos);
        CHECK_FALSE(audit_report_json(plain)["privacy"]["pii_masking"].get<bool>());
    }
    SECTION("differential privacy: exported arrays carry noise, the recorded hashes are of the exact values") {
        const Session session = make_audit_session([](int) { return false; });
        const CpuTileSource source(*session.capture, 1);
        AuditOptions noisy = options;
        DpParams dp;
        dp.epsilon = 1;
        dp.sensitivity = 0.1;
        dp.seed = 7;
        noisy.dp = dp;
        const AuditReport report = build_audit(rules, session, source, noisy);
        REQUIRE(report.dp);
        CHECK(report.dp->scale == Approx(0.1));
        CHECK(report.dp->values > 0);
        const AuditRow& row = report.rules_audit[0].evidence[0].rows[0];
        const std::vector<float> exact = source.row(row.head.layer, row.head.head, row.query);
        CHECK(row.values != exact);
        const auto array = std::find_if(report.provenance.arrays.begin(), report.provenance.arrays.end(),
                                        [&](const AttentionArrayRecord& a) { return a.id == row.array_id; });
        REQUIRE(array != report.provenance.arrays.end());
        CHECK(array->noised);
        CHECK(array->sha256 == sha256_floats_hex(exact));
        CHECK(report.provenance.privacy.has_dp);
        CHECK(report_schema_errors(audit_report_json(report)).empty());
    }
}

TEST_CASE("attnscope audit: a signed report folder that verifies, and fails for any changed byte", "[audit][cli]") {
    using attn::testing::run_cli;
    AuditFixture fx;
    const std::string out = fx.dir.file("report");
    const auto run = run_cli("audit " + fx.session_path + " --rules " + fx.rules_path + " --key " + fx.key_path +
                             " -o " + out + "/");
    INFO(run.out << run.err);
    REQUIRE(run.exit_code == 1);  // a rule failed; the report is written
    CHECK_THAT(run.out, Catch::Contains("FAIL  id-needs-overdue"));
    CHECK_THAT(run.out, Catch::Contains("PASS  id-ignores-number"));
    CHECK_THAT(run.out, Catch::Contains("N/A   id-ignores-phone"));
    CHECK_THAT(run.out, Catch::Contains("report: "));

    // report.json: verdicts, schema.
    const json report = json::parse(attn::testing::read_file_string(out + "/report.json"));
    const std::vector<std::string> errors = report_schema_errors(report);
    for (const std::string& e : errors) UNSCOPED_INFO(e);
    CHECK(errors.empty());
    REQUIRE(report["rules"].size() == 3);
    CHECK(report["rules"][0]["verdict"] == "fail");
    CHECK(report["rules"][1]["verdict"] == "pass");
    CHECK(report["rules"][2]["verdict"] == "not_applicable");
    CHECK(report["summary"]["failed"] == 1);
    CHECK(json::parse(attn::testing::read_file_string(out + "/provenance.json")) == report["provenance"]);

    // index.html: each rule with its verdict, and PNG snapshots that exist and are not blank.
    const std::string html = attn::testing::read_file_string(out + "/index.html");
    CHECK_THAT(html, Catch::StartsWith("<!DOCTYPE html>"));
    CHECK(html.find("<script") == std::string::npos);
    for (const json& rule : report["rules"]) {
        const std::string id = rule["id"];
        const std::string verdict = rule["verdict"];
        const size_t at = html.find("<h2 id=\"rule-" + std::to_string(rule["index"].get<int>() + 1) + "\">Rule " + id);
        REQUIRE(at != std::string::npos);
        CHECK(html.substr(at, 200).find(verdict) != std::string::npos);
    }
    const std::regex img("<img class=\"map\" src=\"([^\"]+)\"");
    int images = 0;
    for (auto it = std::sregex_iterator(html.begin(), html.end(), img); it != std::sregex_iterator(); ++it) {
        ++images;
        const std::string png = out + "/" + (*it)[1].str();
        int w = 0, h = 0, channels = 0;
        unsigned char* pixels = stbi_load(png.c_str(), &w, &h, &channels, 3);
        REQUIRE(pixels);
        std::set<int> colours;
        for (int i = 0; i < w * h; ++i) colours.insert(pixels[3 * i] << 16 | pixels[3 * i + 1] << 8 | pixels[3 * i + 2]);
        stbi_image_free(pixels);
        CHECK(w >= 256);
        CHECK(w <= 600);
        CHECK(colours.size() >= 2);  // not blank: the peaks stand out from the rest
    }
    CHECK(images >= 3);
    CHECK(html.find("class=\"q") != std::string::npos);  // text highlights
    CHECK_THAT(html, Catch::Contains("Suggested fix") && Catch::Contains("Counterfactual:</b> none"));
    CHECK_THAT(html, Catch::Contains("Ed25519, key <code>" + load_public_key(fx.key_path).key_id));

    // No unmasked personal data in any file of the folder.
    for (const std::string& file : files_under(out)) {
        const std::string bytes = attn::testing::read_file_string(file);
        for (const char* secret : {kResidentId, kPhone, kEmail}) {
            INFO(file << " holds " << secret);
            CHECK(bytes.find(secret) == std::string::npos);
        }
    }

    // The signature: verify passes untouched, re-derives every array from the session.
    const auto verified = run_cli("verify " + out + " --session " + fx.session_path);
    INFO(verified.out << verified.err);
    CHECK(verified.exit_code == 0);
    CHECK_THAT(verified.out, Catch::Contains("OK: everything matches"));
    const VerifyResult derived = verify_signed(out, VerifyOptions{fx.session_path, std::nullopt});
    CHECK(derived.ok());
    CHECK(derived.arrays_checked == report["provenance"]["arrays"].size());
    CHECK(derived.arrays_checked >= 10);
    // A session whose attention differs (layer 1 attends): the arrays no longer re-derive.
    const VerifyResult other = verify_signed(out, VerifyOptions{fx.good_path, std::nullopt});
    CHECK_FALSE(other.ok());
    // A single flipped byte in any file fails.
    for (const std::string& file : files_under(out)) {
        std::string bytes = attn::testing::read_file_string(file);
        const size_t at = bytes.size() / 2;
        bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
        { std::ofstream(file, std::ios::binary) << bytes; }
        INFO("flipped a byte of " << file);
        CHECK_FALSE(verify_signed(out).ok());
        bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
        { std::ofstream(file, std::ios::binary) << bytes; }
        CHECK(verify_signed(out).ok());
    }
}

TEST_CASE("attnscope audit: passing session, --no-pii-masking, --dp, and bad input", "[audit][cli]") {
    using attn::testing::run_cli;
    AuditFixture fx;
    const auto good = run_cli("audit " + fx.good_path + " --rules " + fx.rules_path + " -o " + fx.dir.file("good"));
    INFO(good.out << good.err);
    CHECK(good.exit_code == 0);
    CHECK_FALSE(fs::exists(fx.dir.file("good") + "/MANIFEST.sig.json"));  // unsigned without --key
    CHECK(json::parse(attn::testing::read_file_string(fx.dir.file("good") + "/report.json"))["summary"]["verdict"] == "pass");

    // An existing non-empty folder is refused (and left alone) unless --force.
    const auto again = run_cli("audit " + fx.good_path + " --rules " + fx.rules_path + " -o " + fx.dir.file("good"));
    CHECK(again.exit_code == 2);
    CHECK_THAT(again.err, Catch::Contains("exists and is not empty") && Catch::Contains("--force"));
    CHECK(fs::exists(fx.dir.file("good") + "/report.json"));
    const auto forced = run_cli("audit " + fx.session_path + " --rules " + fx.rules_path + " -o " + fx.dir.file("good") +
                                " --force --no-pii-masking");
    CHECK(forced.exit_code == 1);
    const std::string plain = attn::testing::read_file_string(fx.dir.file("good") + "/report.json");
    CHECK(plain.find(kResidentId) != std::string::npos);
    CHECK(json::parse(plain)["summary"]["verdict"] == "fail");
    for (const auto& entry : fs::directory_iterator(fx.dir.path()))  // no temporary folders left behind
        CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);

    // Differential privacy on the exported arrays, stated in the report.
    const auto dp = run_cli("audit " + fx.session_path + " --rules " + fx.rules_path + " -o " + fx.dir.file("dp") +
                            " --dp laplace --epsilon 2 --sensitivity 0.05 --dp-seed 11 --key " + fx.key_path);
    INFO(dp.out << dp.err);
    CHECK(dp.exit_code == 1);
    const json noisy = json::parse(attn::testing::read_file_string(fx.dir.file("dp") + "/report.json"));
    CHECK(noisy["privacy"]["dp"]["mechanism"] == "laplace");
    CHECK(noisy["privacy"]["dp"]["scale"].get<double>() == Approx(0.025));
    CHECK(noisy["rules"][0]["evidence"][0]["rows"][0]["noised"] == true);
    CHECK(attn::testing::read_file_string(fx.dir.file("dp") + "/index.html").find("laplace mechanism") != std::string::npos);
    CHECK(attn::testing::read_file_string(fx.dir.file("dp") + "/provenance.json").find("\"11\"") == std::string::npos);
    const auto dp_verified = run_cli("verify " + fx.dir.file("dp") + " --session " + fx.session_path);
    CHECK(dp_verified.exit_code == 0);  // hashes are of the exact values, which re-derive

    // Bad input: clear errors, exit 2, nothing written.
    const auto missing = run_cli("audit " + fx.session_path + " --rules " + fx.dir.file("none.toml") + " -o " + fx.dir.file("r1"));
    CHECK(missing.exit_code == 2);
    CHECK_THAT(missing.err, Catch::Contains("none.toml: cannot read the rules file"));
    CHECK_FALSE(fs::exists(fx.dir.file("r1")));
    { std::ofstream(fx.dir.file("bad.toml")) << "[[rules]]\nquery = \"a\"\nkey = \"b\"\nop = \"=>\"\nthreshold = 1\n"; }
    const auto bad_rule = run_cli("audit " + fx.session_path + " --rules " + fx.dir.file("bad.toml") + " -o " + fx.dir.file("r2"));
    CHECK(bad_rule.exit_code == 2);
    CHECK_THAT(bad_rule.err, Catch::Contains("bad.toml:4:6: rules[0].op"));
    CHECK_FALSE(fs::exists(fx.dir.file("r2")));
    const auto bad_session = run_cli("audit " + fx.dir.file("none.attn") + " --rules " + fx.rules_path + " -o " + fx.dir.file("r3"));
    CHECK(bad_session.exit_code == 2);
    CHECK_FALSE(fs::exists(fx.dir.file("r3")));
    const auto bad_dp = run_cli("audit " + fx.session_path + " --rules " + fx.rules_path + " -o " + fx.dir.file("r4") + " --dp laplace");
    CHECK(bad_dp.exit_code == 2);
    CHECK_THAT(bad_dp.err, Catch::Contains("--epsilon"));
    { std::ofstream(fx.dir.file("file-not-dir")) << "x"; }
    CHECK_THAT(error_of([&] {
                   const Session session = make_audit_session([](int) { return false; });
                   const RuleSet rules = parse_rules(kRules, "rules.toml");
                   const CpuTileSource source(*session.capture, 1);
                   const AuditReport report = build_audit(rules, session, source);
                   AuditFileWriters writers;
                   writers.png = [](const std::string&, const AuditSnapshot&) {};
                   writers.npy = [](const std::string&, const std::vector<float>&, size_t, size_t) {};
                   write_audit_report(report, fx.dir.file("file-not-dir"), writers);
               }),
               Catch::Contains("exists and is not a folder"));
}

TEST_CASE("attnscope audit --model: each suggested fix carries its counterfactual run, personal data masked", "[audit][cli][counterfactual]") {
    using attn::testing::run_cli;
    if (!fs::exists(attn::default_model_path())) {
        WARN("SKIPPED: default model not found at " << attn::default_model_path() << " (run scripts/fetch_model.sh)");
        return;
    }
    attn::testing::TempDir dir("audit_model");
    const std::string phone = "13812345678";
    const std::string session = dir.file("s.attn");
    const auto captured = run_cli("capture --model default --prompt \"My phone is " + phone +
                                  ". The capital of France is Paris. The capital of Italy is\" -n 3 -o " + session);
    INFO(captured.out << captured.err);
    REQUIRE(captured.exit_code == 0);
    // Fails on every head: no query attends to " capital" with almost all its mass.
    { std::ofstream(dir.file("r.toml")) << "[[rules]]\nid = \"all-on-capital\"\nlayers = \"3\"\nheads = \"*\"\n"
                                           "query = \" is\"\nkey = \" capital\"\naggregate = \"max\"\nop = \">=\"\nthreshold = 0.99\nscope = \"prompt\"\n"; }
    const auto audited = run_cli("audit " + session + " --rules " + dir.file("r.toml") + " --model default -o " + dir.file("rep"));
    INFO(audited.out << audited.err);
    REQUIRE(audited.exit_code == 1);
    const json report = json::parse(attn::testing::read_file_string(dir.file("rep") + "/report.json"));
    CHECK(attn::testing::json_schema_errors(report, load_schema("audit-report.schema.json")).empty());
    REQUIRE(report["counterfactuals"].size() == 1);
    const json& entry = report["counterfactuals"][0];
    REQUIRE(entry["result"].is_object());
    CHECK(entry["reason"].is_null());
    CHECK(entry["result"]["intervention"]["kind"] == entry["intervention"]["kind"]);
    CHECK(entry["result"]["outputs"].size() == 3);  // each generated token's probability before and after
    CHECK_FALSE(entry["result"]["heads"].empty());
    CHECK(attn::testing::read_file_string(dir.file("rep") + "/index.html").find("Counterfactual:</b> none") == std::string::npos);
    for (const auto& entry : fs::recursive_directory_iterator(dir.file("rep"))) {
        if (!entry.is_regular_file()) continue;
        INFO(entry.path());
        CHECK(attn::testing::read_file_string(entry.path().string()).find(phone) == std::string::npos);
    }
}

TEST_CASE("attnscope rules, ontology and inspect: texts show personal data masked unless --no-pii-masking", "[rules][ontology][pii][cli]") {
    using attn::testing::run_cli;
    AuditFixture fx;
    // The ontology's "amount" type matches the digits of the ID number and the phone.
    const std::string ontology = attn::testing::fixture_path("../../assets/rules/credit-review.ontology.json");
    // A rule whose query span is the phone number itself.
    const std::string rules = fx.dir.file("phone.toml");
    { std::ofstream(rules) << "[[rules]]\nid = \"phone\"\nquery = \"1[3-9][0-9]{9}\"\nkey = \"逾期记录\"\nop = \">=\"\nthreshold = 0.5\n"; }
    for (const std::string& command :
         {"rules " + fx.session_path + " --rules " + rules, "rules " + fx.session_path + " --rules " + rules + " --json",
          "ontology " + fx.session_path + " --ontology " + ontology + " --all-pairs",
          "ontology " + fx.session_path + " --ontology " + ontology + " --json",
          "inspect " + fx.session_path + " --layer 0 --head 0 --query 18 --json"}) {
        const auto masked = run_cli(command);
        INFO(command << "\n" << masked.out << masked.err);
        CHECK(masked.exit_code != 2);
        for (const char* secret : {kResidentId, kPhone, kEmail, "1101051949"}) CHECK(masked.out.find(secret) == std::string::npos);
        CHECK(masked.out.find("●●●● [") != std::string::npos);
        const auto plain = run_cli(command + " --no-pii-masking");
        CHECK(plain.out.find(kPhone) != std::string::npos);
    }
}
