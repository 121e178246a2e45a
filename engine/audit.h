#pragma once
// Audit reports (issue 7, "`attnscope audit`"): a rules file checked on a session, written as a
// self-contained report folder that an auditor can read (index.html), process (report.json,
// docs/schemas/audit-report.schema.json) and verify (provenance.json, MANIFEST.sig.json).
//
// ---- What a report holds ------------------------------------------------------------------------
//
//   input        the session text, personal data masked (engine/pii.h) unless masking is off;
//                the byte ranges of the masked spans (never their text)
//   rules        per rule: its verdict and the rules engine's match log (rule_result_json, with
//                every span text masked the same way), and the attention evidence of up to
//                AuditOptions::max_checks checks (failed ones first, the worst first):
//                  - every selected head's value against the threshold, ranked by how far it misses
//                  - the exact rows P[layer, head, q, 0..q] of the query rows for the worst heads
//                    (at most max_rows_per_head rows each, max_heads_per_check heads): row arrays
//                  - a snapshot of the (layer, head) map: the 256×256 tile (sum per cell) at the
//                    smallest level whose single tile holds the query rows and key columns, cropped
//                    to them and drawn ~512 px wide (PNG, colour map of ui/cli/tile_image) and
//                    stored whole as .npy: a tile_sum array
//                  - where the query rows' attention went: the mass on every word segment
//                    (text_segments.h, ICU words) up to the last query row, top ones listed
//                every array's SHA-256 is in the provenance record (`arrays`), so `attnscope verify
//                REPORT --session SESSION` re-derives each from the session
//   suggested    failed rules only: the responsible heads (offending heads ranked by their worst
//   fix          miss), the responsible spans (for ≥/> rules where the attention went instead of
//                the keys — the top non-key word segments by mass; for ≤/< rules the key segments
//                that received the mass), and an intervention to test it (mask those spans' keys in
//                those heads). Its counterfactual result is null with a reason until one is run:
//                the report never invents one (a caller with a model sets AuditFix::counterfactual
//                before writing).
//   provenance   export_provenance of the session (engine/provenance.h) with every exhibit (PNG)
//                and array; privacy.pii_masking and privacy.dp say what was done to the exports
//
// Values. Rule values, per-head values and span masses are exact (they are what the verdicts
// are made of). With differential privacy (AuditOptions::dp) noise is added to every exported
// attention array — the rows in report.json, the tiles' .npy files and the PNGs drawn from them —
// and the report states the mechanism, ε, δ, Δ and the scale (never the seed).
//
// Writing. write_audit_report builds the folder beside its destination (DIR.tmp-PID), signs it
// when given a key (sign_report: MANIFEST.sig.json over every file), then renames it into place:
// a reader never sees a half-written report. An existing non-empty DIR is refused unless `force`
// (then it is replaced whole).
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/pii.h"
#include "engine/provenance.h"
#include "engine/model.h"
#include "engine/rules.h"
#include "engine/session.h"
#include "engine/signing.h"
#include "engine/tile_source.h"

