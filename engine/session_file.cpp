#include "engine/session_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <future>
#include <thread>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <system_error>
#include <vector>

#include "engine/error.h"
#include "engine/provenance.h"
#include "engine/tile_source.h"

#ifndef ATTNSCOPE_VERSION
#define ATTNSCOPE_VERSION "0.1.0-dev"
#endif

namespace attn {

namespace {

using json = nlohmann::json;

// ---- Format ----------------------------------------------------------------------------
//
// File header (16 bytes): magic "ATTNSCP\0", u32 format version, u32 flags (none defined yet;
// a set bit a reader does not know means it cannot read the file correctly, so it refuses).
// Then chunks, each a 32-byte header followed by one zstd frame:
//   u32 type, u32 reserved (0), u64 compressed size, u64 raw size,
//   u64 content checksum (the frame's own: low 32 bits of XXH64 of the raw payload, repeated
//   here so that header and frame must agree). Every frame carries that checksum and its
//   content size; zstd verifies the checksum when decompressing.
// All integers are little-endian. Chunk payloads (after decompression):
//   META  u64 json size, JSON, prompt text bytes (text may be any bytes, so it is kept out of JSON)
//   CAPT  u64 first position, u64 positions, u32 layers, u32 float encoding, floats:
//         per layer Q [n, n_head, head_dim], K [n, n_kv_head, head_dim], LSE [n, n_head]
//   STEP  u64 json size, JSON (steps and tokens added since the previous one), step text bytes
//   OVRV  u32 layer, u32 head, u64 cells, u32 float encoding, u32 reserved, sums then maxes
//   HIDN  (format 2) u64 first position, u64 positions, u32 width, u32 float encoding, floats:
//         each position's hidden state after the output norm [n, width] (CaptureStore::hidden).
//         Optional: only captures that recorded them have it (cpu backend, format 2 on). Written
//         after the CAPT chunks of the same positions, so it never runs ahead of them.
//   FOOT  u64 json size, JSON totals (positions, steps, tokens, overview chunks, hidden_positions
//         (format 2), and the keyframes, user head labels and the capture's provenance
//         record (engine/provenance.h), all optional: files from before them lack them); present
//         only when the file is complete
// Float arrays are stored "byte-shuffled": all least significant bytes of their little-endian
// form, then all second bytes, and so on. Exponent bytes then sit together, which zstd
// compresses far better than interleaved floats (bf16-origin values even leave whole planes zero).

constexpr char kFileMagic[8] = {'A', 'T', 'T', 'N', 'S', 'C', 'P', '\0'};
// Format 2 added HIDN chunks (a format-1 reader would stop at the first one and call the file
// incomplete, so such files say 2 and older readers refuse them cleanly). Format 1 files still load.
constexpr uint32_t kFormatVersion = 2;
constexpr uint32_t kOldestFormatVersion = 1;
constexpr uint32_t kKnownFlags = 0;
constexpr size_t kFileHeaderBytes = 16;
constexpr size_t kChunkHeaderBytes = 32;

constexpr uint32_t four_cc(const char (&name)[5]) {
    return uint32_t(uint8_t(name[0])) | uint32_t(uint8_t(name[1])) << 8 | uint32_t(uint8_t(name[2])) << 16 |
           uint32_t(uint8_t(name[3])) << 24;
}
constexpr uint32_t kMetaChunk = four_cc("META");
constexpr uint32_t kCaptureChunk = four_cc("CAPT");
constexpr uint32_t kStepsChunk = four_cc("STEP");
constexpr uint32_t kOverviewChunk = four_cc("OVRV");
constexpr uint32_t kFooterChunk = four_cc("FOOT");
constexpr uint32_t kHiddenChunk = four_cc("HIDN");

// For messages: which section of the file a damaged chunk belongs to.
std::string chunk_type_name(uint32_t type) {
    switch (type) {
        case kMetaChunk: return "metadata";
        case kCaptureChunk: return "capture (Q/K/LSE)";
        case kStepsChunk: return "steps";
        case kOverviewChunk: return "overview";
        case kFooterChunk: return "footer";
        case kHiddenChunk: return "hidden-state";
    }
    return "unknown";
}

constexpr uint32_t kByteShuffledFloat32 = 1;
// Readers refuse larger chunks before allocating anything; writers keep well below.
constexpr uint64_t kMaxChunkRawBytes = uint64_t(1) << 30;
// Capture chunks are cut at about this size: small enough to bound the memory a writer and
// a reader need per chunk, large enough that zstd sees plenty of context.
constexpr uint64_t kTargetCaptureChunkBytes = uint64_t(8) << 20;
// Chunks are compressed and decompressed on up to this many threads at once (each holds a few
// chunk-sized buffers, so this also bounds the memory in flight).
constexpr unsigned kMaxCodecThreads = 8;
// Below this many raw bytes a chunk is coded on the calling thread: starting a thread costs more.
constexpr uint64_t kMinParallelChunkBytes = uint64_t(1) << 20;
// Measured on byte-shuffled float planes: level 1 compresses slightly better than level 3
// (0.84 vs 0.85 of raw for random fp32, 0.34 vs 0.35 for bf16-valued data) and about twice as fast.
constexpr int kCompressionLevel = 1;

// Sane bounds for a capture shape read from a file (CaptureStore allocates from them).
constexpr int kMaxLayers = 4096;
constexpr int kMaxHeads = 4096;
constexpr int kMaxHeadDim = 4096;
constexpr int kMaxHiddenWidth = 1 << 16;

// Thrown while reading a chunk that is cut short, fails its checksum or does not make sense;
// load_session turns it into an attn::Error (metadata) or stops recovery there (later chunks).
struct DamagedChunk {
    std::string reason;
};

[[noreturn]] void damaged(std::string reason) { throw DamagedChunk{std::move(reason)}; }

std::string quoted(const std::string& path) { return "'" + path + "'"; }
std::string errno_text() { return std::strerror(errno); }

// ---- Little-endian encoding ----------------------------------------------------------------

void put_u32(std::string& out, uint32_t value) {
    for (int i = 0; i < 4; ++i) out.push_back(char(value >> (8 * i)));
}
void put_u64(std::string& out, uint64_t value) {
    for (int i = 0; i < 8; ++i) out.push_back(char(value >> (8 * i)));
}
uint32_t get_u32(const char* in) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) value |= uint32_t(uint8_t(in[i])) << (8 * i);
    return value;
}
uint64_t get_u64(const char* in) {
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i) value |= uint64_t(uint8_t(in[i])) << (8 * i);
    return value;
}

// Sequential reader over a decompressed payload; running past the end means the chunk is bad.
class PayloadReader {
public:
    explicit PayloadReader(std::string_view bytes) : bytes_(bytes) {}
    uint32_t u32() { return get_u32(take(4).data()); }
    uint64_t u64() { return get_u64(take(8).data()); }
    std::string_view take(uint64_t n) {
        if (n > bytes_.size() - at_) damaged(cat("payload ends early (", bytes_.size(), " bytes)"));
        std::string_view part = bytes_.substr(at_, n);
        at_ += n;
        return part;
    }
    uint64_t remaining() const { return bytes_.size() - at_; }

private:
    std::string_view bytes_;
    size_t at_ = 0;
};

// Appends values as four byte planes (see the format notes above).
void put_shuffled_floats(std::string& out, std::span<const float> values) {
    const size_t n = values.size();
    const size_t base = out.size();
    out.resize(base + 4 * n);
    char* plane0 = out.data() + base;
    char* plane1 = plane0 + n;
    char* plane2 = plane1 + n;
    char* plane3 = plane2 + n;
    for (size_t i = 0; i < n; ++i) {
        const uint32_t bits = std::bit_cast<uint32_t>(values[i]);
        plane0[i] = char(bits);
        plane1[i] = char(bits >> 8);
        plane2[i] = char(bits >> 16);
        plane3[i] = char(bits >> 24);
    }
}

