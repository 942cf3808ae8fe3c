#include "data/tokenizer_json.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/utf8.h"

namespace freehold::data {

JsonPath JsonPath::child(std::string_view key) const {
  return {source, path.empty() ? std::string(key) : absl::StrCat(path, ".", std::string(key))};
}

JsonPath JsonPath::index(size_t i) const { return {source, absl::StrCat(path, "[", i, "]")}; }

std::string JsonPath::describe() const {
  return path.empty() ? source : absl::StrCat(source, ": ", path);
}

void fail_at(const JsonPath& at, std::string_view problem) {
  throw core::FormatError(absl::StrCat(at.describe(), " ", std::string(problem)));
}

std::string show_value(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  constexpr size_t kMax = 80;
  if (text.size() > kMax) {
    size_t cut = kMax;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
    text = absl::StrCat(text.substr(0, cut), "...");
  }
  return text;
}

const Json* find_field(const Json& object, const JsonPath& at, std::string_view key) {
  require_object(object, at);
  auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

const Json& require_field(const Json& object, const JsonPath& at, std::string_view key) {
  const Json* value = find_field(object, at, key);
  if (value == nullptr) fail_at(at.child(key), "is missing");
  return *value;
}

void require_object(const Json& value, const JsonPath& at) {
  if (!value.is_object()) fail_at(at, absl::StrCat("is ", show_value(value), "; expected a JSON object"));
}

void require_array(const Json& value, const JsonPath& at) {
  if (!value.is_array()) fail_at(at, absl::StrCat("is ", show_value(value), "; expected a JSON array"));
}

std::string read_string(const Json& object, const JsonPath& at, std::string_view key) {
  const Json& value = require_field(object, at, key);
  if (!value.is_string()) fail_at(at.child(key), absl::StrCat("is ", show_value(value), "; expected a string"));
  return value.get<std::string>();
}

std::string read_string_or(const Json& object, const JsonPath& at, std::string_view key, std::string fallback) {
  if (find_field(object, at, key) == nullptr) return fallback;
  return read_string(object, at, key);
}

bool read_bool_or(const Json& object, const JsonPath& at, std::string_view key, bool fallback) {
  const Json* value = find_field(object, at, key);
  if (value == nullptr) return fallback;
  if (!value->is_boolean()) fail_at(at.child(key), absl::StrCat("is ", show_value(*value), "; expected true or false"));
  return value->get<bool>();
}

int64_t read_int(const Json& value, const JsonPath& at, int64_t min_value, int64_t max_value) {
  bool ok = value.is_number_integer();
  int64_t n = 0;
  if (ok) {
    if (value.is_number_unsigned()) {
      uint64_t u = value.get<uint64_t>();
      ok = u <= static_cast<uint64_t>(max_value);
      n = static_cast<int64_t>(u);
    } else {
      n = value.get<int64_t>();
    }
  }
  if (!ok || n < min_value || n > max_value) {
    fail_at(at, absl::StrCat("is ", show_value(value), "; expected an integer in [", min_value, ", ", max_value, "]"));
  }
  return n;
}

std::string read_char(const Json& object, const JsonPath& at, std::string_view key) {
  std::string text = read_string(object, at, key);
  size_t length = 0;
  if (!text.empty()) {
    unsigned char lead = static_cast<unsigned char>(text[0]);
    length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  }
  if (text.empty() || text.size() != length || !core::is_valid_utf8(text)) {
    fail_at(at.child(key), absl::StrCat("is ", show_value(Json(text)), "; expected exactly one character"));
  }
  return text;
}

std::string read_type(const Json& object, const JsonPath& at, const std::vector<std::string_view>& supported) {
  std::string type = read_string(object, at, "type");
  for (std::string_view name : supported) {
    if (type == name) return type;
  }
  std::string names;
  for (std::string_view name : supported) names += absl::StrCat(names.empty() ? "" : ", ", std::string(name));
  fail_at(at.child("type"), absl::StrCat("is \"", type, "\", which freehold does not support; supported: ", names));
}

PatternSpec read_pattern(const Json& object, const JsonPath& at, std::string_view key) {
  const Json& pattern = require_field(object, at, key);
  JsonPath where = at.child(key);
  require_object(pattern, where);
  if (pattern.size() == 1) {
    for (const char* kind : {"String", "Regex"}) {
      auto it = pattern.find(kind);
      if (it != pattern.end() && it->is_string()) return {std::string_view(kind) == "Regex", it->get<std::string>()};
    }
  }
  fail_at(where, absl::StrCat("is ", show_value(pattern), "; expected {\"String\": \"...\"} or {\"Regex\": \"...\"}"));
}

}  // namespace freehold::data
