#pragma once
// Provenance records (issue 7, "Provenance and signing"): everything an auditor needs to know
// where a report, export or session came from and to reproduce it. Reports and exports carry one
// inside their signed manifest (engine/signing.h); session files carry the record of their
// capture in the footer ("provenance"; files from before it have none and still load).
//
// JSON form (schema "attnscope.provenance/1"; every hash is lowercase hex SHA-256; a value that
// could not be known is the string "unknown", one that does not apply is "none"):
//
//   schema          "attnscope.provenance/1"
//   created_utc     when this record was made, UTC ISO 8601 ("2025-01-31T12:00:00Z")
//   host            the machine's host name (gethostname)
//   command_line    the argv of the process that made the record (from /proc/self/cmdline), with
//                   personal data masked (engine/pii.h) while masking is on — a prompt given with
//                   --prompt would otherwise carry it into every report; a --dp-seed value is always
//                   masked (it would let anyone remove the noise)
//   runtime         { version: ATTNSCOPE_VERSION of the build,
//                     backend: what computed the values — for a capture the model backend ("cpu",
//                       "cuda"); for an export the tile source that re-derived them ("cpu"),
//                     kernel_variant: which implementation within that backend (see kernel_variant_of) }
//   hardware        { cpu_model: "model name" from /proc/cpuinfo, cpu_threads: hardware threads,
//                     gpu_name, gpu_uuid, gpu_driver: the CUDA device the backend ran on, or "none"
//                       (the cpu backend, and builds whose cuda backend reports no device yet) }
//   model           { path, name, format ("gguf" | "hf"), file_bytes,
//                     sha256: of the GGUF file; for a Hugging Face directory of config.json and the
//                       safetensors headers (engine/model.h, ModelIdentity) — see sha256_covers,
//                     sha256_covers: "gguf file" | "config.json + safetensors headers",
//                     config_sha256: of the canonical JSON of the ModelConfig (config_canonical_json) }
//   tokenizer       { kind ("byte_level_bpe" | "sentencepiece_bpe" | "unknown"),
//                     sha256: of the tokenizer's canonical description (tokenizer_sha256) or "unknown"
//                       when the record was made without the model (an export of an older session) }
//   sampling        { greedy, temperature, top_k, top_p, seed, beams, max_new_tokens, stop_strings,
//                     chat, stop_at_eos } — the settings of the last step (a live run may change them);
//                   stop strings masked like the command line
//   input_sha256    of the prompt text as tokenized: the session text up to the end of the last prompt
//                   token (for chat prompts, after the chat template); input_bytes its length
//   output_sha256   of the generated text (the session text after the prompt); output_bytes its length
//   session         { file: the session file the values were derived from ("none" for a capture
//                     record), file_sha256 (or "unknown" when not hashed), positions, prompt_tokens,
//                     steps, n_layer, n_head, n_kv_head, head_dim }
//   capture         the provenance record the session file holds (the capture's own record: its
//                   backend, kernel, hardware, time and command line), null when it has none or when
//                   this record is itself the capture record
//   exhibits        [{ id, kind ("tile" | "row" | "map" | "head" | "projection" | "text" | ...),
//                     layer, head (-1: not one head), step (decode step, -1: the prompt / not one step),
//                     query (query row, -1: not one row), file (in the report, "" if none), note }]
//   arrays          [{ id, kind ("row" | "tile_sum" | "tile_max"), layer, head,
//                     query (row), level, tx, ty, row_level_delta, first_query (tiles: TileRequest),
//                     shape ([n] for a row, [256, 256] for a tile), dtype "float32-le",
//                     sha256: of the exact values as little-endian float32 bytes (before any noise),
//                     file: the report file holding them ("" if none), noised: whether that file holds
//                     them with differential-privacy noise added (privacy.dp) }]
//                   Each array is exactly what CpuTileSource::row / ::tile return for those
//                   parameters, so `attnscope verify --session` re-derives and re-hashes it.
//   privacy         { pii_masking: whether displays/exports in the report masked personal data,
//                     dp: null or { mechanism, epsilon, delta, sensitivity, scale, stddev,
//                     calibration, values, clamped } (engine/pii.h; the noise seed is never recorded) }
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/pii.h"
#include "engine/session.h"
#include "engine/tile_source.h"