void get_shuffled_floats(std::string_view planes, float* out) {
    const size_t n = planes.size() / 4;
    const auto* plane0 = reinterpret_cast<const uint8_t*>(planes.data());
    const uint8_t* plane1 = plane0 + n;
    const uint8_t* plane2 = plane1 + n;
    const uint8_t* plane3 = plane2 + n;
    for (size_t i = 0; i < n; ++i)
        out[i] = std::bit_cast<float>(uint32_t(plane0[i]) | uint32_t(plane1[i]) << 8 | uint32_t(plane2[i]) << 16 |
                                      uint32_t(plane3[i]) << 24);
}

// A payload made of a JSON document followed by raw bytes that JSON cannot hold faithfully.
std::string json_payload(const json& document, std::string_view blob) {
    const std::string text = document.dump();
    std::string out;
    out.reserve(8 + text.size() + blob.size());
    put_u64(out, text.size());
    out += text;
    out += blob;
    return out;
}

std::pair<json, std::string_view> parse_json_payload(std::string_view payload) {
    PayloadReader reader(payload);
    const std::string_view text = reader.take(reader.u64());
    json document = json::parse(text.begin(), text.end());  // throws json::parse_error → damaged
    if (!document.is_object()) damaged("JSON part is not an object");
    return {std::move(document), payload.substr(payload.size() - reader.remaining())};
}

// ---- JSON field helpers (range-checked: a file must never make us misbehave) ---------------

template <typename Int>
Int int_from_json(const json& value, const char* what) {
    using Limits = std::numeric_limits<Int>;
    if (value.is_number_integer()) {
        if (value.is_number_unsigned() || value.get<int64_t>() >= 0) {
            const uint64_t v = value.get<uint64_t>();
            if (v <= uint64_t(Limits::max())) return Int(v);
        } else {
            const int64_t v = value.get<int64_t>();
            if (Limits::is_signed && v >= int64_t(Limits::min())) return Int(v);
        }
    }
    damaged(cat("field '", what, "' is not an integer in range"));
}

template <typename Int>
Int int_field(const json& object, const char* key) {
    return int_from_json<Int>(object.at(key), key);
}

// Non-finite values have no JSON number form, so they are written as strings.
json json_from_double(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    return value;
}

double double_from_json(const json& value, const char* what) {
    if (value.is_number()) return value.get<double>();
    if (value.is_string()) {
        const std::string& text = value.get_ref<const std::string&>();
        if (text == "nan") return std::numeric_limits<double>::quiet_NaN();
        if (text == "inf") return std::numeric_limits<double>::infinity();
        if (text == "-inf") return -std::numeric_limits<double>::infinity();
    }
    damaged(cat("field '", what, "' is not a number"));
}

float float_from_json(const json& value, const char* what) {
    const double v = double_from_json(value, what);
    // Converting an out-of-range finite double to float is undefined; a writer never produces one.
    if (std::isfinite(v) && std::fabs(v) > double(std::numeric_limits<float>::max()))
        damaged(cat("field '", what, "' is out of float range"));
    return float(v);
}

double double_field(const json& object, const char* key) { return double_from_json(object.at(key), key); }

// The beam search tree (footer; it is known only after the prompt ran): nodes as compact
// [token, parent, step, slot, score, finished] rows.
json beam_tree_json(const BeamTree& tree) {
    json nodes = json::array();
    for (const BeamNode& n : tree.nodes)
        nodes.push_back(json::array({n.token_id, n.parent, n.step, n.slot, json_from_double(n.score), n.finished}));
    return {{"beams", tree.beams}, {"best", tree.best}, {"finals", tree.finals}, {"nodes", nodes}};
}

BeamTree beam_tree_from_json(const json& value) {
    auto damaged_tree = [](const std::string& why) { fail("session file is damaged: beam tree: ", why); };
    if (!value.is_object() || !value.contains("nodes") || !value.at("nodes").is_array()) damaged_tree("not an object with nodes");
    BeamTree tree;
    tree.beams = int_field<int>(value, "beams");
    tree.best = int_field<int32_t>(value, "best");
    for (const json& row : value.at("nodes")) {
        if (!row.is_array() || row.size() != 6 || !row[0].is_number_integer() || !row[1].is_number_integer() ||
            !row[2].is_number_integer() || !row[3].is_number_integer() || !row[5].is_boolean())
            damaged_tree(cat("node ", tree.nodes.size(), " is not [token, parent, step, slot, score, finished]"));
        BeamNode n;
        n.token_id = row[0].get<int32_t>();
        n.parent = row[1].get<int32_t>();
        n.step = row[2].get<int32_t>();
        n.slot = row[3].get<int32_t>();
        n.score = double_from_json(row[4], "beam node score");
        n.finished = row[5].get<bool>();
        const int32_t index = static_cast<int32_t>(tree.nodes.size());
        // Parents come first and are one step earlier: the tree can be walked without checks later.
        if (n.parent >= index || n.parent < -1 || (n.parent >= 0 && tree.nodes[n.parent].step != n.step - 1) ||
            (n.parent < 0 && n.step != 0))
            damaged_tree(cat("node ", index, " has parent ", n.parent, " at the wrong step"));
        tree.nodes.push_back(n);
    }
    const int32_t count = static_cast<int32_t>(tree.nodes.size());
    if (!value.contains("finals") || !value.at("finals").is_array()) damaged_tree("no finals");
    for (const json& f : value.at("finals")) {
        if (!f.is_number_integer() || f.get<int32_t>() < 0 || f.get<int32_t>() >= count) damaged_tree("a final is not a node");
        tree.finals.push_back(f.get<int32_t>());
    }
    if (tree.best < -1 || tree.best >= count) damaged_tree(cat("best hypothesis ", tree.best, " is not a node"));
    return tree;
}
float float_field(const json& object, const char* key) { return float_from_json(object.at(key), key); }
bool bool_field(const json& object, const char* key) { return object.at(key).get<bool>(); }

// Strings that are not valid UTF-8 (paths, stop strings) cannot go into JSON as strings;
// they are written as {"hex": "..."} instead.
json json_from_bytes(const std::string& bytes) {
    json as_string = bytes;
    try {
        (void)as_string.dump();
        return as_string;
    } catch (const json::exception&) {
        static constexpr char kDigits[] = "0123456789abcdef";
        std::string hex;
        for (unsigned char byte : bytes) {
            hex.push_back(kDigits[byte >> 4]);
            hex.push_back(kDigits[byte & 15]);
        }
        return json{{"hex", hex}};
    }
}

