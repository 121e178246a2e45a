#include "engine/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "engine/error.h"

namespace attn {

namespace {

// GGUF metadata value type ids (gguf spec).
enum class ValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Arrays of arrays are legal but nothing we load uses them; the depth cap keeps a crafted file
// from recursing deep enough to exhaust the stack.
constexpr int kMaxArrayNesting = 8;

const char* value_type_name(uint32_t type) {
    switch (static_cast<ValueType>(type)) {
        case ValueType::U8: return "uint8";
        case ValueType::I8: return "int8";
        case ValueType::U16: return "uint16";
        case ValueType::I16: return "int16";
        case ValueType::U32: return "uint32";
        case ValueType::I32: return "int32";
        case ValueType::F32: return "float32";
        case ValueType::BOOL: return "bool";
        case ValueType::STRING: return "string";
        case ValueType::ARRAY: return "array";
        case ValueType::U64: return "uint64";
        case ValueType::I64: return "int64";
        case ValueType::F64: return "float64";
    }
    return nullptr;
}

// Smallest encoding of one value of `type`, used to bound element counts by the bytes left
// before anything is allocated. 0 for unknown types.
size_t min_encoded_size(uint32_t type) {
    switch (static_cast<ValueType>(type)) {
        case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
        case ValueType::U16: case ValueType::I16: return 2;
        case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
        case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
        case ValueType::STRING: return 8;              // length
        case ValueType::ARRAY: return 4 + 8;           // element type + count
    }
    return 0;
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
    switch (id) {
        case 0: return DType::F32;
        case 1: return DType::F16;
        case 2: return DType::Q4_0;
        case 3: return DType::Q4_1;
        case 6: return DType::Q5_0;
        case 7: return DType::Q5_1;
        case 8: return DType::Q8_0;
        case 12: return DType::Q4_K;
        case 13: return DType::Q5_K;
        case 14: return DType::Q6_K;
        case 30: return DType::BF16;
        default: return std::nullopt;
    }
}

// Names of ggml types we recognise but do not load, so the error says what the file contains.
const char* unsupported_ggml_type_name(uint32_t id) {
    switch (id) {
        case 4: case 5: return "removed Q4_2/Q4_3";
        case 9: return "Q8_1";
        case 10: return "Q2_K";
        case 11: return "Q3_K";
        case 15: return "Q8_K";
        case 16: return "IQ2_XXS";
        case 17: return "IQ2_XS";
        case 18: return "IQ3_XXS";
        case 19: return "IQ1_S";
        case 20: return "IQ4_NL";
        case 21: return "IQ3_S";
        case 22: return "IQ2_S";
        case 23: return "IQ4_XS";
        case 24: return "I8";
        case 25: return "I16";
        case 26: return "I32";
        case 27: return "I64";
        case 28: return "F64";
        case 29: return "IQ1_M";
        case 34: return "TQ1_0";
        case 35: return "TQ2_0";
        case 39: return "MXFP4";
        default: return nullptr;
    }
}

// Bounds-checked little-endian reader over the file. Every read names what it was reading so a
// truncated file reports where it broke.
class Cursor {
public:
    Cursor(std::span<const std::byte> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

    size_t position() const { return position_; }
    size_t remaining() const { return bytes_.size() - position_; }

    void need(size_t count, const char* what, const std::string& owner) const {
        if (count > remaining())
            fail(file_, ": truncated file: ", what, owner.empty() ? "" : " of ", owner, " needs ", count,
                 " bytes at offset ", position_, " but only ", remaining(), " remain");
    }

    template <typename T>
    T read(const char* what, const std::string& owner) {
        need(sizeof(T), what, owner);
        T value;
        std::memcpy(&value, bytes_.data() + position_, sizeof(T));
        position_ += sizeof(T);
        return value;
    }

    std::string read_string(const char* what, const std::string& owner) {
        const auto length = read<uint64_t>(what, owner);
        if (length > remaining())
            fail(file_, ": ", what, owner.empty() ? "" : " of ", owner, " claims ", length,
                 " bytes at offset ", position_, " but only ", remaining(), " remain");
        std::string text(reinterpret_cast<const char*>(bytes_.data() + position_), static_cast<size_t>(length));
        position_ += static_cast<size_t>(length);
        return text;
    }

private:
    std::span<const std::byte> bytes_;
    const std::string& file_;
    size_t position_ = 0;
};

const char* value_kind(const GgufValue& value) {
    switch (value.value.index()) {
        case 0: return "an array of arrays";
        case 1: return "a bool";
        case 2: return "a signed integer";
        case 3: return "an unsigned integer";
        case 4: return "a float";
        case 5: return "a string";
        case 6: return "an array of integers";
        case 7: return "an array of floats";
        case 8: return "an array of strings";
        case 9: return "an array of bools";
    }
    return "an unknown value";
}

struct MetadataReader {
    Cursor& cursor;
    const std::string& file;
    const std::string& owner;  // "metadata key 'x'", for error messages

