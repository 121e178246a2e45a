#include "engine/signing.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"

namespace attn {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kSecretKeyFormat = "attnscope.ed25519-secret-key/1";
constexpr const char* kPublicKeyFormat = "attnscope.ed25519-public-key/1";

void init_sodium() {
    if (sodium_init() < 0) fail("libsodium failed to initialise");
}

std::string to_hex(const unsigned char* data, size_t size) {
    std::string text(size * 2 + 1, '\0');
    sodium_bin2hex(text.data(), text.size(), data, size);
    text.pop_back();
    return text;
}

// Exactly `size` bytes from exactly 2·size lowercase hex digits. Uppercase is refused: a case
// change would otherwise decode to the same bytes, an edit that nothing signed would notice.
bool from_hex(const std::string& hex, unsigned char* out, size_t size) {
    if (hex.size() != size * 2) return false;
    for (char c : hex)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    size_t written = 0;
    const char* end = nullptr;
    return sodium_hex2bin(out, size, hex.data(), hex.size(), nullptr, &written, &end) == 0 && written == size &&
           end == hex.data() + hex.size();
}

std::string read_whole(const std::string& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(what, " '", path, "': cannot be read (", std::strerror(errno), ")");
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Like write_file_atomically, but the file is created 0600 and never exists with wider permissions.
void write_private_file_atomically(const std::string& path, std::string_view bytes) {
    const std::string temp = path + ".tmp." + std::to_string(::getpid());
    ::unlink(temp.c_str());
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) fail("'", path, "': cannot be written (", std::strerror(errno), ")");
    auto give_up = [&](const char* what) {
        const int error = errno;
        ::close(fd);
        ::unlink(temp.c_str());
        fail("'", path, "': ", what, " (", std::strerror(error), ")");
    };
    if (::fchmod(fd, 0600) != 0) give_up("cannot restrict its permissions");  // whatever the umask said
    size_t written = 0;
    while (written < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) give_up("write failed");
        written += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) give_up("could not be flushed to disk");
    if (::close(fd) != 0) {
        const int error = errno;
        ::unlink(temp.c_str());
        fail("'", path, "': could not be flushed to disk (", std::strerror(error), ")");
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        const int error = errno;
        ::unlink(temp.c_str());
        fail("'", path, "': could not be put in place (", std::strerror(error), ")");
    }
    fs::path dir = fs::path(path).parent_path();
    if (dir.empty()) dir = ".";
    if (const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
        ::fsync(dir_fd);
        ::close(dir_fd);
    }
}

json parse_key_json(const std::string& path, const std::string& text, const char* what) {
    try {
        json value = json::parse(text);
        if (!value.is_object()) fail(what, " '", path, "' is not an attnscope key file (not a JSON object)");
        return value;
    } catch (const json::exception&) {
        fail(what, " '", path, "' is not an attnscope key file (not JSON; make one with `attnscope keygen -o FILE`)");
    }
}

std::string string_field(const json& value, const char* key, const std::string& path, const char* what) {
    if (!value.contains(key) || !value.at(key).is_string())
        fail(what, " '", path, "' has no \"", key, "\" string");
    return value.at(key).get<std::string>();
}

PublicKey public_key_from_hex(const std::string& hex, const std::string& path, const char* what) {
    PublicKey key;
    if (!from_hex(hex, key.bytes.data(), key.bytes.size()))
        fail(what, " '", path, "': public_key is not 64 hex digits");
    key.key_id = key_id_of(key.bytes);
    return key;
}

// The files under `root` (regular files, recursively), as sorted "/"-separated relative paths.
std::vector<std::string> files_under(const fs::path& root, const std::string& skip) {
    std::vector<std::string> out;
    std::error_code error;
    for (fs::recursive_directory_iterator it(root, error), end; it != end; it.increment(error)) {
        if (error) fail("'", root.string(), "': cannot list (", error.message(), ")");
        const fs::directory_entry& entry = *it;
        const std::string relative = fs::relative(entry.path(), root).generic_string();
        if (entry.is_symlink()) fail("'", entry.path().string(), "': refusing to sign a symbolic link");
        if (entry.is_directory()) continue;
        if (!entry.is_regular_file()) fail("'", entry.path().string(), "': not a regular file");
        if (relative == skip) continue;
        // Temporary files of an atomic write in progress are not part of the report.
        out.push_back(relative);
    }
    if (error) fail("'", root.string(), "': cannot list (", error.message(), ")");
    std::sort(out.begin(), out.end());
    return out;
}