std::string bytes_from_json(const json& value, const char* what) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("hex") && value["hex"].is_string()) {
        const std::string& hex = value["hex"].get_ref<const std::string&>();
        auto nibble = [&](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            damaged(cat("field '", what, "' has a bad hex digit"));
        };
        if (hex.size() % 2 != 0) damaged(cat("field '", what, "' has odd hex length"));
        std::string bytes;
        for (size_t i = 0; i < hex.size(); i += 2) bytes.push_back(char(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
        return bytes;
    }
    damaged(cat("field '", what, "' is not a string"));
}

std::string bytes_field(const json& object, const char* key) { return bytes_from_json(object.at(key), key); }

// ---- Session pieces ↔ JSON -------------------------------------------------------------------

json json_from_token(const Token& token) {
    return json::array({token.id, token.begin, token.end, token.partial, token.special});
}

Token token_from_json(const json& value) {
    if (!value.is_array() || value.size() != 5) damaged("token is not [id, begin, end, partial, special]");
    Token token;
    token.id = int_from_json<int32_t>(value[0], "token id");
    token.begin = int_from_json<uint32_t>(value[1], "token begin");
    token.end = int_from_json<uint32_t>(value[2], "token end");
    token.partial = value[3].get<bool>();
    token.special = value[4].get<bool>();
    if (token.begin > token.end) damaged("token span ends before it begins");
    return token;
}

const char* architecture_name(Architecture arch) { return arch == Architecture::Gpt2 ? "gpt2" : "llama"; }
const char* rope_pairing_name(RopePairing pairing) {
    return pairing == RopePairing::HalfSplit ? "half_split" : "interleaved";
}
const char* rope_scaling_name(RopeScaling::Kind kind) {
    switch (kind) {
        case RopeScaling::Kind::Linear: return "linear";
        case RopeScaling::Kind::Llama3: return "llama3";
        case RopeScaling::Kind::None: break;
    }
    return "none";
}

json json_from_config(const ModelConfig& config) {
    return {
        {"arch", architecture_name(config.arch)},
        {"arch_name", json_from_bytes(config.arch_name)},
        {"n_layer", config.n_layer},
        {"n_head", config.n_head},
        {"n_kv_head", config.n_kv_head},
        {"head_dim", config.head_dim},
        {"d_model", config.d_model},
        {"d_ff", config.d_ff},
        {"vocab", config.vocab},
        {"max_context", config.max_context},
        {"norm_eps", json_from_double(config.norm_eps)},
        {"rope_theta", json_from_double(config.rope_theta)},
        {"rope_pairing", rope_pairing_name(config.rope_pairing)},
        {"rope_scaling",
         {{"kind", rope_scaling_name(config.rope_scaling.kind)},
          {"factor", json_from_double(config.rope_scaling.factor)},
          {"low_freq_factor", json_from_double(config.rope_scaling.low_freq_factor)},
          {"high_freq_factor", json_from_double(config.rope_scaling.high_freq_factor)},
          {"original_context", json_from_double(config.rope_scaling.original_context)}}},
        {"qkv_bias", config.qkv_bias},
        {"output_bias", config.output_bias},
        {"tied_embeddings", config.tied_embeddings},
        {"sliding_window", config.sliding_window},
    };
}

ModelConfig config_from_json(const json& value) {
    ModelConfig config;
    const std::string arch = value.at("arch").get<std::string>();
    if (arch == "llama") config.arch = Architecture::Llama;
    else if (arch == "gpt2") config.arch = Architecture::Gpt2;
    else damaged(cat("unknown architecture '", arch, "'"));
    config.arch_name = bytes_field(value, "arch_name");
    config.n_layer = int_field<int>(value, "n_layer");
    config.n_head = int_field<int>(value, "n_head");
    config.n_kv_head = int_field<int>(value, "n_kv_head");
    config.head_dim = int_field<int>(value, "head_dim");
    config.d_model = int_field<int>(value, "d_model");
    config.d_ff = int_field<int>(value, "d_ff");
    config.vocab = int_field<int>(value, "vocab");
    config.max_context = int_field<int>(value, "max_context");
    config.norm_eps = double_field(value, "norm_eps");
    config.rope_theta = double_field(value, "rope_theta");
    const std::string pairing = value.at("rope_pairing").get<std::string>();
    if (pairing == "interleaved") config.rope_pairing = RopePairing::Interleaved;
    else if (pairing == "half_split") config.rope_pairing = RopePairing::HalfSplit;
    else damaged(cat("unknown rope pairing '", pairing, "'"));
    const json& scaling = value.at("rope_scaling");
    const std::string kind = scaling.at("kind").get<std::string>();
    if (kind == "none") config.rope_scaling.kind = RopeScaling::Kind::None;
    else if (kind == "linear") config.rope_scaling.kind = RopeScaling::Kind::Linear;
    else if (kind == "llama3") config.rope_scaling.kind = RopeScaling::Kind::Llama3;
    else damaged(cat("unknown rope scaling '", kind, "'"));
    config.rope_scaling.factor = double_field(scaling, "factor");
    config.rope_scaling.low_freq_factor = double_field(scaling, "low_freq_factor");
    config.rope_scaling.high_freq_factor = double_field(scaling, "high_freq_factor");
    config.rope_scaling.original_context = double_field(scaling, "original_context");
    config.qkv_bias = bool_field(value, "qkv_bias");
    config.output_bias = value.value("output_bias", false);  // absent in files from before the field
    config.tied_embeddings = bool_field(value, "tied_embeddings");
    config.sliding_window = int_field<int>(value, "sliding_window");
    return config;
}

json json_from_identity(const ModelIdentity& identity) {
    return {{"path", json_from_bytes(identity.path)},
            {"format", json_from_bytes(identity.format)},
            {"name", json_from_bytes(identity.name)},
            {"sha256", json_from_bytes(identity.sha256)},
            {"file_bytes", identity.file_bytes}};
}

ModelIdentity identity_from_json(const json& value) {
    ModelIdentity identity;
    identity.path = bytes_field(value, "path");
    identity.format = bytes_field(value, "format");
    identity.name = bytes_field(value, "name");
    identity.sha256 = bytes_field(value, "sha256");
    identity.file_bytes = int_field<uint64_t>(value, "file_bytes");
    return identity;
}

json json_from_sampling(const SamplingSettings& sampling) {
    json stop_strings = json::array();
    for (const std::string& stop : sampling.stop_strings) stop_strings.push_back(json_from_bytes(stop));
    return {{"greedy", sampling.greedy},
            {"temperature", json_from_double(sampling.temperature)},
            {"top_k", sampling.top_k},
            {"top_p", json_from_double(sampling.top_p)},
            {"seed", sampling.seed},
            {"beams", sampling.beams},
            {"max_new_tokens", sampling.max_new_tokens},
            {"stop_strings", stop_strings},
            {"chat", sampling.chat},
            {"stop_at_eos", sampling.stop_at_eos}};
}

SamplingSettings sampling_from_json(const json& value) {
    SamplingSettings sampling;
    sampling.greedy = bool_field(value, "greedy");
    sampling.temperature = float_field(value, "temperature");
    sampling.top_k = int_field<int>(value, "top_k");
    sampling.top_p = float_field(value, "top_p");
    sampling.seed = int_field<uint64_t>(value, "seed");
    sampling.beams = int_field<int>(value, "beams");
    sampling.max_new_tokens = int_field<int>(value, "max_new_tokens");
    const json& stops = value.at("stop_strings");
    if (!stops.is_array()) damaged("stop_strings is not an array");
    for (const json& stop : stops) sampling.stop_strings.push_back(bytes_from_json(stop, "stop_strings"));
    sampling.chat = bool_field(value, "chat");
    sampling.stop_at_eos = bool_field(value, "stop_at_eos");
    return sampling;
}

json json_from_shape(const CaptureShape& shape) {
    return {{"n_layer", shape.n_layer},
            {"n_head", shape.n_head},
            {"n_kv_head", shape.n_kv_head},
            {"head_dim", shape.head_dim},
            {"scale", json_from_double(shape.scale)},
            {"sliding_window", shape.sliding_window}};
}

CaptureShape shape_from_json(const json& value) {
    CaptureShape shape;
    shape.n_layer = int_field<int>(value, "n_layer");
    shape.n_head = int_field<int>(value, "n_head");
    shape.n_kv_head = int_field<int>(value, "n_kv_head");
    shape.head_dim = int_field<int>(value, "head_dim");
    shape.scale = float_field(value, "scale");
    shape.sliding_window = int_field<int>(value, "sliding_window");
    if (shape.n_layer <= 0 || shape.n_layer > kMaxLayers || shape.n_head <= 0 || shape.n_head > kMaxHeads ||
        shape.n_kv_head <= 0 || shape.n_kv_head > shape.n_head || shape.n_head % shape.n_kv_head != 0 ||
        shape.head_dim <= 0 || shape.head_dim > kMaxHeadDim)
        damaged(cat("capture shape is invalid (", shape.n_layer, " layers, ", shape.n_head, " heads, ",
                    shape.n_kv_head, " kv heads, head dim ", shape.head_dim, ")"));
    return shape;
}

json json_from_step(const StepRecord& step) {
    json top = json::array();
    for (const TokenAlternative& alternative : step.top)
        top.push_back(json::array({alternative.id, json_from_double(alternative.prob)}));
    return {{"token", step.token_id},
            {"text_bytes", step.text.size()},
            {"logprob", json_from_double(step.logprob)},
            {"cumulative_logprob", json_from_double(step.cumulative_logprob)},
            {"top", top},
            {"beam", step.beam_id},
            {"kv_length", step.kv_length},
            {"evicted", step.evicted},
            {"forced", step.forced},
            {"forward_ms", json_from_double(step.forward_ms)},
            {"attention_ms", step.attention_ms}};
}

StepRecord step_from_json(const json& value, PayloadReader& texts) {
    StepRecord step;
    step.token_id = int_field<int32_t>(value, "token");
    step.text = std::string(texts.take(int_field<uint64_t>(value, "text_bytes")));
    step.logprob = float_field(value, "logprob");
    step.cumulative_logprob = double_field(value, "cumulative_logprob");
    const json& top = value.at("top");
    if (!top.is_array()) damaged("step alternatives are not an array");
    for (const json& entry : top) {
        if (!entry.is_array() || entry.size() != 2) damaged("step alternative is not [id, prob]");
        step.top.push_back({int_from_json<int32_t>(entry[0], "alternative id"), float_from_json(entry[1], "prob")});
    }
    step.beam_id = int_field<int32_t>(value, "beam");
    step.kv_length = int_field<int64_t>(value, "kv_length");
    step.evicted = int_field<int64_t>(value, "evicted");
    // Timings and the forced flag came with the live debugger; older files have none.
    if (value.contains("forced")) step.forced = bool_field(value, "forced");
    if (value.contains("forward_ms")) step.forward_ms = double_field(value, "forward_ms");
    if (value.contains("attention_ms")) {
        const json& times = value.at("attention_ms");
        if (!times.is_array() || times.size() > kMaxLayers) damaged("step attention timings are not a list of layers");
        for (const json& t : times) step.attention_ms.push_back(float_from_json(t, "attention_ms"));
    }
    return step;
}

std::string utc_timestamp() {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm parts{};
    gmtime_r(&now, &parts);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
    return text;
}

// Bytes of the generated tokens at the end of session.text (Session: "prompt text followed by
// the generated bytes"). Throws if the text does not end with them: the file could not
// rebuild the same text otherwise.
size_t prompt_text_bytes(const Session& session) {
    size_t at = session.text.size();
    for (size_t t = session.steps.size(); t-- > 0;) {
        const std::string& piece = session.steps[t].text;
        if (piece.size() > at || session.text.compare(at - piece.size(), piece.size(), piece) != 0)
            fail("cannot save session: its text does not end with the bytes of its generated tokens (step ", t, ")");
        at -= piece.size();
    }
    return at;
}

int64_t capture_floats_per_position(const CaptureShape& shape) {
    return int64_t(shape.n_layer) *
           (int64_t(shape.n_head) * shape.head_dim + int64_t(shape.n_kv_head) * shape.head_dim + shape.n_head);
}

std::string capture_payload(const CaptureStore& store, int64_t first, int64_t count) {
    const CaptureShape& shape = store.shape();
    const int64_t q_row = int64_t(shape.n_head) * shape.head_dim;
    const int64_t k_row = int64_t(shape.n_kv_head) * shape.head_dim;
    std::vector<float> floats(static_cast<size_t>(count * capture_floats_per_position(shape)));
    float* out = floats.data();
    for (int layer = 0; layer < shape.n_layer; ++layer) {
        store.copy_q(layer, first, count, out);
        out += count * q_row;
        store.copy_k(layer, first, count, out);
        out += count * k_row;
        store.copy_lse(layer, first, count, out);
        out += count * shape.n_head;
    }
    std::string payload;
    payload.reserve(24 + floats.size() * 4);
    put_u64(payload, uint64_t(first));
    put_u64(payload, uint64_t(count));
    put_u32(payload, uint32_t(shape.n_layer));
    put_u32(payload, kByteShuffledFloat32);
    put_shuffled_floats(payload, floats);
    return payload;
}

std::string hidden_payload(const CaptureStore& store, int64_t first, int64_t count) {
    std::vector<float> floats(static_cast<size_t>(count * store.hidden_width()));
    store.copy_hidden(first, count, floats.data());
    std::string payload;
    payload.reserve(24 + floats.size() * 4);
    put_u64(payload, uint64_t(first));
    put_u64(payload, uint64_t(count));
    put_u32(payload, uint32_t(store.hidden_width()));
    put_u32(payload, kByteShuffledFloat32);
    put_shuffled_floats(payload, floats);
    return payload;
}

bool overview_is_saveable(const CaptureStore& store) {
    if (!store.overview_complete()) return false;
    const int64_t blocks = store.overview_blocks();
    const size_t cells = static_cast<size_t>(blocks * (blocks + 1) / 2);
    for (int layer = 0; layer < store.shape().n_layer; ++layer)
        for (int head = 0; head < store.shape().n_head; ++head)
            if (store.overview_sums(layer, head).size() != cells || store.overview_maxes(layer, head).size() != cells)
                return false;
    return true;
}

std::string overview_payload(const CaptureStore& store, int layer, int head) {
    const std::span<const float> sums = store.overview_sums(layer, head);
    const std::span<const float> maxes = store.overview_maxes(layer, head);
    std::string payload;
    payload.reserve(24 + 8 * sums.size());
    put_u32(payload, uint32_t(layer));
    put_u32(payload, uint32_t(head));
    put_u64(payload, sums.size());
    put_u32(payload, kByteShuffledFloat32);
    put_u32(payload, 0);
    put_shuffled_floats(payload, sums);
    put_shuffled_floats(payload, maxes);
    return payload;
}

// zstd contexts are costly to create; one per thread is reused for every chunk.
ZSTD_CCtx* compression_context() {
    thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> context(ZSTD_createCCtx(), ZSTD_freeCCtx);
    return context.get();
}

ZSTD_DCtx* decompression_context() {
    thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> context(ZSTD_createDCtx(), ZSTD_freeDCtx);
    return context.get();
}

void sync_directory_of(const std::string& path) {
    std::filesystem::path directory = std::filesystem::path(path).parent_path();
    if (directory.empty()) directory = ".";
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail("cannot open directory '", directory.string(), "' to sync it: ", errno_text());
    const int result = ::fsync(fd);
    const int saved_errno = errno;
    ::close(fd);
    // Some file systems cannot fsync a directory (EINVAL); the rename itself has happened.
    if (result != 0 && saved_errno != EINVAL)
        fail("cannot sync directory '", directory.string(), "': ", std::strerror(saved_errno));
}

unsigned codec_threads() { return std::clamp(std::thread::hardware_concurrency(), 1u, kMaxCodecThreads); }

// One chunk as stored: the 32-byte header, then the payload as a checksummed zstd frame.
std::string encode_chunk(uint32_t type, std::string_view raw) {
    if (raw.size() > kMaxChunkRawBytes)
        fail("cannot save session: a chunk of ", raw.size(), " bytes exceeds the format's limit of ",
             kMaxChunkRawBytes, " bytes");
    ZSTD_CCtx* context = compression_context();
    ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, kCompressionLevel);
    ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1);     // zstd verifies it on decompression
    ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1);  // lets a reader check the raw size
    std::string chunk(kChunkHeaderBytes + ZSTD_compressBound(raw.size()), '\0');
    char* frame = chunk.data() + kChunkHeaderBytes;
    const size_t frame_size =
        ZSTD_compress2(context, frame, chunk.size() - kChunkHeaderBytes, raw.data(), raw.size());
    if (ZSTD_isError(frame_size)) fail("cannot compress session data: ", ZSTD_getErrorName(frame_size));
    chunk.resize(kChunkHeaderBytes + frame_size);

    std::string header;
    put_u32(header, type);
    put_u32(header, 0);
    put_u64(header, frame_size);
    put_u64(header, raw.size());
    put_u64(header, get_u32(chunk.data() + chunk.size() - 4));  // the frame's content checksum
    std::memcpy(chunk.data(), header.data(), kChunkHeaderBytes);
    return chunk;
}

