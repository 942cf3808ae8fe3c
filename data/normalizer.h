// The normalizer of a tokenizer.json: the text edits made before pre-tokenization. Supported: Prepend, Replace
// (String or Regex pattern), the Unicode forms NFC/NFD/NFKC/NFKD (through ICU, with the library's Unicode 9.0
// data), and Sequence of these.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer_json.h"
#include "data/unicode_regex.h"

namespace freehold::data {

class Normalizer {
 public:
  // Reads `value` (a normalizer object) at `at`; throws FormatError naming the key for anything unsupported.
  static std::unique_ptr<Normalizer> from_json(const Json& value, const JsonPath& at);

  // The normalized form of valid UTF-8 `text` (the result is valid UTF-8 too).
  std::string normalize(std::string_view text) const;

 private:
  enum class Kind { kPrepend, kReplace, kUnicodeForm };
  enum class UnicodeForm { kNfc, kNfd, kNfkc, kNfkd };
  struct Step {
    Kind kind;
    std::string text;                     // Prepend: the prefix; Replace: the String pattern
    std::string content;                  // Replace: the replacement
    std::shared_ptr<UnicodeRegex> regex;  // Replace with a Regex pattern
    UnicodeForm form = UnicodeForm::kNfc;
  };
  void add_steps(const Json& value, const JsonPath& at, int depth);
  static std::string apply(const Step& step, std::string_view text);

  std::vector<Step> steps_;  // a Sequence, flattened
};

}  // namespace freehold::data
