#include "ui/app/export_record.h"

#include <filesystem>
#include <map>
#include <mutex>
#include <tuple>

#include "engine/error.h"
#include "engine/signing.h"

namespace attn::app {

namespace {

// Hashing a large session file takes seconds (README: ~3 s per GB); one export after another
// should not pay it again for the same file.
std::string session_file_sha256(const std::string& path) {
    static std::mutex mutex;
    static std::map<std::tuple<std::string, uintmax_t, int64_t>, std::string> known;
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec) return "unknown";
    const auto time = std::filesystem::last_write_time(path, ec).time_since_epoch().count();
    if (ec) return "unknown";
    const auto key = std::make_tuple(path, size, static_cast<int64_t>(time));
    {
        std::lock_guard lock(mutex);
        if (auto it = known.find(key); it != known.end()) return it->second;
    }
    const std::string hash = sha256_file_streamed(path);
    std::lock_guard lock(mutex);
    known[key] = hash;
    return hash;
}

}  // namespace

std::string record_export(const DebuggerModel& model, const std::string& file, ExhibitRecord exhibit) {
    ProvenanceRecord record = export_provenance(model.session(), model.session_file, false);
    if (!model.session_file.empty()) record.session.file_sha256 = session_file_sha256(model.session_file);
    record.privacy.pii_masking = model.mask_pii;
    exhibit.file = std::filesystem::path(file).filename().string();
    record.exhibits.push_back(std::move(exhibit));
    std::string written = write_provenance_beside(file, record);
    if (model.export_key) {
        // Appended in two steps: `"\n" + temporary` trips GCC 12's -Wrestrict false positive (PR 105329).
        written += '\n';
        written += sign_file(file, record, *model.export_key);
    }
    return written;
}

}  // namespace attn::app