    int64_t checked_signed(uint64_t value) {
        if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            fail(file, ": ", owner, " holds array element ", value, ", which does not fit a signed 64-bit integer");
        return static_cast<int64_t>(value);
    }

    // Reads one integer or float of `type` (already known to be numeric), widened.
    template <typename Out>
    Out read_number(ValueType type) {
        switch (type) {
            case ValueType::U8: return static_cast<Out>(cursor.read<uint8_t>("uint8 value", owner));
            case ValueType::I8: return static_cast<Out>(cursor.read<int8_t>("int8 value", owner));
            case ValueType::U16: return static_cast<Out>(cursor.read<uint16_t>("uint16 value", owner));
            case ValueType::I16: return static_cast<Out>(cursor.read<int16_t>("int16 value", owner));
            case ValueType::U32: return static_cast<Out>(cursor.read<uint32_t>("uint32 value", owner));
            case ValueType::I32: return static_cast<Out>(cursor.read<int32_t>("int32 value", owner));
            case ValueType::I64: return static_cast<Out>(cursor.read<int64_t>("int64 value", owner));
            case ValueType::F32: return static_cast<Out>(cursor.read<float>("float32 value", owner));
            case ValueType::F64: return static_cast<Out>(cursor.read<double>("float64 value", owner));
            case ValueType::U64: {
                const auto value = cursor.read<uint64_t>("uint64 value", owner);
                if constexpr (std::is_same_v<Out, int64_t>) return checked_signed(value);
                else return static_cast<Out>(value);
            }
            default: break;
        }
        fail(file, ": ", owner, ": internal error, non-numeric type");
    }

    GgufValue read_scalar_or_array(uint32_t type_id, int depth) {
        const auto type = static_cast<ValueType>(type_id);
        GgufValue result;
        switch (type) {
            case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
                result.value = read_number<uint64_t>(type);
                return result;
            case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
                result.value = read_number<int64_t>(type);
                return result;
            case ValueType::F32: case ValueType::F64:
                result.value = read_number<double>(type);
                return result;
            case ValueType::BOOL:
                result.value = cursor.read<uint8_t>("bool value", owner) != 0;
                return result;
            case ValueType::STRING:
                result.value = cursor.read_string("string value", owner);
                return result;
            case ValueType::ARRAY:
                return read_array(depth);
        }
        fail(file, ": ", owner, " has unknown value type id ", type_id);
    }

