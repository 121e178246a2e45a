// `attnscope keygen`, `attnscope sign`, `attnscope verify`: Ed25519 keys, signed manifests with a
// provenance record, and their verification (engine/signing.h).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/provenance.h"
#include "engine/session_file.h"
#include "engine/signing.h"
#include "ui/cli/commands.h"

namespace attn::cli {

namespace {

namespace fs = std::filesystem;

struct KeygenCommand {
    std::string out;
    bool force = false;

    void run() const {
        const KeyFiles files = generate_key_file(out, force);
        std::printf("key %s\n  secret key: %s (mode 0600; keep it private)\n  public key: %s\n", files.key_id.c_str(),
                    files.secret_path.c_str(), files.public_path.c_str());
    }
};

// Whether a file is a session (its magic), so `sign` can describe it.
bool looks_like_session(const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) return false;
    char magic[8] = {};
    const size_t n = std::fread(magic, 1, sizeof magic, file);
    std::fclose(file);
    return n == sizeof magic && std::string(magic, 7) == "ATTNSCP";
}

struct SignCommand {
    std::string path, key_path, session_path;

    void run() const {
        const SigningKey key = load_signing_key(key_path);  // a bad key fails before any work
        if (!fs::exists(path)) fail("'", path, "' does not exist");
        std::string from = session_path;
        if (from.empty() && fs::is_regular_file(path) && looks_like_session(path)) from = path;
        ProvenanceRecord record;
        if (!from.empty()) {
            const Session session = load_session(from);
            // Signing the session file itself: its hash is in the manifest's file list; not hashed twice.
            record = export_provenance(session, from, /*hash_session_file=*/from != path);
            // Signing a session file: the record describes the file itself.
            if (from == path) record.exhibits.push_back({"session", "session", -1, -1, -1, -1,
                                                         fs::path(path).filename().string(), "the session file"});
        } else {
            record = new_provenance_record();
        }
        const std::string written = fs::is_directory(path) ? sign_report(path, record, key) : sign_file(path, record, key);
        std::printf("signed %s with key %s: %s\n", path.c_str(), key.public_key.key_id.c_str(), written.c_str());
    }
};

struct VerifyCommand {
    std::string path, session_path, trusted_key;
    bool json = false;

    void run() const {
        VerifyOptions options;
        options.session_path = session_path;
        if (!trusted_key.empty()) options.trusted = load_public_key(trusted_key);
        const VerifyResult result = verify_signed(path, options);
        if (json) {
            nlohmann::json problems = nlohmann::json::array();
            for (const VerifyProblem& p : result.problems)
                problems.push_back({{"what", p.what}, {"subject", p.subject}, {"detail", p.detail}});
            const nlohmann::json out = {{"ok", result.ok()},
                                        {"envelope", result.envelope_path},
                                        {"key_id", result.key_id},
                                        {"signature_valid", result.signature_valid},
                                        {"files_checked", result.files_checked},
                                        {"arrays_checked", result.arrays_checked},
                                        {"session", session_path},
                                        {"problems", problems},
                                        {"notes", result.notes}};
            std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        } else {
            std::printf("%s: signed by key %s; signature %s\n", result.envelope_path.c_str(),
                        result.key_id.empty() ? "(unreadable)" : result.key_id.c_str(),
                        result.signature_valid ? "valid" : "INVALID");
            std::printf("  files checked: %zu\n", result.files_checked);
            if (!session_path.empty())
                std::printf("  attention arrays re-derived from %s: %zu\n", session_path.c_str(), result.arrays_checked);
            for (const std::string& note : result.notes) std::printf("  note: %s\n", note.c_str());
            for (const VerifyProblem& p : result.problems)
                std::printf("  MISMATCH %s %s: %s\n", p.what.c_str(), p.subject.c_str(), p.detail.c_str());
            std::printf("%s\n", result.ok() ? "OK: everything matches" : "FAILED");
        }
        std::fflush(stdout);
        if (!result.ok()) fail("verification failed: ", result.problems.size(), " problem(s) in ", result.envelope_path);
    }
};

}  // namespace

void add_signing_commands(CLI::App& app) {
    auto keygen = std::make_shared<KeygenCommand>();
    CLI::App* k = app.add_subcommand("keygen", "Make an Ed25519 signing key (KEYFILE, mode 0600) and KEYFILE.pub");
    k->add_option("-o,--out", keygen->out, "Secret key file to write")->required();
    k->add_flag("--force", keygen->force, "Replace an existing key file");
    k->callback([keygen] { keygen->run(); });

    auto sign = std::make_shared<SignCommand>();
    CLI::App* s = app.add_subcommand(
        "sign", "Sign a report folder (PATH/MANIFEST.sig.json) or a file (PATH.sig.json) with a provenance record");
    s->add_option("path", sign->path, "Report folder or file (a session file is described by its own record)")->required();
    s->add_option("--key", sign->key_path, "Secret key file (attnscope keygen)")->required();
    s->add_option("--session", sign->session_path, "Session the report was made from (its provenance is recorded)");
    s->callback([sign] { sign->run(); });

    auto verify = std::make_shared<VerifyCommand>();
    CLI::App* v = app.add_subcommand(
        "verify", "Check a signed report or export: signature, every file's SHA-256, and with --session every attention "
                  "array re-derived; exit 0 only when everything matches");
    v->add_option("path", verify->path, "Report folder, signed file, or its .sig.json")->required();
    v->add_option("--session", verify->session_path, "Re-derive the recorded attention arrays from this session");
    v->add_option("--key", verify->trusted_key, "Require this signer (public key file, or the key file)");
    v->add_flag("--json", verify->json, "Machine-readable result");
    v->callback([verify] { verify->run(); });
}

}  // namespace attn::cli
