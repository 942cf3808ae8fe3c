#include "data/unicode_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/unicode_delta.h"

namespace freehold::data {
namespace {

// Bounds one pcre2_match call, so a pathological pattern in an untrusted tokenizer.json fails instead of hanging.
constexpr uint32_t kMatchLimit = 50'000'000;

// Per-thread match state: match data (one ovector pair is enough, only whole matches are used), a match context
// with the limits, and a JIT stack larger than the 32 KiB default for long runs of whitespace or letters.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    FH_CHECK(data != nullptr && context != nullptr && jit_stack != nullptr, "PCRE2 allocation failed");
    pcre2_set_match_limit(context, kMatchLimit);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

size_t utf8_length_at(std::string_view s, size_t i) {
  unsigned char lead = static_cast<unsigned char>(s[i]);
  size_t n = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  return std::min(n, s.size() - i);
}

}  // namespace

std::string oniguruma_to_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` just after the '[' (or "[^") that opened the class
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char next = pattern[i + 1];
      // \p{L} \pL \p{N} \pN and their negations: the property plus what Unicode 15-16 added to it.
      std::string_view rest = pattern.substr(i + 2);
      char property = 0;
      size_t length = 0;
      if (next == 'p' || next == 'P') {
        if (rest.size() >= 3 && rest[0] == '{' && (rest[1] == 'L' || rest[1] == 'N') && rest[2] == '}') {
          property = rest[1], length = 5;
        } else if (!rest.empty() && (rest[0] == 'L' || rest[0] == 'N')) {
          property = rest[0], length = 3;
        }
      }
      const bool negated = next == 'P';
      if (property != 0 && !(negated && in_class)) {
        const char* delta = property == 'L' ? kLettersSinceUnicode14 : kNumbersSinceUnicode14;
        std::string members = absl::StrCat("\\p{", std::string(1, property), "}", delta);
        if (in_class) {
          out += members;
        } else {
          absl::StrAppend(&out, negated ? "[^" : "[", members, "]");
        }
        i += length - 1;
        continue;
      }
      if (next == 's') {
        out += "\\p{White_Space}";
      } else if (next == 'S') {
        out += "\\P{White_Space}";
      } else {
        out += c;
        out += next;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_start = i + 1;
      if (class_start < pattern.size() && pattern[class_start] == '^') ++class_start;
    } else if (in_class && c == ']' && i != class_start) {
      in_class = false;
    }
    out += c;
  }
  return out;
}

UnicodeRegex::UnicodeRegex(std::string_view pattern, const std::string& where) : pattern_(pattern), where_(where) {
  if (pattern.size() > kMaxPatternBytes) {
    throw core::FormatError(absl::StrCat(where, " is a pattern of ", pattern.size(), " bytes; at most ",
                                         kMaxPatternBytes));
  }
  std::string translated = oniguruma_to_pcre2(pattern);
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    throw core::FormatError(absl::StrCat(where, " is the regular expression \"", std::string(pattern),
                                         "\", which does not compile (", reinterpret_cast<const char*>(message),
                                         " at offset ", error_offset, ")"));
  }
  // JIT is an optimization: where it is unavailable the interpreter gives the same matches.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
}

void UnicodeRegex::find_all(std::string_view subject, std::vector<ByteSpan>& out) const {
  auto* code = static_cast<const pcre2_code*>(code_.get());
  MatchState& state = match_state();
  // The iteration of the onig crate's find_iter: an empty match right where the previous match ended is skipped
  // and the search moves on one character.
  size_t offset = 0;
  bool have_last_end = false;
  size_t last_match_end = 0;
  while (offset <= subject.size()) {
    // The caller validated the UTF-8 once for the whole text; PCRE2 need not check each piece again.
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), offset,
                         PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw core::DataError(absl::StrCat(where_, ": matching \"", pattern_, "\" failed on a text of ", subject.size(),
                                         " bytes (", reinterpret_cast<const char*>(message), ")"));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    size_t start = ovector[0], end = ovector[1];
    FH_CHECK(start <= end && end <= subject.size(), "PCRE2 match out of bounds");
    if (start == end && have_last_end && last_match_end == end) {
      offset += offset < subject.size() ? utf8_length_at(subject, offset) : 1;
      continue;
    }
    out.push_back({start, end});
    offset = end;
    have_last_end = true;
    last_match_end = end;
  }
}

bool UnicodeRegex::matches_at(std::string_view subject, size_t offset) const {
  auto* code = static_cast<const pcre2_code*>(code_.get());
  MatchState& state = match_state();
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), offset,
                       PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, state.data, state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw core::DataError(absl::StrCat(where_, ": matching \"", pattern_, "\" failed"));
  return true;
}

}  // namespace freehold::data