    GgufValue read_array(int depth) {
        if (depth >= kMaxArrayNesting)
            fail(file, ": ", owner, " nests arrays more than ", kMaxArrayNesting, " deep");
        const auto element_type_id = cursor.read<uint32_t>("array element type", owner);
        const size_t element_size = min_encoded_size(element_type_id);
        if (element_size == 0) fail(file, ": ", owner, " is an array of unknown value type id ", element_type_id);
        const auto count = cursor.read<uint64_t>("array length", owner);
        // Checked before reserving, so an absurd count cannot allocate.
        if (count > cursor.remaining() / element_size)
            fail(file, ": ", owner, " claims an array of ", count, " ", value_type_name(element_type_id),
                 " values but only ", cursor.remaining(), " bytes remain at offset ", cursor.position());
        const auto n = static_cast<size_t>(count);
        const auto element_type = static_cast<ValueType>(element_type_id);

        GgufValue result;
        switch (element_type) {
            case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
            case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64: {
                std::vector<int64_t> values;
                values.reserve(n);
                for (size_t i = 0; i < n; ++i) values.push_back(read_number<int64_t>(element_type));
                result.value = std::move(values);
                break;
            }
            case ValueType::F32: case ValueType::F64: {
                std::vector<double> values;
                values.reserve(n);
                for (size_t i = 0; i < n; ++i) values.push_back(read_number<double>(element_type));
                result.value = std::move(values);
                break;
            }
            case ValueType::BOOL: {
                std::vector<bool> values;
                values.reserve(n);
                for (size_t i = 0; i < n; ++i) values.push_back(cursor.read<uint8_t>("bool value", owner) != 0);
                result.value = std::move(values);
                break;
            }
            case ValueType::STRING: {
                std::vector<std::string> values;
                values.reserve(n);
                for (size_t i = 0; i < n; ++i) values.push_back(cursor.read_string("string value", owner));
                result.value = std::move(values);
                break;
            }
            case ValueType::ARRAY:
                // Validated element by element but not kept: GgufValue has no nested form.
                for (size_t i = 0; i < n; ++i) read_array(depth + 1);
                break;
        }
        return result;
    }
};

std::string describe_shape(const std::vector<int64_t>& shape) {
    std::string text = "{";
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + "}";
}

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
    std::unique_ptr<GgufFile> file(new GgufFile());
    file->map_ = std::make_unique<MappedFile>(path);
    file->name_ = path;
    file->parse_all(file->map_->bytes());
    return file;
}

std::unique_ptr<GgufFile> GgufFile::parse(std::span<const std::byte> bytes, const std::string& name) {
    std::unique_ptr<GgufFile> file(new GgufFile());
    file->name_ = name;
    file->parse_all(bytes);
    return file;
}

void GgufFile::parse_all(std::span<const std::byte> bytes) {
    const std::string& file = name_;
    Cursor cursor(bytes, file);
    const std::string header = "the header";

    // ---- header ----
    if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0) {
        if (bytes.size() < 4) fail(file, ": not a GGUF file (", bytes.size(), " bytes, too short for the magic)");
        char shown[5] = {};
        std::memcpy(shown, bytes.data(), 4);
        for (char& c : shown)
            if (c != 0 && (c < 0x20 || c > 0x7e)) c = '?';
        fail(file, ": not a GGUF file (bad magic '", shown, "', expected 'GGUF')");
    }
    cursor.read<uint32_t>("magic", header);
    version_ = cursor.read<uint32_t>("version", header);
    if (version_ != 2 && version_ != 3) {
        if (version_ == 1) fail(file, ": GGUF version 1 is not supported (only versions 2 and 3)");
        const uint32_t swapped = __builtin_bswap32(version_);
        if (swapped == 2 || swapped == 3)
            fail(file, ": big-endian GGUF files are not supported (version ", swapped, " big-endian)");
        fail(file, ": unsupported GGUF version ", version_, " (only versions 2 and 3)");
    }
    const auto tensor_count = cursor.read<uint64_t>("tensor count", header);
    const auto metadata_count = cursor.read<uint64_t>("metadata count", header);
    // Each entry takes at least this many bytes, so the counts are bounded by the file size.
    constexpr size_t kMinMetadataEntry = 8 + 4 + 1;
    constexpr size_t kMinTensorEntry = 8 + 4 + 8 + 4 + 8;
    if (metadata_count > cursor.remaining() / kMinMetadataEntry)
        fail(file, ": header claims ", metadata_count, " metadata entries, more than the ", cursor.remaining(),
             " remaining bytes can hold");
    if (tensor_count > cursor.remaining() / kMinTensorEntry)
        fail(file, ": header claims ", tensor_count, " tensors, more than the ", cursor.remaining(),
             " remaining bytes can hold");

    // ---- metadata ----
    for (uint64_t i = 0; i < metadata_count; ++i) {
        const std::string entry = cat("metadata entry ", i);
        std::string key = cursor.read_string("key", entry);
        const std::string owner = cat("metadata key '", key, "'");
        if (metadata_.count(key)) fail(file, ": duplicate ", owner);
        const auto type = cursor.read<uint32_t>("value type", owner);
        if (value_type_name(type) == nullptr) fail(file, ": ", owner, " has unknown value type id ", type);
        MetadataReader reader{cursor, file, owner};
        metadata_.emplace(std::move(key), reader.read_scalar_or_array(type, 0));
    }