// Encodes chunks 0..count-1 (payload(i) builds chunk i's raw bytes, about chunk_bytes long) on
// several threads when they are large enough to be worth it, and hands them to `write` in order.
template <typename MakePayload, typename Write>
void encode_chunks_in_parallel(uint32_t type, size_t count, uint64_t chunk_bytes, MakePayload make_payload,
                               Write write) {
    const size_t threads = codec_threads();
    const std::launch policy =
        threads > 1 && count > 1 && chunk_bytes >= kMinParallelChunkBytes ? std::launch::async : std::launch::deferred;
    for (size_t first = 0; first < count; first += threads) {
        std::vector<std::future<std::string>> encoded;
        for (size_t i = first; i < std::min(count, first + threads); ++i)
            encoded.push_back(std::async(policy, [&, i] { return encode_chunk(type, make_payload(i)); }));
        for (std::future<std::string>& chunk : encoded) write(chunk.get());
    }
}

}  // namespace

// ---- Writer --------------------------------------------------------------------------------

SessionWriter::SessionWriter(const std::string& path, const Session& session)
    : path_(path), partial_path_(path + ".partial") {
    if (path.empty()) fail("cannot save session: empty file name");
    file_ = std::fopen(partial_path_.c_str(), "wb");
    if (!file_) fail("cannot create session file ", quoted(partial_path_), ": ", errno_text());
    try {
        std::string header(kFileMagic, sizeof kFileMagic);
        put_u32(header, kFormatVersion);
        put_u32(header, kKnownFlags);
        if (std::fwrite(header.data(), 1, header.size(), file_) != header.size())
            fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());

        const size_t prompt_bytes = prompt_text_bytes(session);
        const size_t prompt_token_count =
            static_cast<size_t>(std::clamp<int64_t>(session.prompt_tokens, 0, session.positions()));
        json tokens = json::array();
        for (size_t i = 0; i < prompt_token_count; ++i) {
            const Token& token = session.tokens[i];
            if (token.begin > token.end || token.end > prompt_bytes)
                fail("cannot save session: prompt token ", i, " has span [", token.begin, ", ", token.end,
                     ") outside the prompt text (", prompt_bytes, " bytes)");
            tokens.push_back(json_from_token(token));
        }
        const json meta = {
            {"format", kFormatVersion},
            {"attnscope_version", ATTNSCOPE_VERSION},
            {"created", utc_timestamp()},
            {"prompt_tokens", session.prompt_tokens},
            {"prompt_text_bytes", prompt_bytes},
            {"tokens", tokens},
            {"model", json_from_config(session.config)},
            {"identity", json_from_identity(session.identity)},
            {"sampling", json_from_sampling(session.sampling)},
            {"capture", session.capture ? json_from_shape(session.capture->shape()) : json(nullptr)},
        };
        write_chunk(kMetaChunk, json_payload(meta, std::string_view(session.text).substr(0, prompt_bytes)));
        tokens_written_ = prompt_token_count;
        if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
            fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
    } catch (...) {
        // Nothing recoverable was written yet: leave no debris behind.
        std::fclose(file_);
        file_ = nullptr;
        std::remove(partial_path_.c_str());
        throw;
    }
}

