#include "data/normalizer.h"

#include <array>

#include <unicode/unorm2.h>
#include <unicode/uset.h>
#include <unicode/ustring.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::data {
namespace {

constexpr int kMaxDepth = 16;

bool is_ascii(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

std::string replace_all(std::string_view text, std::string_view pattern, std::string_view content) {
  if (pattern.empty()) return std::string(text);  // the library's empty String pattern matches nothing
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    size_t hit = text.find(pattern, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos));
    out.append(content);
    pos = hit + pattern.size();
  }
  out.append(text.substr(pos));
  return out;
}

// ICU's normalizers work on UTF-16: convert, normalize, convert back. Every call is checked.
std::string unicode_normalize(std::string_view text, const UNormalizer2* normalizer) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t length16 = 0;
  u_strFromUTF8(nullptr, 0, &length16, text.data(), static_cast<int32_t>(text.size()), &status);
  if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status)) {
    throw core::DataError(absl::StrCat("Unicode normalization: cannot read the text (", u_errorName(status), ")"));
  }
  std::u16string utf16(static_cast<size_t>(length16), u'\0');
  status = U_ZERO_ERROR;
  u_strFromUTF8(utf16.data(), length16, nullptr, text.data(), static_cast<int32_t>(text.size()), &status);
  FH_CHECK(U_SUCCESS(status), "u_strFromUTF8: ", u_errorName(status));

  std::u16string normalized(utf16.size() + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    status = U_ZERO_ERROR;
    int32_t n = unorm2_normalize(normalizer, utf16.data(), static_cast<int32_t>(utf16.size()), normalized.data(),
                                 static_cast<int32_t>(normalized.size()), &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      normalized.assign(static_cast<size_t>(n), u'\0');
      continue;
    }
    FH_CHECK(U_SUCCESS(status), "unorm2_normalize: ", u_errorName(status));
    normalized.resize(static_cast<size_t>(n));
    break;
  }
  int32_t length8 = 0;
  status = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &length8, normalized.data(), static_cast<int32_t>(normalized.size()), &status);
  std::string out(static_cast<size_t>(length8), '\0');
  status = U_ZERO_ERROR;
  u_strToUTF8(out.data(), length8, nullptr, normalized.data(), static_cast<int32_t>(normalized.size()), &status);
  FH_CHECK(U_SUCCESS(status), "u_strToUTF8: ", u_errorName(status));
  return out;
}

// The tokenizers library normalizes with the Unicode 9.0 tables of its unicode-normalization-alignments crate:
// characters assigned later have no decomposition and combining class 0 there, so they block reordering and
// composition. ICU's normalizer filtered to the characters assigned by Unicode 9.0 behaves the same (the
// normalization stability policy keeps the older characters' data unchanged in newer Unicode versions).
const UNormalizer2* unicode_9_normalizer(int form) {
  static const std::array<const UNormalizer2*, 4> normalizers = [] {
    UErrorCode status = U_ZERO_ERROR;
    static const UChar kPattern[] = u"[:Age=9.0:]";
    USet* assigned = uset_openPattern(kPattern, -1, &status);
    FH_CHECK(U_SUCCESS(status), "ICU: uset_openPattern [:Age=9.0:]: ", u_errorName(status));
    uset_freeze(assigned);
    std::array<const UNormalizer2*, 4> out{};
    const UNormalizer2* base[4] = {unorm2_getNFCInstance(&status), unorm2_getNFDInstance(&status),
                                   unorm2_getNFKCInstance(&status), unorm2_getNFKDInstance(&status)};
    FH_CHECK(U_SUCCESS(status), "ICU normalizer: ", u_errorName(status));
    for (int i = 0; i < 4; ++i) {
      out[i] = unorm2_openFiltered(base[i], assigned, &status);  // lives as long as the process, as `assigned`
      FH_CHECK(U_SUCCESS(status) && out[i] != nullptr, "ICU: unorm2_openFiltered: ", u_errorName(status));
    }
    return out;
  }();
  return normalizers[form];
}

}  // namespace

std::unique_ptr<Normalizer> Normalizer::from_json(const Json& value, const JsonPath& at) {
  if (value.is_null()) return nullptr;
  auto normalizer = std::unique_ptr<Normalizer>(new Normalizer());
  normalizer->add_steps(value, at, 0);
  return normalizer;
}

void Normalizer::add_steps(const Json& value, const JsonPath& at, int depth) {
  if (depth > kMaxDepth) fail_at(at, absl::StrCat("nests Sequences deeper than ", kMaxDepth));
  std::string type = read_type(value, at, {"Sequence", "Prepend", "Replace", "NFC", "NFD", "NFKC", "NFKD"});
  if (type == "Sequence") {
    const Json& list = require_field(value, at, "normalizers");
    require_array(list, at.child("normalizers"));
    for (size_t i = 0; i < list.size(); ++i) add_steps(list[i], at.child("normalizers").index(i), depth + 1);
  } else if (type == "Prepend") {
    steps_.push_back({Kind::kPrepend, read_string(value, at, "prepend"), "", nullptr});
  } else if (type == "Replace") {
    PatternSpec pattern = read_pattern(value, at, "pattern");
    Step step{Kind::kReplace, pattern.text, read_string(value, at, "content"), nullptr};
    if (pattern.is_regex) {
      step.regex = std::make_shared<UnicodeRegex>(pattern.text, at.child("pattern").child("Regex").describe());
    }
    steps_.push_back(std::move(step));
  } else {
    Step step{Kind::kUnicodeForm, "", "", nullptr};
    step.form = type == "NFC" ? UnicodeForm::kNfc : type == "NFD" ? UnicodeForm::kNfd
              : type == "NFKC" ? UnicodeForm::kNfkc : UnicodeForm::kNfkd;
    steps_.push_back(std::move(step));
  }
}

std::string Normalizer::apply(const Step& step, std::string_view text) {
  switch (step.kind) {
    case Kind::kPrepend:
      if (text.empty()) return std::string();  // the library prepends only to non-empty text
      return absl::StrCat(step.text, std::string(text));
    case Kind::kReplace: {
      if (!step.regex) return replace_all(text, step.text, step.content);
      std::vector<ByteSpan> matches;
      step.regex->find_all(text, matches);
      std::string out;
      size_t pos = 0;
      for (const ByteSpan& m : matches) {
        out.append(text.substr(pos, m.start - pos));
        out.append(step.content);
        pos = m.end;
      }
      out.append(text.substr(pos));
      return out;
    }
    case Kind::kUnicodeForm: {
      if (is_ascii(text)) return std::string(text);  // ASCII is invariant under all four forms
      const UNormalizer2* normalizer = unicode_9_normalizer(static_cast<int>(step.form));
      return unicode_normalize(text, normalizer);
    }
  }
  FH_CHECK(false, "unknown normalizer step");
}

std::string Normalizer::normalize(std::string_view text) const {
  std::string current(text);
  for (const Step& step : steps_) current = apply(step, current);
  return current;
}

}  // namespace freehold::data