    uint64_t alignment = kDefaultAlignment;
    if (const GgufValue* value = find("general.alignment")) {
        if (const auto* u = std::get_if<uint64_t>(&value->value)) alignment = *u;
        else if (const auto* s = std::get_if<int64_t>(&value->value)) alignment = *s < 0 ? 0 : static_cast<uint64_t>(*s);
        else fail(file, ": metadata key 'general.alignment' is ", value_kind(*value), ", expected an integer");
        if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (uint64_t{1} << 30))
            fail(file, ": general.alignment is ", alignment, ", expected a power of two up to 2^30");
    }

    // ---- tensor descriptions ----
    tensors_.reserve(static_cast<size_t>(tensor_count));
    std::vector<uint64_t> offsets;
    offsets.reserve(static_cast<size_t>(tensor_count));
    for (uint64_t i = 0; i < tensor_count; ++i) {
        TensorInfo info;
        info.name = cursor.read_string("name", cat("tensor ", i));
        const std::string owner = cat("tensor '", info.name, "'");
        if (tensor_index_.count(info.name)) fail(file, ": duplicate ", owner);

        const auto dims = cursor.read<uint32_t>("dimension count", owner);
        if (dims == 0 || dims > kMaxDims)
            fail(file, ": ", owner, " has ", dims, " dimensions, expected 1 to ", kMaxDims);
        uint64_t fastest_dim = 0;
        uint64_t elements = 1;
        info.shape.assign(dims, 0);
        for (uint32_t d = 0; d < dims; ++d) {
            const auto size = cursor.read<uint64_t>("dimension", owner);
            if (size == 0) fail(file, ": ", owner, " has a dimension of size 0");
            if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
                elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / size)
                fail(file, ": ", owner, " has an element count that overflows 64 bits");
            elements *= size;
            if (d == 0) fastest_dim = size;
            info.shape[dims - 1 - d] = static_cast<int64_t>(size);  // ne[] is fastest first; we store outermost first
        }

        const auto type_id = cursor.read<uint32_t>("type", owner);
        const std::optional<DType> type = dtype_from_ggml(type_id);
        if (!type) {
            const char* known = unsupported_ggml_type_name(type_id);
            fail(file, ": ", owner, " has unsupported ggml type id ", type_id,
                 known ? cat(" (", known, ")") : std::string(" (unknown)"));
        }
        info.type = *type;
        const uint32_t block = dtype_block_elements(info.type);
        if (fastest_dim % block != 0)
            fail(file, ": ", owner, " of type ", dtype_name(info.type), " has rows of ", fastest_dim,
                 " values, not a multiple of its block size ", block);
        info.bytes = dtype_bytes(info.type, elements);
        if (info.bytes == 0)
            fail(file, ": ", owner, " of type ", dtype_name(info.type), " and shape ", describe_shape(info.shape),
                 " has a byte size that overflows");

        const auto offset = cursor.read<uint64_t>("data offset", owner);
        if (offset % alignment != 0)
            fail(file, ": ", owner, " has data offset ", offset, ", not a multiple of the alignment ", alignment);

        tensor_index_.emplace(info.name, tensors_.size());
        tensors_.push_back(std::move(info));
        offsets.push_back(offset);
    }

    // ---- tensor data ----
    if (tensors_.empty()) return;
    const uint64_t header_end = cursor.position();
    const uint64_t data_start = (header_end + alignment - 1) / alignment * alignment;
    if (data_start > bytes.size())
        fail(file, ": tensor data would start at offset ", data_start, ", past the end of the file (",
             bytes.size(), " bytes)");
    const uint64_t data_size = bytes.size() - data_start;
    for (size_t i = 0; i < tensors_.size(); ++i) {
        TensorInfo& info = tensors_[i];
        if (offsets[i] > data_size || info.bytes > data_size - offsets[i])
            fail(file, ": tensor '", info.name, "' data (", info.bytes, " bytes at data offset ", offsets[i],
                 ") lies outside the file, whose data section has ", data_size, " bytes");
        info.data = bytes.data() + data_start + offsets[i];
    }

    // Overlapping tensors mean a corrupt table; sharing bytes would silently alias weights.
    std::vector<size_t> order(tensors_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return offsets[a] < offsets[b]; });
    for (size_t k = 1; k < order.size(); ++k) {
        const size_t previous = order[k - 1], current = order[k];
        if (offsets[previous] + tensors_[previous].bytes > offsets[current])
            fail(file, ": tensors '", tensors_[previous].name, "' and '", tensors_[current].name,
                 "' overlap in the data section");
    }
}

