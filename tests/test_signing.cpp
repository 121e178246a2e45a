// Provenance records and Ed25519 signing: keygen → sign a report → verify passes; any flipped byte
// in any file, the manifest or its signature makes verify fail naming what changed; a session whose
// attention was altered no longer re-derives the recorded arrays; key files are private and bad
// ones are refused with clear errors. Also the record in session files and in captures.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/error.h"
#include "engine/generation.h"
#include "engine/provenance.h"
#include "engine/session_file.h"
#include "engine/signing.h"
#include "engine/tile_source.h"
#include "tests/crafted_session.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace attn;
using attn::testing::TempDir;
using json = nlohmann::json;

namespace {

void write_text(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

void write_npy_file(const std::string& path, const std::vector<float>& values, size_t rows, size_t cols) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                         std::to_string(cols) + "), }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string file("\x93NUMPY\x01\x00", 8);
    file += char(header.size() & 0xFF);
    file += char(header.size() >> 8);
    file += header;
    file.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    write_text(path, file);
}

void flip_byte(const std::string& path, size_t at, unsigned char mask) {
    std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
    file.seekg(std::streamoff(at));
    char c = 0;
    file.read(&c, 1);
    c = char(static_cast<unsigned char>(c) ^ mask);
    file.seekp(std::streamoff(at));
    file.write(&c, 1);
}

attn::testing::CraftedSpec spec_of(int words) {
    attn::testing::CraftedSpec spec;
    for (int i = 0; i < words; ++i) spec.words.push_back(" w" + std::to_string(i % 7));
    spec.prompt_tokens = words - 4;
    spec.focus = [](int layer, int head, int64_t query) -> std::vector<int64_t> {
        if (head == 1) return {query / 2};
        if (layer == 1 && query > 0) return {query - 1};
        return {};
    };
    return spec;
}

// The same session with one Q value of (layer, position, head) changed (LSE left as it was).
Session with_q_changed(const Session& original, int layer, int64_t position, int head, int dim, float delta) {
    Session changed = original;
    const CaptureShape shape = original.capture->shape();
    const int64_t n = original.capture->positions();
    changed.capture = std::make_shared<CaptureStore>(shape);
    for (int l = 0; l < shape.n_layer; ++l) {
        std::vector<float> q(size_t(n * shape.n_head * shape.head_dim)), k(size_t(n * shape.n_kv_head * shape.head_dim)),
            lse(size_t(n * shape.n_head));
        original.capture->copy_q(l, 0, n, q.data());
        original.capture->copy_k(l, 0, n, k.data());
        original.capture->copy_lse(l, 0, n, lse.data());
        if (l == layer) q[size_t((position * shape.n_head + head) * shape.head_dim + dim)] += delta;
        changed.capture->record_layer(l, 0, n, q.data(), k.data(), lse.data());
    }
    rebuild_overview(*changed.capture);
    return changed;
}

bool has_problem(const VerifyResult& result, const std::string& what, const std::string& subject,
                 const std::string& detail_part = {}) {
    for (const VerifyProblem& p : result.problems)
        if (p.what == what && p.subject == subject && p.detail.find(detail_part) != std::string::npos) return true;
    return false;
}

std::string describe(const VerifyResult& result) {
    std::string out;
    for (const VerifyProblem& p : result.problems) out += p.what + " " + p.subject + ": " + p.detail + "\n";
    return out;
}

// A crafted session saved to a file, a key, and a small signed report made from them.
struct SignedReport {
    TempDir dir{"signing"};
    std::string key_path = dir.file("signer.key");
    std::string session_path = dir.file("session.attn");
    std::string report = dir.file("report");
    Session session;
    TileRequest tile_request;
    int64_t row_query = 0;

    SignedReport() {
        generate_key_file(key_path);
        Session crafted = attn::testing::make_crafted_session(spec_of(40));
        rebuild_overview(*crafted.capture);
        save_session(session_path, crafted);
        session = load_session(session_path);
        fs::create_directories(report + "/figures");
        const CpuTileSource source(*session.capture);
        tile_request.layer = 0;
        tile_request.head = 1;
        const Tile tile = source.tile(tile_request);
        write_npy_file(report + "/tile.npy", tile.sum, Tile::kEdge, Tile::kEdge);
        row_query = session.positions() - 1;
        const std::vector<float> row = source.row(0, 1, row_query);
        write_text(report + "/report.json", json{{"verdict", "pass"}, {"row", row}}.dump(2));
        write_text(report + "/figures/notes.txt", "layer 0 head 1 attends to the middle of the text.\n");

        ProvenanceRecord record = export_provenance(session, session_path);
        add_tile_array(record, "tile", tile_request, false, tile.sum, "tile.npy");
        add_row_array(record, "row", 0, 1, row_query, row);
        record.exhibits.push_back({"tile", "tile", 0, 1, -1, -1, "tile.npy", "level 0 tile (0, 0)"});
        record.exhibits.push_back({"row", "row", 0, 1, row_query - session.prompt_tokens, row_query, "report.json", ""});
        sign_report(report, record, load_signing_key(key_path));
    }
};

}  // namespace

