// Split patterns of tokenizer.json files, compiled with PCRE2 (UTF + UCP, JIT). The tokenizers library runs them
// with Oniguruma, whose `\s` is the Unicode White_Space property and whose Unicode is newer than Debian's PCRE2;
// the pattern is rewritten so PCRE2 matches the same code points.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace freehold::data {

struct ByteSpan {
  size_t start = 0;
  size_t end = 0;
};

class UnicodeRegex {
 public:
  // Compiles `pattern`; throws FormatError naming `where` (e.g. "tokenizer.json: pre_tokenizer.pattern.Regex")
  // when it does not compile or is longer than kMaxPatternBytes.
  UnicodeRegex(std::string_view pattern, const std::string& where);

  // Appends every non-overlapping match in `subject` (valid UTF-8), left to right, as the tokenizers library's
  // find_iter does: after an empty match the search resumes one character later. Throws DataError when a match
  // exceeds PCRE2's backtracking limit (a pathological pattern).
  void find_all(std::string_view subject, std::vector<ByteSpan>& out) const;

  // Whether the pattern matches at exactly `offset` (anchored there).
  bool matches_at(std::string_view subject, size_t offset) const;

  const std::string& pattern() const { return pattern_; }

  static constexpr size_t kMaxPatternBytes = 64 * 1024;

 private:
  std::string pattern_;
  std::string where_;
  std::shared_ptr<void> code_;  // pcre2_code_8, freed with pcre2_code_free_8
};

// Rewrites an Oniguruma pattern into the PCRE2 pattern that matches the same: `\s` → `\p{White_Space}` and
// `\S` → `\P{White_Space}`; `\p{L}` and `\p{N}` (and `\P{..}` outside classes) gain the code points Unicode 15-16
// assigned to them, which the tokenizers library knows and Debian's PCRE2 (Unicode 14) does not
// (data/unicode_delta.h). Exposed for tests.
std::string oniguruma_to_pcre2(std::string_view pattern);

}  // namespace freehold::data
