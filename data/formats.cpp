// JSONL and text records: strict parsing, a reason for every record that cannot be used.
#include "data/formats.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/json_depth.h"
#include "core/utf8.h"
#include "nlohmann/json.hpp"

namespace freehold::data {

using nlohmann::json;

InputFormat parse_input_format(std::string_view name) {
  if (name == "text") return InputFormat::kText;
  if (name == "alpaca") return InputFormat::kAlpaca;
  if (name == "chat") return InputFormat::kChat;
  throw core::UsageError(absl::StrCat("data format \"", std::string(name), "\" is unknown; expected text, alpaca or chat"));
}

const char* input_format_name(InputFormat format) {
  switch (format) {
    case InputFormat::kText: return "text";
    case InputFormat::kAlpaca: return "alpaca";
    case InputFormat::kChat: return "chat";
  }
  return "?";
}

const char* reject_reason_name(RejectReason reason) {
  switch (reason) {
    case RejectReason::kMalformedJson: return "malformed_json";
    case RejectReason::kInvalidUtf8: return "invalid_utf8";
    case RejectReason::kMissingField: return "missing_field";
    case RejectReason::kUnknownRole: return "unknown_role";
    case RejectReason::kBadStructure: return "bad_structure";
    case RejectReason::kNoTargets: return "no_targets";
    case RejectReason::kDoubleBos: return "double_bos";
    case RejectReason::kTooLong: return "too_long";
  }
  return "?";
}

namespace {

ParsedRecord reject(RejectReason reason, std::string detail) {
  ParsedRecord out;
  out.rejection = Rejection{reason, std::move(detail)};
  return out;
}

bool is_blank(std::string_view line) { return line.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos; }

// Reads a required string field; nullopt (with *error set) when missing or not a string.
std::optional<std::string> string_field(const json& object, const char* key, bool required, std::string* error) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (required) *error = absl::StrCat("missing \"", key, "\"");
    else return std::string();
    return std::nullopt;
  }
  if (!it->is_string()) {
    *error = absl::StrCat("\"", key, "\" is ", it->type_name(), "; expected a string");
    return std::nullopt;
  }
  return it->get<std::string>();
}

}  // namespace