TEST_CASE("keygen writes a private secret key and a public key", "[signing]") {
    TempDir dir("keygen");
    const std::string path = dir.file("k");
    const KeyFiles files = generate_key_file(path);
    CHECK(files.secret_path == path);
    CHECK(files.public_path == path + ".pub");
    CHECK(files.key_id.size() == 16);
    struct stat info {};
    REQUIRE(::stat(path.c_str(), &info) == 0);
    CHECK((info.st_mode & 0777) == 0600);
    const SigningKey key = load_signing_key(path);
    CHECK(key.public_key.key_id == files.key_id);
    CHECK(load_public_key(path + ".pub").bytes == key.public_key.bytes);
    CHECK(load_public_key(path).bytes == key.public_key.bytes);
    // No stray temporary files, and an existing key is not replaced silently.
    CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 2);
    CHECK_THROWS_WITH(generate_key_file(path), Catch::Contains("already exists") && Catch::Contains("--force"));
    CHECK(generate_key_file(path, true).key_id != files.key_id);
}

TEST_CASE("bad key files give clear errors", "[signing]") {
    TempDir dir("badkeys");
    const std::string path = dir.file("k");
    generate_key_file(path);
    CHECK_THROWS_WITH(load_signing_key(dir.file("missing")), Catch::Contains("missing") && Catch::Contains("No such file"));
    ::chmod(path.c_str(), 0644);
    CHECK_THROWS_WITH(load_signing_key(path), Catch::Contains("chmod 600"));
    ::chmod(path.c_str(), 0600);
    CHECK_THROWS_WITH(load_signing_key(path + ".pub"), Catch::Contains("public key"));  // 0644, or the format

    const std::string text = attn::testing::read_file_string(path);
    auto rewrite = [&](const std::string& bytes) {
        write_text(path, bytes);
        ::chmod(path.c_str(), 0600);
    };
    rewrite("not json at all");
    CHECK_THROWS_WITH(load_signing_key(path), Catch::Contains("not an attnscope key file"));
    rewrite(text.substr(0, text.size() / 2));
    CHECK_THROWS_WITH(load_signing_key(path), Catch::Contains("not an attnscope key file"));
    json value = json::parse(text);
    std::string secret = value["secret_key"];
    secret[5] = secret[5] == '0' ? '1' : '0';  // a damaged seed
    value["secret_key"] = secret;
    rewrite(value.dump());
    CHECK_THROWS_WITH(load_signing_key(path), Catch::Contains("damaged"));
    value = json::parse(text);
    value["secret_key"] = "abcd";
    rewrite(value.dump());
    CHECK_THROWS_WITH(load_signing_key(path), Catch::Contains("128 hex digits"));
    value = json::parse(text);
    value.erase("public_key");
    rewrite(value.dump());
    CHECK_THROWS_WITH(load_signing_key(path), Catch::Contains("\"public_key\""));
    CHECK_THROWS_WITH(load_public_key(dir.file("nope.pub")), Catch::Contains("does not exist"));
}

