// `attnscope heads`: what every head of a session does (fingerprint metrics and labels, as a table
// or JSON), the user's head labels (written into the session file), and 2-D projections of the heads.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/head_fingerprints.h"
#include "engine/head_projection.h"
#include "engine/provenance.h"
#include "engine/session_file.h"
#include "engine/signing.h"
#include "engine/tile_source.h"
#include "ui/cli/commands.h"
#include "ui/cli/session_text.h"

namespace attn::cli {

namespace {

// Metrics the table can be sorted by (highest first); "layer" keeps layer/head order.
struct SortKey {
    const char* name;
    double (*value)(const HeadFingerprint&);
};

const std::vector<SortKey>& sort_keys() {
    static const std::vector<SortKey> keys{
        {"layer", nullptr},
        {"entropy_bits", [](const HeadFingerprint& f) { return f.entropy_bits; }},
        {"normalized_entropy", [](const HeadFingerprint& f) { return f.normalized_entropy; }},
        {"sink_mass", [](const HeadFingerprint& f) { return f.sink_mass; }},
        {"previous_token", [](const HeadFingerprint& f) { return f.previous_token; }},
        {"induction", [](const HeadFingerprint& f) { return f.induction; }},
        {"local_mass", [](const HeadFingerprint& f) { return f.local_mass; }},
        {"mean_distance", [](const HeadFingerprint& f) { return f.mean_distance; }},
        {"keys_for_90", [](const HeadFingerprint& f) { return f.keys_for_90; }},
        {"keys_for_90_fraction", [](const HeadFingerprint& f) { return f.keys_for_90_fraction; }},
        {"positional_mass", [](const HeadFingerprint& f) { return f.positional_mass; }},
    };
    return keys;
}

const SortKey& sort_key_named(const std::string& name) {
    for (const SortKey& key : sort_keys())
        if (name == key.name) return key;
    std::string names;
    for (const SortKey& key : sort_keys()) names += (names.empty() ? "" : ", ") + std::string(key.name);
    fail("unknown --sort metric '", name, "' (expected one of: ", names, ")");
}

int parse_index(const std::string& text, const char* what) {
    int value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size()) fail(what, " '", text, "' is not a number");
    return value;
}

std::string joined(const std::vector<std::string>& parts, const char* separator) {
    std::string out;
    for (const std::string& part : parts) out += (out.empty() ? "" : separator) + part;
    return out;
}

nlohmann::json thresholds_json(const LabelThresholds& t) {
    return {{"previous_token", t.previous_token}, {"induction", t.induction},
            {"induction_min_rows", t.induction_min_rows}, {"sink", t.sink},
            {"positional", t.positional}, {"local", t.local},
            {"local_above_uniform", t.local_above_uniform}, {"broad_normalized_entropy", t.broad}};
}

nlohmann::json head_json(const HeadFingerprint& f, const std::vector<std::string>& user) {
    std::vector<std::string> all = f.labels;
    all.insert(all.end(), user.begin(), user.end());
    return {{"layer", f.layer},
            {"head", f.head},
            {"rows", f.rows},
            {"entropy_bits", f.entropy_bits},
            {"normalized_entropy", f.normalized_entropy},
            {"sink_mass", f.sink_mass},
            {"previous_token", f.previous_token},
            {"induction", f.induction},
            {"induction_rows", f.induction_rows},
            {"local_mass", f.local_mass},
            {"local_mass_if_uniform", f.local_mass_if_uniform},
            {"mean_distance", f.mean_distance},
            {"keys_for_90", f.keys_for_90},
            {"keys_for_90_fraction", f.keys_for_90_fraction},
            {"positional_offset", f.positional_offset},
            {"positional_mass", f.positional_mass},
            {"automatic_labels", f.labels},
            {"user_labels", user},
            {"labels", all}};
}

struct HeadsCommand {
    std::string path;
    bool json = false;
    std::string label_filter;
    std::string sort = "layer";
    int rows = FingerprintOptions{}.max_rows;
    int window = FingerprintOptions{}.local_window;
    std::vector<std::string> label_head;  // L H TEXT
    std::vector<std::string> unlabel;     // L H [TEXT]
    std::string project;
    std::string features = "fingerprints";
    int k = ProjectionOptions{}.k;
    uint64_t seed = ProjectionOptions{}.seed;
    double perplexity = ProjectionOptions{}.perplexity;
    int iterations = ProjectionOptions{}.tsne_iterations;
    std::string out;
    std::string sign;  // key file: sign --out (FILE.sig.json)

