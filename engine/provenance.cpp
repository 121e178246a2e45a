#include "engine/provenance.h"

#include "engine/atomic_file.h"

#include <sodium.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/error.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

#ifndef ATTNSCOPE_VERSION
#define ATTNSCOPE_VERSION "0.1.0-dev"
#endif

namespace attn {

using json = nlohmann::json;

namespace {

class Sha256 {
public:
    Sha256() {
        if (sodium_init() < 0) fail("libsodium failed to initialise");
        crypto_hash_sha256_init(&state_);
    }
    void update(const void* data, size_t size) {
        crypto_hash_sha256_update(&state_, static_cast<const unsigned char*>(data), size);
    }
    void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
    void u32(uint32_t value) {
        unsigned char le[4];
        for (int i = 0; i < 4; ++i) le[i] = static_cast<unsigned char>(value >> (8 * i));
        update(le, 4);
    }
    void string(std::string_view text) {
        u32(static_cast<uint32_t>(text.size()));
        update(text);
    }
    std::string hex() {
        unsigned char digest[crypto_hash_sha256_BYTES];
        crypto_hash_sha256_final(&state_, digest);
        char text[crypto_hash_sha256_BYTES * 2 + 1];
        sodium_bin2hex(text, sizeof text, digest, sizeof digest);
        return text;
    }

private:
    crypto_hash_sha256_state state_;
};

// Strings from paths, argv and stop strings may hold any bytes; JSON needs UTF-8.
std::string clean_utf8(std::string_view text) {
    std::string out;
    while (!text.empty()) {
        const size_t bad = first_invalid_utf8(text);
        if (bad == std::string_view::npos) {
            out.append(text);
            break;
        }
        out.append(text.substr(0, bad));
        out.append("\xEF\xBF\xBD");  // U+FFFD
        text.remove_prefix(bad + 1);
    }
    return out;
}

std::string or_unknown(const std::string& value) { return value.empty() ? "unknown" : value; }

std::mutex& gpu_provider_mutex() {
    static std::mutex mutex;
    return mutex;
}
std::function<GpuFingerprint()>& gpu_provider() {
    static std::function<GpuFingerprint()> provider;
    return provider;
}

// ---- JSON ---------------------------------------------------------------------------------------

json sampling_json(const SamplingSettings& s) {
    json stops = json::array();
    for (const std::string& stop : s.stop_strings) stops.push_back(clean_utf8(stop));
    return {{"greedy", s.greedy},   {"temperature", s.temperature},       {"top_k", s.top_k},
            {"top_p", s.top_p},     {"seed", s.seed},                     {"beams", s.beams},
            {"max_new_tokens", s.max_new_tokens}, {"stop_strings", stops}, {"chat", s.chat},
            {"stop_at_eos", s.stop_at_eos}};
}

SamplingSettings sampling_from(const json& v) {
    SamplingSettings s;
    s.greedy = v.at("greedy").get<bool>();
    s.temperature = v.at("temperature").get<float>();
    s.top_k = v.at("top_k").get<int>();
    s.top_p = v.at("top_p").get<float>();
    s.seed = v.at("seed").get<uint64_t>();
    s.beams = v.at("beams").get<int>();
    s.max_new_tokens = v.at("max_new_tokens").get<int>();
    s.stop_strings = v.at("stop_strings").get<std::vector<std::string>>();
    s.chat = v.at("chat").get<bool>();
    s.stop_at_eos = v.at("stop_at_eos").get<bool>();
    return s;
}

json dp_json(const DpNoiseReport& dp) {
    return {{"mechanism", dp.mechanism}, {"epsilon", dp.epsilon},     {"delta", dp.delta},
            {"sensitivity", dp.sensitivity}, {"scale", dp.scale},     {"stddev", dp.stddev},
            {"calibration", dp.calibration}, {"values", dp.values},   {"clamped", dp.clamped}};
}

DpNoiseReport dp_from(const json& v) {
    DpNoiseReport dp;
    dp.mechanism = v.at("mechanism").get<std::string>();
    dp.epsilon = v.at("epsilon").get<double>();
    dp.delta = v.at("delta").get<double>();
    dp.sensitivity = v.at("sensitivity").get<double>();
    dp.scale = v.at("scale").get<double>();
    dp.stddev = v.at("stddev").get<double>();
    dp.calibration = v.at("calibration").get<std::string>();
    dp.values = v.at("values").get<uint64_t>();
    dp.clamped = v.at("clamped").get<bool>();
    return dp;
}

std::string read_cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    std::string fallback;
    while (std::getline(in, line)) {
        const size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon);
        while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(value.begin());
        if (key == "model name" && !value.empty()) return clean_utf8(value);
        if ((key == "Hardware" || key == "cpu model" || key == "CPU part") && fallback.empty()) fallback = value;
    }
    return fallback.empty() ? "unknown" : clean_utf8(fallback);
}