TEST_CASE("a signed report verifies, with and without its session", "[signing]") {
    SignedReport fixture;
    const VerifyResult plain = verify_signed(fixture.report);
    INFO(describe(plain));
    CHECK(plain.ok());
    CHECK(plain.signature_valid);
    CHECK(plain.files_checked == 3);
    CHECK(plain.envelope_path == fixture.report + "/MANIFEST.sig.json");

    VerifyOptions options;
    options.session_path = fixture.session_path;
    options.trusted = load_public_key(fixture.key_path + ".pub");
    const VerifyResult full = verify_signed(fixture.report, options);
    INFO(describe(full));
    CHECK(full.ok());
    CHECK(full.arrays_checked == 2);
    CHECK(full.notes.empty());
    // The manifest's envelope path verifies the same.
    CHECK(verify_signed(fixture.report + "/MANIFEST.sig.json").ok());

    // What the manifest records.
    const json envelope = json::parse(attn::testing::read_file_string(full.envelope_path));
    const json& provenance = envelope["manifest"]["provenance"];
    CHECK(provenance["schema"] == kProvenanceSchema);
    CHECK(provenance["session"]["file_sha256"] == sha256_file_streamed(fixture.session_path));
    CHECK(provenance["arrays"].size() == 2);
    CHECK(provenance["arrays"][0]["dtype"] == "float32-le");
    CHECK(provenance["runtime"]["version"] == ATTNSCOPE_VERSION);
    CHECK(provenance["hardware"]["gpu_name"] == "none");
    CHECK(provenance["capture"].is_object());  // the session file's own record
    CHECK(envelope["signature"]["key_id"] == load_signing_key(fixture.key_path).public_key.key_id);
}

TEST_CASE("flipping any sampled byte of any file, the manifest or the signature fails verification", "[signing]") {
    SignedReport fixture;
    std::mt19937_64 rng(1234);
    const std::vector<std::string> files = {"report.json", "tile.npy", "figures/notes.txt", "MANIFEST.sig.json"};
    const std::string manifest_text = attn::testing::read_file_string(fixture.report + "/MANIFEST.sig.json");
    int flips = 0;
    for (const std::string& relative : files) {
        const std::string path = fixture.report + "/" + relative;
        const size_t size = fs::file_size(path);
        std::vector<size_t> positions = {0, 1, size / 2, size - 1};
        for (int i = 0; i < 40; ++i) positions.push_back(size_t(rng() % size));
        if (relative == "MANIFEST.sig.json") {
            // Inside the signature value, the public key, the key id, a file hash and a size.
            for (const char* needle : {"\"value\": \"", "\"public_key\": \"", "\"key_id\": \"", "\"sha256\": \"",
                                       "\"bytes\": ", "\"algorithm\": \"", "\"format\": \""}) {
                const size_t at = manifest_text.find(needle);
                REQUIRE(at != std::string::npos);
                positions.push_back(at + std::strlen(needle));
                positions.push_back(at + std::strlen(needle) + 3);
            }
            // Every byte of the signature object, each with all three masks (^0x20 swaps the case
            // of a hex digit, which must not decode to the same key or signature).
            const size_t signature_at = manifest_text.rfind("\"signature\": {");
            REQUIRE(signature_at != std::string::npos);
            for (size_t at = signature_at; at < size; ++at)
                for (int repeat = 0; repeat < 3; ++repeat) positions.push_back(at);
        }
        for (size_t k = 0; k < positions.size(); ++k) {
            const unsigned char mask = k % 3 == 0 ? 0x01 : k % 3 == 1 ? 0x80 : 0x20;
            flip_byte(path, positions[k], mask);
            const VerifyResult result = verify_signed(fixture.report);
            INFO(relative << " byte " << positions[k] << " ^ " << int(mask) << "\n" << describe(result));
            CHECK_FALSE(result.ok());
            if (relative != "MANIFEST.sig.json") {
                CHECK(has_problem(result, "file", relative, "changed"));
                CHECK(result.signature_valid);  // only that file is named
            }
            flip_byte(path, positions[k], mask);  // restore
            ++flips;
        }
    }
    CHECK(flips > 150);
    CHECK(verify_signed(fixture.report).ok());

    // Files added or removed.
    write_text(fixture.report + "/figures/extra.png", "not signed");
    CHECK(has_problem(verify_signed(fixture.report), "file", "figures/extra.png", "not in the signed manifest"));
    fs::remove(fixture.report + "/figures/extra.png");
    const std::string notes = attn::testing::read_file_string(fixture.report + "/figures/notes.txt");
    fs::remove(fixture.report + "/figures/notes.txt");
    CHECK(has_problem(verify_signed(fixture.report), "file", "figures/notes.txt", "missing"));
    write_text(fixture.report + "/figures/notes.txt", notes);
    CHECK(verify_signed(fixture.report).ok());

    // Another signer.
    generate_key_file(fixture.dir.file("other.key"));
    VerifyOptions options;
    options.trusted = load_public_key(fixture.dir.file("other.key.pub"));
    CHECK(has_problem(verify_signed(fixture.report, options), "key", "signature.public_key", "not by the trusted key"));
    // Re-signed by an attacker after changing a file: the signature is valid but not the trusted one's.
    write_text(fixture.report + "/figures/notes.txt", "layer 0 head 1 attends to nothing.\n");
    sign_report(fixture.report, provenance_from_json(json::parse(manifest_text)["manifest"]["provenance"]),
                load_signing_key(fixture.dir.file("other.key")));
    options.trusted = load_public_key(fixture.key_path + ".pub");
    const VerifyResult resigned = verify_signed(fixture.report, options);
    CHECK(resigned.signature_valid);
    CHECK_FALSE(resigned.ok());
    // A missing manifest is a problem, not a crash.
    fs::remove(fixture.report + "/MANIFEST.sig.json");
    CHECK(has_problem(verify_signed(fixture.report), "envelope", fixture.report + "/MANIFEST.sig.json", "missing"));
    CHECK_THROWS_WITH(verify_signed(fixture.dir.file("nothing-here")), Catch::Contains("does not exist"));
}

