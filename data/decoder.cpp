#include "data/decoder.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/utf8.h"
#include "data/byte_level.h"

namespace freehold::data {
namespace {

constexpr int kMaxDepth = 16;

size_t utf8_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

// Splits valid UTF-8 into its characters.
std::vector<std::string_view> chars_of(std::string_view s) {
  std::vector<std::string_view> chars;
  for (size_t i = 0; i < s.size();) {
    size_t n = std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
    chars.push_back(s.substr(i, n));
    i += n;
  }
  return chars;
}

// The byte of a "<0xNN>" token, or -1. The library parses the two characters with Rust's u8::from_str_radix,
// which also takes a leading '+' ("<0x+A>").
int byte_fallback_value(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (token[3] == '+') return hex(token[4]);
  int high = hex(token[3]), low = hex(token[4]);
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

}  // namespace

std::unique_ptr<Decoder> Decoder::from_json(const Json& value, const JsonPath& at) {
  if (value.is_null()) return nullptr;
  auto decoder = std::unique_ptr<Decoder>(new Decoder());
  decoder->add_steps(value, at, 0);
  return decoder;
}

void Decoder::add_steps(const Json& value, const JsonPath& at, int depth) {
  if (depth > kMaxDepth) fail_at(at, absl::StrCat("nests Sequences deeper than ", kMaxDepth));
  std::string type = read_type(value, at, {"Sequence", "ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse",
                                           "Strip"});
  Step step;
  step.kind = Kind::kFuse;
  if (type == "Sequence") {
    const Json& list = require_field(value, at, "decoders");
    require_array(list, at.child("decoders"));
    for (size_t i = 0; i < list.size(); ++i) add_steps(list[i], at.child("decoders").index(i), depth + 1);
    return;
  } else if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    step.replacement = read_char(value, at, "replacement");
    if (find_field(value, at, "prepend_scheme") != nullptr) {
      std::string scheme = read_string(value, at, "prepend_scheme");
      if (scheme != "always" && scheme != "first" && scheme != "never") {
        fail_at(at.child("prepend_scheme"), absl::StrCat("is \"", scheme, "\"; expected always, first or never"));
      }
      step.prepend = scheme != "never";
    } else {
      step.prepend = read_bool_or(value, at, "add_prefix_space", true);
    }
  } else if (type == "Replace") {
    step.kind = Kind::kReplace;
    PatternSpec pattern = read_pattern(value, at, "pattern");
    step.pattern = pattern.text;
    if (pattern.is_regex) {
      step.regex = std::make_shared<UnicodeRegex>(pattern.text, at.child("pattern").child("Regex").describe());
    }
    step.content = read_string(value, at, "content");
  } else if (type == "ByteFallback") {
    step.kind = Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = Kind::kFuse;
  } else {  // Strip
    step.kind = Kind::kStrip;
    step.strip_char = read_char(value, at, "content");
    step.strip_start = read_int(require_field(value, at, "start"), at.child("start"), 0, 1 << 20);
    step.strip_stop = read_int(require_field(value, at, "stop"), at.child("stop"), 0, 1 << 20);
  }
  steps_.push_back(std::move(step));
}

void Decoder::apply(const Step& step, std::vector<std::string>& tokens) {
  switch (step.kind) {
    case Kind::kByteLevel: {
      // Each token whose characters are all in the byte-level alphabet becomes those bytes; any other token
      // (an added token such as "<|im_start|>") is kept as it is. The whole is then read as lossy UTF-8.
      std::string bytes;
      for (const std::string& token : tokens) {
        size_t mark = bytes.size();
        bool all = true;
        for (std::string_view ch : chars_of(token)) {
          uint32_t cp = 0;
          if (ch.size() == 1) cp = static_cast<unsigned char>(ch[0]);
          else if (ch.size() == 2) cp = ((static_cast<unsigned char>(ch[0]) & 0x1F) << 6) | (static_cast<unsigned char>(ch[1]) & 0x3F);
          else cp = 0xFFFFFFFF;
          int b = byte_level_byte(cp);
          if (b < 0) {
            all = false;
            break;
          }
          bytes += static_cast<char>(b);
        }
        if (!all) {
          bytes.resize(mark);
          bytes += token;
        }
      }
      tokens.assign(1, core::replace_invalid_utf8(bytes));
      return;
    }
    case Kind::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string out;
        for (std::string_view ch : chars_of(tokens[i])) {
          if (ch == step.replacement) {
            if (!(i == 0 && step.prepend)) out += ' ';  // every replacement in the first token is dropped
          } else {
            out += ch;
          }
        }
        tokens[i].swap(out);
      }
      return;
    case Kind::kReplace:
      for (std::string& token : tokens) {
        std::vector<ByteSpan> matches;
        if (step.regex) {
          step.regex->find_all(token, matches);
        } else if (!step.pattern.empty()) {
          for (size_t pos = 0; (pos = token.find(step.pattern, pos)) != std::string::npos; pos += step.pattern.size()) {
            matches.push_back({pos, pos + step.pattern.size()});
          }
        }
        if (matches.empty()) continue;
        std::string out;
        size_t pos = 0;
        for (const ByteSpan& m : matches) {
          out.append(token, pos, m.start - pos);
          out += step.content;
          pos = m.end;
        }
        out.append(token, pos, std::string::npos);
        token.swap(out);
      }
      return;
    case Kind::kByteFallback: {
      // Runs of <0xNN> tokens become their bytes when those are valid UTF-8, else one U+FFFD per byte.
      std::vector<std::string> out;
      std::string pending;
      auto flush = [&]() {
        if (pending.empty()) return;
        if (core::is_valid_utf8(pending)) {
          out.push_back(pending);
        } else {
          for (size_t k = 0; k < pending.size(); ++k) out.push_back("\xEF\xBF\xBD");
        }
        pending.clear();
      };
      for (std::string& token : tokens) {
        int b = byte_fallback_value(token);
        if (b >= 0) {
          pending += static_cast<char>(b);
          continue;
        }
        flush();
        out.push_back(std::move(token));
      }
      flush();
      tokens.swap(out);
      return;
    }
    case Kind::kFuse:
      tokens.assign(1, absl::StrJoin(tokens, ""));
      return;
    case Kind::kStrip:
      for (std::string& token : tokens) {
        std::vector<std::string_view> chars = chars_of(token);
        size_t start_cut = 0;
        for (size_t i = 0; i < chars.size() && i < static_cast<size_t>(step.strip_start); ++i) {
          if (chars[i] != step.strip_char) break;
          start_cut = i + 1;
        }
        size_t stop_cut = chars.size();
        for (size_t i = 0; i < static_cast<size_t>(step.strip_stop) && i < chars.size(); ++i) {
          size_t index = chars.size() - i - 1;
          if (chars[index] != step.strip_char) break;
          stop_cut = index;
        }
        std::string out;
        for (size_t i = start_cut; i < stop_cut; ++i) out += chars[i];
        token.swap(out);
      }
      return;
  }
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  for (const Step& step : steps_) apply(step, tokens);
  return absl::StrJoin(tokens, "");
}

}  // namespace freehold::data