ModelRecord model_record(const ModelIdentity& identity, const ModelConfig& config) {
    ModelRecord model;
    model.path = or_unknown(clean_utf8(identity.path));
    model.name = or_unknown(clean_utf8(identity.name));
    model.format = or_unknown(identity.format);
    model.file_bytes = identity.file_bytes;
    model.sha256 = or_unknown(identity.sha256);
    model.sha256_covers = identity.format == "gguf" ? "gguf file"
                          : identity.format == "hf" ? "config.json + safetensors headers"
                                                    : "unknown";
    model.config_sha256 = config.n_layer > 0 ? config_sha256(config) : "unknown";
    return model;
}

ProvenanceRecord base_record() {
    ProvenanceRecord record;
    record.created_utc = utc_now_iso8601();
    record.host = host_name();
    record.privacy.pii_masking = privacy_defaults().mask_pii;
    // A prompt given on the command line may hold personal data: masked like every other export.
    record.command_line = process_command_line();
    if (record.privacy.pii_masking)
        for (std::string& arg : record.command_line) arg = mask_pii(arg);
    // The seed of differential-privacy noise would let anyone subtract the noise: never recorded.
    for (size_t i = 0; i < record.command_line.size(); ++i) {
        std::string& arg = record.command_line[i];
        if (arg.starts_with("--dp-seed=")) arg = "--dp-seed=●●●●";
        else if (arg == "--dp-seed" && i + 1 < record.command_line.size()) record.command_line[++i] = "●●●●";
    }
    record.runtime.version = ATTNSCOPE_VERSION;
    return record;
}

}  // namespace

json provenance_to_json(const ProvenanceRecord& r) {
    json command_line = json::array();
    for (const std::string& arg : r.command_line) command_line.push_back(clean_utf8(arg));
    json exhibits = json::array();
    for (const ExhibitRecord& e : r.exhibits)
        exhibits.push_back({{"id", clean_utf8(e.id)}, {"kind", e.kind}, {"layer", e.layer}, {"head", e.head},
                            {"step", e.step}, {"query", e.query}, {"file", clean_utf8(e.file)},
                            {"note", clean_utf8(e.note)}});
    json arrays = json::array();
    for (const AttentionArrayRecord& a : r.arrays)
        arrays.push_back({{"id", clean_utf8(a.id)},
                          {"kind", a.kind},
                          {"layer", a.layer},
                          {"head", a.head},
                          {"query", a.query},
                          {"level", a.tile.level},
                          {"tx", a.tile.tx},
                          {"ty", a.tile.ty},
                          {"row_level_delta", a.tile.row_level_delta},
                          {"first_query", a.tile.first_query},
                          {"shape", a.shape},
                          {"dtype", a.dtype},
                          {"sha256", a.sha256},
                          {"file", clean_utf8(a.file)},
                          {"noised", a.noised}});
    return {
        {"schema", r.schema},
        {"created_utc", r.created_utc},
        {"host", clean_utf8(r.host)},
        {"command_line", command_line},
        {"runtime", {{"version", r.runtime.version}, {"backend", r.runtime.backend},
                     {"kernel_variant", r.runtime.kernel_variant}}},
        {"hardware", {{"cpu_model", clean_utf8(r.hardware.cpu_model)}, {"cpu_threads", r.hardware.cpu_threads},
                      {"gpu_name", clean_utf8(r.hardware.gpu_name)}, {"gpu_uuid", clean_utf8(r.hardware.gpu_uuid)},
                      {"gpu_driver", clean_utf8(r.hardware.gpu_driver)}}},
        {"model", {{"path", clean_utf8(r.model.path)}, {"name", clean_utf8(r.model.name)}, {"format", r.model.format},
                   {"file_bytes", r.model.file_bytes}, {"sha256", r.model.sha256},
                   {"sha256_covers", r.model.sha256_covers}, {"config_sha256", r.model.config_sha256}}},
        {"tokenizer", {{"kind", r.tokenizer.kind}, {"sha256", r.tokenizer.sha256}}},
        {"sampling", sampling_json(r.sampling)},
        {"input_sha256", r.input_sha256},
        {"input_bytes", r.input_bytes},
        {"output_sha256", r.output_sha256},
        {"output_bytes", r.output_bytes},
        {"session", {{"file", clean_utf8(r.session.file)}, {"file_sha256", r.session.file_sha256},
                     {"positions", r.session.positions}, {"prompt_tokens", r.session.prompt_tokens},
                     {"steps", r.session.steps}, {"n_layer", r.session.n_layer}, {"n_head", r.session.n_head},
                     {"n_kv_head", r.session.n_kv_head}, {"head_dim", r.session.head_dim}}},
        {"capture", r.capture},
        {"exhibits", exhibits},
        {"arrays", arrays},
        {"privacy", {{"pii_masking", r.privacy.pii_masking},
                     {"dp", r.privacy.has_dp ? dp_json(r.privacy.dp) : json(nullptr)}}},
    };
}

