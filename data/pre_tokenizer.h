// The pre-tokenizer of a tokenizer.json: cuts normalized text into the words the model encodes one by one.
// Supported: ByteLevel (with or without GPT-2's split regex), Split (String or Regex pattern, every delimiter
// behavior, invert), Metaspace (prepend_scheme always/first/never, split on/off), and Sequence of these.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer_json.h"
#include "data/unicode_regex.h"

namespace freehold::data {

// A piece of text on its way through the pre-tokenizer. `at_text_start`: the piece begins at offset 0 of the
// original input (Metaspace's prepend_scheme "first" prepends only there).
struct PreToken {
  std::string text;
  bool at_text_start = false;
};

class PreTokenizer {
 public:
  // Reads `value` (a pre_tokenizer object) at `at`; throws FormatError naming the key for anything unsupported.
  static std::unique_ptr<PreTokenizer> from_json(const Json& value, const JsonPath& at);

  // Replaces `tokens` with their pre-tokenized pieces, in order; empty pieces are dropped, as the library does.
  void pre_tokenize(std::vector<PreToken>& tokens) const;

  // GPT-2's split pattern, which ByteLevel uses when use_regex is true.
  static constexpr const char* kGpt2Pattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

 private:
  enum class Kind { kByteLevel, kSplit, kMetaspace };
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  enum class PrependScheme { kAlways, kFirst, kNever };
  struct Step {
    Kind kind = Kind::kSplit;
    // ByteLevel
    bool add_prefix_space = false;
    // Split (and ByteLevel's regex): a Regex, or a literal String pattern
    std::shared_ptr<UnicodeRegex> regex;
    std::string literal;
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    // Metaspace
    std::string replacement;
    PrependScheme prepend_scheme = PrependScheme::kAlways;
    bool split = true;
  };
  void add_steps(const Json& value, const JsonPath& at, int depth);
  void apply(const Step& step, std::vector<PreToken>& in, std::vector<PreToken>& out) const;
  // Cuts `token` at the matches of the step's pattern with its behavior, appending the pieces to `out`.
  static void split_pieces(const Step& step, const PreToken& token, std::vector<PreToken>& out);

  std::vector<Step> steps_;  // a Sequence, flattened
};

}  // namespace freehold::data