SessionWriter::~SessionWriter() {
    if (file_) std::fclose(file_);  // the .partial file stays for load_session() to recover
}

void SessionWriter::write_chunk(uint32_t type, const std::string& raw) {
    const std::string chunk = encode_chunk(type, raw);
    if (std::fwrite(chunk.data(), 1, chunk.size(), file_) != chunk.size())
        fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
}

void SessionWriter::flush(const Session& session) {
    if (!file_) fail("session file ", quoted(path_), " is already finished");
    if (session.capture) {
        const CaptureStore& store = *session.capture;
        const int64_t available = store.positions();
        if (available < positions_written_)
            fail("cannot append to session file ", quoted(partial_path_), ": the capture shrank from ",
                 positions_written_, " to ", available, " positions after they were written");
        const int64_t bytes_per_position = capture_floats_per_position(store.shape()) * int64_t(sizeof(float));
        const int64_t per_chunk = std::max<int64_t>(1, int64_t(kTargetCaptureChunkBytes) / bytes_per_position);
        const int64_t first = positions_written_;
        const size_t chunks = size_t((available - first + per_chunk - 1) / per_chunk);
        encode_chunks_in_parallel(
            kCaptureChunk, chunks, uint64_t(std::min(per_chunk, available - first) * bytes_per_position),
            [&](size_t i) {
                const int64_t begin = first + int64_t(i) * per_chunk;
                return capture_payload(store, begin, std::min(per_chunk, available - begin));
            },
            [&](const std::string& chunk) {
                if (std::fwrite(chunk.data(), 1, chunk.size(), file_) != chunk.size())
                    fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
                positions_written_ += std::min(per_chunk, available - positions_written_);
            });
        // Hidden states of positions already written (they never run ahead of their Q/K/LSE).
        const int64_t hidden_available = std::min(store.hidden_positions(), positions_written_);
        if (hidden_available < hidden_written_)
            fail("cannot append to session file ", quoted(partial_path_), ": the hidden states shrank from ",
                 hidden_written_, " to ", hidden_available, " positions after they were written");
        if (hidden_available > hidden_written_) {
            const int64_t hidden_bytes = int64_t(store.hidden_width()) * int64_t(sizeof(float));
            const int64_t per_hidden_chunk = std::max<int64_t>(1, int64_t(kTargetCaptureChunkBytes) / hidden_bytes);
            const int64_t hidden_first = hidden_written_;
            const size_t hidden_chunks = size_t((hidden_available - hidden_first + per_hidden_chunk - 1) / per_hidden_chunk);
            encode_chunks_in_parallel(
                kHiddenChunk, hidden_chunks,
                uint64_t(std::min(per_hidden_chunk, hidden_available - hidden_first) * hidden_bytes),
                [&](size_t i) {
                    const int64_t begin = hidden_first + int64_t(i) * per_hidden_chunk;
                    return hidden_payload(store, begin, std::min(per_hidden_chunk, hidden_available - begin));
                },
                [&](const std::string& chunk) {
                    if (std::fwrite(chunk.data(), 1, chunk.size(), file_) != chunk.size())
                        fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
                    hidden_written_ += std::min(per_hidden_chunk, hidden_available - hidden_written_);
                });
        }
    }
    if (session.steps.size() < steps_written_ || session.tokens.size() < tokens_written_)
        fail("cannot append to session file ", quoted(partial_path_),
             ": steps or tokens were removed after they were written");
    if (session.steps.size() > steps_written_ || session.tokens.size() > tokens_written_) {
        prompt_text_bytes(session);  // checks the text still ends with the generated bytes
        json steps = json::array();
        std::string step_texts;
        for (size_t t = steps_written_; t < session.steps.size(); ++t) {
            steps.push_back(json_from_step(session.steps[t]));
            step_texts += session.steps[t].text;
        }
        json tokens = json::array();
        for (size_t i = tokens_written_; i < session.tokens.size(); ++i) {
            const Token& token = session.tokens[i];
            if (token.begin > token.end || token.end > session.text.size())
                fail("cannot save session: token ", i, " has span [", token.begin, ", ", token.end,
                     ") outside the text (", session.text.size(), " bytes)");
            tokens.push_back(json_from_token(token));
        }
        const json document = {{"first_step", steps_written_},
                               {"first_token", tokens_written_},
                               {"steps", steps},
                               {"tokens", tokens}};
        write_chunk(kStepsChunk, json_payload(document, step_texts));
        steps_written_ = session.steps.size();
        tokens_written_ = session.tokens.size();
    }
    if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
        fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
}

