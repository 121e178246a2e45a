#pragma once
// Files users write by hand (rules, ontologies): JSON or TOML read into one tree whose every value
// knows where it stands in the file, so that a mistake is reported with the file, line and column,
// the entry's path ("rules[2].threshold") and what is wrong:
//
//   rules.toml:7:13: rules[0].threshold: expected a number, found a string ("0.05")
//
// JSON is read by the strict parser here (RFC 8259: no comments, no trailing commas; a key twice in
// one object is an error); TOML by toml++ (Debian's libtomlplusplus-dev, TOML 1.0), whose own parse
// errors come with their line and column too. Lines and columns count from 1; columns count
// characters (UTF-8 code points), as editors show them.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/error.h"

namespace attn {

enum class ConfigFormat { Auto, Json, Toml };
// Auto: by the file name's extension (.json / .toml), else by the content (a first non-blank
// character '{' or '[' followed by a quote, brace or bracket reads as JSON; anything else as TOML).
ConfigFormat detect_config_format(std::string_view file_name, std::string_view text);
const char* config_format_name(ConfigFormat format);  // "json", "toml"

struct ConfigValue {
    enum class Type { Null, Bool, Integer, Float, String, Array, Table };
    Type type = Type::Null;
    bool boolean = false;
    int64_t integer = 0;
    double number = 0;  // Float, and Integer converted
    std::string string;
    std::vector<ConfigValue> items;                            // Array
    std::vector<std::pair<std::string, ConfigValue>> fields;   // Table, in file order
    int line = 0, column = 0;
    int key_line = 0, key_column = 0;  // where its key is written (a table's field)
    std::string path;  // "" for the root, "rules[2].threshold"

    bool is_number() const { return type == Type::Integer || type == Type::Float; }
    const ConfigValue* find(std::string_view key) const;
    // "a string (\"abc\")", "an integer (3)", "a table", ... for messages
    std::string describe() const;
};
const char* config_type_name(ConfigValue::Type type);  // "a string", "an array", ...

struct ConfigDocument {
    std::string file;  // as given (for messages)
    ConfigFormat format = ConfigFormat::Json;
    ConfigValue root;  // always a table

    // "file:line:column: path: message"
    std::string where(const ConfigValue& value) const;
    template <typename... Parts>
    [[noreturn]] void fail_at(const ConfigValue& value, const Parts&... parts) const {
        fail(where(value), cat(parts...));
    }
};

// Parses `text` (named `file_name` in messages). The root must be a table (a JSON object).
ConfigDocument parse_config(std::string_view text, const std::string& file_name, ConfigFormat format = ConfigFormat::Auto);
// Reads and parses a file; a file that cannot be read fails naming it.
ConfigDocument load_config(const std::string& path, ConfigFormat format = ConfigFormat::Auto);

// Reads the fields of one table, checking types; finish() fails on any field that was not asked for
// (a misspelt "treshold" is an error, not silently ignored), listing the known ones.
class ConfigTableReader {
public:
    // Fails unless `table` is a table. With `fields`, any other field fails at once (before a missing
    // one is reported, so a misspelt "treshold" is named as such).
    ConfigTableReader(const ConfigDocument& document, const ConfigValue& table,
                      std::initializer_list<std::string_view> fields = {});

    const ConfigValue* optional(std::string_view key);
    const ConfigValue& required(std::string_view key);
    std::string string(std::string_view key);                      // required
    std::string string_or(std::string_view key, std::string fallback);
    double number_or(std::string_view key, double fallback);
    bool bool_or(std::string_view key, bool fallback);
    // A string, or an array of strings (one string is a list of one); missing: empty.
    std::vector<std::string> strings_or_empty(std::string_view key);

    void expect(const ConfigValue& value, ConfigValue::Type type) const;  // Integer passes for Float
    void finish() const;
    const ConfigValue& table() const { return table_; }
    const ConfigDocument& document() const { return document_; }

private:
    const ConfigDocument& document_;
    const ConfigValue& table_;
    std::vector<std::string> known_;
};

}  // namespace attn