TEST_CASE("verify with the session fails when the session's attention no longer matches", "[signing]") {
    SignedReport fixture;
    const Session altered = with_q_changed(fixture.session, 0, fixture.row_query, 1, 3, 0.75f);
    const std::string altered_path = fixture.dir.file("altered.attn");
    save_session(altered_path, altered);
    VerifyOptions options;
    options.session_path = altered_path;
    const VerifyResult result = verify_signed(fixture.report, options);
    INFO(describe(result));
    CHECK_FALSE(result.ok());
    CHECK(result.signature_valid);
    CHECK(result.arrays_checked == 2);
    CHECK(has_problem(result, "array", "tile", "re-derived from"));
    CHECK(has_problem(result, "array", "row", "re-derived from"));
    CHECK(result.problems.size() == 2);  // text and model still match
    CHECK(result.notes.size() == 1);     // the file differs from the one the report was made from

    // A Q value of a head the report does not show changes nothing it recorded.
    const Session elsewhere = with_q_changed(fixture.session, 1, fixture.row_query, 0, 3, 0.75f);
    save_session(altered_path, elsewhere);
    CHECK(verify_signed(fixture.report, options).ok());

    // A different text.
    attn::testing::CraftedSpec spec = spec_of(40);
    spec.words[3] = " changed";
    save_session(altered_path, attn::testing::make_crafted_session(spec));
    CHECK(has_problem(verify_signed(fixture.report, options), "session", "input_sha256"));
    // A session with fewer positions cannot re-derive the row.
    save_session(altered_path, attn::testing::make_crafted_session(spec_of(20)));
    CHECK(has_problem(verify_signed(fixture.report, options), "array", "row", "cannot be re-derived"));
    CHECK_THROWS(verify_signed(fixture.report, VerifyOptions{fixture.dir.file("no-such.attn"), {}}));
}

TEST_CASE("a single signed file verifies and names what changed", "[signing]") {
    SignedReport fixture;
    const std::string file = fixture.dir.file("export.npy");
    fs::copy_file(fixture.report + "/tile.npy", file);
    const Tile tile = CpuTileSource(*fixture.session.capture).tile(fixture.tile_request);
    ProvenanceRecord record = export_provenance(fixture.session, fixture.session_path, false);
    CHECK(record.session.file_sha256 == "unknown");
    add_tile_array(record, "tile", fixture.tile_request, false, tile.sum, "export.npy");
    const std::string envelope = sign_file(file, record, load_signing_key(fixture.key_path));
    CHECK(envelope == file + ".sig.json");
    CHECK(signature_path_for(file) == envelope);
    CHECK(verify_signed(file).ok());
    CHECK(verify_signed(envelope).ok());
    VerifyOptions options;
    options.session_path = fixture.session_path;
    CHECK(verify_signed(file, options).ok());

    flip_byte(file, fs::file_size(file) - 2, 0x10);
    const VerifyResult result = verify_signed(file);
    CHECK(has_problem(result, "file", "export.npy", "changed"));
    flip_byte(file, fs::file_size(file) - 2, 0x10);
    fs::remove(envelope);
    CHECK(has_problem(verify_signed(file), "envelope", envelope, "no signature"));
}