void SessionWriter::finish(const Session& session) {
    flush(session);
    size_t overview_chunks = 0;
    if (session.capture && overview_is_saveable(*session.capture)) {
        const CaptureStore& store = *session.capture;
        const int heads = store.shape().n_head;
        overview_chunks = size_t(store.shape().n_layer) * size_t(heads);
        encode_chunks_in_parallel(
            kOverviewChunk, overview_chunks, 8 * store.overview_sums(0, 0).size(),
            [&](size_t i) { return overview_payload(store, int(i / size_t(heads)), int(i % size_t(heads))); },
            [&](const std::string& chunk) {
                if (std::fwrite(chunk.data(), 1, chunk.size(), file_) != chunk.size())
                    fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
            });
    }
    json keyframes = json::array();
    for (const Keyframe& keyframe : session.keyframes)
        keyframes.push_back({{"step", keyframe.step}, {"name", json_from_bytes(keyframe.name)}});
    json head_labels = json::array();
    for (const HeadLabel& label : session.head_labels)
        head_labels.push_back({{"layer", label.layer}, {"head", label.head}, {"text", json_from_bytes(label.text)}});
    json totals = {{"positions", positions_written_},
                   {"hidden_positions", hidden_written_},
                   {"steps", steps_written_},
                   {"tokens", tokens_written_},
                   {"overview_chunks", overview_chunks},
                   {"keyframes", keyframes},
                   {"head_labels", head_labels},
                   {"prefill_ms", json_from_double(session.prefill_ms)}};
    if (!session.beam_tree.empty()) totals["beam_tree"] = beam_tree_json(session.beam_tree);
    totals["provenance"] = session_provenance_for_save(session);  // engine/provenance.h
    write_chunk(kFooterChunk, json_payload(totals, {}));
    if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
        fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
    const int close_result = std::fclose(file_);
    file_ = nullptr;
    if (close_result != 0) fail("cannot write session file ", quoted(partial_path_), ": ", errno_text());
    if (std::rename(partial_path_.c_str(), path_.c_str()) != 0)
        fail("cannot rename ", quoted(partial_path_), " to ", quoted(path_), ": ", errno_text());
    sync_directory_of(path_);
    finished_ = true;
}

void save_session(const std::string& path, const Session& session) {
    const std::string partial_path = path + ".partial";
    bool created = false;
    try {
        SessionWriter writer(path, session);
        created = true;
        writer.finish(session);
    } catch (...) {
        // A one-shot save that failed has nothing worth recovering; the final path is untouched.
        if (created) std::remove(partial_path.c_str());
        throw;
    }
}

// ---- Reader --------------------------------------------------------------------------------

namespace {

// A chunk as read from the file, its header checked against its frame, not yet decompressed.
struct StoredChunk {
    uint32_t type = 0;
    uint64_t raw_size = 0;
    std::string frame;
};

struct Chunk {
    uint32_t type = 0;
    std::string payload;        // decompressed (for capture chunks, only the fixed header)
    std::vector<float> floats;  // capture chunks: the float section, un-shuffled
};

class ChunkReader {
public:
    ChunkReader(std::FILE* file, uint64_t file_size, uint64_t offset)
        : file_(file), file_size_(file_size), offset_(offset) {}

    // The next chunk, std::nullopt at the clean end of the file; DamagedChunk if cut short or
    // inconsistent. Sizes are checked against the file and the format's limit before allocating.
    std::optional<StoredChunk> next() {
        if (offset_ == file_size_) return std::nullopt;
        if (file_size_ - offset_ < kChunkHeaderBytes) damaged("chunk header cut short");
        char header[kChunkHeaderBytes];
        read_exactly(header, sizeof header);
        StoredChunk chunk;
        chunk.type = get_u32(header);
        const uint32_t reserved = get_u32(header + 4);
        const uint64_t compressed_size = get_u64(header + 8);
        chunk.raw_size = get_u64(header + 16);
        const uint64_t checksum = get_u64(header + 24);
        if (chunk.type != kMetaChunk && chunk.type != kCaptureChunk && chunk.type != kStepsChunk &&
            chunk.type != kOverviewChunk && chunk.type != kFooterChunk && chunk.type != kHiddenChunk)
            damaged(cat("unknown chunk type 0x", std::hex, chunk.type));
        const std::string name = chunk_type_name(chunk.type) + " chunk";
        if (reserved != 0) damaged(name + " header has reserved bits set");
        if (chunk.raw_size > kMaxChunkRawBytes)
            damaged(cat(name, " claims ", chunk.raw_size, " bytes, over the format's limit"));
        if (compressed_size > ZSTD_compressBound(chunk.raw_size) || compressed_size < 9)
            damaged(name + " sizes are inconsistent");
        if (compressed_size > file_size_ - offset_) damaged(name + " cut short");
        if (checksum > std::numeric_limits<uint32_t>::max()) damaged(name + " checksum is malformed");

        chunk.frame.resize(compressed_size);
        read_exactly(chunk.frame.data(), chunk.frame.size());
        const std::string& frame = chunk.frame;
        // Frame magic, then the frame header descriptor whose bit 2 is Content_Checksum_flag (RFC 8878).
        if (get_u32(frame.data()) != ZSTD_MAGICNUMBER || (uint8_t(frame[4]) & 0x04) == 0)
            damaged(name + " payload is not a checksummed zstd frame");
        if (ZSTD_findFrameCompressedSize(frame.data(), frame.size()) != compressed_size ||
            ZSTD_getFrameContentSize(frame.data(), frame.size()) != chunk.raw_size ||
            get_u32(frame.data() + frame.size() - 4) != checksum)
            damaged(name + " header does not match its payload");
        return chunk;
    }

private:
    void read_exactly(char* out, size_t n) {
        if (std::fread(out, 1, n, file_) != n) damaged(cat("read failed at offset ", offset_));
        offset_ += n;
    }

    std::FILE* file_;
    uint64_t file_size_;
    uint64_t offset_;
};

constexpr size_t kCaptureHeaderBytes = 24;

// Decompresses a chunk (zstd verifies the content checksum) and un-shuffles capture floats.
// Thread-safe, so that several chunks decode at once.
Chunk decode_chunk(StoredChunk stored) {
    Chunk chunk;
    chunk.type = stored.type;
    chunk.payload.resize(stored.raw_size);
    const size_t produced = ZSTD_decompressDCtx(decompression_context(), chunk.payload.data(), stored.raw_size,
                                                stored.frame.data(), stored.frame.size());
    if (ZSTD_isError(produced))
        damaged(cat(chunk_type_name(stored.type), " chunk payload is corrupt (", ZSTD_getErrorName(produced), ")"));
    if (produced != stored.raw_size) damaged(chunk_type_name(stored.type) + " chunk payload has the wrong size");
    // Capture and hidden-state chunks share the layout of their fixed header (24 bytes) and floats.
    if (chunk.type == kCaptureChunk || chunk.type == kHiddenChunk) {
        if (chunk.payload.size() < kCaptureHeaderBytes || (chunk.payload.size() - kCaptureHeaderBytes) % 4 != 0)
            damaged(chunk_type_name(stored.type) + " chunk has a partial float");
        chunk.floats.resize((chunk.payload.size() - kCaptureHeaderBytes) / 4);
        get_shuffled_floats(std::string_view(chunk.payload).substr(kCaptureHeaderBytes), chunk.floats.data());
        chunk.payload.resize(kCaptureHeaderBytes);
    }
    return chunk;
}

struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
};

// Builds a Session chunk by chunk; every chunk is validated completely before it changes anything.
class SessionLoader {
public:
    explicit SessionLoader(uint32_t version) : version_(version) {}
    // Why reading stopped before the footer (kept in Session::recovery_problem).
    void note_damage(std::string reason) {
        if (problem_.empty()) problem_ = std::move(reason);
    }

    void apply_meta(const Chunk& chunk) {
        if (chunk.type != kMetaChunk) damaged("the first chunk is not the session metadata");
        auto [meta, prompt_text] = parse_json_payload(chunk.payload);
        if (int_field<uint32_t>(meta, "format") != version_) damaged("metadata names another format version");
        session_.prompt_tokens = int_field<int64_t>(meta, "prompt_tokens");
        if (session_.prompt_tokens < 0) damaged("negative prompt token count");
        if (int_field<uint64_t>(meta, "prompt_text_bytes") != prompt_text.size())
            damaged("prompt text size does not match");
        session_.text = std::string(prompt_text);
        const json& tokens = meta.at("tokens");
        if (!tokens.is_array()) damaged("tokens are not an array");
        for (const json& value : tokens) {
            const Token token = token_from_json(value);
            if (token.end > session_.text.size()) damaged("a prompt token's span lies outside the prompt text");
            session_.tokens.push_back(token);
        }
        if (int64_t(session_.tokens.size()) > session_.prompt_tokens) damaged("more prompt tokens than declared");
        session_.config = config_from_json(meta.at("model"));
        session_.identity = identity_from_json(meta.at("identity"));
        session_.sampling = sampling_from_json(meta.at("sampling"));
        if (!meta.at("capture").is_null())
            session_.capture = std::make_unique<CaptureStore>(shape_from_json(meta.at("capture")));
        prompt_text_bytes_ = session_.text.size();
    }

