#pragma once
// Every file the debugger exports (text-view matrices and segment tables, head projections,
// counterfactual results, PNGs of a view) carries its provenance record (engine/provenance.h):
// FILE.provenance.json beside it, written atomically, with the exhibit it shows; and, when the
// view was given a signing key (`view --key KEYFILE`), FILE.sig.json as `attnscope sign` writes
// it, so `attnscope verify FILE` checks the file and its record.
#include <string>

#include "engine/provenance.h"
#include "ui/app/debugger_model.h"

namespace attn::app {

// Writes the record of `file` (already written; the session is the model's, its file
// DebuggerModel::session_file, the key DebuggerModel::export_key) and returns the paths written,
// one per line. The session file's SHA-256 is computed once per (path, size, modification time).
std::string record_export(const DebuggerModel& model, const std::string& file, ExhibitRecord exhibit);

}  // namespace attn::app