const GgufValue* GgufFile::find(const std::string& key) const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

const GgufValue& require(const GgufFile& file, const std::string& key) {
    const GgufValue* value = file.find(key);
    if (value == nullptr) fail(file.name(), ": metadata key '", key, "' is missing");
    return *value;
}

[[noreturn]] void wrong_kind(const GgufFile& file, const std::string& key, const GgufValue& value,
                             const char* expected) {
    fail(file.name(), ": metadata key '", key, "' is ", value_kind(value), ", expected ", expected);
}

int64_t as_int(const GgufFile& file, const std::string& key, const GgufValue& value) {
    if (const auto* s = std::get_if<int64_t>(&value.value)) return *s;
    if (const auto* u = std::get_if<uint64_t>(&value.value)) {
        if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            fail(file.name(), ": metadata key '", key, "' is ", *u, ", too large for a signed 64-bit integer");
        return static_cast<int64_t>(*u);
    }
    wrong_kind(file, key, value, "an integer");
}

double as_float(const GgufFile& file, const std::string& key, const GgufValue& value) {
    if (const auto* d = std::get_if<double>(&value.value)) return *d;
    if (const auto* s = std::get_if<int64_t>(&value.value)) return static_cast<double>(*s);
    if (const auto* u = std::get_if<uint64_t>(&value.value)) return static_cast<double>(*u);
    wrong_kind(file, key, value, "a number");
}

const std::string& as_string(const GgufFile& file, const std::string& key, const GgufValue& value) {
    if (const auto* s = std::get_if<std::string>(&value.value)) return *s;
    wrong_kind(file, key, value, "a string");
}

}  // namespace

std::string GgufFile::get_string(const std::string& key) const { return as_string(*this, key, require(*this, key)); }

int64_t GgufFile::get_int(const std::string& key) const { return as_int(*this, key, require(*this, key)); }

double GgufFile::get_float(const std::string& key) const { return as_float(*this, key, require(*this, key)); }

bool GgufFile::get_bool(const std::string& key) const {
    const GgufValue& value = require(*this, key);
    if (const auto* b = std::get_if<bool>(&value.value)) return *b;
    wrong_kind(*this, key, value, "a bool");
}

std::optional<int64_t> GgufFile::int_or(const std::string& key) const {
    const GgufValue* value = find(key);
    if (value == nullptr) return std::nullopt;
    return as_int(*this, key, *value);
}

std::optional<double> GgufFile::float_or(const std::string& key) const {
    const GgufValue* value = find(key);
    if (value == nullptr) return std::nullopt;
    return as_float(*this, key, *value);
}

std::optional<std::string> GgufFile::string_or(const std::string& key) const {
    const GgufValue* value = find(key);
    if (value == nullptr) return std::nullopt;
    return as_string(*this, key, *value);
}

const std::vector<std::string>& GgufFile::get_string_array(const std::string& key) const {
    const GgufValue& value = require(*this, key);
    if (const auto* strings = std::get_if<std::vector<std::string>>(&value.value)) return *strings;
    wrong_kind(*this, key, value, "an array of strings");
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
    const GgufValue& value = require(*this, key);
    if (const auto* ints = std::get_if<std::vector<int64_t>>(&value.value)) return *ints;
    wrong_kind(*this, key, value, "an array of integers");
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
    const GgufValue& value = require(*this, key);
    if (const auto* floats = std::get_if<std::vector<double>>(&value.value)) return *floats;
    if (const auto* ints = std::get_if<std::vector<int64_t>>(&value.value))
        return std::vector<double>(ints->begin(), ints->end());
    wrong_kind(*this, key, value, "an array of numbers");
}

const TensorInfo* GgufFile::find_tensor(const std::string& name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& GgufFile::tensor(const std::string& name) const {
    const TensorInfo* info = find_tensor(name);
    if (info == nullptr) fail(name_, ": no tensor named '", name, "'");
    return *info;
}

}  // namespace attn