namespace attn {

inline constexpr const char* kAuditReportSchema = "attnscope.audit-report/1";

struct AuditOptions {
    bool mask_pii = true;              // mask personal data in every text of the report
    std::optional<DpParams> dp;        // noise on the exported attention arrays
    int max_checks = 6;                // checks with evidence per rule (failed first)
    int max_heads_per_check = 3;       // heads whose rows are included
    int max_rows_per_head = 4;         // query rows per head (the first ones of the query span)
    int top_spans = 5;                 // destinations / responsible spans listed
    int snapshot_pixels = 512;         // the map snapshot's longest side, about
    int threads = 0;                   // as in for_each_parallel
    std::string session_path;          // recorded in the provenance (and hashed when hash_session_file)
    bool hash_session_file = true;
    // Why no counterfactual was run, written where a fix's result would be.
    std::string counterfactual_reason = "not run: no model was given (counterfactuals re-run the model)";
};

struct AuditHead {
    HeadRef head;
    double value = 0;
    double miss = 0;  // how far the value misses the threshold (> 0: it fails; ≤ 0: by how much it passes)
    bool satisfies = false;
};

struct AuditRow {
    std::string array_id;
    HeadRef head;
    int64_t query = 0;
    std::vector<float> values;  // as exported (noised with dp)
};

struct AuditSpanMass {
    TextSpan span;  // a word segment (bytes and tokens)
    double mass = 0;  // mean over the query rows of its share, exact
    bool in_key = false;
    HeadRef head;
};

// A map snapshot: cells [row0, row1) × [col0, col1) of one tile (2^level tokens per cell).
struct AuditSnapshot {
    std::string array_id, png_file, npy_file;
    TileRequest request;
    int row0 = 0, row1 = 0, col0 = 0, col1 = 0;
    int valid_rows = 0, valid_cols = 0;
    int scale = 1;                     // pixels per cell
    std::vector<float> tile;           // the whole tile as exported (noised with dp), kEdge²
};

struct AuditEvidence {
    size_t check = 0;  // index into RuleResult::checks
    std::vector<AuditHead> heads;  // ranked: worst miss first
    std::vector<AuditRow> rows;
    std::optional<AuditSnapshot> snapshot;
    std::vector<AuditSpanMass> destinations;  // top word segments by mass (for the worst head)
};

struct AuditIntervention {
    std::string kind = "mask_keys";  // the names of engine/counterfactual.h: "mask_keys", "ablate_heads"
    int64_t begin = 0, end = 0;      // token positions
    std::vector<HeadRef> heads;
    std::string description;
};

struct AuditFix {
    std::string summary;
    std::vector<AuditHead> responsible_heads;  // miss: the worst over the failed checks
    std::vector<int64_t> failed_checks;        // per responsible head: failed checks it offends in
    std::vector<AuditSpanMass> responsible_spans;
    AuditIntervention intervention;
    nlohmann::json counterfactual;            // null until one is run
    std::string counterfactual_reason;
};

struct AuditRule {
    size_t rule = 0;  // index into the rule set / RulesReport::results
    std::vector<AuditEvidence> evidence;
    std::optional<AuditFix> fix;
};

struct AuditReport {
    const RuleSet* rules = nullptr;
    const Session* session = nullptr;
    RulesReport result;
    std::vector<PiiSpan> pii;  // of the session text (empty when masking is off)
    bool pii_masking = true;
    std::vector<AuditRule> rules_audit;
    ProvenanceRecord provenance;
    std::optional<DpNoiseReport> dp;
};

// Evaluates the rules and gathers the evidence (the session and rule set must outlive the report).
AuditReport build_audit(const RuleSet& rules, const Session& session, const CpuTileSource& source,
                        const AuditOptions& options = {});

// Runs each suggested fix's intervention on the cpu backend (engine/counterfactual.h: teacher-forced
// and free re-runs, the step diff against the original, the output tokens' probabilities before and
// after) and puts the result into the fix. Personal data in the result's texts is masked as in the
// rest of the report. A fix whose run fails keeps counterfactual null with the error as its reason.
void add_audit_counterfactuals(AuditReport& report, const Model& model);

// The text [begin, end) of the session as the report shows it: spans of personal data overlapping
// it replaced by "●●●● [TYPE]" when masking is on.
std::string audit_text(const AuditReport& report, size_t begin, size_t end);

nlohmann::json audit_report_json(const AuditReport& report);  // docs/schemas/audit-report.schema.json
// index.html: HTML + CSS, no scripts. `signer_key_id`: the key that signs the folder ("" unsigned).
std::string audit_report_html(const AuditReport& report, const std::string& signer_key_id = "");

// How the report's binary files are drawn (the CLI passes ui/cli/tile_image's writers): the
// snapshot's cropped heat map as PNG, and a float32 array as .npy.
struct AuditFileWriters {
    std::function<void(const std::string& path, const AuditSnapshot& snapshot)> png;
    std::function<void(const std::string& path, const std::vector<float>& values, size_t rows, size_t cols)> npy;
};

struct AuditWriteResult {
    std::string dir;
    std::vector<std::string> files;  // relative, sorted
    std::string signature;           // MANIFEST.sig.json's path, empty when unsigned
};

// Writes report.json, index.html, provenance.json, the PNGs and the .npy tiles into `dir`
// (atomically, see above), signed with `key` when given.
AuditWriteResult write_audit_report(const AuditReport& report, const std::string& dir, const AuditFileWriters& writers,
                                    const SigningKey* key = nullptr, bool force = false);

// One line per rule ("FAIL  id (file:line): ...") and where the report is.
std::string audit_summary_text(const AuditReport& report);

}  // namespace attn