ProvenanceRecord provenance_from_json(const json& v) {
    ProvenanceRecord r;
    try {
        if (!v.is_object()) fail("provenance record: not a JSON object");
        r.schema = v.at("schema").get<std::string>();
        if (r.schema != kProvenanceSchema)
            fail("provenance record: unknown schema '", r.schema, "' (this build reads ", kProvenanceSchema, ")");
        r.created_utc = v.at("created_utc").get<std::string>();
        r.host = v.at("host").get<std::string>();
        r.command_line = v.at("command_line").get<std::vector<std::string>>();
        const json& runtime = v.at("runtime");
        r.runtime.version = runtime.at("version").get<std::string>();
        r.runtime.backend = runtime.at("backend").get<std::string>();
        r.runtime.kernel_variant = runtime.at("kernel_variant").get<std::string>();
        const json& hw = v.at("hardware");
        r.hardware.cpu_model = hw.at("cpu_model").get<std::string>();
        r.hardware.cpu_threads = hw.at("cpu_threads").get<int>();
        r.hardware.gpu_name = hw.at("gpu_name").get<std::string>();
        r.hardware.gpu_uuid = hw.at("gpu_uuid").get<std::string>();
        r.hardware.gpu_driver = hw.at("gpu_driver").get<std::string>();
        const json& model = v.at("model");
        r.model.path = model.at("path").get<std::string>();
        r.model.name = model.at("name").get<std::string>();
        r.model.format = model.at("format").get<std::string>();
        r.model.file_bytes = model.at("file_bytes").get<uint64_t>();
        r.model.sha256 = model.at("sha256").get<std::string>();
        r.model.sha256_covers = model.at("sha256_covers").get<std::string>();
        r.model.config_sha256 = model.at("config_sha256").get<std::string>();
        r.tokenizer.kind = v.at("tokenizer").at("kind").get<std::string>();
        r.tokenizer.sha256 = v.at("tokenizer").at("sha256").get<std::string>();
        r.sampling = sampling_from(v.at("sampling"));
        r.input_sha256 = v.at("input_sha256").get<std::string>();
        r.input_bytes = v.at("input_bytes").get<uint64_t>();
        r.output_sha256 = v.at("output_sha256").get<std::string>();
        r.output_bytes = v.at("output_bytes").get<uint64_t>();
        const json& session = v.at("session");
        r.session.file = session.at("file").get<std::string>();
        r.session.file_sha256 = session.at("file_sha256").get<std::string>();
        r.session.positions = session.at("positions").get<int64_t>();
        r.session.prompt_tokens = session.at("prompt_tokens").get<int64_t>();
        r.session.steps = session.at("steps").get<int64_t>();
        r.session.n_layer = session.at("n_layer").get<int>();
        r.session.n_head = session.at("n_head").get<int>();
        r.session.n_kv_head = session.at("n_kv_head").get<int>();
        r.session.head_dim = session.at("head_dim").get<int>();
        r.capture = v.at("capture");
        for (const json& e : v.at("exhibits")) {
            ExhibitRecord exhibit;
            exhibit.id = e.at("id").get<std::string>();
            exhibit.kind = e.at("kind").get<std::string>();
            exhibit.layer = e.at("layer").get<int>();
            exhibit.head = e.at("head").get<int>();
            exhibit.step = e.at("step").get<int64_t>();
            exhibit.query = e.at("query").get<int64_t>();
            exhibit.file = e.at("file").get<std::string>();
            exhibit.note = e.at("note").get<std::string>();
            r.exhibits.push_back(std::move(exhibit));
        }
        for (const json& a : v.at("arrays")) {
            AttentionArrayRecord array;
            array.id = a.at("id").get<std::string>();
            array.kind = a.at("kind").get<std::string>();
            array.layer = a.at("layer").get<int>();
            array.head = a.at("head").get<int>();
            array.query = a.at("query").get<int64_t>();
            array.tile.layer = array.layer;
            array.tile.head = array.head;
            array.tile.level = a.at("level").get<int>();
            array.tile.tx = a.at("tx").get<int64_t>();
            array.tile.ty = a.at("ty").get<int64_t>();
            array.tile.row_level_delta = a.at("row_level_delta").get<int>();
            array.tile.first_query = a.at("first_query").get<int64_t>();
            array.shape = a.at("shape").get<std::vector<int64_t>>();
            array.dtype = a.at("dtype").get<std::string>();
            array.sha256 = a.at("sha256").get<std::string>();
            array.file = a.at("file").get<std::string>();
            array.noised = a.at("noised").get<bool>();
            r.arrays.push_back(std::move(array));
        }
        const json& privacy = v.at("privacy");
        r.privacy.pii_masking = privacy.at("pii_masking").get<bool>();
        if (!privacy.at("dp").is_null()) {
            r.privacy.has_dp = true;
            r.privacy.dp = dp_from(privacy.at("dp"));
        }
    } catch (const json::exception& e) {
        fail("provenance record: ", e.what());
    }
    return r;
}

