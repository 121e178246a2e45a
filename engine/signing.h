#pragma once
// Signed reports and exports (issue 7, "Provenance and signing"): Ed25519 with libsodium.
//
// Keys. generate_key_file(PATH) writes the secret key to PATH (mode 0600, written to a temporary
// file beside it, fsynced and renamed: never half-written, never readable by others) and the
// public key to PATH.pub. Both are JSON:
//   secret: {"format": "attnscope.ed25519-secret-key/1", "key_id", "public_key": hex(32),
//            "secret_key": hex(64, libsodium's seed ‖ public key)}
//   public: {"format": "attnscope.ed25519-public-key/1", "key_id", "public_key": hex(32)}
// key_id = the first 16 hex digits of SHA-256(public key). A secret key file readable by group or
// others is refused (as ssh does).
//
// Signatures. sign_report(DIR, ...) writes DIR/MANIFEST.sig.json covering every regular file under
// DIR (recursively; not the manifest itself); sign_file(FILE, ...) writes FILE.sig.json covering
// FILE. The envelope:
//   {"format": "attnscope.signed-manifest/1",
//    "manifest": {"kind": "directory" | "file",
//                 "files": [{"path": relative to the envelope's folder, "/"-separated, sorted,
//                            "bytes", "sha256"}],
//                 "provenance": the provenance record (engine/provenance.h)},
//    "signature": {"algorithm": "ed25519", "key_id", "public_key": hex,
//                  "value": hex(64) of crypto_sign_detached over
//                           "attnscope.signed-manifest/1\n" + manifest.dump() (nlohmann's canonical
//                           form: keys sorted, no whitespace, UTF-8)}}
// written as envelope.dump(2) + "\n". Since that form is canonical too, verify also requires the
// file's bytes to be exactly the re-serialisation of what it parses to: every byte of the envelope
// is covered, including whitespace outside the signed values.
//
// Verification (verify_signed) reports every problem it finds, not just the first: envelope not
// JSON / not canonical / wrong format, key id not matching the public key, public key not the
// trusted one, signature invalid, each file missing, changed (size and SHA-256 now vs signed), or
// present but unlisted (directories), a path escaping the folder, .npy files whose values no longer
// hash to their array record, and — given the session — each array that re-derives (exact rows and
// tiles from CpuTileSource) to a different hash, plus input/output text and model hashes that differ
// from the session's.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/provenance.h"

namespace attn {

inline constexpr const char* kSignedManifestFormat = "attnscope.signed-manifest/1";
inline constexpr const char* kDirectoryManifestName = "MANIFEST.sig.json";
inline constexpr const char* kSignatureSuffix = ".sig.json";

struct PublicKey {
    std::array<unsigned char, 32> bytes{};
    std::string key_id;
    std::string hex() const;
};

struct SigningKey {
    std::array<unsigned char, 64> secret{};  // libsodium's: seed ‖ public key
    PublicKey public_key;
    std::string path;
};

struct KeyFiles {
    std::string secret_path, public_path, key_id;
};

std::string key_id_of(const std::array<unsigned char, 32>& public_key);

// Writes a new key pair. Refuses to replace an existing PATH unless `overwrite`.
KeyFiles generate_key_file(const std::string& path, bool overwrite = false);
// Throws attn::Error naming the file and what is wrong (missing, readable by others, not a key
// file, damaged, secret and public halves that do not belong together).
SigningKey load_signing_key(const std::string& path);
// A public key file (.pub) or a secret key file (its public half).
PublicKey load_public_key(const std::string& path);

// Writes DIR/MANIFEST.sig.json (atomically) and returns its path. `dir` must be a directory.
std::string sign_report(const std::string& dir, const ProvenanceRecord& provenance, const SigningKey& key);
// Writes FILE.sig.json (atomically) and returns its path.
std::string sign_file(const std::string& file, const ProvenanceRecord& provenance, const SigningKey& key);

// The envelope for PATH: DIR → DIR/MANIFEST.sig.json; a path ending in .sig.json → itself;
// FILE → FILE.sig.json.
std::string signature_path_for(const std::string& path);

struct VerifyOptions {
    std::string session_path;          // re-derive the arrays from this session when set
    std::optional<PublicKey> trusted;  // require this signer
};

struct VerifyProblem {
    std::string what;     // "envelope", "key", "signature", "file", "array", "session"
    std::string subject;  // the file, array id or field concerned
    std::string detail;   // what no longer matches, with the hashes
};

struct VerifyResult {
    std::string envelope_path;
    std::string key_id;                // of the key that signed (from the envelope)
    bool signature_valid = false;
    size_t files_checked = 0, arrays_checked = 0;
    std::vector<VerifyProblem> problems;
    std::vector<std::string> notes;    // informational (e.g. the session file differs but re-derives the same)
    bool ok() const { return problems.empty(); }
};

// Never throws for a damaged or tampered envelope (those are problems in the result); throws
// attn::Error only when PATH does not exist or the session cannot be loaded.
VerifyResult verify_signed(const std::string& path, const VerifyOptions& options = {});

}  // namespace attn