json file_entry(const fs::path& root, const std::string& relative) {
    const fs::path full = root / relative;
    return {{"path", relative}, {"bytes", fs::file_size(full)}, {"sha256", sha256_file_streamed(full.string())}};
}

std::string signed_message(const json& manifest) {
    return std::string(kSignedManifestFormat) + "\n" + manifest.dump();
}

std::string write_envelope(const std::string& envelope_path, json manifest, const SigningKey& key) {
    init_sodium();
    // Through text and back: what is signed is exactly what a reader will parse (invalid UTF-8
    // replaced, numbers in their shortest round-trip form).
    manifest = json::parse(manifest.dump(-1, ' ', false, json::error_handler_t::replace));
    const std::string message = signed_message(manifest);
    unsigned char signature[crypto_sign_BYTES];
    crypto_sign_detached(signature, nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                         key.secret.data());
    const json envelope = {{"format", kSignedManifestFormat},
                           {"manifest", manifest},
                           {"signature", {{"algorithm", "ed25519"},
                                          {"key_id", key.public_key.key_id},
                                          {"public_key", key.public_key.hex()},
                                          {"value", to_hex(signature, sizeof signature)}}}};
    write_file_atomically(envelope_path, envelope.dump(2) + "\n");
    return envelope_path;
}

bool safe_relative(const std::string& path) {
    if (path.empty() || path.front() == '/' || path.find('\\') != std::string::npos) return false;
    for (const auto& part : fs::path(path)) {
        const std::string name = part.string();
        if (name == ".." || name == "." || name.empty()) return false;
    }
    return true;
}

// The float32 payload of a .npy file ('<f4', C order), or nullopt with why not.
std::optional<std::string> npy_payload(const std::string& bytes, std::string& why) {
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
        why = "not a .npy file";
        return std::nullopt;
    }
    const unsigned major = uint8_t(bytes[6]);
    size_t header_len = 0, offset = 0;
    if (major == 1) {
        header_len = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
        offset = 10;
    } else if (major == 2 || major == 3) {
        if (bytes.size() < 12) {
            why = "truncated .npy header";
            return std::nullopt;
        }
        header_len = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8 | size_t(uint8_t(bytes[10])) << 16 |
                     size_t(uint8_t(bytes[11])) << 24;
        offset = 12;
    } else {
        why = "unknown .npy version";
        return std::nullopt;
    }
    if (offset + header_len > bytes.size()) {
        why = "truncated .npy header";
        return std::nullopt;
    }
    const std::string header = bytes.substr(offset, header_len);
    if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos) {
        why = ".npy header is not little-endian float32 in C order";
        return std::nullopt;
    }
    return bytes.substr(offset + header_len);
}

}  // namespace

std::string PublicKey::hex() const { return to_hex(bytes.data(), bytes.size()); }

std::string key_id_of(const std::array<unsigned char, 32>& public_key) {
    return sha256_hex(std::span<const std::byte>(reinterpret_cast<const std::byte*>(public_key.data()), public_key.size()))
        .substr(0, 16);
}

KeyFiles generate_key_file(const std::string& path, bool overwrite) {
    init_sodium();
    if (path.empty()) fail("keygen: give the key file to write (-o FILE)");
    const std::string public_path = path + ".pub";
    if (!overwrite && (fs::exists(path) || fs::exists(public_path)))
        fail("'", fs::exists(path) ? path : public_path,
             "' already exists; refusing to replace a key (use --force to overwrite it)");
    SigningKey key;
    crypto_sign_keypair(key.public_key.bytes.data(), key.secret.data());
    key.public_key.key_id = key_id_of(key.public_key.bytes);
    const json secret = {{"format", kSecretKeyFormat},
                         {"key_id", key.public_key.key_id},
                         {"public_key", key.public_key.hex()},
                         {"secret_key", to_hex(key.secret.data(), key.secret.size())}};
    const json pub = {{"format", kPublicKeyFormat}, {"key_id", key.public_key.key_id}, {"public_key", key.public_key.hex()}};
    std::string secret_text = secret.dump(2) + "\n";
    write_private_file_atomically(path, secret_text);
    sodium_memzero(secret_text.data(), secret_text.size());
    sodium_memzero(key.secret.data(), key.secret.size());
    write_file_atomically(public_path, pub.dump(2) + "\n");
    return {path, public_path, key.public_key.key_id};
}