    void apply(const Chunk& chunk) {
        if (footer_seen_) damaged("data after the footer");
        switch (chunk.type) {
            case kCaptureChunk: apply_capture(chunk); break;
            case kStepsChunk: apply_steps(chunk.payload); break;
            case kOverviewChunk: apply_overview(chunk.payload); break;
            case kFooterChunk: apply_footer(chunk.payload); break;
            case kHiddenChunk: apply_hidden(chunk); break;
            default: damaged("a second metadata chunk");
        }
    }

    bool footer_seen() const { return footer_seen_; }

    // Finishes the session: a complete file gets its saved overview; a file cut short keeps
    // what is consistent (positions all layers have, the steps and tokens of those positions).
    Session finish() {
        const bool complete = footer_seen_;
        if (complete && session_.capture && !overviews_.empty()) {
            try {
                for (size_t i = 0; i < overviews_.size(); ++i) {
                    const size_t cells = overviews_[i].size() / 2;
                    const std::span<const float> both = overviews_[i];
                    session_.capture->restore_overview(int(i / size_t(session_.capture->shape().n_head)),
                                                       int(i % size_t(session_.capture->shape().n_head)),
                                                       both.subspan(0, cells), both.subspan(cells));
                }
            } catch (const Error&) {
                session_.capture->clear_overview();  // rebuilt from Q, K and LSE below
                overviews_.clear();
            }
        }
        if (!complete) {
            session_.recovered_incomplete = true;
            session_.recovery_problem = problem_.empty() ? "the file ends before its footer" : problem_;
            if (session_.capture) {
                const int64_t positions = session_.capture->positions();
                const int64_t steps = std::max<int64_t>(0, positions - session_.prompt_tokens);
                if (int64_t(session_.steps.size()) > steps) session_.steps.resize(size_t(steps));
                if (int64_t(session_.tokens.size()) > positions) session_.tokens.resize(size_t(positions));
                session_.prompt_tokens = std::min(session_.prompt_tokens, positions);
            }
            size_t text_bytes = prompt_text_bytes_;
            for (const StepRecord& step : session_.steps) text_bytes += step.text.size();
            session_.text.resize(text_bytes);
            // Tokens always point into the text (true for what a writer produces; kept true here).
            const auto outside = std::find_if(session_.tokens.begin(), session_.tokens.end(),
                                              [&](const Token& token) { return token.end > text_bytes; });
            session_.tokens.erase(outside, session_.tokens.end());
        }
        if (session_.capture && session_.capture->positions() > 0 && (!complete || overviews_.empty()))
            rebuild_overview(*session_.capture, 0);
        return std::move(session_);
    }

private:
    void apply_capture(const Chunk& chunk) {
        if (!session_.capture) damaged("capture data in a session without a capture");
        if (!overviews_.empty()) damaged("capture data after the overview");
        CaptureStore& store = *session_.capture;
        const CaptureShape& shape = store.shape();
        PayloadReader reader(chunk.payload);
        const uint64_t first = reader.u64();
        const uint64_t count = reader.u64();
        const uint32_t layers = reader.u32();
        const uint32_t encoding = reader.u32();
        if (first != uint64_t(store.positions()))
            damaged(cat("capture chunk starts at position ", first, ", expected ", store.positions()));
        if (layers != uint32_t(shape.n_layer)) damaged("capture chunk has the wrong number of layers");
        if (encoding != kByteShuffledFloat32) damaged(cat("unknown float encoding ", encoding));
        const uint64_t floats_per_position = uint64_t(capture_floats_per_position(shape));
        if (count == 0 || count > chunk.floats.size() / floats_per_position ||
            chunk.floats.size() != count * floats_per_position)
            damaged("capture chunk size does not match its positions");
        const int64_t n = int64_t(count);
        const int64_t q_row = int64_t(shape.n_head) * shape.head_dim;
        const int64_t k_row = int64_t(shape.n_kv_head) * shape.head_dim;
        const float* at = chunk.floats.data();
        for (int layer = 0; layer < shape.n_layer; ++layer) {
            const float* q = at;
            const float* k = q + n * q_row;
            const float* lse = k + n * k_row;
            store.record_layer(layer, int64_t(first), n, q, k, lse);
            at = lse + n * shape.n_head;
        }
    }

    void apply_hidden(const Chunk& chunk) {
        if (version_ < 2) damaged("hidden-state chunk in a format 1 file");
        if (!session_.capture) damaged("hidden-state chunk in a session without a capture");
        if (!overviews_.empty()) damaged("hidden-state chunk after the overview");
        CaptureStore& store = *session_.capture;
        PayloadReader reader(chunk.payload);
        const uint64_t first = reader.u64();
        const uint64_t count = reader.u64();
        const uint32_t width = reader.u32();
        const uint32_t encoding = reader.u32();
        if (first != uint64_t(store.hidden_positions()))
            damaged(cat("hidden-state chunk starts at position ", first, ", expected ", store.hidden_positions()));
        if (width == 0 || width > uint32_t(kMaxHiddenWidth) ||
            (store.hidden_width() != 0 && width != uint32_t(store.hidden_width())))
            damaged(cat("hidden-state chunk has width ", width));
        if (encoding != kByteShuffledFloat32) damaged(cat("hidden-state chunk has unknown float encoding ", encoding));
        if (count == 0 || count > chunk.floats.size() / width || chunk.floats.size() != count * width)
            damaged("hidden-state chunk size does not match its positions");
        if (first + count > uint64_t(store.positions()))
            damaged(cat("hidden-state chunk reaches position ", first + count, ", beyond the ", store.positions(),
                        " captured"));
        store.record_hidden(int64_t(first), int64_t(count), int(width), chunk.floats.data());
    }

    void apply_steps(const std::string& payload) {
        if (!overviews_.empty()) damaged("steps after the overview");
        auto [document, texts_blob] = parse_json_payload(payload);
        if (int_field<uint64_t>(document, "first_step") != session_.steps.size() ||
            int_field<uint64_t>(document, "first_token") != session_.tokens.size())
            damaged("steps chunk does not continue the previous one");
        PayloadReader texts(texts_blob);
        std::vector<StepRecord> steps;
        size_t text_bytes = session_.text.size();
        const json& step_values = document.at("steps");
        const json& token_values = document.at("tokens");
        if (!step_values.is_array() || !token_values.is_array()) damaged("steps or tokens are not arrays");
        for (const json& value : step_values) {
            steps.push_back(step_from_json(value, texts));
            text_bytes += steps.back().text.size();
        }
        if (texts.remaining() != 0) damaged("steps chunk has unused text bytes");
        std::vector<Token> tokens;
        for (const json& value : token_values) {
            tokens.push_back(token_from_json(value));
            if (tokens.back().end > text_bytes) damaged("a token's span lies outside the text");
        }
        for (StepRecord& step : steps) {
            session_.text += step.text;
            session_.steps.push_back(std::move(step));
        }
        session_.tokens.insert(session_.tokens.end(), tokens.begin(), tokens.end());
    }

    void apply_overview(const std::string& payload) {
        if (!session_.capture) damaged("overview in a session without a capture");
        const CaptureShape& shape = session_.capture->shape();
        PayloadReader reader(payload);
        const uint32_t layer = reader.u32();
        const uint32_t head = reader.u32();
        const uint64_t cells = reader.u64();
        const uint32_t encoding = reader.u32();
        const uint32_t reserved = reader.u32();
        const size_t index = overviews_.size();
        if (layer != index / size_t(shape.n_head) || head != index % size_t(shape.n_head) ||
            index >= size_t(shape.n_layer) * size_t(shape.n_head))
            damaged("overview chunks are out of order");
        if (encoding != kByteShuffledFloat32 || reserved != 0) damaged("unknown overview encoding");
        const uint64_t blocks = uint64_t(session_.capture->overview_blocks());
        if (cells != blocks * (blocks + 1) / 2 || reader.remaining() != cells * 8)
            damaged("overview size does not match the captured positions");
        std::vector<float> both(cells * 2);  // sums then maxes, each shuffled on its own
        get_shuffled_floats(reader.take(cells * 4), both.data());
        get_shuffled_floats(reader.take(cells * 4), both.data() + cells);
        overviews_.push_back(std::move(both));
    }