    void run() const {
        const bool editing = !label_head.empty() || !unlabel.empty();
        if (!label_head.empty() && !unlabel.empty()) fail("--label-head and --unlabel go one at a time");
        if (editing && !project.empty()) fail("--label-head/--unlabel edit the session; run --project separately");
        if (!project.empty() && (!label_filter.empty() || sort != "layer"))
            fail("--label and --sort select rows of the table; they do not apply to --project");
        if (project.empty() && !out.empty()) fail("--out is for --project (the table goes to standard output)");
        if (!sign.empty() && out.empty()) fail("--sign signs the file --out writes (with --project)");
        std::optional<SigningKey> key;
        if (!sign.empty()) key = load_signing_key(sign);  // a bad key fails before any work
        const SortKey& sort_key = sort_key_named(sort);  // checked before the session is read
        if (rows < 1) fail("--rows must be at least 1 (got ", rows, ")");
        if (window < 0) fail("--window must not be negative (got ", window, ")");
        ProjectionOptions projection_options;
        if (!project.empty()) {
            projection_options.method = parse_projection_method(project);
            projection_options.features = parse_projection_features(features);
            if (k < 0) fail("--k must not be negative (got ", k, ")");
            projection_options.k = k;
            projection_options.seed = seed;
            projection_options.perplexity = perplexity;
            projection_options.tsne_iterations = iterations;
        }

        Session session = load_session(path);
        if (!session.capture) fail(path, ": the session holds no capture");
        if (editing) return edit_labels(session);

        const CpuTileSource source(*session.capture);
        FingerprintOptions options;
        options.max_rows = rows;
        options.local_window = window;
        // On the GPU where one is usable (ATTNSCOPE_FINGERPRINTS=cpu forces the CPU); the JSON says which.
        const ComputedFingerprints computed = compute_head_fingerprints(session, options);
        const HeadFingerprints& fingerprints = computed.fingerprints;
        const std::vector<HeadFingerprint> heads = fingerprints.all();
        if (!project.empty()) {
            print_projection(project_heads(source, session, heads, projection_options));
            if (!out.empty()) record_projection(session, key ? &*key : nullptr);
            return;
        }

        std::vector<size_t> order(heads.size());
        std::iota(order.begin(), order.end(), 0);
        if (!label_filter.empty()) {
            const std::vector<std::pair<int, int>> chosen = heads_with_label(heads, session.head_labels, label_filter);
            std::erase_if(order, [&](size_t i) {
                return std::find(chosen.begin(), chosen.end(), std::pair{heads[i].layer, heads[i].head}) == chosen.end();
            });
        }
        if (sort_key.value)
            std::stable_sort(order.begin(), order.end(),
                             [&](size_t a, size_t b) { return sort_key.value(heads[a]) > sort_key.value(heads[b]); });
        if (json) print_json(session, computed, heads, order);
        else print_table(session, fingerprints, heads, order);
    }

    void edit_labels(Session& session) const {
        const std::vector<std::string>& args = label_head.empty() ? unlabel : label_head;
        const int layer = parse_index(args[0], "layer");
        const int head = parse_index(args[1], "head");
        const std::string text = args.size() > 2 ? args[2] : std::string();
        if (!label_head.empty()) {
            add_head_label(session, layer, head, text);
        } else if (remove_head_labels(session, layer, head, text) == 0) {
            if (text.empty()) fail("layer ", layer, " head ", head, " has no user labels in ", path);
            fail("layer ", layer, " head ", head, " has no user label '", text, "' in ", path);
        }
        save_session(path, session);  // to "<path>.partial", renamed over the file once complete
        const std::vector<std::string> now = user_labels_of(session, layer, head);
        std::printf("layer %d head %d: %s (saved to %s)\n", layer, head,
                    now.empty() ? "no user labels" : ("user labels: " + joined(now, ", ")).c_str(), path.c_str());
    }

    std::string rows_note(const HeadFingerprints& fingerprints) const {
        const int64_t used = static_cast<int64_t>(fingerprints.rows().size());
        if (used == 0) return "no query rows to measure (the session has fewer than 2 positions)";
        if (fingerprints.sampled())
            return cat("over ", used, " of ", fingerprints.rows_available(),
                       " query rows (an evenly spaced sample including the last; --rows sets how many)");
        return cat("over all ", used, " query rows (1..", fingerprints.rows().back(), ")");
    }

    void print_table(const Session& session, const HeadFingerprints& fingerprints,
                     const std::vector<HeadFingerprint>& heads, const std::vector<size_t>& order) const {
        print_summary(session);
        const int64_t induction_rows = heads.empty() ? 0 : heads.front().induction_rows;
        std::printf("head fingerprints %s; induction counted on %lld rows whose token occurred before; local window %d\n",
                    rows_note(fingerprints).c_str(), static_cast<long long>(induction_rows), window);
        if (!label_filter.empty()) std::printf("heads labelled '%s': %zu\n", label_filter.c_str(), order.size());
        std::printf("%5s %4s %8s %6s %6s %6s %6s %6s %9s %9s %6s %9s  %s\n", "layer", "head", "entropy", "norm",
                    "sink", "prev", "induct", "local", "distance", "keys90", "frac90", "offset", "labels");
        for (size_t i : order) {
            const HeadFingerprint& f = heads[i];
            // The best fixed offset and its mass ("-" when no offset holds even 0.5%: its δ would be noise).
            char offset[32] = "-";
            if (f.positional_offset >= 0 && f.positional_mass >= 0.005)
                std::snprintf(offset, sizeof offset, "%d:%.2f", f.positional_offset, f.positional_mass);
            std::vector<std::string> labels = f.labels;
            for (const std::string& user : user_labels_of(session, f.layer, f.head)) labels.push_back("\"" + user + "\"");
            std::printf("%5d %4d %8.3f %6.3f %6.3f %6.3f %6.3f %6.3f %9.2f %9.1f %6.3f %9s  %s\n", f.layer, f.head,
                        f.entropy_bits, f.normalized_entropy, f.sink_mass, f.previous_token, f.induction, f.local_mass,
                        f.mean_distance, f.keys_for_90, f.keys_for_90_fraction, offset, joined(labels, ", ").c_str());
        }
    }