SigningKey load_signing_key(const std::string& path) {
    init_sodium();
    const char* what = "key file";
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) fail(what, " '", path, "': ", std::strerror(errno));
    if (!S_ISREG(info.st_mode)) fail(what, " '", path, "' is not a regular file");
    std::string text = read_whole(path, what);
    const json value = parse_key_json(path, text, what);
    sodium_memzero(text.data(), text.size());
    const std::string format = string_field(value, "format", path, what);
    if (format == kPublicKeyFormat)
        fail(what, " '", path, "' is a public key; signing needs the secret key file (the one without .pub)");
    if (format != kSecretKeyFormat)
        fail(what, " '", path, "' has format '", format, "', expected '", kSecretKeyFormat, "'");
    if (info.st_mode & 077)
        fail(what, " '", path, "' is readable or writable by others (mode ", cat(std::oct, info.st_mode & 0777),
             "); a secret key must be private: chmod 600 '", path, "'");
    SigningKey key;
    key.path = path;
    key.public_key = public_key_from_hex(string_field(value, "public_key", path, what), path, what);
    std::string secret_hex = string_field(value, "secret_key", path, what);
    const bool ok = from_hex(secret_hex, key.secret.data(), key.secret.size());
    sodium_memzero(secret_hex.data(), secret_hex.size());
    if (!ok) fail(what, " '", path, "': secret_key is not 128 hex digits");
    std::array<unsigned char, 32> derived{};
    crypto_sign_ed25519_sk_to_pk(derived.data(), key.secret.data());
    if (derived != key.public_key.bytes)
        fail(what, " '", path, "' is damaged: its secret key does not belong to its public key");
    if (string_field(value, "key_id", path, what) != key.public_key.key_id)
        fail(what, " '", path, "' is damaged: key_id does not match its public key");
    // The secret half must sign what the public half verifies (catches a damaged seed).
    static constexpr unsigned char probe[] = "attnscope key check";
    unsigned char signature[crypto_sign_BYTES];
    crypto_sign_detached(signature, nullptr, probe, sizeof probe, key.secret.data());
    if (crypto_sign_verify_detached(signature, probe, sizeof probe, key.public_key.bytes.data()) != 0)
        fail(what, " '", path, "' is damaged: its secret key does not sign for its public key");
    return key;
}

PublicKey load_public_key(const std::string& path) {
    init_sodium();
    const char* what = "public key file";
    if (!fs::exists(path)) fail(what, " '", path, "' does not exist");
    const json value = parse_key_json(path, read_whole(path, what), what);
    const std::string format = string_field(value, "format", path, what);
    if (format != kPublicKeyFormat && format != kSecretKeyFormat)
        fail(what, " '", path, "' has format '", format, "', expected '", kPublicKeyFormat, "'");
    PublicKey key = public_key_from_hex(string_field(value, "public_key", path, what), path, what);
    if (value.contains("key_id") && value.at("key_id") != key.key_id)
        fail(what, " '", path, "' is damaged: key_id does not match its public key");
    return key;
}

std::string sign_report(const std::string& dir, const ProvenanceRecord& provenance, const SigningKey& key) {
    if (!fs::is_directory(dir)) fail("'", dir, "' is not a directory (sign a single file with sign_file)");
    const fs::path root(dir);
    json files = json::array();
    for (const std::string& relative : files_under(root, kDirectoryManifestName))
        files.push_back(file_entry(root, relative));
    const json manifest = {{"kind", "directory"}, {"files", files}, {"provenance", provenance_to_json(provenance)}};
    return write_envelope((root / kDirectoryManifestName).string(), manifest, key);
}

std::string sign_file(const std::string& file, const ProvenanceRecord& provenance, const SigningKey& key) {
    if (!fs::is_regular_file(file)) fail("'", file, "' is not a regular file");
    const fs::path path(file);
    const fs::path root = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    const json manifest = {{"kind", "file"},
                           {"files", json::array({file_entry(root, path.filename().string())})},
                           {"provenance", provenance_to_json(provenance)}};
    return write_envelope(file + kSignatureSuffix, manifest, key);
}

std::string signature_path_for(const std::string& path) {
    if (fs::is_directory(path)) return (fs::path(path) / kDirectoryManifestName).string();
    if (path.size() > std::strlen(kSignatureSuffix) && path.ends_with(kSignatureSuffix)) return path;
    return path + kSignatureSuffix;
}

