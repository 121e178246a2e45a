#include "engine/config_document.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <iterator>
#include <toml++/toml.h>

namespace attn {

ConfigFormat detect_config_format(std::string_view file_name, std::string_view text) {
    auto ends_with = [&](std::string_view suffix) {
        if (file_name.size() < suffix.size()) return false;
        for (size_t i = 0; i < suffix.size(); ++i) {
            char c = file_name[file_name.size() - suffix.size() + i];
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
            if (c != suffix[i]) return false;
        }
        return true;
    };
    if (ends_with(".json")) return ConfigFormat::Json;
    if (ends_with(".toml")) return ConfigFormat::Toml;
    size_t i = 0;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (i < text.size() && blank(text[i])) ++i;
    if (i < text.size() && text[i] == '{') return ConfigFormat::Json;
    if (i < text.size() && text[i] == '[') {
        // TOML tables start with "[name]"; a JSON array with a quote, brace, bracket or "]".
        size_t j = i + 1;
        while (j < text.size() && blank(text[j])) ++j;
        if (j < text.size() && (text[j] == '"' || text[j] == '{' || text[j] == '[' || text[j] == ']')) {
            // "[[rules]]" is TOML: a bracket followed by a bare key.
            if (text[j] == '[') {
                size_t k = j + 1;
                while (k < text.size() && blank(text[k])) ++k;
                if (k < text.size() && text[k] != '"' && text[k] != '{' && text[k] != '[' && text[k] != ']')
                    return ConfigFormat::Toml;
            }
            return ConfigFormat::Json;
        }
    }
    return ConfigFormat::Toml;
}

const char* config_format_name(ConfigFormat format) {
    switch (format) {
        case ConfigFormat::Json: return "json";
        case ConfigFormat::Toml: return "toml";
        case ConfigFormat::Auto: return "auto";
    }
    return "?";
}

const char* config_type_name(ConfigValue::Type type) {
    switch (type) {
        case ConfigValue::Type::Null: return "null";
        case ConfigValue::Type::Bool: return "a boolean";
        case ConfigValue::Type::Integer: return "an integer";
        case ConfigValue::Type::Float: return "a number";
        case ConfigValue::Type::String: return "a string";
        case ConfigValue::Type::Array: return "an array";
        case ConfigValue::Type::Table: return "a table";
    }
    return "?";
}

const ConfigValue* ConfigValue::find(std::string_view key) const {
    for (const auto& [name, value] : fields)
        if (name == key) return &value;
    return nullptr;
}

std::string ConfigValue::describe() const {
    switch (type) {
        case Type::Bool: return cat("a boolean (", boolean ? "true" : "false", ")");
        case Type::Integer: return cat("an integer (", integer, ")");
        case Type::Float: return cat("a number (", number, ")");
        case Type::String: {
            std::string shown = string.size() > 40 ? string.substr(0, 40) + "…" : string;
            return cat("a string (\"", shown, "\")");
        }
        default: return config_type_name(type);
    }
}

std::string ConfigDocument::where(const ConfigValue& value) const {
    std::string out = file;
    if (value.line > 0) out += cat(":", value.line, ":", value.column);
    out += ": ";
    if (!value.path.empty()) out += value.path + ": ";
    return out;
}

// ---- JSON -------------------------------------------------------------------------------------

namespace {

class JsonReader {
public:
    JsonReader(std::string_view text, const std::string& file) : text_(text), file_(file) {}

    ConfigValue parse() {
        if (text_.substr(0, 3) == "\xEF\xBB\xBF") advance(3);
        skip_blank();
        ConfigValue root = value("", 0);
        skip_blank();
        if (pos_ < text_.size()) error("the end of the document after the top-level value");
        return root;
    }

private:
    static constexpr int kMaxDepth = 256;

