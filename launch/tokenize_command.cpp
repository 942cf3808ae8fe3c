// `freehold tokenize`: token ids of text with a Hugging Face tokenizer.json, one {"ids":[...]} line per input
// record, as the tokenizers library would give them. `--decode` goes the other way ({"ids":[...]} → {"text":...}).
//
// Input records (from --input, or stdin):
//   - a file ending in .jsonl (or --format jsonl): each non-blank line is a JSON object with a string "text";
//   - anything else (or --format text): each line is one text, without its line ending ("\n" or "\r\n").
// Invalid UTF-8 in a text line is replaced by U+FFFD, one per maximal ill-formed subsequence, as Python's
// errors="replace" does (a count is logged); the tokenizer itself never sees invalid UTF-8.
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/log.h"
#include "core/utf8.h"
#include "data/tokenizer.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "nlohmann/json.hpp"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec>& tokenize_flags() {
  static const std::vector<FlagSpec> flags = {
      {"tokenizer", "PATH", "tokenizer.json (or a directory holding one)", true},
      {"input", "FILE", "text lines, or JSONL with \"text\" (.jsonl); default: stdin"},
      {"format", "text|jsonl", "how to read the input (default: jsonl for *.jsonl files, else text)"},
      {"no-special-tokens", "", "encode without the template's BOS/EOS; with --decode, drop special tokens"},
      {"decode", "", "read {\"ids\":[...]} lines and write {\"text\":...} lines"},
      {"help", "", "show this help"},
  };
  return flags;
}

constexpr size_t kMaxLineBytes = size_t{256} << 20;

std::string tokenizer_path(const std::string& path) {
  std::ifstream probe(path + "/tokenizer.json");
  return probe ? path + "/tokenizer.json" : path;
}

class Output {
 public:
  ~Output() { flush(); }
  void line(std::string_view text) {
    buffer_.append(text);
    buffer_ += '\n';
    if (buffer_.size() > (1u << 20)) flush();
  }
  void flush() {
    if (!buffer_.empty() && std::fwrite(buffer_.data(), 1, buffer_.size(), stdout) != buffer_.size()) {
      throw core::SystemError("tokenize: writing to stdout", errno);
    }
    buffer_.clear();
    std::fflush(stdout);
  }

 private:
  std::string buffer_;
};

}  // namespace

int run_tokenize(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("tokenize", tokenize_flags(), args, 0, 0);
  if (flags.has("help")) {
    std::printf("usage: freehold tokenize --tokenizer PATH [--input FILE] [options]\n\n%s",
                describe_flags(tokenize_flags()).c_str());
    return 0;
  }
  const bool decode = flags.has("decode");
  const bool special = !flags.has("no-special-tokens");
  const std::optional<std::string> input_path = flags.get("input");
  std::string format = flags.get_or("format", input_path && absl::EndsWith(*input_path, ".jsonl") ? "jsonl" : "text");
  if (format != "text" && format != "jsonl") {
    throw core::UsageError(absl::StrCat("tokenize: --format is \"", format, "\"; expected text or jsonl"));
  }
  data::Tokenizer tokenizer = data::Tokenizer::load(tokenizer_path(*flags.get("tokenizer")));

  std::ifstream file;
  if (input_path) {
    file.open(*input_path, std::ios::binary);
    if (!file) throw core::UsageError(absl::StrCat("tokenize: cannot open --input ", *input_path));
  }
  std::istream& in = input_path ? static_cast<std::istream&>(file) : std::cin;
  const std::string name = input_path.value_or("<stdin>");

  Output out;
  std::string line;
  int64_t line_number = 0;
  int64_t replaced_lines = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const std::string where = absl::StrCat(name, ":", line_number);
    if (line.size() > kMaxLineBytes) {
      throw core::DataError(absl::StrCat(where, ": line is ", line.size(), " bytes; at most ", kMaxLineBytes));
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();

    if (decode) {
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      auto ids_field = record.is_object() ? record.find("ids") : record.end();
      if (!record.is_object() || ids_field == record.end() || !ids_field->is_array()) {
        throw core::DataError(absl::StrCat(where, ": expected {\"ids\": [id, ...]}"));
      }
      std::vector<int32_t> ids;
      for (const auto& id : *ids_field) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= tokenizer.id_limit()) {
          throw core::DataError(absl::StrCat(where, ": id ", id.dump(), " is not an integer in [0, ",
                                             tokenizer.id_limit(), ")"));
        }
        ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
      nlohmann::json result = {{"text", tokenizer.decode(ids, /*skip_special_tokens=*/!special)}};
      out.line(result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      continue;
    }

    std::string text;
    if (format == "jsonl") {
      if (line_number == 1 && absl::StartsWith(line, "\xEF\xBB\xBF")) line.erase(0, 3);  // UTF-8 BOM
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (record.is_discarded()) throw core::DataError(absl::StrCat(where, ": not valid JSON (or not valid UTF-8)"));
      auto text_field = record.is_object() ? record.find("text") : record.end();
      if (!record.is_object() || text_field == record.end() || !text_field->is_string()) {
        throw core::DataError(absl::StrCat(where, ": expected a JSON object with a string \"text\""));
      }
      text = text_field->get<std::string>();
    } else if (core::is_valid_utf8(line)) {
      text = std::move(line);
    } else {
      text = core::replace_invalid_utf8(line);
      ++replaced_lines;
    }
    std::vector<int32_t> ids = tokenizer.encode(text, special);
    std::string json = "{\"ids\":[";
    for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&json, i ? "," : "", ids[i]);
    json += "]}";
    out.line(json);
  }
  if (in.bad()) throw core::SystemError(absl::StrCat("tokenize: reading ", name), errno);
  if (replaced_lines > 0) {
    core::log_warning("tokenize: ", replaced_lines, " line(s) of ", name, " had invalid UTF-8, replaced by U+FFFD");
  }
  return 0;
}

}  // namespace freehold::launch
