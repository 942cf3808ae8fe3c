// The decoder of a tokenizer.json: token strings back to text. Supported: ByteLevel, Metaspace, and Sequence of
// Replace / ByteFallback / Fuse / Strip (the SentencePiece family's chain). Without a decoder the library joins
// tokens with spaces, and so does this.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer_json.h"
#include "data/unicode_regex.h"

namespace freehold::data {

class Decoder {
 public:
  static std::unique_ptr<Decoder> from_json(const Json& value, const JsonPath& at);

  // The text of `tokens`; always valid UTF-8 (byte sequences that are not become U+FFFD, as the library does).
  std::string decode(std::vector<std::string> tokens) const;

 private:
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip };
  struct Step {
    Kind kind = Kind::kFuse;
    // Replace
    std::string pattern;
    std::shared_ptr<UnicodeRegex> regex;
    std::string content;
    // Metaspace
    std::string replacement;
    bool prepend = true;
    // Strip
    std::string strip_char;
    int64_t strip_start = 0;
    int64_t strip_stop = 0;
  };
  void add_steps(const Json& value, const JsonPath& at, int depth);
  static void apply(const Step& step, std::vector<std::string>& tokens);

  std::vector<Step> steps_;
};

}  // namespace freehold::data