    ConfigValue value(const std::string& path, int depth) {
        if (depth > kMaxDepth) error("values nested less than 256 deep");
        ConfigValue v;
        v.line = line_;
        v.column = column_;
        v.path = path;
        if (pos_ >= text_.size()) error("a value");
        const char c = text_[pos_];
        if (c == '{') {
            v.type = ConfigValue::Type::Table;
            advance(1);
            skip_blank();
            if (peek('}')) {
                advance(1);
                return v;
            }
            for (;;) {
                skip_blank();
                if (!peek('"')) error("a quoted key");
                const int key_line = line_, key_column = column_;
                std::string key = string_literal();
                for (const auto& [name, existing] : v.fields)
                    if (name == key)
                        fail(file_, ":", key_line, ":", key_column, ": ", child(path, key), ": the key \"", key,
                             "\" appears twice in this object (first at line ", existing.line, ")");
                skip_blank();
                if (!peek(':')) error("':' after the key");
                advance(1);
                skip_blank();
                ConfigValue item = value(child(path, key), depth + 1);
                item.key_line = key_line;
                item.key_column = key_column;
                v.fields.emplace_back(std::move(key), std::move(item));
                skip_blank();
                if (peek(',')) {
                    advance(1);
                    skip_blank();
                    if (peek('}')) error("another key after ',' (JSON allows no trailing comma)");
                    continue;
                }
                if (peek('}')) {
                    advance(1);
                    return v;
                }
                error("',' or '}' in the object");
            }
        }
        if (c == '[') {
            v.type = ConfigValue::Type::Array;
            advance(1);
            skip_blank();
            if (peek(']')) {
                advance(1);
                return v;
            }
            for (;;) {
                skip_blank();
                v.items.push_back(value(cat(path, "[", v.items.size(), "]"), depth + 1));
                skip_blank();
                if (peek(',')) {
                    advance(1);
                    skip_blank();
                    if (peek(']')) error("another value after ',' (JSON allows no trailing comma)");
                    continue;
                }
                if (peek(']')) {
                    advance(1);
                    return v;
                }
                error("',' or ']' in the array");
            }
        }
        if (c == '"') {
            v.type = ConfigValue::Type::String;
            v.string = string_literal();
            return v;
        }
        if (c == '-' || (c >= '0' && c <= '9')) return number(std::move(v));
        if (word("true")) {
            v.type = ConfigValue::Type::Bool;
            v.boolean = true;
            return v;
        }
        if (word("false")) {
            v.type = ConfigValue::Type::Bool;
            return v;
        }
        if (word("null")) return v;
        if (c == '/' || c == '#') error("a value (JSON has no comments; TOML does)");
        error("a value (an object, array, string, number, true, false or null)");
    }

    ConfigValue number(ConfigValue v) {
        const size_t start = pos_;
        size_t i = pos_;
        if (text_[i] == '-') ++i;
        auto digits = [&] {
            const size_t from = i;
            while (i < text_.size() && text_[i] >= '0' && text_[i] <= '9') ++i;
            return i - from;
        };
        const size_t int_start = i;
        if (digits() == 0) error("a digit");
        if (text_[int_start] == '0' && i - int_start > 1) error("a number without leading zeros");
        bool is_float = false;
        if (i < text_.size() && text_[i] == '.') {
            ++i;
            is_float = true;
            if (digits() == 0) {
                advance(i - pos_);
                error("a digit after the decimal point");
            }
        }
        if (i < text_.size() && (text_[i] == 'e' || text_[i] == 'E')) {
            ++i;
            is_float = true;
            if (i < text_.size() && (text_[i] == '+' || text_[i] == '-')) ++i;
            if (digits() == 0) {
                advance(i - pos_);
                error("a digit in the exponent");
            }
        }
        const std::string_view literal = text_.substr(start, i - start);
        if (!is_float) {
            int64_t value = 0;
            const auto [end, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), value);
            if (ec == std::errc() && end == literal.data() + literal.size()) {
                v.type = ConfigValue::Type::Integer;
                v.integer = value;
                v.number = static_cast<double>(value);
                advance(i - pos_);
                return v;
            }
        }
        double value = 0;
        const auto [end, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), value);
        if (ec != std::errc() || !std::isfinite(value)) error("a number that fits a double");
        v.type = ConfigValue::Type::Float;
        v.number = value;
        advance(i - pos_);
        return v;
    }