// ---- Hashes -------------------------------------------------------------------------------------

std::string sha256_hex(std::span<const std::byte> bytes) {
    Sha256 hash;
    hash.update(bytes.data(), bytes.size());
    return hash.hex();
}

std::string sha256_hex(std::string_view bytes) {
    Sha256 hash;
    hash.update(bytes);
    return hash.hex();
}

std::string sha256_file_streamed(const std::string& path) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) fail("'", path, "': cannot be read (", std::strerror(errno), ")");
    constexpr size_t kBlock = size_t(4) << 20;
    std::unique_ptr<unsigned char[]> buffer(new unsigned char[kBlock]);
    Sha256 hash;
    while (true) {
        const size_t n = std::fread(buffer.get(), 1, kBlock, file.get());
        if (n > 0) hash.update(buffer.get(), n);
        if (n < kBlock) {
            if (std::ferror(file.get())) fail("'", path, "': read failed (", std::strerror(errno), ")");
            break;
        }
    }
    return hash.hex();
}

std::string sha256_floats_hex(std::span<const float> values) {
    Sha256 hash;
    if constexpr (std::endian::native == std::endian::little) {
        hash.update(values.data(), values.size_bytes());
    } else {
        for (float value : values) hash.u32(std::bit_cast<uint32_t>(value));
    }
    return hash.hex();
}

std::string config_canonical_json(const ModelConfig& c) {
    const char* pairing = c.rope_pairing == RopePairing::Interleaved ? "interleaved" : "half_split";
    const char* scaling = c.rope_scaling.kind == RopeScaling::Kind::None     ? "none"
                          : c.rope_scaling.kind == RopeScaling::Kind::Linear ? "linear"
                                                                             : "llama3";
    const json value = {
        {"arch", c.arch == Architecture::Llama ? "llama" : "gpt2"},
        {"arch_name", clean_utf8(c.arch_name)},
        {"n_layer", c.n_layer},
        {"n_head", c.n_head},
        {"n_kv_head", c.n_kv_head},
        {"head_dim", c.head_dim},
        {"d_model", c.d_model},
        {"d_ff", c.d_ff},
        {"vocab", c.vocab},
        {"max_context", c.max_context},
        {"norm_eps", c.norm_eps},
        {"rope_theta", c.rope_theta},
        {"rope_pairing", pairing},
        {"rope_scaling", {{"kind", scaling}, {"factor", c.rope_scaling.factor},
                          {"low_freq_factor", c.rope_scaling.low_freq_factor},
                          {"high_freq_factor", c.rope_scaling.high_freq_factor},
                          {"original_context", c.rope_scaling.original_context}}},
        {"qkv_bias", c.qkv_bias},
        {"output_bias", c.output_bias},
        {"tied_embeddings", c.tied_embeddings},
        {"sliding_window", c.sliding_window},
    };
    return value.dump();
}

std::string config_sha256(const ModelConfig& config) { return sha256_hex(config_canonical_json(config)); }

const char* tokenizer_kind_name(const Tokenizer& tokenizer) {
    return tokenizer.kind() == TokenizerKind::ByteLevelBpe ? "byte_level_bpe" : "sentencepiece_bpe";
}

