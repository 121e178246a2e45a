#pragma once
// Session files (.attn): versioned, zstd-compressed, chunked.
//
// Layout: a fixed header (magic, format version), then self-delimiting chunks, each with
// a type, its compressed and raw sizes, a checksum of the compressed bytes and the payload
// (a zstd frame). The first chunk is the session metadata (JSON); capture chunks carry
// Q/K/LSE for a run of positions; hidden-state chunks (format 2, optional) the hidden state
// after the output norm of a run of positions; step chunks carry decode steps; the last chunk is the
// footer (overview + totals). Reading stops at the first incomplete or corrupt chunk:
// with no footer the file is "incomplete" and only whole chunks are recovered.
//
// Writes are atomic: SessionWriter appends to "<path>.partial" (fsync after each flush) and
// renames it to <path> when finished; save_session() does the same in one go.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "engine/session.h"

namespace attn {

// Streaming writer for long captures: call flush() as positions complete; a killed process
// leaves "<path>.partial" whose complete chunks load_session() recovers.
class SessionWriter {
public:
    SessionWriter(const std::string& path, const Session& session);  // writes header + metadata
    ~SessionWriter();  // if finish() was not called, leaves the .partial file in place
    SessionWriter(const SessionWriter&) = delete;
    SessionWriter& operator=(const SessionWriter&) = delete;

    // Writes capture data for positions not yet written and steps not yet written, then fsyncs.
    void flush(const Session& session);
    // flush() + footer (overview) + fsync + rename to the final path.
    void finish(const Session& session);
    const std::string& partial_path() const { return partial_path_; }

private:
    void write_chunk(uint32_t type, const std::string& raw);
    std::string path_, partial_path_;
    std::FILE* file_ = nullptr;
    int64_t positions_written_ = 0;
    int64_t hidden_written_ = 0;  // positions whose hidden states are written
    size_t steps_written_ = 0;
    size_t tokens_written_ = 0;
    bool finished_ = false;
};

void save_session(const std::string& path, const Session& session);
// Throws attn::Error naming the file and problem (bad magic, newer version, corrupt first chunk).
// A file cut short after its metadata loads with recovered_incomplete = true and the reason
// (naming the damaged section) in recovery_problem. Format 1 files (no hidden states) still load.
Session load_session(const std::string& path);

}  // namespace attn