TEST_CASE("provenance records round-trip through JSON and session files", "[signing]") {
    TempDir dir("provenance");
    Session session = attn::testing::make_crafted_session(spec_of(12));
    session.identity.sha256 = std::string(64, 'a');
    session.identity.format = "gguf";
    session.config.n_layer = 2;
    session.config.n_head = session.config.n_kv_head = 2;
    session.config.head_dim = 12;
    session.sampling.seed = 77;
    session.sampling.stop_strings = {"\xff stop"};  // not UTF-8: recorded with a replacement character
    const std::string path = dir.file("s.attn");
    save_session(path, session);
    const Session loaded = load_session(path);
    REQUIRE_FALSE(loaded.provenance.empty());
    const ProvenanceRecord record = provenance_from_json(json::parse(loaded.provenance));
    CHECK(record.schema == kProvenanceSchema);
    CHECK(record.model.sha256 == std::string(64, 'a'));
    CHECK(record.model.sha256_covers == "gguf file");
    CHECK(record.model.config_sha256 == config_sha256(session.config));
    CHECK(record.sampling.seed == 77);
    const size_t prompt_end = session.tokens[size_t(session.prompt_tokens) - 1].end;
    CHECK(record.input_sha256 == sha256_hex(std::string_view(session.text).substr(0, prompt_end)));
    CHECK(record.output_sha256 == sha256_hex(std::string_view(session.text).substr(prompt_end)));
    CHECK(record.session.positions == 12);
    CHECK(record.runtime.backend == "unknown");  // a hand-made session: nothing says what computed it
    CHECK(record.created_utc.size() == 20);
    CHECK(record.created_utc.back() == 'Z');

    // Saved again (e.g. after labelling a head) the record is kept, not remade.
    Session again = loaded;
    again.head_labels.push_back({0, 1, "middle"});
    save_session(path, again);
    const ProvenanceRecord kept = provenance_from_json(json::parse(load_session(path).provenance));
    CHECK(kept.created_utc == record.created_utc);
    CHECK(kept.command_line == record.command_line);

    // JSON round trip of a full record.
    ProvenanceRecord full = export_provenance(loaded, path);
    full.exhibits.push_back({"x", "row", 1, 0, 2, 9, "f.json", "note"});
    add_row_array(full, "r", 1, 0, 9, CpuTileSource(*loaded.capture).row(1, 0, 9), "f.npy").noised = true;
    full.privacy.has_dp = true;
    full.privacy.dp = dp_noise_parameters(DpParams{});
    const json once = provenance_to_json(full);
    CHECK(provenance_to_json(provenance_from_json(once)) == once);
    json broken = once;
    broken["model"].erase("sha256");
    CHECK_THROWS_WITH(provenance_from_json(broken), Catch::Contains("sha256"));
    broken = once;
    broken["schema"] = "attnscope.provenance/99";
    CHECK_THROWS_WITH(provenance_from_json(broken), Catch::Contains("unknown schema"));

    // Hashes: streamed file hash = in-memory hash; float hash = hash of the little-endian bytes.
    const std::string bytes = attn::testing::read_file_string(path);
    CHECK(sha256_file_streamed(path) == sha256_hex(bytes));
    CHECK(sha256_hex(std::string_view("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const std::vector<float> one = {1.0f};
    CHECK(sha256_floats_hex(one) == sha256_hex(std::string_view("\x00\x00\x80\x3f", 4)));
    CHECK_THROWS_WITH(sha256_file_streamed(dir.file("none")), Catch::Contains("cannot be read"));
}

TEST_CASE("a capture carries its provenance record", "[signing]") {
    REQUIRE_DEFAULT_MODEL_OR_SKIP(model);
    auto backend = make_backend(BackendKind::Cpu, *model);
    GenerationRequest request;
    request.prompt = "The capital of France is";
    request.sampling.max_new_tokens = 2;
    request.sampling.seed = 5;
    const Session session = generate(*model, *backend, request);
    REQUIRE_FALSE(session.provenance.empty());
    const ProvenanceRecord record = provenance_from_json(json::parse(session.provenance));
    CHECK(record.runtime.backend == "cpu");
    CHECK(record.runtime.kernel_variant.find("cpu.fp32") == 0);
    CHECK(record.model.sha256 == model->hashed_identity().sha256);
    CHECK(record.model.config_sha256 == config_sha256(model->config));
    CHECK(record.tokenizer.sha256 == tokenizer_sha256(*model->tokenizer));
    CHECK(record.tokenizer.kind == "byte_level_bpe");
    CHECK(record.hardware.cpu_model != "");
    CHECK(record.hardware.gpu_name == "none");
    CHECK(record.sampling.seed == 5);
    TempDir dir("capture");
    save_session(dir.file("c.attn"), session);
    const ProvenanceRecord saved = provenance_from_json(json::parse(load_session(dir.file("c.attn")).provenance));
    CHECK(saved.tokenizer.sha256 == record.tokenizer.sha256);
    CHECK(saved.session.steps == 2);
    CHECK(saved.output_bytes > 0);
}

TEST_CASE("keygen, tile --sign, heads --sign and verify on the command line", "[signing]") {
    TempDir dir("cli_signing");
    Session crafted = attn::testing::make_crafted_session(spec_of(40));
    rebuild_overview(*crafted.capture);
    const std::string session = dir.file("s.attn"), key = dir.file("k.key");
    save_session(session, crafted);
    using attn::testing::run_cli;

    auto r = run_cli("keygen -o " + key);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("0600") != std::string::npos);
    CHECK(run_cli("keygen -o " + key).exit_code == 1);

    r = run_cli("tile " + session + " --layer 0 --head 1 --level 0 --x 0 --y 0 --npy " + dir.file("t.npy") + " --png " +
                dir.file("t.png") + " --sign " + key);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(fs::exists(dir.file("t.npy.sig.json")));
    CHECK(fs::exists(dir.file("t.png.sig.json")));
    r = run_cli("verify " + dir.file("t.npy") + " --session " + session);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("OK: everything matches") != std::string::npos);
    CHECK(run_cli("verify " + dir.file("t.png") + " --key " + key + ".pub").exit_code == 0);

    // A modified export fails, naming the file.
    flip_byte(dir.file("t.npy"), 200, 0x01);
    r = run_cli("verify " + dir.file("t.npy"));
    CHECK(r.exit_code == 1);
    CHECK(r.out.find("MISMATCH file t.npy") != std::string::npos);
    CHECK(r.err.find("verification failed") != std::string::npos);
    r = run_cli("verify " + dir.file("t.npy") + " --json");
    CHECK(json::parse(r.out)["ok"] == false);

    // With differential privacy: the file holds noisy values, the record the exact ones' hash.
    r = run_cli("tile " + session + " --layer 1 --head 0 --level 0 --x 0 --y 0 --npy " + dir.file("dp.npy") +
                " --dp gaussian --epsilon 0.5 --delta 1e-5 --sensitivity 0.01 --dp-seed 987654321 --sign " + key);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("gaussian noise") != std::string::npos);
    CHECK(run_cli("verify " + dir.file("dp.npy") + " --session " + session).exit_code == 0);
    const json dp = json::parse(attn::testing::read_file_string(dir.file("dp.npy.sig.json")));
    CHECK(dp["manifest"]["provenance"]["privacy"]["dp"]["mechanism"] == "gaussian");
    CHECK(dp["manifest"]["provenance"]["arrays"][0]["noised"] == true);
    CHECK_FALSE(dp["manifest"]["provenance"]["privacy"]["dp"].contains("seed"));  // the noise seed stays secret
    CHECK(dp.dump().find("987654321") == std::string::npos);
    CHECK(run_cli("tile " + session + " --layer 0 --head 0 --level 0 --x 0 --y 0 --npy " + dir.file("x.npy") +
                  " --dp laplace --sensitivity 1")
              .exit_code == 1);

    // heads --project --out --sign.
    r = run_cli("heads " + session + " --project pca --k 2 --out " + dir.file("p.csv") + " --sign " + key);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(run_cli("verify " + dir.file("p.csv")).exit_code == 0);
    CHECK(run_cli("heads " + session + " --sign " + key).exit_code == 1);

    // sign a folder and the session itself; verify a folder.
    fs::create_directories(dir.file("rep"));
    fs::copy_file(dir.file("p.csv"), dir.file("rep/p.csv"));
    CHECK(run_cli("sign " + dir.file("rep") + " --key " + key + " --session " + session).exit_code == 0);
    CHECK(run_cli("verify " + dir.file("rep") + " --session " + session).exit_code == 0);
    CHECK(run_cli("sign " + session + " --key " + key).exit_code == 0);
    CHECK(run_cli("verify " + session).exit_code == 0);

    // Bad key file.
    write_text(dir.file("bad.key"), "{}");
    ::chmod(dir.file("bad.key").c_str(), 0600);
    r = run_cli("tile " + session + " --layer 0 --head 0 --level 0 --x 0 --y 0 --npy " + dir.file("y.npy") + " --sign " +
                dir.file("bad.key"));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("bad.key") != std::string::npos);
    CHECK_FALSE(fs::exists(dir.file("y.npy")));
}