ParsedRecord parse_record(std::string_view line, InputFormat format, bool jsonl) {
  if (is_blank(line)) return {};
  size_t bad = core::find_invalid_utf8(line);
  if (bad != std::string_view::npos) return reject(RejectReason::kInvalidUtf8, absl::StrCat("invalid UTF-8 at byte ", bad));
  if (line.find('\0') != std::string_view::npos) {
    return reject(RejectReason::kInvalidUtf8, absl::StrCat("NUL byte at byte ", line.find('\0')));
  }
  if (!jsonl) {
    if (format != InputFormat::kText) {
      return reject(RejectReason::kBadStructure, absl::StrCat("a plain text file can only be read as format text, not ",
                                                              input_format_name(format)));
    }
    ParsedRecord out;
    out.record.emplace().text = std::string(line);
    return out;
  }
  if (core::json_depth(line) > kMaxJsonDepth) {
    return reject(RejectReason::kMalformedJson, absl::StrCat("JSON nested deeper than ", kMaxJsonDepth));
  }
  // Duplicate keys: the library would silently keep the last; a record that says two things is refused.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  json::parser_callback_t track = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys.emplace_back();
    else if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    else if (event == json::parse_event_t::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
             duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json doc = json::parse(line, track, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return reject(RejectReason::kMalformedJson, "not valid JSON");
  if (!duplicate.empty()) return reject(RejectReason::kMalformedJson, absl::StrCat("duplicate key \"", duplicate, "\""));
  if (!doc.is_object()) return reject(RejectReason::kMalformedJson, absl::StrCat("a JSON ", doc.type_name(), ", not an object"));

  std::string error;
  ParsedRecord out;
  Record& record = out.record.emplace();
  switch (format) {
    case InputFormat::kText: {
      auto text = string_field(doc, "text", true, &error);
      if (!text) return reject(RejectReason::kMissingField, error);
      record.text = std::move(*text);
      break;
    }
    case InputFormat::kAlpaca: {
      auto instruction = string_field(doc, "instruction", true, &error);
      if (!instruction) return reject(RejectReason::kMissingField, error);
      auto input = string_field(doc, "input", false, &error);
      if (!input) return reject(RejectReason::kMissingField, error);
      auto output = string_field(doc, "output", true, &error);
      if (!output) return reject(RejectReason::kMissingField, error);
      record.instruction = std::move(*instruction);
      record.input = std::move(*input);
      record.output = std::move(*output);
      break;
    }
    case InputFormat::kChat: {
      auto messages = doc.find("messages");
      if (messages == doc.end()) return reject(RejectReason::kMissingField, "missing \"messages\"");
      if (!messages->is_array()) {
        return reject(RejectReason::kBadStructure, absl::StrCat("\"messages\" is ", messages->type_name(), "; expected an array"));
      }
      if (messages->empty()) return reject(RejectReason::kBadStructure, "\"messages\" is empty");
      for (size_t i = 0; i < messages->size(); ++i) {
        const json& m = (*messages)[i];
        const std::string where = absl::StrCat("messages[", i, "]");
        if (!m.is_object()) return reject(RejectReason::kBadStructure, absl::StrCat(where, " is not an object"));
        auto role = m.find("role");
        if (role == m.end() || !role->is_string()) {
          return reject(RejectReason::kMissingField, absl::StrCat(where, " has no string \"role\""));
        }
        const std::string role_name = role->get<std::string>();
        if (role_name != "system" && role_name != "user" && role_name != "assistant") {
          return reject(RejectReason::kUnknownRole, absl::StrCat(where, " role \"", role_name,
                                                                 "\"; expected system, user or assistant"));
        }
        auto content = m.find("content");
        if (content == m.end() || content->is_null()) {
          return reject(RejectReason::kMissingField, absl::StrCat(where, " has no \"content\""));
        }
        if (!content->is_string()) {
          return reject(RejectReason::kBadStructure, absl::StrCat(where, " content is ", content->type_name(),
                                                                  "; expected a string"));
        }
        record.messages.push_back({role_name, content->get<std::string>()});
      }
      break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

LineReader::LineReader(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "rb");
  if (file_ == nullptr) throw core::SystemError(absl::StrCat("opening ", path), errno);
  if (std::fseek(file_, 0, SEEK_END) == 0) {
    long size = std::ftell(file_);
    if (size > 0) file_size_ = static_cast<uint64_t>(size);
    std::fseek(file_, 0, SEEK_SET);
  }
  buffer_.resize(size_t{1} << 20);
}

LineReader::~LineReader() {
  if (file_ != nullptr) std::fclose(file_);
}

void LineReader::seek(uint64_t byte_offset, int64_t line_number) {
  if (std::fseek(file_, static_cast<long>(byte_offset), SEEK_SET) != 0) {
    throw core::SystemError(absl::StrCat("seeking in ", path_), errno);
  }
  begin_ = end_ = 0;
  buffer_file_offset_ = byte_offset;
  eof_ = false;
  line_number_ = line_number - 1;
}

bool LineReader::fill() {
  if (eof_) return false;
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    buffer_file_offset_ += begin_;
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) return true;
  size_t n = std::fread(buffer_.data() + end_, 1, buffer_.size() - end_, file_);
  if (n == 0) {
    if (std::ferror(file_)) throw core::SystemError(absl::StrCat("reading ", path_), errno);
    eof_ = true;
    return false;
  }
  end_ += n;
  return true;
}

bool LineReader::next(std::string* line, bool* too_long) {
  line->clear();
  *too_long = false;
  if (begin_ == end_ && !fill()) return false;
  line_start_ = buffer_file_offset_ + begin_;
  while (true) {
    const char* newline = static_cast<const char*>(std::memchr(buffer_.data() + begin_, '\n', end_ - begin_));
    const size_t stop = newline != nullptr ? static_cast<size_t>(newline - buffer_.data()) : end_;
    if (!*too_long) line->append(buffer_.data() + begin_, stop - begin_);
    if (line->size() > kMaxRecordBytes) {  // never hold more than the bound: skip to the line's end
      *too_long = true;
      line->clear();
      line->shrink_to_fit();
    }
    begin_ = newline != nullptr ? stop + 1 : end_;
    if (newline != nullptr || !fill()) break;  // no newline: read more; at the end, the last line has none
  }
  ++line_number_;
  if (!line->empty() && line->back() == '\r') line->pop_back();
  if (line_start_ == 0 && line->compare(0, 3, "\xEF\xBB\xBF") == 0) line->erase(0, 3);
  return true;
}

// ---------------------------------------------------------------------------------------------------------------

namespace {

// The code point at text[i] (valid UTF-8) and its length.
char32_t decode_at(std::string_view text, size_t i, int* length) {
  unsigned char c = static_cast<unsigned char>(text[i]);
  if (c < 0x80) { *length = 1; return c; }
  if (c < 0xE0) { *length = 2; return ((c & 0x1F) << 6) | (text[i + 1] & 0x3F); }
  if (c < 0xF0) { *length = 3; return ((c & 0x0F) << 12) | ((text[i + 1] & 0x3F) << 6) | (text[i + 2] & 0x3F); }
  *length = 4;
  return ((c & 0x07) << 18) | ((text[i + 1] & 0x3F) << 12) | ((text[i + 2] & 0x3F) << 6) | (text[i + 3] & 0x3F);
}

// Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
bool python_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace

std::string_view python_strip(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    int length = 0;
    if (!python_isspace(decode_at(text, begin, &length))) break;
    begin += length;
  }
  size_t end = begin;
  size_t i = begin;
  while (i < text.size()) {
    int length = 0;
    bool space = python_isspace(decode_at(text, i, &length));
    i += length;
    if (!space) end = i;
  }
  return text.substr(begin, end - begin);
}

}  // namespace freehold::data