    void apply_footer(const std::string& payload) {
        auto [totals, rest] = parse_json_payload(payload);
        if (!rest.empty()) damaged("footer has trailing bytes");
        const int64_t positions = session_.capture ? session_.capture->positions() : 0;
        const size_t expected_overviews =
            int_field<uint64_t>(totals, "overview_chunks") == 0 || !session_.capture
                ? 0
                : size_t(session_.capture->shape().n_layer) * size_t(session_.capture->shape().n_head);
        if (int_field<int64_t>(totals, "positions") != positions ||
            int_field<uint64_t>(totals, "steps") != session_.steps.size() ||
            int_field<uint64_t>(totals, "tokens") != session_.tokens.size() ||
            int_field<uint64_t>(totals, "overview_chunks") != expected_overviews ||
            overviews_.size() != expected_overviews)
            damaged("footer totals do not match the chunks before it");
        const int64_t hidden = session_.capture ? session_.capture->hidden_positions() : 0;
        if (totals.contains("hidden_positions") ? int_field<int64_t>(totals, "hidden_positions") != hidden : hidden != 0)
            damaged(cat("footer counts ", totals.value("hidden_positions", json(0)).dump(), " hidden states, the file holds ",
                        hidden));
        if (totals.contains("keyframes")) {
            const json& keyframes = totals.at("keyframes");
            if (!keyframes.is_array()) damaged("footer keyframes are not a list");
            for (const json& entry : keyframes) {
                Keyframe keyframe{int_field<int64_t>(entry, "step"), bytes_field(entry, "name")};
                if (keyframe.step < 0 || keyframe.step >= static_cast<int64_t>(session_.steps.size()))
                    damaged(cat("keyframe at step ", keyframe.step, " is outside the ", session_.steps.size(), " steps"));
                session_.keyframes.push_back(std::move(keyframe));
            }
        }
        // User head labels came with `attnscope heads`; older files have none.
        if (totals.contains("head_labels")) {
            const json& labels = totals.at("head_labels");
            if (!labels.is_array()) damaged("footer head labels are not a list");
            std::vector<HeadLabel> parsed;
            for (const json& entry : labels) {
                HeadLabel label{int_field<int>(entry, "layer"), int_field<int>(entry, "head"), bytes_field(entry, "text")};
                const bool in_range =
                    label.layer >= 0 && label.head >= 0 &&
                    (!session_.capture || (label.layer < session_.capture->shape().n_layer &&
                                           label.head < session_.capture->shape().n_head));
                if (!in_range) damaged(cat("head label '", label.text, "' names layer ", label.layer, " head ", label.head,
                                           ", which the capture does not have"));
                parsed.push_back(std::move(label));
            }
            session_.head_labels = std::move(parsed);
        }
        if (totals.contains("prefill_ms")) session_.prefill_ms = double_field(totals, "prefill_ms");
        if (totals.contains("beam_tree")) session_.beam_tree = beam_tree_from_json(totals.at("beam_tree"));
        // The capture's provenance record; files from before it have none.
        if (totals.contains("provenance")) {
            if (!totals.at("provenance").is_object()) damaged("footer provenance is not an object");
            session_.provenance = totals.at("provenance").dump();
        }
        footer_seen_ = true;
    }

    uint32_t version_;
    std::string problem_;
    Session session_;
    size_t prompt_text_bytes_ = 0;
    std::vector<std::vector<float>> overviews_;  // [layer * n_head + head]: sums then maxes
    bool footer_seen_ = false;
};

}  // namespace

Session load_session(const std::string& path) {
    std::error_code error;
    const auto status = std::filesystem::status(path, error);
    if (!std::filesystem::exists(status)) {
        // A capture that was killed (or is still running) leaves only its .partial file.
        if (std::filesystem::exists(path + ".partial", error))
            fail("cannot open session file ", quoted(path), ": no such file, but ", quoted(path + ".partial"),
                 " exists (an unfinished capture); open that to recover its complete steps");
        fail("cannot open session file ", quoted(path), ": no such file");
    }
    if (std::filesystem::is_directory(status))
        fail("cannot open session file ", quoted(path), ": it is a directory, not a session file");
    std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
    if (!file) fail("cannot open session file ", quoted(path), ": ", errno_text());
    struct stat info{};
    if (::fstat(::fileno(file.get()), &info) != 0)
        fail("cannot read session file ", quoted(path), ": ", errno_text());
    if (!S_ISREG(info.st_mode)) fail("cannot open session file ", quoted(path), ": not a regular file");
    const uint64_t file_size = uint64_t(info.st_size);
    if (file_size == 0) fail("session file ", quoted(path), " is empty");

    char header[kFileHeaderBytes];
    const size_t header_read = std::fread(header, 1, sizeof header, file.get());
    const size_t magic_bytes = std::min(header_read, sizeof kFileMagic);
    if (std::memcmp(header, kFileMagic, magic_bytes) != 0)
        fail(quoted(path), " is not an attnscope session file (its first bytes are not the .attn signature)");
    if (header_read < sizeof header)
        fail("session file ", quoted(path), " is not a valid or complete session: it ends inside its header");
    const uint32_t version = get_u32(header + 8);
    const uint32_t flags = get_u32(header + 12);
    if (version > kFormatVersion)
        fail("session file ", quoted(path), " was written by a newer attnscope (format ", version,
             "), this build reads up to ", kFormatVersion);
    if (version < kOldestFormatVersion) fail("session file ", quoted(path), " is not a valid session: its header is damaged (format 0)");
    if ((flags & ~kKnownFlags) != 0)
        fail("session file ", quoted(path), " uses features this build does not know (flags 0x", std::hex, flags,
             "); it was probably written by a newer attnscope");

    ChunkReader chunks(file.get(), file_size, kFileHeaderBytes);
    SessionLoader loader(version);
    try {
        std::optional<StoredChunk> meta = chunks.next();
        if (!meta) damaged("it has no metadata");
        loader.apply_meta(decode_chunk(std::move(*meta)));
    } catch (const DamagedChunk& problem) {
        fail("session file ", quoted(path), " is not a valid or complete session: its metadata is damaged or cut short (",
             problem.reason, ")");
    } catch (const json::exception& problem) {
        fail("session file ", quoted(path), " is not a valid or complete session: its metadata is damaged (",
             problem.what(), ")");
    }

    // Later chunks: stop at the first one that is cut short or corrupt and keep what came before.
    // They are read in order, decompressed a batch at a time on several threads, applied in order.
    const size_t threads = codec_threads();
    bool end_reached = false;
    while (!end_reached && !loader.footer_seen()) {
        std::vector<std::future<Chunk>> batch;
        try {
            while (batch.size() < threads) {
                std::optional<StoredChunk> stored = chunks.next();
                if (!stored) {
                    end_reached = true;
                    break;
                }
                const bool parallel = threads > 1 && stored->raw_size >= kMinParallelChunkBytes;
                batch.push_back(std::async(parallel ? std::launch::async : std::launch::deferred, decode_chunk,
                                           std::move(*stored)));
            }
        } catch (const DamagedChunk& problem) {
            end_reached = true;  // what was read before the damage still counts
            loader.note_damage(problem.reason);
        }
        try {
            for (std::future<Chunk>& chunk : batch) {
                loader.apply(chunk.get());
                if (loader.footer_seen()) break;
            }
        } catch (const DamagedChunk& problem) {
            end_reached = true;
            loader.note_damage(problem.reason);
        } catch (const json::exception& problem) {
            end_reached = true;
            loader.note_damage(problem.what());
        } catch (const Error& problem) {  // e.g. the capture store refusing data: treated like damage
            end_reached = true;
            loader.note_damage(problem.what());
        }
    }
    return loader.finish();
}

}  // namespace attn