    void print_json(const Session& session, const ComputedFingerprints& computed,
                    const std::vector<HeadFingerprint>& heads, const std::vector<size_t>& order) const {
        const HeadFingerprints& fingerprints = computed.fingerprints;
        nlohmann::json out = session_json(session);
        out["device"] = computed.device;  // where the rows were measured: "cuda" or "cpu"
        if (!computed.cpu_reason.empty()) out["device_note"] = computed.cpu_reason;
        out["rows_used"] = fingerprints.rows().size();
        out["rows_available"] = fingerprints.rows_available();
        out["sampled"] = fingerprints.sampled();
        out["rows_note"] = rows_note(fingerprints);
        out["local_window"] = window;
        out["thresholds"] = thresholds_json(LabelThresholds{});
        if (!label_filter.empty()) out["label_filter"] = label_filter;
        out["sort"] = sort;
        nlohmann::json list = nlohmann::json::array();
        for (size_t i : order) list.push_back(head_json(heads[i], user_labels_of(session, heads[i].layer, heads[i].head)));
        out["heads"] = std::move(list);
        std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }

    // The written projection gets its provenance record (FILE.provenance.json); with --sign also FILE.sig.json.
    void record_projection(const Session& session, const SigningKey* key) const {
        ProvenanceRecord record = export_provenance(session, path);
        record.exhibits.push_back({"projection", "projection", -1, -1, -1, -1,
                                   std::filesystem::path(out).filename().string(),
                                   cat(project, " of every head's ", features, " (k ", k, ", seed ", seed, ", rows ", rows,
                                       ", window ", window, ")")});
        write_provenance_beside(out, record);
        if (!key) return;
        const std::string written = sign_file(out, record, *key);
        std::printf("signed %s with key %s: %s\n", out.c_str(), key->public_key.key_id.c_str(), written.c_str());
    }

    void print_projection(const HeadProjection& projection) const {
        if (!out.empty()) {
            write_projection(out, projection);
            std::printf("wrote the %s projection of %zu heads (%s features, %d clusters) to %s\n",
                        projection_method_name(projection.options.method), projection.points.size(),
                        projection_features_name(projection.options.features), projection.options.k, out.c_str());
        } else if (json) {
            std::cout << projection_json(projection) << "\n";
        } else {
            std::cout << projection_csv(projection);
        }
    }
};

}  // namespace

void add_heads_command(CLI::App& app) {
    auto cmd = std::make_shared<HeadsCommand>();
    CLI::App* c = app.add_subcommand(
        "heads", "What every head does: fingerprint metrics and labels, user labels, 2-D projections of the heads");
    c->add_option("session", cmd->path, "Session file (.attn)")->required();
    c->add_flag("--json", cmd->json, "Machine-readable output (the table, or the projection without --out)");
    c->add_option("--label", cmd->label_filter, "Only heads with this automatic or user label (case ignored)");
    c->add_option("--sort", cmd->sort, "Sort by a metric, highest first (entropy_bits, normalized_entropy, sink_mass, "
                                       "previous_token, induction, local_mass, mean_distance, keys_for_90, "
                                       "keys_for_90_fraction, positional_mass; default layer)");
    c->add_option("--rows", cmd->rows, "Query rows per head at most (an evenly spaced sample beyond that)")->capture_default_str();
    c->add_option("--window", cmd->window, "Local window w: local mass is the mass on keys q-w..q")->capture_default_str();
    c->add_option("--label-head", cmd->label_head, "Add a user label to a head: LAYER HEAD TEXT (saved in the session)")
        ->expected(3);
    c->add_option("--unlabel", cmd->unlabel, "Remove a head's user label TEXT, or all of them: LAYER HEAD [TEXT]")
        ->expected(2, 3);
    c->add_option("--project", cmd->project, "Project the heads to 2-D: pca or tsne");
    c->add_option("--features", cmd->features, "Features to project: fingerprints (standardised) or patterns")->capture_default_str();
    c->add_option("--k", cmd->k, "k-means clusters (0: none)")->capture_default_str();
    c->add_option("--seed", cmd->seed, "Seed of t-SNE and k-means++")->capture_default_str();
    c->add_option("--perplexity", cmd->perplexity, "t-SNE perplexity")->capture_default_str();
    c->add_option("--iterations", cmd->iterations, "t-SNE iterations")->capture_default_str();
    c->add_option("--out", cmd->out, "Write the projection to FILE.csv or FILE.json (atomically)");
    c->add_option("--sign", cmd->sign, "Sign the --out file with this key (writes FILE.sig.json with provenance)");
    c->callback([cmd] { cmd->run(); });
}

}  // namespace attn::cli
