// Reading the fields of an untrusted tokenizer.json: every accessor names the key path ("pre_tokenizer.
// pretokenizers[1].behavior"), the value found and what is accepted, so a bad or unsupported file explains itself.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"

namespace freehold::data {

using Json = nlohmann::json;

// Where in which file a value sits; `source` is the file path (or a label for in-memory JSON).
struct JsonPath {
  std::string source;
  std::string path;  // "" is the document root
  JsonPath child(std::string_view key) const;
  JsonPath index(size_t i) const;
  std::string describe() const;  // "tokenizer.json: model.merges[3]"
};

// Throws FormatError: "<source>: <path> <problem>".
[[noreturn]] void fail_at(const JsonPath& at, std::string_view problem);

// A short rendering of a JSON value for error messages (at most ~80 characters).
std::string show_value(const Json& value);

// The member `key` of object `object` (at `at`); nullptr when missing or null.
const Json* find_field(const Json& object, const JsonPath& at, std::string_view key);
const Json& require_field(const Json& object, const JsonPath& at, std::string_view key);
void require_object(const Json& value, const JsonPath& at);
void require_array(const Json& value, const JsonPath& at);
std::string read_string(const Json& object, const JsonPath& at, std::string_view key);
std::string read_string_or(const Json& object, const JsonPath& at, std::string_view key, std::string fallback);
bool read_bool_or(const Json& object, const JsonPath& at, std::string_view key, bool fallback);
int64_t read_int(const Json& value, const JsonPath& at, int64_t min_value, int64_t max_value);
// A one-character string ("▁"), as a UTF-8 string of exactly one code point.
std::string read_char(const Json& object, const JsonPath& at, std::string_view key);

// The "type" of a component object, checked against the supported names.
std::string read_type(const Json& object, const JsonPath& at, const std::vector<std::string_view>& supported);

// A split pattern: {"String": "..."} or {"Regex": "..."}.
struct PatternSpec {
  bool is_regex = false;
  std::string text;
};
PatternSpec read_pattern(const Json& object, const JsonPath& at, std::string_view key);

}  // namespace freehold::data