    std::string string_literal() {
        advance(1);  // the opening quote
        std::string out;
        for (;;) {
            if (pos_ >= text_.size()) error("the closing '\"' of the string");
            const unsigned char c = static_cast<unsigned char>(text_[pos_]);
            if (c == '"') {
                advance(1);
                return out;
            }
            if (c < 0x20) error("no control characters in a string (write \\n, \\t, ...)");
            if (c != '\\') {
                // One UTF-8 character (checked: the tree holds valid UTF-8 only).
                const size_t length = utf8_length(c);
                if (length == 0 || pos_ + length > text_.size()) error("valid UTF-8");
                for (size_t k = 1; k < length; ++k)
                    if ((static_cast<unsigned char>(text_[pos_ + k]) & 0xC0) != 0x80) error("valid UTF-8");
                out.append(text_.substr(pos_, length));
                advance(length);
                continue;
            }
            if (pos_ + 1 >= text_.size()) error("an escape after '\\'");
            const char e = text_[pos_ + 1];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    advance(2);
                    uint32_t code = hex4();
                    if (code >= 0xD800 && code <= 0xDBFF) {
                        if (text_.substr(pos_, 2) != "\\u") error("a low surrogate \\uDC00-\\uDFFF after a high one");
                        advance(2);
                        const uint32_t low = hex4();
                        if (low < 0xDC00 || low > 0xDFFF) error("a low surrogate \\uDC00-\\uDFFF after a high one");
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    } else if (code >= 0xDC00 && code <= 0xDFFF) {
                        error("a high surrogate before a low one");
                    }
                    append_utf8(out, code);
                    continue;
                }
                default:
                    advance(1);
                    error("a valid escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX; in a regex write \\\\ for one "
                          "backslash)");
            }
            advance(2);
        }
    }

    uint32_t hex4() {
        uint32_t code = 0;
        for (int k = 0; k < 4; ++k) {
            if (pos_ >= text_.size()) error("four hex digits after \\u");
            const char h = text_[pos_];
            uint32_t digit = 0;
            if (h >= '0' && h <= '9') digit = static_cast<uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f') digit = static_cast<uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') digit = static_cast<uint32_t>(h - 'A' + 10);
            else error("four hex digits after \\u");
            code = code * 16 + digit;
            advance(1);
        }
        return code;
    }

    static size_t utf8_length(unsigned char c) {
        if (c < 0x80) return 1;
        if ((c & 0xE0) == 0xC0 && c >= 0xC2) return 2;
        if ((c & 0xF0) == 0xE0) return 3;
        if ((c & 0xF8) == 0xF0 && c <= 0xF4) return 4;
        return 0;
    }

    static void append_utf8(std::string& out, uint32_t code) {
        if (code < 0x80) {
            out += static_cast<char>(code);
        } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        } else if (code < 0x10000) {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    static std::string child(const std::string& path, const std::string& key) {
        return path.empty() ? key : path + "." + key;
    }

    bool peek(char c) const { return pos_ < text_.size() && text_[pos_] == c; }
    bool word(std::string_view w) {
        if (text_.substr(pos_, w.size()) != w) return false;
        advance(w.size());
        return true;
    }
    void skip_blank() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
            advance(1);
    }
    // Moves on `bytes` bytes, keeping the line and the column (in characters) of the position.
    void advance(size_t bytes) {
        for (size_t k = 0; k < bytes && pos_ < text_.size(); ++k, ++pos_) {
            const unsigned char c = static_cast<unsigned char>(text_[pos_]);
            if (c == '\n') {
                ++line_;
                column_ = 1;
            } else if ((c & 0xC0) != 0x80) {
                ++column_;
            }
        }
    }
    [[noreturn]] void error(const std::string& expected) const {
        std::string found = "the end of the file";
        if (pos_ < text_.size()) {
            const unsigned char c = static_cast<unsigned char>(text_[pos_]);
            if (c == '\n') found = "the end of the line";
            else if (c >= 0x20 && c < 0x7F) found = cat("'", static_cast<char>(c), "'");
            else found = cat("byte 0x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
        }
        fail(file_, ":", line_, ":", column_, ": invalid JSON: expected ", expected, ", found ", found);
    }

    std::string_view text_;
    const std::string& file_;
    size_t pos_ = 0;
    int line_ = 1, column_ = 1;
};

// ---- TOML -------------------------------------------------------------------------------------

ConfigValue from_toml(const toml::node& node, const std::string& path, const std::string& file) {
    ConfigValue v;
    v.line = static_cast<int>(node.source().begin.line);
    v.column = static_cast<int>(node.source().begin.column);
    v.path = path;
    switch (node.type()) {
        case toml::node_type::table: {
            v.type = ConfigValue::Type::Table;
            struct Entry {
                std::string key;
                const toml::node* node;
                int line, column;
            };
            std::vector<Entry> entries;
            for (auto&& [key, child] : *node.as_table())
                entries.push_back({std::string(key.str()), &child, static_cast<int>(key.source().begin.line),
                                   static_cast<int>(key.source().begin.column)});
            // toml++ keeps keys sorted: restore the file's order.
            std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
                return std::pair(a.line, a.column) < std::pair(b.line, b.column);
            });
            for (const Entry& e : entries) {
                v.fields.emplace_back(e.key, from_toml(*e.node, path.empty() ? e.key : path + "." + e.key, file));
                v.fields.back().second.key_line = e.line;
                v.fields.back().second.key_column = e.column;
            }
            break;
        }
        case toml::node_type::array: {
            v.type = ConfigValue::Type::Array;
            const toml::array& array = *node.as_array();
            for (size_t i = 0; i < array.size(); ++i) v.items.push_back(from_toml(array[i], cat(path, "[", i, "]"), file));
            break;
        }
        case toml::node_type::string:
            v.type = ConfigValue::Type::String;
            v.string = std::string(node.as_string()->get());
            break;
        case toml::node_type::integer:
            v.type = ConfigValue::Type::Integer;
            v.integer = node.as_integer()->get();
            v.number = static_cast<double>(v.integer);
            break;
        case toml::node_type::floating_point:
            v.type = ConfigValue::Type::Float;
            v.number = node.as_floating_point()->get();
            break;
        case toml::node_type::boolean:
            v.type = ConfigValue::Type::Bool;
            v.boolean = node.as_boolean()->get();
            break;
        default:
            fail(file, ":", v.line, ":", v.column, ": ", path, ": dates and times are not used in this file");
    }
    return v;
}