std::string tokenizer_sha256(const Tokenizer& tokenizer) {
    Sha256 hash;
    hash.string("attnscope.tokenizer/1");
    hash.string(tokenizer_kind_name(tokenizer));
    const int32_t vocab = tokenizer.vocab_size();
    hash.u32(static_cast<uint32_t>(vocab));
    hash.u32(static_cast<uint32_t>(tokenizer.bos_id()));
    hash.u32(static_cast<uint32_t>(tokenizer.eos_id()));
    hash.u32(tokenizer.add_bos_token() ? 1 : 0);
    for (int32_t id = 0; id < vocab; ++id) {
        hash.string(tokenizer.token_text(id));
        hash.string(tokenizer.token_bytes(id));
        hash.u32(tokenizer.is_special(id) ? 1 : 0);
    }
    return hash.hex();
}

// ---- This process -------------------------------------------------------------------------------

HardwareFingerprint this_machine() {
    static const HardwareFingerprint machine = [] {
        HardwareFingerprint hw;
        hw.cpu_model = read_cpu_model();
        hw.cpu_threads = static_cast<int>(std::thread::hardware_concurrency());
        return hw;
    }();
    return machine;
}

void set_gpu_fingerprint_provider(std::function<GpuFingerprint()> provider) {
    std::lock_guard lock(gpu_provider_mutex());
    gpu_provider() = std::move(provider);
}

std::string kernel_variant_of(const std::string& backend) {
    if (backend == "cpu") return "cpu.fp32.reference (OpenBLAS GEMMs, exact softmax with row LSE)";
    if (backend == "cuda")
        return "cuda.bf16 (cuBLAS GEMMs, fused flash attention with overview emission, split-K decode)";
    return "unknown";
}

std::string utc_now_iso8601() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
    return clean_utf8(name);
}

std::vector<std::string> process_command_line() {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::vector<std::string> args;
    std::string arg;
    while (std::getline(in, arg, '\0')) args.push_back(clean_utf8(arg));
    return args;
}

// ---- Records ------------------------------------------------------------------------------------

ProvenanceRecord new_provenance_record() {
    ProvenanceRecord record = base_record();
    record.hardware = this_machine();
    return record;
}

void fill_from_session(ProvenanceRecord& record, const Session& session) {
    record.sampling = session.sampling;
    if (privacy_defaults().mask_pii)
        for (std::string& stop : record.sampling.stop_strings) stop = mask_pii(stop);
    size_t prompt_end = 0;
    if (session.prompt_tokens > 0 && static_cast<size_t>(session.prompt_tokens) <= session.tokens.size())
        prompt_end = session.tokens[static_cast<size_t>(session.prompt_tokens) - 1].end;
    prompt_end = std::min(prompt_end, session.text.size());
    if (session.prompt_tokens >= session.positions()) prompt_end = session.text.size();
    const std::string_view text(session.text);
    record.input_sha256 = sha256_hex(text.substr(0, prompt_end));
    record.input_bytes = prompt_end;
    record.output_sha256 = sha256_hex(text.substr(prompt_end));
    record.output_bytes = text.size() - prompt_end;
    record.session.positions = session.positions();
    record.session.prompt_tokens = session.prompt_tokens;
    record.session.steps = static_cast<int64_t>(session.steps.size());
    const CaptureShape shape = session.capture ? session.capture->shape() : capture_shape_of(session.config);
    record.session.n_layer = shape.n_layer;
    record.session.n_head = shape.n_head;
    record.session.n_kv_head = shape.n_kv_head;
    record.session.head_dim = shape.head_dim;
}

ProvenanceRecord capture_provenance(const Model& model, const std::string& backend_name, const Session& session) {
    ProvenanceRecord record = base_record();
    record.runtime.backend = backend_name;
    record.runtime.kernel_variant = kernel_variant_of(backend_name);
    record.hardware = this_machine();
    if (backend_name == "cuda") {
        std::function<GpuFingerprint()> provider;
        {
            std::lock_guard lock(gpu_provider_mutex());
            provider = gpu_provider();
        }
        if (provider) {
            const GpuFingerprint gpu = provider();
            record.hardware.gpu_name = gpu.name;
            record.hardware.gpu_uuid = gpu.uuid;
            record.hardware.gpu_driver = gpu.driver;
        }
    }
    record.model = model_record(session.identity.path.empty() ? model.identity : session.identity, model.config);
    if (model.tokenizer) {
        record.tokenizer.kind = tokenizer_kind_name(*model.tokenizer);
        record.tokenizer.sha256 = tokenizer_sha256(*model.tokenizer);
    }
    fill_from_session(record, session);
    return record;
}