namespace attn {

class Model;
class Tokenizer;

inline constexpr const char* kProvenanceSchema = "attnscope.provenance/1";

struct HardwareFingerprint {
    std::string cpu_model = "unknown";
    int cpu_threads = 0;
    std::string gpu_name = "none";
    std::string gpu_uuid = "none";
    std::string gpu_driver = "none";
};

struct RuntimeInfo {
    std::string version;  // ATTNSCOPE_VERSION
    std::string backend = "unknown";
    std::string kernel_variant = "unknown";
};

struct ModelRecord {
    std::string path = "unknown", name = "unknown", format = "unknown";
    uint64_t file_bytes = 0;
    std::string sha256 = "unknown";
    std::string sha256_covers = "unknown";
    std::string config_sha256 = "unknown";
};

struct TokenizerRecord {
    std::string kind = "unknown";
    std::string sha256 = "unknown";
};

struct SessionRecord {
    std::string file = "none";
    std::string file_sha256 = "unknown";
    int64_t positions = 0, prompt_tokens = 0, steps = 0;
    int n_layer = 0, n_head = 0, n_kv_head = 0, head_dim = 0;
};

struct ExhibitRecord {
    std::string id;
    std::string kind;
    int layer = -1, head = -1;
    int64_t step = -1, query = -1;
    std::string file;
    std::string note;
};

struct AttentionArrayRecord {
    std::string id;
    std::string kind;  // "row", "tile_sum", "tile_max"
    int layer = 0, head = 0;
    int64_t query = -1;     // row
    TileRequest tile;       // tile_sum / tile_max (its layer/head mirror the fields above)
    std::vector<int64_t> shape;
    std::string dtype = "float32-le";
    std::string sha256;
    std::string file;
    bool noised = false;
};

struct PrivacyRecord {
    bool pii_masking = true;
    bool has_dp = false;
    DpNoiseReport dp;
};

struct ProvenanceRecord {
    std::string schema = kProvenanceSchema;
    std::string created_utc;
    std::string host;
    std::vector<std::string> command_line;
    RuntimeInfo runtime;
    HardwareFingerprint hardware;
    ModelRecord model;
    TokenizerRecord tokenizer;
    SamplingSettings sampling;
    std::string input_sha256 = "unknown", output_sha256 = "unknown";
    uint64_t input_bytes = 0, output_bytes = 0;
    SessionRecord session;
    nlohmann::json capture;  // null or the session's own record
    std::vector<ExhibitRecord> exhibits;
    std::vector<AttentionArrayRecord> arrays;
    PrivacyRecord privacy;
};

nlohmann::json provenance_to_json(const ProvenanceRecord& record);
// Throws attn::Error naming the field that is missing or of the wrong type.
ProvenanceRecord provenance_from_json(const nlohmann::json& value);

// ---- Hashes -------------------------------------------------------------------------------------
std::string sha256_hex(std::span<const std::byte> bytes);
std::string sha256_hex(std::string_view bytes);
// Reads the file in 4 MiB blocks (constant memory, any size); throws attn::Error naming it.
std::string sha256_file_streamed(const std::string& path);
// Of the values as little-endian IEEE float32 bytes (the layout .npy '<f4' and session files use).
std::string sha256_floats_hex(std::span<const float> values);
// Canonical JSON of a ModelConfig: every field, keys sorted, no whitespace (nlohmann's dump()).
std::string config_canonical_json(const ModelConfig& config);
std::string config_sha256(const ModelConfig& config);
// Of the tokenizer's canonical description: "attnscope.tokenizer/1", kind, vocabulary size, BOS/EOS
// ids, the add-BOS policy, then for every id its vocabulary text, raw bytes and special flag — each
// field little-endian, strings length-prefixed (u32). Covers everything encode()/decode() expose;
// the BPE merge ranks themselves are covered by the model file hash (they live in the same file).
std::string tokenizer_sha256(const Tokenizer& tokenizer);
const char* tokenizer_kind_name(const Tokenizer& tokenizer);

// ---- What this process is -----------------------------------------------------------------------
HardwareFingerprint this_machine();                   // cpu from /proc/cpuinfo; gpu fields "none"
// How the cuda backend describes its device (name, UUID, driver version) for capture records made
// with backend "cuda". Until one is registered the GPU fields stay "none".
struct GpuFingerprint {
    std::string name = "none", uuid = "none", driver = "none";
};
void set_gpu_fingerprint_provider(std::function<GpuFingerprint()> provider);
std::string kernel_variant_of(const std::string& backend);  // "cpu" → the fp32 reference, "cuda" → bf16 fused kernels
std::string utc_now_iso8601();
std::string host_name();
std::vector<std::string> process_command_line();      // /proc/self/cmdline; {} if unreadable

// ---- Making records ------------------------------------------------------------------------------
// A record of this process alone: time, host, command line, version, this machine's CPU; the rest
// "unknown"/"none" until the caller fills it (for signing files that come from no session).
ProvenanceRecord new_provenance_record();
// The record of a capture, made when decoding starts (the Decoder stores it in Session::provenance):
// model, config and tokenizer hashes, backend, kernel, this machine, the time and command line.
ProvenanceRecord capture_provenance(const Model& model, const std::string& backend_name, const Session& session);
// The session-level fields (text hashes, sampling, shape) from a session.
void fill_from_session(ProvenanceRecord& record, const Session& session);
// What a session file's footer stores: the session's capture record (or, when it has none, one made
// from the session alone now) with its session-level fields refreshed from the session.
nlohmann::json session_provenance_for_save(const Session& session);
// The record of an export or report made from a session (loaded from `session_path`): model and
// tokenizer from the session's capture record where it has one, this process as the runtime
// ("cpu" tile source) and machine, the session's capture record under "capture", and the session
// file's SHA-256 when hash_session_file is set (2.5–3 s per GB here; see README).
ProvenanceRecord export_provenance(const Session& session, const std::string& session_path, bool hash_session_file = true);

// Writes `record` as FILE.provenance.json beside an exported file (atomically) and returns that path:
// every export carries its record, signed (engine/signing.h sign_file) or not.
std::string write_provenance_beside(const std::string& file, const ProvenanceRecord& record);

// Records one array (hashing its values) and returns a reference to it.
AttentionArrayRecord& add_row_array(ProvenanceRecord& record, const std::string& id, int layer, int head,
                                    int64_t query, std::span<const float> values, const std::string& file = {});
AttentionArrayRecord& add_tile_array(ProvenanceRecord& record, const std::string& id, const TileRequest& request,
                                     bool max_aggregate, std::span<const float> values, const std::string& file = {});
// Re-derives an array's exact values from a capture (what verify compares); throws attn::Error when
// the record names a layer, head, row or kind the capture does not have.
std::vector<float> rederive_array(const AttentionArrayRecord& array, const CpuTileSource& source,
                                  const CaptureShape& shape, int64_t positions);

}  // namespace attn