VerifyResult verify_signed(const std::string& path, const VerifyOptions& options) {
    init_sodium();
    VerifyResult result;
    if (!fs::exists(path)) fail("'", path, "' does not exist");
    result.envelope_path = signature_path_for(path);
    auto problem = [&](std::string what, std::string subject, std::string detail) {
        result.problems.push_back({std::move(what), std::move(subject), std::move(detail)});
    };
    if (!fs::exists(result.envelope_path)) {
        problem("envelope", result.envelope_path, "no signature: the file is missing (sign with --sign KEYFILE)");
        return result;
    }
    const std::string bytes = read_whole(result.envelope_path, "signature");

    // ---- The envelope: JSON, canonical, the right format -------------------------------------
    json envelope;
    try {
        envelope = json::parse(bytes);
    } catch (const json::exception& e) {
        problem("envelope", result.envelope_path, cat("not valid JSON (", e.what(), "): the signature file was altered"));
        return result;
    }
    bool canonical = false;
    try {
        canonical = envelope.dump(2) + "\n" == bytes;
    } catch (const json::exception&) {
    }
    if (!canonical)
        problem("envelope", result.envelope_path,
                "bytes differ from the form attnscope writes (whitespace, escapes or number formatting changed)");
    if (!envelope.is_object() || !envelope.contains("format") || envelope.at("format") != kSignedManifestFormat ||
        !envelope.contains("manifest") || !envelope.at("manifest").is_object() || !envelope.contains("signature") ||
        !envelope.at("signature").is_object()) {
        problem("envelope", result.envelope_path, cat("not an ", kSignedManifestFormat, " envelope"));
        return result;
    }
    const json& manifest = envelope.at("manifest");
    const json& signature = envelope.at("signature");

    // ---- Key and signature ---------------------------------------------------------------------
    auto sig_string = [&](const char* key) -> std::string {
        const json& v = signature.value(key, json());
        return v.is_string() ? v.get<std::string>() : std::string();
    };
    PublicKey signer;
    const bool key_ok = from_hex(sig_string("public_key"), signer.bytes.data(), signer.bytes.size());
    if (!key_ok) {
        problem("key", "signature.public_key", "not 64 lowercase hex digits");
    } else {
        signer.key_id = key_id_of(signer.bytes);
        result.key_id = signer.key_id;
        if (sig_string("key_id") != signer.key_id)
            problem("key", "signature.key_id",
                    cat("is '", sig_string("key_id"), "' but the public key's id is ", signer.key_id));
        if (options.trusted && options.trusted->bytes != signer.bytes)
            problem("key", "signature.public_key",
                    cat("signed by key ", signer.key_id, ", not by the trusted key ", options.trusted->key_id));
    }
    if (sig_string("algorithm") != "ed25519")
        problem("signature", "signature.algorithm", cat("is '", sig_string("algorithm"), "', expected 'ed25519'"));
    unsigned char sig_bytes[crypto_sign_BYTES];
    if (!from_hex(sig_string("value"), sig_bytes, sizeof sig_bytes)) {
        problem("signature", "signature.value", "not 128 lowercase hex digits");
    } else if (key_ok) {
        std::string message;
        try {
            message = signed_message(manifest);
        } catch (const json::exception& e) {
            message.clear();
        }
        result.signature_valid =
            !message.empty() && crypto_sign_verify_detached(sig_bytes, reinterpret_cast<const unsigned char*>(message.data()),
                                                            message.size(), signer.bytes.data()) == 0;
        if (!result.signature_valid)
            problem("signature", result.envelope_path,
                    cat("invalid: the manifest or the signature was altered, or was not signed by key ", signer.key_id));
    }

    // ---- Files ---------------------------------------------------------------------------------
    const fs::path root = fs::path(result.envelope_path).parent_path().empty()
                              ? fs::path(".")
                              : fs::path(result.envelope_path).parent_path();
    const std::string kind = manifest.value("kind", json()).is_string() ? manifest.at("kind").get<std::string>() : "";
    if (kind != "directory" && kind != "file") problem("envelope", "manifest.kind", cat("is '", kind, "'"));
    std::set<std::string> listed;
    const json files = manifest.value("files", json::array());
    if (!files.is_array()) problem("envelope", "manifest.files", "is not a list");
    std::map<std::string, std::string> file_hash_now;  // relative path → SHA-256 now
    for (const json& entry : files.is_array() ? files : json::array()) {
        if (!entry.is_object() || !entry.value("path", json()).is_string() || !entry.value("sha256", json()).is_string()) {
            problem("envelope", "manifest.files", "an entry lacks its path or sha256");
            continue;
        }
        const std::string relative = entry.at("path").get<std::string>();
        const std::string signed_hash = entry.at("sha256").get<std::string>();
        listed.insert(relative);
        ++result.files_checked;
        if (!safe_relative(relative)) {
            problem("file", relative, "path leaves the signed folder");
            continue;
        }
        const fs::path full = root / relative;
        std::error_code error;
        if (!fs::is_regular_file(full, error)) {
            problem("file", relative, "missing");
            continue;
        }
        const uint64_t size_now = fs::file_size(full, error);
        const std::string hash_now = sha256_file_streamed(full.string());
        file_hash_now[relative] = hash_now;
        const uint64_t size_signed = entry.value("bytes", json()).is_number_unsigned() ? entry.at("bytes").get<uint64_t>() : 0;
        if (hash_now != signed_hash)
            problem("file", relative,
                    cat("changed: SHA-256 is now ", hash_now, " (", size_now, " bytes), signed ", signed_hash, " (",
                        size_signed, " bytes)"));
        else if (size_now != size_signed)
            problem("file", relative, cat("size is now ", size_now, " bytes, signed ", size_signed));
    }
    if (kind == "directory") {
        try {
            for (const std::string& relative : files_under(root, kDirectoryManifestName))
                if (!listed.count(relative)) problem("file", relative, "present but not in the signed manifest");
        } catch (const Error& e) {
            problem("file", root.string(), e.what());
        }
    }

    // ---- Provenance and its arrays -------------------------------------------------------------
    std::optional<ProvenanceRecord> provenance;
    try {
        provenance = provenance_from_json(manifest.at("provenance"));
    } catch (const std::exception& e) {
        problem("envelope", "manifest.provenance", e.what());
    }
    if (!provenance) return result;

    // Arrays whose values are in a listed, unaltered .npy file: the file must hold exactly them.
    for (const AttentionArrayRecord& array : provenance->arrays) {
        if (array.file.empty() || array.noised || !array.file.ends_with(".npy")) continue;
        auto it = file_hash_now.find(array.file);
        if (it == file_hash_now.end()) continue;
        std::string why;
        const std::string npy = read_whole((root / array.file).string(), "array file");
        const std::optional<std::string> payload = npy_payload(npy, why);
        if (!payload) {
            problem("array", array.id, cat(array.file, ": ", why));
            continue;
        }
        const std::string hash = sha256_hex(std::string_view(*payload));
        if (hash != array.sha256)
            problem("array", array.id, cat("the values in ", array.file, " hash to ", hash, ", the record says ", array.sha256));
    }

    if (options.session_path.empty()) return result;
    const Session session = load_session(options.session_path);
    if (!session.capture) fail("'", options.session_path, "': the session holds no capture");
    ProvenanceRecord now;
    fill_from_session(now, session);
    if (now.input_sha256 != provenance->input_sha256)
        problem("session", "input_sha256",
                cat("the session's prompt text hashes to ", now.input_sha256, ", the record says ", provenance->input_sha256));
    if (now.output_sha256 != provenance->output_sha256)
        problem("session", "output_sha256",
                cat("the session's generated text hashes to ", now.output_sha256, ", the record says ",
                    provenance->output_sha256));
    const std::string session_model = session.identity.sha256.empty() ? "unknown" : session.identity.sha256;
    if (session_model != provenance->model.sha256)
        problem("session", "model.sha256",
                cat("the session's model hashes to ", session_model, ", the record says ", provenance->model.sha256));
    if (provenance->session.file_sha256 != "unknown") {
        const std::string file_hash = sha256_file_streamed(options.session_path);
        if (file_hash != provenance->session.file_sha256)
            result.notes.push_back(cat("the session file's SHA-256 is ", file_hash, ", the report was made from one with ",
                                       provenance->session.file_sha256,
                                       " (saved again, e.g. with labels?); its attention arrays are checked one by one"));
    }
    const CpuTileSource source(*session.capture);
    for (const AttentionArrayRecord& array : provenance->arrays) {
        ++result.arrays_checked;
        std::string where = cat(array.kind, " layer ", array.layer, " head ", array.head);
        if (array.kind == "row") where += cat(" query ", array.query);
        else where += cat(" level ", array.tile.level, " tile (", array.tile.tx, ", ", array.tile.ty, ")");
        try {
            const std::vector<float> values = rederive_array(array, source, session.capture->shape(), session.capture->positions());
            const std::string hash = sha256_floats_hex(values);
            if (hash != array.sha256)
                problem("array", array.id,
                        cat(where, ": re-derived from ", options.session_path, " it hashes to ", hash, ", the record says ",
                            array.sha256));
        } catch (const Error& e) {
            problem("array", array.id, cat(where, ": cannot be re-derived from ", options.session_path, " (", e.what(), ")"));
        }
    }
    return result;
}

}  // namespace attn