ConfigValue parse_toml(std::string_view text, const std::string& file) {
    try {
        const toml::table table = toml::parse(text, std::string_view(file));
        return from_toml(table, "", file);
    } catch (const toml::parse_error& e) {
        fail(file, ":", e.source().begin.line, ":", e.source().begin.column, ": invalid TOML: ", e.description());
    }
}

}  // namespace

ConfigDocument parse_config(std::string_view text, const std::string& file_name, ConfigFormat format) {
    ConfigDocument document;
    document.file = file_name;
    document.format = format == ConfigFormat::Auto ? detect_config_format(file_name, text) : format;
    if (document.format == ConfigFormat::Json) document.root = JsonReader(text, file_name).parse();
    else document.root = parse_toml(text, file_name);
    if (document.root.type != ConfigValue::Type::Table)
        document.fail_at(document.root, "the top level must be ", document.format == ConfigFormat::Json ? "an object" : "a table",
                         ", found ", document.root.describe());
    return document;
}

ConfigDocument load_config(const std::string& path, ConfigFormat format) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot read the file");
    const std::string text{std::istreambuf_iterator<char>(in), {}};
    if (in.bad()) fail(path, ": error while reading the file");
    return parse_config(text, path, format);
}

// ---- table reader -------------------------------------------------------------------------------

ConfigTableReader::ConfigTableReader(const ConfigDocument& document, const ConfigValue& table,
                                     std::initializer_list<std::string_view> fields)
    : document_(document), table_(table) {
    if (table.type != ConfigValue::Type::Table) document.fail_at(table, "expected a table, found ", table.describe());
    if (fields.size() == 0) return;
    for (std::string_view field : fields) known_.emplace_back(field);
    finish();
    known_.clear();
}

const ConfigValue* ConfigTableReader::optional(std::string_view key) {
    known_.emplace_back(key);
    const ConfigValue* value = table_.find(key);
    return value && value->type == ConfigValue::Type::Null ? nullptr : value;
}

const ConfigValue& ConfigTableReader::required(std::string_view key) {
    const ConfigValue* value = optional(key);
    if (!value) document_.fail_at(table_, "missing the field \"", key, "\"");
    return *value;
}

void ConfigTableReader::expect(const ConfigValue& value, ConfigValue::Type type) const {
    if (value.type == type) return;
    if (type == ConfigValue::Type::Float && value.type == ConfigValue::Type::Integer) return;
    document_.fail_at(value, "expected ", config_type_name(type), ", found ", value.describe());
}

std::string ConfigTableReader::string(std::string_view key) {
    const ConfigValue& value = required(key);
    expect(value, ConfigValue::Type::String);
    return value.string;
}

std::string ConfigTableReader::string_or(std::string_view key, std::string fallback) {
    const ConfigValue* value = optional(key);
    if (!value) return fallback;
    expect(*value, ConfigValue::Type::String);
    return value->string;
}

double ConfigTableReader::number_or(std::string_view key, double fallback) {
    const ConfigValue* value = optional(key);
    if (!value) return fallback;
    expect(*value, ConfigValue::Type::Float);
    return value->number;
}

bool ConfigTableReader::bool_or(std::string_view key, bool fallback) {
    const ConfigValue* value = optional(key);
    if (!value) return fallback;
    expect(*value, ConfigValue::Type::Bool);
    return value->boolean;
}

std::vector<std::string> ConfigTableReader::strings_or_empty(std::string_view key) {
    const ConfigValue* value = optional(key);
    if (!value) return {};
    if (value->type == ConfigValue::Type::String) return {value->string};
    if (value->type != ConfigValue::Type::Array)
        document_.fail_at(*value, "expected a string or an array of strings, found ", value->describe());
    std::vector<std::string> out;
    for (const ConfigValue& item : value->items) {
        expect(item, ConfigValue::Type::String);
        out.push_back(item.string);
    }
    return out;
}

void ConfigTableReader::finish() const {
    for (const auto& [key, value] : table_.fields) {
        if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
        std::string names;
        for (size_t i = 0; i < known_.size(); ++i)
            if (std::find(known_.begin(), known_.begin() + static_cast<ptrdiff_t>(i), known_[i]) == known_.begin() + static_cast<ptrdiff_t>(i))
                names += (names.empty() ? "" : ", ") + known_[i];
        ConfigValue at;  // the key's position
        at.line = value.key_line ? value.key_line : value.line;
        at.column = value.key_line ? value.key_column : value.column;
        at.path = value.path;
        document_.fail_at(at, "unknown field \"", key, "\" (expected one of: ", names, ")");
    }
}

}  // namespace attn