json session_provenance_for_save(const Session& session) {
    ProvenanceRecord record;
    bool have = false;
    if (!session.provenance.empty()) {
        try {
            record = provenance_from_json(json::parse(session.provenance));
            have = true;
        } catch (const std::exception&) {
            // A damaged record is replaced by one made from the session (saving must not fail on it).
        }
    }
    if (!have) {
        // Made now, without the model or the backend that captured the session: what computed the
        // values is unknown, so is the machine.
        record = base_record();
        record.hardware.cpu_model = "unknown";
        record.hardware.gpu_name = record.hardware.gpu_uuid = record.hardware.gpu_driver = "unknown";
        record.model = model_record(session.identity, session.config);
    }
    fill_from_session(record, session);
    return provenance_to_json(record);
}

ProvenanceRecord export_provenance(const Session& session, const std::string& session_path, bool hash_session_file) {
    ProvenanceRecord record = base_record();
    record.runtime.backend = "cpu";
    record.runtime.kernel_variant = "cpu tile source (exact fp32 recomputation from Q, K, LSE; engine/tile_source.h)";
    record.hardware = this_machine();
    record.model = model_record(session.identity, session.config);
    if (!session.provenance.empty()) {
        try {
            record.capture = json::parse(session.provenance);
            const ProvenanceRecord capture = provenance_from_json(record.capture);
            record.tokenizer = capture.tokenizer;
            if (record.model.sha256 == "unknown") record.model.sha256 = capture.model.sha256;
        } catch (const std::exception&) {
            record.capture = nullptr;
        }
    }
    fill_from_session(record, session);
    record.session.file = session_path.empty() ? "none" : clean_utf8(session_path);
    record.session.file_sha256 =
        hash_session_file && !session_path.empty() ? sha256_file_streamed(session_path) : "unknown";
    return record;
}

std::string write_provenance_beside(const std::string& file, const ProvenanceRecord& record) {
    const std::string path = file + ".provenance.json";
    write_file_atomically(path, provenance_to_json(record).dump(2, ' ', false, json::error_handler_t::replace) + "\n");
    return path;
}

AttentionArrayRecord& add_row_array(ProvenanceRecord& record, const std::string& id, int layer, int head,
                                    int64_t query, std::span<const float> values, const std::string& file) {
    AttentionArrayRecord array;
    array.id = id;
    array.kind = "row";
    array.layer = layer;
    array.head = head;
    array.query = query;
    array.tile.layer = layer;
    array.tile.head = head;
    array.shape = {static_cast<int64_t>(values.size())};
    array.sha256 = sha256_floats_hex(values);
    array.file = file;
    record.arrays.push_back(std::move(array));
    return record.arrays.back();
}

AttentionArrayRecord& add_tile_array(ProvenanceRecord& record, const std::string& id, const TileRequest& request,
                                     bool max_aggregate, std::span<const float> values, const std::string& file) {
    AttentionArrayRecord array;
    array.id = id;
    array.kind = max_aggregate ? "tile_max" : "tile_sum";
    array.layer = request.layer;
    array.head = request.head;
    array.tile = request;
    array.shape = {Tile::kEdge, Tile::kEdge};
    array.sha256 = sha256_floats_hex(values);
    array.file = file;
    record.arrays.push_back(std::move(array));
    return record.arrays.back();
}

std::vector<float> rederive_array(const AttentionArrayRecord& array, const CpuTileSource& source,
                                  const CaptureShape& shape, int64_t positions) {
    if (array.layer < 0 || array.layer >= shape.n_layer || array.head < 0 || array.head >= shape.n_head)
        fail("layer ", array.layer, " head ", array.head, " is not in the session (", shape.n_layer, " layers × ",
             shape.n_head, " heads)");
    if (array.kind == "row") {
        if (array.query < 0 || array.query >= positions)
            fail("query ", array.query, " is not in the session (", positions, " positions)");
        return source.row(array.layer, array.head, array.query);
    }
    if (array.kind == "tile_sum" || array.kind == "tile_max") {
        TileRequest request = array.tile;
        request.layer = array.layer;
        request.head = array.head;
        Tile tile = source.tile(request);
        return array.kind == "tile_max" ? std::move(tile.max) : std::move(tile.sum);
    }
    fail("unknown array kind '", array.kind, "' (expected row, tile_sum or tile_max)");
}

}  // namespace attn
