#pragma once
// A small JSON Schema (draft 2020-12) validator for the tests: the keywords our documented schemas
// use ($ref into #/$defs, oneOf, type, enum, minimum, required, properties, additionalProperties:
// false, items). Shared by the rules and audit tests.
#include <catch2/catch.hpp>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace attn::testing {

using nlohmann::json;

inline void validate_json_schema(const json& value, const json& schema, const json& root, const std::string& path,
                                 std::vector<std::string>& errors) {
    if (schema.contains("$ref")) {
        const std::string ref = schema["$ref"];
        REQUIRE(ref.rfind("#/$defs/", 0) == 0);
        validate_json_schema(value, root["$defs"][ref.substr(8)], root, path, errors);
    }
    if (schema.contains("oneOf")) {
        int matched = 0;
        for (const json& option : schema["oneOf"]) {
            std::vector<std::string> sub;
            validate_json_schema(value, option, root, path, sub);
            matched += sub.empty() ? 1 : 0;
        }
        if (matched != 1) errors.push_back(path + ": matches " + std::to_string(matched) + " of oneOf");
    }
    if (schema.contains("type")) {
        auto is = [&](const std::string& t) {
            if (t == "object") return value.is_object();
            if (t == "array") return value.is_array();
            if (t == "string") return value.is_string();
            if (t == "integer") return value.is_number_integer();
            if (t == "number") return value.is_number();
            if (t == "boolean") return value.is_boolean();
            if (t == "null") return value.is_null();
            FAIL("schema type " << t);
            return false;
        };
        bool ok = false;
        if (schema["type"].is_array()) {
            for (const json& t : schema["type"]) ok = ok || is(t.get<std::string>());
        } else {
            ok = is(schema["type"].get<std::string>());
        }
        if (!ok) {
            errors.push_back(path + ": expected type " + schema["type"].dump() + ", found " + value.dump());
            return;
        }
    }
    if (schema.contains("enum") && std::find(schema["enum"].begin(), schema["enum"].end(), value) == schema["enum"].end())
        errors.push_back(path + ": " + value.dump() + " is not in " + schema["enum"].dump());
    if (schema.contains("minimum") && value.is_number() && value.get<double>() < schema["minimum"].get<double>())
        errors.push_back(path + ": " + value.dump() + " < minimum");
    if (value.is_object()) {
        if (schema.contains("required"))
            for (const json& key : schema["required"])
                if (!value.contains(key.get<std::string>())) errors.push_back(path + ": missing " + key.get<std::string>());
        for (const auto& [key, item] : value.items()) {
            if (schema.contains("properties") && schema["properties"].contains(key))
                validate_json_schema(item, schema["properties"][key], root, path + "." + key, errors);
            else if (schema.contains("additionalProperties") && schema["additionalProperties"] == false)
                errors.push_back(path + ": unexpected property " + key);
        }
    }
    if (value.is_array() && schema.contains("items"))
        for (size_t i = 0; i < value.size(); ++i)
            validate_json_schema(value[i], schema["items"], root, path + "[" + std::to_string(i) + "]", errors);
}

// Every violation of `schema` (with `root` for $refs) by `value`, as "$.path: what"; empty when valid.
inline std::vector<std::string> json_schema_errors(const json& value, const json& schema, const json& root) {
    std::vector<std::string> errors;
    validate_json_schema(value, schema, root, "$", errors);
    return errors;
}
inline std::vector<std::string> json_schema_errors(const json& value, const json& schema) {
    return json_schema_errors(value, schema, schema);
}

}  // namespace attn::testing
